"""``sqreen events`` (tail and filter in a terminal) and ``sqreen import``.

What events carry is written by whoever holds an ingest key: each line is printed with its
control characters written out (``\x1b``, ``\r``, ``\u202e``), so that a username cannot
erase lines or draw a forged one on the operator's terminal; ``--json`` escapes them too. So
are ``sqreen import``'s messages about bad lines, which name the keys at fault.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import click

from .._text import pair, visible
from ..events import SEVERITIES, severity, stored_name
from ._cli_common import (
    Finite,
    db_option,
    json_line,
    nonempty,
    opened,
    pairs,
    time_range,
    when,
    when_options,
)
from .importer import ImportReport, ImportStopped, import_lines, read_lines
from .intel import IpIntel
from .storage import MAX_IPS, EventFilter, Follower, StoredEvent
from .storage.model import ip_info_value, ip_selection

__all__ = ["events", "import_"]


def _short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _line(e: StoredEvent) -> str:
    # At most 32 characters (whatever an app sends as a name), so that the columns after
    # it stay within a few of their place: --json has every identifier whole.
    user = _short(",".join(pair(k, v) for k, v in (e.user or {}).items()) or "-", 32)
    props = " ".join(pair(k, v, 40) for k, v in e.properties.items())
    name = f"{e.name:<28} {severity(e.name):<8}"  # the name stays the third field
    ip = f"{e.ip or '-':<15}{_place(e.enrichment.get('ip_info'))}"
    return visible(f"{when(e.timestamp)}  {name} user={user:<16} ip={ip} {props}")


def _place(ip_info: Any) -> str:
    """`` [DE hosting]``: the country and network kind IP intelligence stored, when known."""
    if not isinstance(ip_info, dict):
        return ""
    known = [_short(ip_info[k], 16) for k in ("country", "kind") if ip_info.get(k) is not None]
    return f" [{' '.join(known)}]" if known else ""


@click.command()
@click.option(
    "--name",
    callback=nonempty,
    help="Only events with this name (LiteSOC's other spellings too).",
)
@click.option(
    "--user",
    "users",
    multiple=True,
    metavar="KEY=VALUE",
    help="User identifier, in any case (as blocks and playbooks read it).",
)
@click.option(
    "--prop",
    "props",
    multiple=True,
    metavar="KEY=VALUE",
    help="Property value: top-level text, integer and true/false properties (decimal "
    "numbers, null, lists and objects are not indexed: they match nothing here).",
)
@click.option(
    "--ip",
    metavar="IP|CIDR",
    help=f"Client IP address, or a network of at most {MAX_IPS} addresses (203.0.113.0/24).",
)
@click.option("--app", callback=nonempty, help="Application name.")
@click.option(
    "--severity",
    type=click.Choice(SEVERITIES, case_sensitive=False),
    help="Only events of this severity (from their name; names of your own are info).",
)
@click.option("--country", callback=lambda c, p, v: _ip_info(p, v), help="Country code (DE).")
@click.option(
    "--kind",
    callback=lambda c, p, v: _ip_info(p, v),
    help="Network kind: tor, vpn, hosting, cdn, bot, private, loopback, reserved.",
)
@click.option("--asn", callback=lambda c, p, v: _ip_info(p, v), help="AS number (15169, AS15169).")
@when_options
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@click.option("--interval", default=1.0, hidden=True, type=Finite(0.05, 60))
@db_option
def events(
    name: str | None,
    users: tuple[str, ...],
    props: tuple[str, ...],
    ip: str | None,
    app: str | None,
    severity: str | None,
    country: str | None,
    kind: str | None,
    asn: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    follow: bool,
    as_json: bool,
    interval: float,
    db: str,
) -> None:
    """Print the latest events stored, in the order they arrived (oldest first), filtered;
    --follow to tail. Each line shows the event's own time: an SDK sends the events a
    playbook watches at once and the others every few seconds, so a login failure can
    arrive before a success tracked just before it."""
    address, network = ip_filter(ip) if ip is not None else (None, ())
    start, end = time_range(since, until)
    filters = EventFilter(
        name=None if name is None else stored_name(name),  # as stored: any spelling, any case
        users=pairs(users, "--user"),
        properties=pairs(props, "--prop"),
        ip=address,
        ips=network,
        app=app,
        severity=None if severity is None else severity.lower(),
        country=country,
        kind=kind,
        asn=asn,
        since=start,
        until=end,
    )

    def show(found: list[StoredEvent]) -> None:
        for e in reversed(found):
            click.echo(json_line(e.to_json()) if as_json else _line(e))

    with opened(db, create=False, upgrade=False) as storage:
        found = storage.query_events(filters, limit=limit)
        if not found and not as_json and not follow:  # apart from the list, on stderr
            exact = " (--prop matches values exactly, case included)"
            click.echo("no events" + (exact if props else ""), err=True)
        show(found)
        if follow:
            follower = Follower(storage, filters, last=found[0].seq if found else 0)
            try:
                for more in tail(follower, interval):
                    show(more)
            except KeyboardInterrupt:  # Ctrl-C is how one stops following: no "Aborted!"
                return


def _ip_info(param: click.Parameter, value: str | None) -> str | None:
    """``--country``, ``--kind`` or ``--asn`` as events store it (``de`` is ``DE``), as the
    explorer's filters read them; a value no event can have is refused, saying why."""
    if value is None:
        return None
    try:
        return ip_info_value(str(param.name), value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def ip_filter(value: str) -> tuple[str | None, tuple[str, ...]]:
    """``--ip``: :func:`~.storage.model.ip_selection`, its refusal as the option's error."""
    try:
        return ip_selection(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ip") from None


def tail(follower: Follower, interval: float) -> Iterator[list[StoredEvent]]:
    """Every ``interval`` seconds, what ``follower`` has not shown yet (newest first)."""
    while True:
        time.sleep(interval)
        yield follower.poll()


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--app", help="Application name to record with the events whose line names none.")
@click.option(
    "--keep-received",
    is_flag=True,
    help="Keep the receipt times of the collector's own lines (sqreen events --json, export "
    "--format jsonl): retention then counts from them, not from the import.",
)
@db_option
def import_(file: str, app: str | None, keep_received: bool, db: str) -> None:
    """Load past events from a JSON-lines FILE (one event a line; idempotent)."""
    with opened(db) as storage, open(file, "rb") as lines:
        try:
            with click.progressbar(
                length=os.path.getsize(file), label="importing", file=sys.stderr
            ) as bar:
                report = import_lines(
                    storage,
                    read_lines(lines),
                    app=app,
                    progress=lambda n: bar.update(n),
                    intel=IpIntel(),  # country and kind; no .mmdb here
                    keep_received=keep_received,
                )
        except ImportStopped as stopped:
            _show_bad(file, stopped.report)
            raise click.ClickException(_stopped(stopped)) from None
    click.echo(
        f"{report.lines} lines: {report.stored} events stored, {report.duplicates} already "
        f"stored, {report.bad_lines} bad"
        + (f", {report.traits} users' traits set" if report.traits else "")
    )
    _show_bad(file, report)
    if report.bad_lines:
        raise SystemExit(1)


def _show_bad(file: str, report: ImportReport) -> None:
    for number, error in report.bad:  # the first importer.MAX_BAD_KEPT
        # The message names the key at fault, which the file's writer chose.
        click.echo(visible(f"{file}:{number}: {error}"), err=True)
    if report.bad_lines > len(report.bad):
        click.echo(f"... and {report.bad_lines - len(report.bad)} more bad lines", err=True)


def _stopped(stopped: ImportStopped) -> str:
    """One line: where the import stopped, what it had stored, and that running it again is
    safe (what is stored is skipped)."""
    report, done = stopped.report, stopped.report.committed_lines
    before = f"lines 1 to {done} are imported" if done else "nothing was imported"
    return visible(
        f"the database refused a write at line {report.lines} ({stopped.reason}); {before} "
        f"({report.stored} events stored, {report.duplicates} already stored, "
        f"{report.bad_lines} bad): run the same import again for the rest, it skips what "
        "is stored"
    )
