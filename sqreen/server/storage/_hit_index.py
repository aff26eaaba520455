"""The windows' hits by key, in a process's memory: what SQLite's windows count from while
they are few (:mod:`._hit_log`).

On SQLite the hits are rows of ``window_log``, in the order they were written (its ids).
Every process reads the rows written since it last did at the start of each windows'
transaction, under the write lock, so that it holds every hit written before its own; it
counts and reads a key's hits here, where a table ordered by key wrote a page for nearly
every hit once it was large (half of what the six templates cost ingest, measured:
``bench_playbooks_ab.py --hits``).

A key's hits are kept sorted by (time, seq): what :func:`~._window_reads.count_probes`,
:func:`~._window_reads.fetch_hits` and :func:`~._window_reads.present_hits` read of the table,
answered from here with the same results.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from sys import intern
from typing import Final

from ._window_reads import FETCH_MAX, PRESENT_MAX, ProbeValues, WindowKey

__all__ = ["HitIndex"]

#: A hit as a key holds it: (time µs, seq, distinct value).
KeyHit = tuple[int, int, str | None]
#: A row of ``window_log``: (id, stream, key, time µs, seq, value).
LogRow = tuple[int, str, str, int, int, str | None]
#: Hits older than every window are dropped in a pass over every key, once this many were
#: added since the last pass, or PRUNE_AFTER µs of time have passed.
PRUNE_EVERY: Final = 50_000
PRUNE_AFTER: Final = 600_000_000


class HitIndex:
    """Every hit of ``window_log`` up to id :attr:`last`, by (stream, key)."""

    def __init__(self) -> None:
        self.by_key: dict[WindowKey, list[KeyHit]] = {}
        self.last = 0  # the newest row folded in (0: none)
        #: That row's (stream, key, time, seq): a restore may give its id to another row.
        self.last_hit: tuple[str, str, int, int] | None = None
        self.held = 0  # hits held
        self.newest: int | None = None  # the newest hit's time µs, None before any
        self._since_prune = 0
        self._pruned_at: int | None = None  # the time the last pass dropped hits before

    def fold(self, rows: Iterable[LogRow]) -> None:
        """Add rows of ``window_log`` newer than :attr:`last`, in id order."""
        by_key = self.by_key
        added = 0
        newest = self.newest
        last, last_hit = self.last, self.last_hit
        for id_, stream, key, ts, seq, value in rows:
            if id_ <= last:
                continue
            last, last_hit = id_, (stream, key, ts, seq)
            hits = by_key.get((stream, key))
            stream = intern(stream)  # a handful of streams: each key's text holds one
            hit = (ts, seq, value)
            if hits is None:
                by_key[(stream, key)] = [hit]
            elif hits[-1][:2] < hit[:2]:
                hits.append(hit)
            else:  # delivered late: in its place, once (as the table's primary key kept it)
                at = bisect_left(hits, (ts, seq))
                if at < len(hits) and hits[at][:2] == (ts, seq):
                    continue
                hits.insert(at, hit)
            added += 1
            if newest is None or ts > newest:
                newest = ts
        self.last, self.last_hit, self.newest = last, last_hit, newest
        self.held += added
        self._since_prune += added

    def prune(self, before: int) -> None:
        """Forget hits older than ``before`` (µs), which no window reads any more, when
        enough hits were added or enough time passed since the last pass."""
        if self._pruned_at is None:
            self._pruned_at = before
        if self._since_prune < PRUNE_EVERY and before - self._pruned_at < PRUNE_AFTER:
            return
        self._since_prune, self._pruned_at = 0, before
        held = 0
        for key in list(self.by_key):
            hits = self.by_key[key]
            if hits[0][0] < before:
                hits = [h for h in hits if h[0] >= before]
                if not hits:
                    del self.by_key[key]
                    continue
                self.by_key[key] = hits
            held += len(hits)
        self.held = held

    def count(self, probes: Iterable[ProbeValues]) -> dict[ProbeValues, int]:
        """What :func:`~._window_reads.count_probes` counts in the table."""
        out: dict[ProbeValues, int] = {}
        for probe in probes:
            stream, key, since, _, distinct = probe
            hits = self.by_key.get((stream, key), [])
            start = bisect_left(hits, (since,))  # the first hit at ``since`` or later
            if distinct:
                out[probe] = len({h[2] for h in hits[start:]} - {None})
            else:
                out[probe] = len(hits) - start
        return out

    def fetch(self, wanted: dict[WindowKey, int]) -> dict[WindowKey, list[KeyHit]]:
        """What :func:`~._window_reads.fetch_hits` reads: each key's newest FETCH_MAX hits
        since its time, oldest first."""
        out: dict[WindowKey, list[KeyHit]] = {}
        for key, since in sorted(wanted.items()):
            hits = self.by_key.get(key, [])
            out[key] = hits[max(bisect_left(hits, (since,)), len(hits) - FETCH_MAX) :]
        return out

    def present(self, after: int, tell: Callable[[int, dict[WindowKey, int]], None]) -> None:
        """What :func:`~._window_reads.present_hits` tells: the hits at ``after`` or later
        per key, when they number at most PRESENT_MAX (known without a pass when every hit
        held does)."""
        if self.held > PRESENT_MAX:
            return
        counts: dict[WindowKey, int] = {}
        for key, hits in self.by_key.items():
            n = sum(1 for h in hits if h[0] >= after)
            if n:
                counts[key] = n
        if sum(counts.values()) <= PRESENT_MAX:
            tell(after, counts)
