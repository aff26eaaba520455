"""``sqreen playbooks`` (init, check, test: a backtest on stored events) and ``sqreen alerts``."""

from __future__ import annotations

import os
from typing import Final

import click

from .._text import visible
from ..events import DERIVED_EVENTS
from ._cli_common import counted, db_option, json_line, opened, time_range, when
from .playbooks import (
    TEMPLATES,
    Engine,
    Playbook,
    PlaybookError,
    is_exempt,
    load_playbooks,
    name_warnings,
    shadowed,
    unread_settings,
)
from .playbooks._alerts import PRIVATE_SPARED, alerts_for
from .playbooks._config import SECRET_VARIABLE
from .playbooks._fields import AtLeast
from .playbooks._late import span_of
from .playbooks._memory import MemoryWindows
from .playbooks._runner import event_view
from .storage import Alert, EventFilter, Storage

__all__ = ["alerts", "playbooks"]

PAGE = 2000


@click.group()
def playbooks() -> None:
    """Playbooks: detections that block or alert by themselves (see `init`)."""


@playbooks.command("init")
def playbooks_init() -> None:
    """Print the built-in playbooks (sqreen playbooks init > playbooks.toml)."""
    click.echo(TEMPLATES, nl=False)


@playbooks.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def playbooks_check(file: str) -> None:
    """Check a playbook file; print what it holds."""
    try:
        loaded = load_playbooks(file)
    except PlaybookError as exc:
        raise click.ClickException(str(exc)) from None
    for p in loaded.playbooks:
        click.echo(visible(f"{p.id:<24} {p.mode:<8} {','.join(p.events):<32} {rule(p)}"))
    click.echo(f"{counted(len(loaded.playbooks), 'playbook')}; SDKs send at once: "
               f"{', '.join(sorted(loaded.watched())) or 'nothing'}")  # fmt: skip
    for p in loaded.playbooks:
        for warning in derived_warnings(p) + lockout_warnings(p) + name_warnings(p):
            click.echo(visible(f"warning: {warning}"), err=True)
        for line in unread_settings(p):
            click.echo(visible(f"warning: {line}"), err=True)
    for line in shadowed(loaded.playbooks):
        click.echo(visible(f"warning: {line}"), err=True)
    secret = loaded.webhook_secret or os.environ.get(SECRET_VARIABLE) or ""
    if secret and any(p.notify for p in loaded.playbooks) and len(secret) < MIN_SECRET:
        click.echo(
            f"warning: the webhook secret is {len(secret)} characters: the signature of a "
            f"post is no stronger than it; use {MIN_SECRET} random characters or more "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
            err=True,
        )


#: The length under which ``check`` says a webhook secret is weak (a guessable one lets
#: anybody who can reach a receiver forge alerts).
MIN_SECRET: Final = 16
#: Events anyone on the internet makes for any account: a failed login names the account
#: typed, whoever typed it.
FAILURES: Final = frozenset({"auth.login.failure"})


def lockout_warnings(p: Playbook) -> list[str]:
    """What to say of a playbook blocking users on failed logins: whoever types a username
    can lock its owner out (the brute-force-account template alerts, for that reason); and
    of a block shorter than the window: the events before it still count when it ends, and
    the key's next one blocks again."""
    out = []
    if p.action == "block_user" and FAILURES.intersection(p.events):
        out.append(
            f"{p.id} blocks users on auth.login.failure: anyone who types a username can fail "
            f'{p.threshold} times and lock its owner out; consider action = "alert", or '
            "block_ip grouped by ip"
        )
    if p.action != "alert" and p.duration is not None and p.duration < p.window:
        out.append(
            f"{p.id} blocks for {span_of(p.duration)}, less than its window "
            f"({span_of(p.window)}): when a block ends, the events before it are still in "
            "the window, and the key's next one blocks it again at once"
        )
    return out


def rule(p: Playbook) -> str:
    """What ``p`` counts and does, as its file says it: ``by ip: 5 in 5m -> block_ip for 1h``."""
    if p.after is not None:
        counted = f"{p.threshold} after {p.after.threshold} {','.join(p.after.events)}"
    elif p.distinct is not None:
        each = f" (at most {p.max_per_value} each)" if p.max_per_value is not None else ""
        counted = f"{p.threshold} distinct {p.distinct}{each}"
    else:
        counted = str(p.threshold)
    where = " and ".join(_condition(str(path), values) for path, values in p.where)
    action: str = p.action
    if p.duration is not None and p.action != "alert":
        action += f" for {span_of(p.duration)}"
    if p.block_private:
        action += ", private addresses too"
    if p.cooldown is not None:
        action += f", quiet {span_of(p.cooldown)}"
    where = f" where {where}" if where else ""
    return f"by {p.group_by.spec}{where}: {counted} in {span_of(p.window)} -> {action}"


def _condition(path: str, values: frozenset[str]) -> str:
    """``ip.kind=tor|vpn``; a lower bound alone as ``ip.score>=50`` (its text is ``>=50``)."""
    if len(values) == 1 and isinstance(bound := next(iter(values)), AtLeast):
        return f"{path}{bound}"
    return f"{path}={'|'.join(sorted(values))}"


def derived_warnings(p: Playbook) -> list[str]:
    """What to say of a playbook blocking users on an event the collector derives: its
    sources are events any ingest key can send, for any user."""
    if p.action != "block_user":
        return []
    return [
        f"{p.id} blocks users on {name}, which the collector derives from "
        f"{', '.join(DERIVED_EVENTS[name])}: whoever holds an ingest key can send those for "
        "any user (two logins far apart), and so lock any account out; consider "
        'action = "alert"'
        for name in sorted(n for n in p.watched if n in DERIVED_EVENTS)
    ]


@playbooks.command("test")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--since", default="7d", show_default=True, help="30m, 2h, 7d ago, or ISO time.")
@click.option("--until", help="Same forms as --since (default: now).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@db_option
def playbooks_test(file: str, since: str, until: str | None, as_json: bool, db: str) -> None:
    """Replay stored events through the playbooks of FILE: print which group keys they would
    have alerted on or blocked, and when. Creates nothing."""
    start, end = time_range(since, until)
    try:
        engine = Engine(load_playbooks(file))
    except PlaybookError as exc:
        raise click.ClickException(str(exc)) from None
    for p in engine.playbooks.playbooks:
        for warning in name_warnings(p):
            click.echo(visible(f"warning: {warning}"), err=True)
    filters = EventFilter(since=start, until=end)
    with opened(db, create=False, upgrade=False) as storage:
        found = backtest(storage, engine, filters)
    for alert in found:
        if as_json:
            click.echo(json_line(alert.to_json()))
        else:
            click.echo(visible(f"{when(alert.created_at)}  {_verb(alert):<13} {alert.summary}"))
    if not as_json:
        click.echo(summary(found), err=True)


def summary(found: list[Alert]) -> str:
    """What the backtest found, in one line: every firing is an alert (as ``sqreen alerts``
    would list it); some would have made a block too, and monitor mode blocks nobody."""
    if not found:
        return "no alerts would have been raised"
    verbs = [_verb(a) for a in found]
    made = [
        counted(verbs.count("block ip"), "IP block"),
        counted(verbs.count("block user"), "user block"),
    ]
    monitored = verbs.count("monitor")
    also = f"; {monitored} in monitor mode" if monitored else ""
    return f"{counted(len(found), 'alert')} would have been raised ({', '.join(made)}{also})"


def backtest(storage: Storage, engine: Engine, filters: EventFilter) -> list[Alert]:
    """The alerts the playbooks would have raised over the events ``filters`` select, each
    evaluated at the time the event happened: the events are replayed in the order of their
    times (then seqs) across the whole range, a page at a time, so that past events stored
    after newer ones (``sqreen import``) count in their windows."""
    windows = MemoryWindows(engine, is_exempt)
    firings = []
    after = None
    while page := storage.scan_events_by_time(filters, after=after, limit=PAGE):
        after = (page[-1].timestamp, page[-1].seq)
        for event in page:
            view = event_view(event)
            firings += windows.run([view], view.ts_us)
    return alerts_for(firings)


def _verb(alert: Alert) -> str:
    if alert.action == "alert":
        return "alert"
    if alert.action == "block_ip" and alert.summary.endswith(PRIVATE_SPARED):
        return "alert"  # a private address: no block (its key is an address, no text)
    if alert.mode == "monitor":
        return "monitor"
    return "block ip" if alert.action == "block_ip" else "block user"


@click.command()
@click.option("--playbook", help="Only this playbook's alerts.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@db_option
def alerts(playbook: str | None, limit: int, as_json: bool, db: str) -> None:
    """List the alerts playbooks raised, newest first."""
    with opened(db, create=False, upgrade=False) as storage:
        found = storage.list_alerts(playbook=playbook, limit=limit)
    if not found and not as_json:  # said apart from the list: stdout stays empty
        click.echo(f"no alerts of playbook {playbook}" if playbook else "no alerts", err=True)
    for alert in found:
        if as_json:
            click.echo(json_line(alert.to_json()))
            continue
        block = f" block #{alert.block_id}" if alert.block_id else ""
        mode = " (monitor)" if alert.mode == "monitor" else ""
        # The summary names the group key: an IP or a user an event named.
        click.echo(visible(f"#{alert.id}  {when(alert.created_at)}  {alert.summary}{block}{mode}"))
