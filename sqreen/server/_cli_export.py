"""``sqreen export``: events (or alerts) of a time range to stdout, in ECS, OCSF or JSON lines.

Streams: the database is walked in keyset pages (:mod:`.export.records`), each page written
before the next is read, so the memory is a page's whatever the range. Progress goes to
stderr, every page, so that stdout stays the file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar, get_args

import click

from ._cli_common import EnvOption, db_option, json_line, named, opened, time_range, when_options
from .export import (
    FORMATS,
    Destination,
    Format,
    Forwarder,
    alert_pages,
    document,
    event_pages,
    parse_destination,
)
from .export.records import Kind
from .storage import Alert, EventFilter, Storage, StoredEvent

__all__ = ["destination", "export", "export_lines", "export_options", "forwarder"]

F = TypeVar("F", bound=Callable[..., Any])


def export_lines(
    storage: Storage,
    format: Format,
    *,
    alerts: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[tuple[int, str]]:
    """Each record's document as a JSON line, with how many records precede it in its page
    (0 at the start of a page: the place to report progress). Lazy: a page is read when the
    previous one was consumed."""
    kind: Kind = "alert" if alerts else "event"
    pages: Iterator[Sequence[StoredEvent | Alert]] = (
        alert_pages(storage, since=since, until=until)
        if alerts
        else event_pages(storage, EventFilter(since=since, until=until))
    )
    for page in pages:
        for i, record in enumerate(page):
            yield i, json_line(document(kind, record, format))


@click.command()
@when_options
@click.option(
    "--format",
    "format_",
    type=click.Choice(get_args(Format)),
    default="ecs",
    show_default=True,
    help="ecs: Elastic Common Schema; ocsf: OCSF 1.3; jsonl: as `sqreen events --json`.",
)
@click.option("--alerts", is_flag=True, help="The playbooks' alerts instead of the events.")
@db_option
def export(since: str | None, until: str | None, format_: Format, alerts: bool, db: str) -> None:
    """Write events (or alerts) to stdout, one JSON document a line, oldest first; by the
    event's own time (an alert's: when raised). See docs/export.md for the fields."""
    assert format_ in FORMATS
    start, end = time_range(since, until)
    what = "alerts" if alerts else "events"
    count = 0
    out = sys.stdout
    # The count redrawn a page at a time on a terminal; in a log, the total line alone.
    progress = sys.stderr.isatty()
    with opened(db, create=False, upgrade=False) as storage:
        for position, line in export_lines(storage, format_, alerts=alerts, since=start, until=end):
            if position == 0 and count and progress:
                click.echo(f"\r{count} {what} exported", nl=False, err=True)
            out.write(line + "\n")
            count += 1
    out.flush()
    click.echo(("\r" if progress else "") + f"{count} {what} exported", err=True)


def export_options(f: F) -> F:
    """``sqreen serve``'s ``--export URL`` and ``--export-format``."""
    f = click.option(
        "--export-format",
        cls=EnvOption,
        envvar="SQREEN_EXPORT_FORMAT",
        type=click.Choice(get_args(Format)),
        default="ecs",
        show_default=True,
        help="The documents jsonl+ destinations receive (OTLP logs carry ECS attributes) "
        "(env: SQREEN_EXPORT_FORMAT).",
    )(f)
    return click.option(
        "--export",
        "export_url",
        cls=EnvOption,
        envvar="SQREEN_EXPORT",
        metavar="URL",
        help="Forward every stored event and alert, at least once, to otlp+http(s)://HOST:PORT"
        "/v1/logs (OpenTelemetry logs), jsonl+http(s)://HOST/PATH or jsonl+tcp://HOST:PORT "
        "(JSON lines); resumes after a restart from a cursor in the database (env: "
        "SQREEN_EXPORT). See docs/export.md.",
    )(f)


def destination(url: str | None, format: str) -> Destination | None:
    """``--export``'s destination (None without one); a bad URL stops ``sqreen serve``."""
    if url is None:
        return None
    try:
        return parse_destination(url, format)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=named("--export")) from None


def forwarder(storage: Storage, target: Destination | None) -> Forwarder | None:
    """The forwarder of one collector process (None without ``--export``)."""
    return None if target is None else Forwarder(storage, target)
