"""A batch of events made ready for the database before its transaction begins.

Everything Python can do for an insert (each event's row, the side tables' rows, the ids to
deduplicate) is done by :func:`prepare`, outside the write lock that other threads and
processes wait for; only SQL runs under it. Several prepared batches can then be written in
one transaction (:meth:`~._sql.SqlStorage.store_prepared`): the ingest pipeline does so with
the bodies that waited while it stored the ones before them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Protocol

from ..._wire import WireEvent
from ._rows import EventRecord, clean, event_record
from ._side_rows import index_rows
from .model import InsertResult, from_us

__all__ = ["PreparedEvents", "TiedStep", "prepare"]


class TiedStep(Protocol):
    """Work that commits with the events (:meth:`~._sql.SqlStorage.store_prepared`'s
    ``tied``): the playbooks' windows (SQLite) or hits (PostgreSQL), where each batch's
    transaction was followed by one of their own, a second turn at the write lock that every
    ``--workers`` process waits for.

    :meth:`run` is called in the events' transaction, after their rows, in a savepoint: what
    it raises rolls back what it wrote there and nothing else (the events are stored), and
    is logged. :meth:`undone` is called when :meth:`run` raised, and when the transaction
    fails after it returned: nothing it wrote is stored. Neither is called when the dialect
    does not tie, or when the batches are stored one by one after their
    transaction together failed: the caller then does the work after the commit, as
    without ``tied``."""

    def run(self, results: Sequence[InsertResult | Exception]) -> None:
        """``results``: each batch's, as :meth:`store_prepared` will return them."""

    def undone(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PreparedEvents:
    """The rows of one call's events (:meth:`~.base.EventStore.prepare_events`).

    ``rows`` holds the first event of each id, ``sides`` the flattened ``(position, key,
    value)`` rows of ``event_props`` and ``event_users`` for them; ``ids`` is every event's
    id, in the order given (a repeated id stores once)."""

    rows: list[EventRecord]
    sides: tuple[list[Any], list[Any]]
    ids: list[str]
    received_us: int
    #: Rows of ``login_places`` (:mod:`._places`), each after the position in ``rows`` of
    #: the event it belongs to: stored with that event, when it is new.
    places: list[tuple[Any, ...]] = field(default_factory=list)

    def result(self, seqs: Sequence[int | None]) -> InsertResult:
        """What storing ``rows`` with these seqs (None: stored before) means for the call."""
        by_id = dict(zip((row.id for row in self.rows), seqs, strict=True))
        # Aligned with the input: a seq for the first of each id stored, None for the rest.
        aligned = tuple(by_id.pop(id_, None) for id_ in self.ids)
        stored = len(seqs) - list(seqs).count(None)
        return InsertResult(stored, len(self.ids) - stored, aligned, from_us(self.received_us))


def prepare(
    events: Sequence[WireEvent],
    app: str | None,
    host: str | None,
    received_us: int,
    enrichment: Sequence[Mapping[str, Any]] | None,
    key_id: int,
    places: Sequence[tuple[Any, ...]] = (),
) -> PreparedEvents:
    """The rows of ``events`` (:class:`TypeError` or :class:`ValueError` when what an
    enricher added is not storable: before any transaction); ``places``, rows of
    ``login_places`` each after the position in ``events`` of its login."""
    app = None if app is None else clean(app)
    host = None if host is None else clean(host)
    extras = repeat(None) if enrichment is None else enrichment
    ids: list[str] = []
    unique: dict[str, tuple[EventRecord, WireEvent]] = {}
    for event, extra in zip(events, extras, strict=enrichment is not None):
        record = event_record(event, app, host, received_us, extra, key_id)
        ids.append(record.id)
        unique.setdefault(record.id, (record, event))
    rows = [record for record, _ in unique.values()]
    sides = index_rows(event for _, event in unique.values())
    if not places:
        return PreparedEvents(rows, sides, ids, received_us)
    # Each place after its event's row (the first of its id): stored when that one is.
    at_row = {id_: n for n, id_ in enumerate(unique)}
    placed = [
        (at_row[ids[place[0]]], *(clean(v) if isinstance(v, str) else v for v in place[1:]))
        for place in places
    ]
    return PreparedEvents(rows, sides, ids, received_us, placed)
