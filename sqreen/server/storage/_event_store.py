"""The event half of the storage seam (:class:`EventStore`), and the clock both halves read
(:class:`Clocked`). Both are imported through :mod:`.base`, which says what the seam is."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from ..._wire import WireEvent
from ._places import PlaceAsk, PlaceRow
from ._prepared import PreparedEvents, TiedStep
from .model import (
    NO_FILTER,
    EventFilter,
    InsertResult,
    StoredEvent,
)

__all__ = ["Clocked", "EventStore"]


class Clocked(Protocol):
    def now(self) -> datetime:
        """The time by this storage's clock: what it stamps writes with and measures expiry
        and retention against (``datetime.now(UTC)`` unless a test gave another)."""
        ...


class EventStore(Clocked, Protocol):
    """Events: append-only, deduplicated, committed before the sender is answered.

    What it guarantees:

    - **Append-only.** A stored event never changes; it leaves only through
      :meth:`purge_older_than` (retention, by the time it was received).
    - **Deduplicated by id, per API key.** An event whose ``id`` is already stored under the
      same key (``key_id``), by any call of any process, or repeated earlier in the same
      call, is not stored again; the result says which events were new, so that a retried
      batch counts (and triggers) nothing twice. The same id sent with another key is
      another event: a key cannot pre-empt (and so suppress) the events of another.
    - **Durable on return.** :meth:`insert_events` is one transaction, committed before it
      returns: the collector replies to an SDK only after that.
    - **seq.** Each stored event gets a unique positive ``seq``, increasing in commit order
      within one process (and across processes on SQLite, one writer at a time). On
      PostgreSQL with several collector processes, a lower seq can commit after a higher
      one (by the length of a transaction): a reader that follows new events must read again
      a little below its last seq (:class:`~.follow.Follower` does).
    - **Reads see committed events only**, newest (highest seq) first where they are ordered.
    """

    def insert_events(
        self,
        events: Sequence[WireEvent],
        *,
        app: str | None = None,
        host: str | None = None,
        received_at: datetime | None = None,
        enrichment: Sequence[Mapping[str, Any]] | None = None,
        key_id: int = 0,
    ) -> InsertResult:
        """Store validated events (``sqreen._wire.parse_event``) sent with API key ``key_id``
        (0: none, as for an import) in one transaction.

        ``received_at`` defaults to :meth:`now`. ``enrichment``, aligned with ``events``, holds
        the fields the ingest pipeline's enrichers added to each (JSON values, stored with the
        event: :attr:`~.model.StoredEvent.enrichment`).
        """
        ...

    def prepare_events(
        self,
        events: Sequence[WireEvent],
        *,
        app: str | None = None,
        host: str | None = None,
        received_at: datetime | None = None,
        enrichment: Sequence[Mapping[str, Any]] | None = None,
        key_id: int = 0,
        places: Sequence[tuple[Any, ...]] = (),
    ) -> PreparedEvents:
        """:meth:`insert_events`' first half, no database involved: the rows of ``events``
        (:class:`TypeError` or :class:`ValueError` when ``enrichment`` is not storable),
        for :meth:`store_prepared`. ``places``: impossible travel's placed logins, each
        ``(position in events, *row)`` with the row as :class:`~._places.PlaceRow` holds
        it, stored with their events when those are new.

        .. versionadded:: 0.1 (the ingest pipeline's grouped writes)
        """
        ...

    def store_prepared(
        self, batches: Sequence[PreparedEvents], tied: TiedStep | None = None
    ) -> list[InsertResult | Exception]:
        """:meth:`insert_events`' second half for several batches: each one's result, or the
        exception that stopped it, in order. Each batch is stored whole or not at all; a
        batch's failure is its own (the others are stored), and every result is committed
        on return. The batches may share one transaction.

        ``tied``: where the dialect ties, run in the transaction that stores all
        the batches, after their rows, so that its writes commit with theirs (one commit,
        one turn at the write lock): see :class:`TiedStep`.

        .. versionadded:: 0.1
        """
        ...

    def query_events(
        self,
        filters: EventFilter = NO_FILTER,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 50,
        scan: int | None = None,
    ) -> list[StoredEvent]:
        """Matching events, newest (highest ``seq``) first; page with ``before_seq``. With
        ``scan`` and a user or property filter, only the newest ``scan`` events of that
        filter's first pair are looked at (a bounded read for a key with a long history)."""
        ...

    def scan_events(
        self, filters: EventFilter = NO_FILTER, *, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        """Matching events stored after ``after_seq``, oldest first (a walk, page by page)."""
        ...

    def scan_events_by_time(
        self,
        filters: EventFilter = NO_FILTER,
        *,
        after: tuple[datetime, int] | None = None,
        limit: int = 1000,
    ) -> list[StoredEvent]:
        """Matching events in the order of their times, then of their seqs: a walk, page by
        page, where ``after`` is the time and seq of the last event of the previous page (the
        backtest's, which replays events as they happened, whenever they were stored)."""
        ...

    def nearby_places(self, asks: Sequence[PlaceAsk]) -> list[PlaceRow]:
        """Impossible travel's stored placed logins around each ask's (see
        :class:`~._places.PlaceAsk`), in one read.

        .. versionadded:: 0.1
        """
        ...

    def get_event(self, event_id: str, *, seq: int | None = None) -> StoredEvent | None:
        """The event of this id (ids are unique per key: the first stored of them, or the
        one of ``seq``)."""
        ...

    def events_with_id(self, event_id: str) -> list[StoredEvent]:
        """Every stored event of this id, oldest first (one a key at most; 64 at most): what
        decides which is whose is the caller's."""
        ...

    def stored_ids(self, ids: Collection[str]) -> set[str]:
        """Which of ``ids`` (at most 1000) an event stored under any API key has (ids are
        unique per key: an import, key 0, skips what the SDKs sent already).

        .. versionadded:: 0.1
        """
        ...

    def events_by_seq(self, seqs: Collection[int]) -> list[StoredEvent]:
        """The stored events of these seqs (at most 1000: :class:`ValueError` beyond), oldest
        first; a seq no longer stored (retention) is missing from the list.

        .. versionadded:: 0.1 (for the alerts of playbooks)
        """
        ...

    def count_events(self, filters: EventFilter = NO_FILTER) -> int: ...

    def count_by(
        self,
        field: str,
        filters: EventFilter = NO_FILTER,
        limit: int = 10,
        *,
        newest: int | None = None,
    ) -> list[tuple[str | None, int]]:
        """The most frequent values of ``field`` among matching events, most frequent first.

        ``field`` is ``name``, ``ip``, ``app``, ``host``, ``user.<key>`` or
        ``properties.<key>``; anything else raises :class:`ValueError`. With ``newest``, only
        the newest ``newest`` matching events (by ``seq``) are counted: a bounded cost.
        """
        ...

    def histogram(
        self,
        filters: EventFilter = NO_FILTER,
        buckets: int = 60,
        *,
        newest: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[tuple[datetime, int]]:
        """Counts of matching events in ``buckets`` equal slices of [start, end).

        ``start`` and ``end`` default to the filter's ``since`` and ``until``; ``end`` then to
        now, ``start`` to the oldest matching event (or an hour before ``end``). Events outside
        [start, end) are not counted. With ``newest``, only the newest ``newest`` matching
        events (by ``seq``; by time for a filter on time alone) are counted.
        """
        ...

    def sample_times(self, filters: EventFilter = NO_FILTER, *, newest: int) -> list[int]:
        """The times (µs since the epoch) of the newest ``newest`` matching events (by
        ``seq``; by time for a filter on time alone): what a bounded :meth:`histogram` counts
        and :meth:`span` spans, read once for both (:func:`~._queries.span_of`,
        :func:`~._queries.histogram_of`).

        .. versionadded:: 0.1 (for the Event Explorer)
        """
        ...

    def span(
        self, filters: EventFilter = NO_FILTER, *, newest: int
    ) -> tuple[int, datetime | None, datetime | None]:
        """How many of the newest ``newest`` matching events there are (what a bounded
        :meth:`histogram` or :meth:`count_by` covers), and the earliest and the latest of
        their times (whatever order they were stored in).

        .. versionadded:: 0.1 (for the Event Explorer)
        """
        ...

    def purge_older_than(self, days: float) -> int:
        """Delete events received (``received_at``) more than ``days`` before :meth:`now`;
        return how many (in chunks of transactions: a purge never holds the write lock for
        long). Never by the event's own time: an SDK with its clock years behind would see
        its events, acknowledged a moment before, purged at the next run."""
        ...
