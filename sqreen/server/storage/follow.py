"""Following the event store: the events stored after a point, each once, late ones included.

``sqreen events --follow`` prints what arrives, and the playbooks will read what arrived since
their last look; both need every matching event exactly once. Asking for the seqs above the
last one seen is not enough: with several collectors on one PostgreSQL database, a batch can
commit after a later batch that took higher seqs (by the milliseconds a transaction takes),
and a look between the two commits would skip it for good. A :class:`Follower` therefore
reads its last :data:`LOOKBACK` looks again and drops the seqs it has already returned.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from .base import EventStore
from .model import NO_FILTER, EventFilter, StoredEvent

__all__ = ["LOOKBACK", "PAGE", "Follower", "newer"]

#: Events read at once; more arrive in a second on a busy collector.
PAGE = 1000
#: How many earlier looks a follower reads again (a late commit lands within one look on
#: PostgreSQL; the second is margin). On SQLite, seqs commit in order and this costs a
#: re-read of the events of the last two looks.
LOOKBACK: Final = 2


def newer(store: EventStore, filters: EventFilter, last: int) -> list[StoredEvent]:
    """Every matching event stored after seq ``last``, newest first (a page is newest first,
    so more than a page is read page by page, back down to ``last``)."""
    found: list[StoredEvent] = []
    before = None
    while True:
        page = store.query_events(filters, after_seq=last, before_seq=before, limit=PAGE)
        found += page
        if len(page) < PAGE:
            return found
        before = page[-1].seq


class Follower:
    """The matching events stored after seq ``last``, a look at a time, each event once.

    Not thread-safe: one follower per reader. Its memory is bounded by the events of its last
    :data:`LOOKBACK` looks.
    """

    def __init__(
        self, store: EventStore, filters: EventFilter = NO_FILTER, *, last: int = 0
    ) -> None:
        self.store = store
        self.filters = filters
        self._floors = deque([last], maxlen=LOOKBACK + 1)
        self._seen: set[int] = set()

    @property
    def last(self) -> int:
        """The highest seq returned so far (or the starting one)."""
        return self._floors[-1]

    def poll(self) -> list[StoredEvent]:
        """The matching events not returned before, newest first, late commits included."""
        found = [
            e for e in newer(self.store, self.filters, self._floors[0]) if e.seq not in self._seen
        ]
        self._seen.update(e.seq for e in found)
        self._floors.append(max(self.last, found[0].seq if found else 0))
        self._seen = {seq for seq in self._seen if seq > self._floors[0]}
        return found
