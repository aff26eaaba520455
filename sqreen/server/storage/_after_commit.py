"""The playbooks' windows where hits are committed before they are counted (PostgreSQL's):
stored with the events, then, after the commit, what the log says was added read, what may
have reached a count counted, and only the keys that did held while the engine decides."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ._playbooks import HitValues, PlaybookQueries
from ._window_reads import (
    AddsTold,
    HorizonTold,
    MarkValues,
    ProbeValues,
    QuietKey,
    WindowKey,
    candidates_of,
)
from .model import Alert, Replacement, WindowWrite, to_us

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["AfterCommit"]


class AfterCommit(PlaybookQueries):
    """Mixed into :class:`~._sql.SqlStorage`: :class:`~._playbooks.PlaybookQueries` with
    what a dialect that counts after the commit (``_COUNT_AFTER_COMMIT``) needs."""

    def _insert_new_hits(self, cur: Cursor, hits: Sequence[HitValues]) -> None:
        """Store ``hits`` of events stored by this transaction (none of them is stored
        already: a dialect may skip the conflict check)."""
        self._insert_hits(cur, hits)

    def _read_adds(
        self,
        cur: Cursor,
        owner: object,
        others: AddsTold | None,
        horizon: HorizonTold | None,
    ) -> bool:
        """Once this process's hits are committed: what the log says the others added since
        its previous read for ``owner``; whether that is all (a dialect's business: False
        where there is no log). The read counts once :meth:`_adds_used` says so."""
        return False

    def _adds_used(self) -> None:
        """The windows were counted on what :meth:`_read_adds` read (a dialect's business)."""

    def store_hits(self, hits: Sequence[HitValues], added: Mapping[WindowKey, int]) -> bool:
        """In a step tied to the events' transaction (:mod:`._tied`), where hits are counted
        after their commit: store ``hits`` there (they commit with the events; ``added``:
        them counted per key), and return True; else do nothing and return False
        (:meth:`update_windows` stores them)."""
        if not self._COUNT_AFTER_COMMIT:
            return False
        tied = self._tied_write()
        if tied is None:
            return False
        with tied as cur:
            self._insert_new_hits(cur, hits)
            self._log_adds(cur, hits, added)
        return True

    def _count_cursor(self) -> AbstractContextManager[Cursor]:
        """Where :meth:`_count_after_commit` counts: a dialect's read of what is committed."""
        return self._write()

    def _count_after_commit(
        self,
        keys: Sequence[WindowKey],
        probes: Sequence[ProbeValues] | Callable[[bool], Sequence[ProbeValues]],
        decide: Callable[
            [dict[WindowKey, list[tuple[int, int, str | None]]], dict[QuietKey, int]], WindowWrite
        ],
        wanted: Callable[[WindowKey, dict[QuietKey, int]], bool] | None,
        counted: Callable[[dict[ProbeValues, int]], None] | None,
        on_replace: Callable[[Replacement], None] | None,
        marked: Callable[[dict[QuietKey, MarkValues]], None] | None,
        read: tuple[
            object,
            AddsTold | None,
            HorizonTold | None,
            tuple[int, Callable[[int, dict[WindowKey, int]], None]] | None,
        ] = (None, None, None, None),
    ) -> list[Alert]:
        """:meth:`update_windows` once its hits are committed (PostgreSQL's): read what the
        log says was added since (``read``: ``update_windows``'s owner, others, horizon and
        present; :meth:`_read_adds`), count what may have reached a count, outside any
        transaction; then, only when a key reached a probe's count, hold those keys and
        decide (:meth:`_decide_windows`), in a transaction.

        Every process commits its hits before counting them, so whichever commits last
        counts every hit committed before it: a threshold crossed by hits two collectors
        stored at once is seen by one of them at least, with no lock taken to count (a
        build that took no key lock at all had 3.8 % more events/s with the templates:
        ``bench/bench_ingest_ab.py --backend postgres --against``). Two
        that both see it take turns on the key, and the second reads the quiet time the
        first wrote. What this costs: a process that stops between the commit and its count
        (the runner tries a failed count once more) leaves its hits uncounted until their
        key's next hit, which counts them all, and a success an ``after`` rule waited for in
        that batch is not looked at again."""
        owner, others, horizon, present = read
        with self._count_cursor() as cur:
            fresh = self._read_adds(cur, owner, others, horizon)
            if not fresh and present is not None and horizon is not None:
                self._present_hits(cur, *present)
            counts = self._count_probes(cur, probes(fresh) if callable(probes) else probes)
        self._adds_used()
        if counted is not None:
            counted(counts)
        candidates = candidates_of(counts)
        if not candidates:  # (the engine has nothing to decide: told so, with no read)
            write = decide({}, {})
            if not (write.quiet or write.marks or write.alerts):
                return []
            with self._windows_write() as cur:  # (what it writes all the same, held)
                self._lock_windows(cur, sorted(keys))
                return self._store_write(cur, write, to_us(self.now()), on_replace)
        with self._windows_write() as cur:
            self._lock_windows(cur, sorted(candidates))
            now = to_us(self.now())
            return self._decide_windows(cur, candidates, now, decide, wanted, on_replace, marked)
