"""Stored events and alerts as export documents, read page by page.

An export walks the database in keyset pages (``seq`` for events, ``id`` for alerts, oldest
first): its memory is one page whatever the range, and a page is read only when the one
before it was written out (the readers are generators).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, Final, Literal

from ..storage import NO_FILTER, Alert, EventFilter, Storage, StoredEvent
from .ecs import ecs_alert, ecs_event
from .ocsf import ocsf_alert, ocsf_event

__all__ = [
    "FORMATS",
    "PAGE",
    "Format",
    "Kind",
    "Unencodable",
    "alert_pages",
    "document",
    "event_pages",
]

Format = Literal["ecs", "ocsf", "jsonl"]
Kind = Literal["event", "alert"]
FORMATS: Final[tuple[Format, ...]] = ("ecs", "ocsf", "jsonl")
#: Records a page (the storage's own cap on a scan).
PAGE: Final = 1000


class Unencodable(Exception):
    """Record ``index`` of a batch could not be made into what is sent (its mapping or its
    encoding raised ``cause``): nothing of the batch was sent. The forwarder sets the record
    aside and sends the others; the cause is a bug, or data the encoding cannot hold."""

    def __init__(self, index: int, cause: Exception) -> None:
        text = str(cause)[:200]
        super().__init__(f"{type(cause).__name__}: {text}")
        self.index = index
        self.cause = cause


Mapper = Callable[[Mapping[str, Any]], dict[str, Any]]
_MAPPERS: Final[dict[tuple[Format, Kind], Mapper]] = {
    ("ecs", "event"): ecs_event,
    ("ecs", "alert"): ecs_alert,
    ("ocsf", "event"): ocsf_event,
    ("ocsf", "alert"): ocsf_alert,
    ("jsonl", "event"): dict,
    ("jsonl", "alert"): dict,
}


def document(kind: Kind, record: StoredEvent | Alert, format: Format) -> dict[str, Any]:
    """``record``'s document in ``format`` (``jsonl``: as ``sqreen events --json`` prints)."""
    return _MAPPERS[format, kind](record.to_json())


def event_pages(
    storage: Storage, filters: EventFilter = NO_FILTER, *, after: int = 0, page: int = PAGE
) -> Iterator[list[StoredEvent]]:
    """The matching events stored after seq ``after``, oldest first, a page at a time."""
    while found := storage.scan_events(filters, after_seq=after, limit=page):
        yield found
        if len(found) < page:  # the last page: no need to ask for an empty one
            return
        after = found[-1].seq


def alert_pages(
    storage: Storage,
    *,
    after: int = 0,
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = PAGE,
) -> Iterator[list[Alert]]:
    """The alerts stored after id ``after`` and made in [since, until), oldest first."""
    while found := storage.scan_alerts(after_id=after, limit=page):
        after = found[-1].id
        kept = [
            a
            for a in found
            if (since is None or a.created_at >= since) and (until is None or a.created_at < until)
        ]
        if kept:
            yield kept
        if len(found) < page:
            return
