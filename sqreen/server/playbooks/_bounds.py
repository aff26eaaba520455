"""What a collector process remembers of the windows' counts, to count in SQL less often.

The store counts, for each key a batch checks, its hits (or distinct values) in each rule's
window (the prefilter of :meth:`~..storage.ControlStore.update_windows`). Most keys are far
from any threshold, and ask again with their next hit. :class:`Bounds` remembers each count
with the hits this process has added since (:meth:`Bounds.advance`), which bounds the count
from above: the window has moved on (old hits only leave it) and nobody else wrote (the
store says so: on SQLite, ``PRAGMA data_version`` is unchanged since this process's
previous batch; on PostgreSQL no other's row in its log since its previous read, or
all they added is told by key, :mod:`~..storage._pg_log`). A key whose bound is below a rule's
threshold cannot fire on it: its probe is left out (:meth:`~._engine.Engine.probes`), and
the answer is the same as the count's. Anything else (another process wrote, the clock went
back, too many keys) forgets them all.

A key never counted has a bound too, once every hit in its window is one this process
added: :class:`Bounds` also counts the hits it added per key since it last forgot, and
knows the newest time of any hit it did not add (read in the transaction that forgot:
:meth:`~..storage.ControlStore.update_windows`'s ``horizon``, the newest hit then, or none
in an empty table; else the time it forgot). A rule whose window begins after that time
reads only hits this process added: fewer than it counted. Without this, each key a
batch met for the first time (most of a typical traffic's IPs and users) was counted in
SQL: 1.7 µs an event of the typical mix (bench_playbooks_ab.py).

When the windows then hold few hits (a new collector, a second worker's first batch, a
quiet store), the store also tells them per key (:meth:`Bounds.present`): they count as
added, and the time is that of the longest window's start rather than the newest hit's.
Without it, a process that forgot because another one had written (every ``--workers 2``
at its start) counted each new key in SQL until the longest window (an hour) had passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ._hits import StreamKey

__all__ = ["Bounds"]

#: Keys remembered at most (then all forgotten: they are counted again).
MAX_KEYS: Final = 200_000

#: A count's rule, as a probe names it: (window µs, distinct values?); or an alert
#: playbook's id, for its count from its mark on the key (:meth:`Bounds.fired`).
Rule = tuple[int, bool] | str
#: Newer than any hit: nothing is known of the hits this process did not add.
UNKNOWN: Final = 1 << 62


class Bounds:
    """Upper bounds of the hits (or distinct values) each key has in each rule's window."""

    def __init__(self, windows: frozenset[tuple[int, bool]] | None = None) -> None:
        #: The rules' (window µs, distinct?): a count since another time is not kept (a
        #: probe from an alert playbook's mark); None: every count is.
        self._windows = windows
        self._bounds: dict[StreamKey, dict[Rule, int]] = {}
        self._now = 0  # µs: the latest time a count or a batch was made at
        self._added: dict[StreamKey, int] = {}  # hits added since all was last forgotten
        self._others = UNKNOWN  # µs: no hit outside ``_added`` is newer than this
        self._horizon: int | None = UNKNOWN  # told by the store for the next forgetting
        #: µs: the newest hit the store had when it last told a horizon (the hits other
        #: processes added since are in ``_added``, until a forgetting drops them).
        self._newest = -UNKNOWN
        #: Told by the store for the next forgetting: a time, and every hit it held at that
        #: time or later, per key.
        self._present: tuple[int, Mapping[StreamKey, int]] | None = None

    @property
    def known(self) -> Mapping[StreamKey, Mapping[Rule, int]]:
        """Per key, (window µs, distinct?) -> at most that many, and alert playbook -> at
        most that many from its mark (for :meth:`Engine.probes`)."""
        return self._bounds

    @property
    def unseen(self) -> tuple[Mapping[StreamKey, int], int]:
        """(hits added per key, a time): a window beginning after that time holds only the
        hits added (for :meth:`Engine.probes`)."""
        return self._added, self._others

    def horizon(self, newest: int | None) -> None:
        """The store's newest hit before this batch's (None: none), read in the transaction
        of a batch after somebody else wrote: what the next :meth:`advance` forgets from,
        and what any later forgetting does (the hits other processes added, told by the
        store's log and kept in ``_added``, are no newer than that)."""
        self._horizon = newest
        if newest is not None:
            self._newest = max(self._newest, newest)

    def present(self, after: int, hits: Mapping[StreamKey, int]) -> None:
        """Every hit at ``after`` or later the store held before this batch's, per key, read
        in the transaction of a batch that was not fresh (a table of few hits in the
        windows): the next :meth:`advance` forgets them as if this process had added them,
        and the hits not added as older than ``after``."""
        self._present = (after, hits)

    def advance(self, added: Mapping[StreamKey, int], now_us: int, fresh: bool) -> None:
        """A batch stored ``added`` hits per key (told in its transaction, after they were
        stored: :attr:`~._engine.Plan.counts`); ``fresh``: nobody else wrote since this
        process's previous batch."""
        bounds, seen = self._bounds, self._added
        if not fresh or now_us < self._now or len(bounds) > MAX_KEYS or len(seen) > MAX_KEYS:
            bounds.clear()
            seen.clear()
            # The hits not added from now on: none newer than the store's newest before this
            # batch's (when it said so, in this transaction); else than any time a batch was
            # made at (a hit is never newer than its batch).
            told, present = self._horizon, self._present
            if told != UNKNOWN:
                self._others = -UNKNOWN if told is None else told
                if present is not None:  # and the newer hits are known by key
                    self._others = min(self._others, present[0] - 1)
                    seen.update(present[1])
            else:
                # Forgotten with them: the hits other processes added (the log told them),
                # no newer than the store's newest hit when it last said.
                self._others = max(self._others, self._now, now_us, self._newest)
        self._horizon, self._present = UNKNOWN, None
        self._now = now_us
        self._add(added)

    def others(self, added: Mapping[StreamKey, int]) -> None:
        """Other processes stored ``added`` hits per key since this one's previous batch,
        and nothing else (the store's log of every windows' transaction says so): they
        count as this process's own, and what it remembers still holds."""
        self._add(added)

    def _add(self, added: Mapping[StreamKey, int]) -> None:
        bounds, seen = self._bounds, self._added
        get = seen.get
        for key, n in added.items():
            seen[key] = get(key, 0) + n
            known = bounds.get(key)
            if known:
                for rule in known:
                    known[rule] += n  # each hit adds at most one to a count of distinct values

    def fired(self, left: Mapping[StreamKey, Mapping[str, int]]) -> None:
        """Alert playbooks fired on these keys (in a transaction that committed after this
        process's latest :meth:`advance`), leaving so many hits after their marks: their
        counts from there, as long as what this process remembers holds."""
        for key, counts in left.items():
            self._bounds.setdefault(key, {}).update(counts)

    def counted(self, counts: Mapping[tuple[str, str, int, int, bool], int]) -> None:
        """The store counted these probes (in the same transaction, hits included)."""
        now, windows = self._now, self._windows
        for (stream, key, since, _, distinct), n in counts.items():
            rule = (now - since, distinct)
            if windows is None or rule in windows:
                self._bounds.setdefault((stream, key), {})[rule] = n
