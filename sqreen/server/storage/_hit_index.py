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
#: Characters a hit's text costs beside its own (the tuple, the list's slot, its ints): what
#: :attr:`HitIndex.text` adds for each, so that it bounds the memory held (measured: 200-480
#: bytes a hit with keys of ordinary length).
HIT_COST: Final = 100


class HitIndex:
    """Every hit of ``window_log`` up to id :attr:`last`, by (stream, key)."""

    def __init__(self) -> None:
        self.by_key: dict[WindowKey, list[KeyHit]] = {}
        self.last = 0  # the newest row folded in (0: none)
        #: That row's (stream, key, time, seq): a restore may give its id to another row.
        self.last_hit: tuple[str, str, int, int] | None = None
        #: What they cost, in characters: each new key's text, each value's, and HIT_COST a
        #: hit. An identifier of 256 characters that NFKC folds into 4 606 costs as much.
        self.text = 0
        self.newest: int | None = None  # the newest hit's time µs, None before any

    @property
    def held(self) -> int:
        """The hits held."""
        return sum(len(hits) for hits in self.by_key.values())

    def fold(self, rows: Iterable[LogRow]) -> None:
        """Add rows of ``window_log`` newer than :attr:`last`, in id order."""
        by_key = self.by_key
        text = 0
        newest = self.newest
        last, last_hit = self.last, self.last_hit
        for id_, stream, key, ts, seq, value in rows:
            if id_ <= last:
                continue
            last, last_hit = id_, (stream, key, ts, seq)
            hits = by_key.get((stream, key))
            hit = (ts, seq, value)
            if hits is None:
                # A handful of streams: each key holds one of their texts.
                by_key[(intern(stream), key)] = [hit]
                text += len(key)
            elif hits[-1][:2] <= hit[:2]:
                hits.append(hit)
            else:  # delivered late: in its place (by time and seq only, as values may be None)
                hits.insert(bisect_left(hits, (ts, seq)), hit)
            text += HIT_COST if value is None else HIT_COST + len(value)
            if newest is None or ts > newest:
                newest = ts
        self.last, self.last_hit, self.newest = last, last_hit, newest
        self.text += text

    def prune(self, before: int) -> None:
        """Forget hits older than ``before`` (µs): those the table's purge deletes."""
        text = 0
        for key in list(self.by_key):
            hits = self.by_key[key]
            if hits[0][0] < before:
                hits = hits[bisect_left(hits, (before,)) :]
                if not hits:
                    del self.by_key[key]
                    continue
                self.by_key[key] = hits
            text += len(key[1]) + sum(HIT_COST + len(h[2] or "") for h in hits)
        self.text = text

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
        per key, when they number at most PRESENT_MAX."""
        counts: dict[WindowKey, int] = {}
        total = 0
        for key, hits in self.by_key.items():
            n = len(hits) - bisect_left(hits, (after,))
            if n:
                counts[key] = n
                total += n
                if total > PRESENT_MAX:
                    return
        tell(after, counts)
