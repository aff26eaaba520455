"""The playbooks' share of storage: hits counted in windows, quiet times, marks, alerts,
blocks.

:meth:`PlaybookQueries.update_windows` is the one place where playbooks write. On SQLite, in
one transaction (the only writer: the events', :mod:`._tied`), it stores the batch's hits,
counts in SQL which keys have enough of them to fire (most have not: they cost no Python
work), hands the hits of the others to the engine, and writes back what it decided: quiet
times, alert playbooks' marks, alerts and blocks. On PostgreSQL the hits commit first (with
the events), are counted after, and only the keys that reached a count are held (advisory
locks taken in key order, so two processes take turns on a key and never deadlock) while
the engine decides (:meth:`~._after_commit.AfterCommit._count_after_commit`), and a log read
by snapshot tells each collector what the others added, so that it counts in SQL only what
may have reached a count (:mod:`._pg_log`). A block asked for a
network or a user that an active block already covers extends that one rather than adding
a second (:meth:`~._blocks.BlockQueries._block_for`, as for a block made by hand).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from ._alert_store import AlertQueries
from ._parts import Columns
from ._window_reads import (
    WINDOW_CHUNK,
    AddsTold,
    HorizonTold,
    MarkValues,
    ProbeValues,
    QuietKey,
    WindowKey,
    candidates_of,
    count_probes,
    fetch_hits,
    present_hits,
    quiet_times,
    read_marks,
)
from .model import Alert, Replacement, WindowWrite, to_us

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["WINDOW_CHUNK", "HitValues", "PlaybookQueries"]

#: Hits a statement (five parameters each).
HIT_CHUNK: Final = 2000
#: The columns the windows' transaction writes (:meth:`~._parts.SqlPart._insert`).
HIT_COLUMNS: Final[Columns] = (
    ("stream", "text"),
    ("key", "text"),
    ("ts", "int8"),
    ("seq", "int8"),
    ("value", "text"),
)
QUIET_COLUMNS: Final[Columns] = (("playbook", "text"), ("key", "text"), ("until_at", "int8"))
MARK_COLUMNS: Final[Columns] = (
    ("playbook", "text"),
    ("key", "text"),
    ("ts", "int8"),
    ("seq", "int8"),
)
#: Old hits deleted a transaction at most (ingest writes between two).
PURGE_CHUNK: Final = 20_000
#: How long (µs) a process's rows of the windows' log keep their counts by key after it
#: last saw another connection commit.
LOG_COUNTS_FOR: Final = 60_000_000
#: How long (µs) rows of the windows' log are kept: each is read by the other processes at
#: their next batch; one idle longer finds the gap and counts again.
LOG_KEPT: Final = 120_000_000
#: How the quiet times and marks are written: a quiet time replaced, a mark only moved on,
#: its time and its seq each to the greater (``_hits.merged_marks``).
QUIET_UPSERT: Final = " ON CONFLICT (playbook, key) DO UPDATE SET until_at = excluded.until_at"
MARK_UPSERT: Final = (
    " ON CONFLICT (playbook, key) DO UPDATE SET"
    " ts = CASE WHEN excluded.ts > playbook_marks.ts THEN excluded.ts ELSE playbook_marks.ts END,"
    " seq = CASE WHEN excluded.seq > playbook_marks.seq THEN excluded.seq"
    " ELSE playbook_marks.seq END"
)


#: A hit as stored: (stream, key, time µs, seq, distinct value).
HitValues = tuple[str, str, int, int, str | None]


class PlaybookQueries(AlertQueries):
    """Mixed into :class:`~._sql.SqlStorage`."""

    #: What :meth:`_windows_version` said at the last :meth:`update_windows` that committed,
    #: for whom, and the last row of ``window_writes`` it had read or written then.
    _windows_seen: tuple[object, object, int | None] | None = None
    #: Until when (µs) its rows of ``window_writes`` say what they added by key: while
    #: another connection commits now and then. Alone, a row says only that hits were added
    #: (a few bytes, where the counts of an attack's 500 keys cost 1 µs an event to write).
    _log_counts_until: int = 0

    #: Where the hits are (SQLite: ``window_log``, :mod:`._hit_log`).
    _HITS_TABLE = "window_hits"
    #: Whether hits are committed before they are counted, and only the keys that may fire
    #: are held (PostgreSQL: :meth:`~._after_commit.AfterCommit._count_after_commit`);
    #: else (SQLite, where the transaction is the only writer) stored, counted and decided
    #: on in one transaction.
    _COUNT_AFTER_COMMIT = False

    def _windows_write(self) -> AbstractContextManager[Cursor]:
        """The transaction of :meth:`update_windows`: the events' own, in a step tied to it
        (:mod:`._tied`), else one of its own (a dialect may count it apart)."""
        return self._tied_write() or self._write()

    def _tied_undone(self) -> None:
        # The windows as an update_windows in the step left them are not what is stored.
        self._windows_seen = None
        super()._tied_undone()

    def _lock_windows(self, cur: Cursor, keys: Sequence[WindowKey]) -> None:
        """Hold ``keys`` for the transaction (a dialect's business: nothing to do where the
        transaction is the only writer, as in SQLite)."""

    def _insert_hits(self, cur: Cursor, hits: Sequence[HitValues]) -> None:
        """Store ``hits`` (a dialect may do better than :meth:`~._parts.SqlPart._insert`)."""
        self._insert(
            cur,
            self._HITS_TABLE,
            HIT_COLUMNS,
            hits,
            " ON CONFLICT (stream, key, ts, seq) DO NOTHING",
            HIT_CHUNK,
        )

    def _log_adds(
        self, cur: Cursor, hits: Sequence[HitValues], added: Mapping[WindowKey, int] | None
    ) -> None:
        """Where hits are counted after their commit: say in the log what this transaction
        adds per key (``added``: ``hits`` counted so, when the caller has it; a dialect's
        business: PostgreSQL's :mod:`._pg_log`)."""

    def _count_after_commit(self, *args: Any, **kwargs: Any) -> list[Alert]:
        """:meth:`update_windows` once its hits are committed, where the dialect counts
        after the commit (:meth:`~._after_commit.AfterCommit._count_after_commit`)."""
        raise NotImplementedError

    def _windows_begin(self, cur: Cursor) -> None:
        """At the start of the windows' transaction, before any hit is read (a dialect's
        business; SQLite's reads the hits written since its previous one)."""

    def _newest_hit(self, cur: Cursor) -> int | None:
        """The time (µs) of the newest hit stored, or a later time; None when there is none."""
        return cur.execute(f"SELECT max(ts) FROM {self._HITS_TABLE}").fetchone()[0]  # type: ignore[no-any-return]

    def _present_hits(
        self, cur: Cursor, after: int, tell: Callable[[int, dict[WindowKey, int]], None]
    ) -> None:
        present_hits(cur, after, tell, self._HITS_TABLE)

    def _count_probes(self, cur: Cursor, probes: Sequence[ProbeValues]) -> dict[ProbeValues, int]:
        return count_probes(cur, probes, self._ARRAYS, self._HITS_TABLE)

    def _fetch_hits(
        self, cur: Cursor, wanted: dict[WindowKey, int]
    ) -> dict[WindowKey, list[tuple[int, int, str | None]]]:
        return fetch_hits(cur, wanted, self._HITS_TABLE)

    def _purge_hits(self, cutoff: int) -> int:
        """Delete the hits older than ``cutoff`` (µs), in chunks (ingest writes in between);
        how many went."""
        return self._delete_chunks(
            f"DELETE FROM {self._HITS_TABLE} WHERE (stream, key, ts, seq) IN ("
            f" SELECT stream, key, ts, seq FROM {self._HITS_TABLE} WHERE ts < ? LIMIT ?)",
            (cutoff,),
            PURGE_CHUNK,
        )

    def _purge_writes(self, cur: Cursor, before: int) -> None:
        """Delete the log's rows written before ``before`` (µs), those every process has
        read by now (one that has not finds the gap and counts again)."""
        # In id order, which is the order of their times (SQLite); never the newest, so
        # that no id is given twice.
        cur.execute(
            "DELETE FROM window_writes WHERE id < coalesce((SELECT min(id) FROM "
            "window_writes WHERE at >= ?), (SELECT max(id) FROM window_writes))",
            (before,),
        )

    def _windows_version(self, cur: Cursor) -> object | None:
        """A value that changes whenever another connection commits, read inside the
        transaction (a dialect's business; None where there is none, as on PostgreSQL,
        which reads its own log by snapshot after the commit: :mod:`._pg_log`)."""
        return None

    def _log_writes(
        self, cur: Cursor, counts: Mapping[WindowKey, int] | None, at: int
    ) -> int | None:
        """Append a row to ``window_writes`` for this transaction: the hits it adds per key,
        or (None) only that it adds some; return the row's id (None where the dialect keeps
        no log so: PostgreSQL, whose ids are not in commit order, logs by transaction id,
        :mod:`._pg_log`)."""
        return None

    def _writes_since(self, cur: Cursor, last: int) -> dict[WindowKey, int] | None:
        """The hits per key the rows of ``window_writes`` after ``last`` added, or None when
        they cannot say it all (a row purged since, a row without its counts, no log)."""
        return None

    def update_windows(
        self,
        keys: Sequence[WindowKey],
        hits: Sequence[HitValues],
        probes: Sequence[ProbeValues] | Callable[[bool], Sequence[ProbeValues]],
        decide: Callable[
            [dict[WindowKey, list[tuple[int, int, str | None]]], dict[QuietKey, int]], WindowWrite
        ],
        wanted: Callable[[WindowKey, dict[QuietKey, int]], bool] | None = None,
        *,
        owner: object = None,
        counted: Callable[[dict[ProbeValues, int]], None] | None = None,
        horizon: HorizonTold | None = None,
        added: Mapping[WindowKey, int] | None = None,
        others: AddsTold | None = None,
        present: tuple[int, Callable[[int, dict[WindowKey, int]], None]] | None = None,
        on_replace: Callable[[Replacement], None] | None = None,
        marked: Callable[[dict[QuietKey, MarkValues]], None] | None = None,
        hits_stored: bool = False,
    ) -> list[Alert]:
        """In one transaction, with ``keys`` held: store ``hits``; count, in SQL, which keys
        have enough hits for one of ``probes``; read until when each playbook is quiet for
        those keys (the others cannot fire: their quiet times do not matter); keep those
        still ``wanted`` now that their quiet times are known; tell ``marked`` the marks of
        alert playbooks on them; give their hits to ``decide`` (oldest first, at most
        FETCH_MAX a key) with the quiet times read; and store what it returns (quiet times,
        marks, alerts, blocks). A mark only moves on.

        ``probes`` may be a function, told whether the windows are as ``owner`` left them
        at its previous call (nobody else wrote since: what it remembers of them holds);
        ``counted`` is told each probe's count; ``horizon``, when somebody else wrote (and
        the dialect can tell), the time of the newest hit before ``hits`` (None: none): from
        then on, while nobody else writes, the hits ``owner`` adds are all there are newer.

        ``added`` is ``hits`` counted per key: where the dialect keeps a log (SQLite), a row
        of ``window_writes`` says what the transaction added (by key while another
        connection has committed between this store's windows' transactions in the last
        minute; else only that hits were added), and when somebody else wrote since
        ``owner``'s previous call, ``others`` is told what the rows written since added per
        key (before ``probes``), and the windows count as fresh: every hit added meanwhile
        is known by key. A gap in the rows (purged), a row without its counts, or a call by
        another owner counts as somebody else having written.

        ``present`` is (a time µs, a function): when the windows are not fresh (and the
        dialect can tell), and the hits at that time or later number at most PRESENT_MAX
        (a new collector's table, a quiet one's), the function is told the time and those
        hits counted per key (before ``hits``, after ``horizon``).

        ``on_replace`` is told, before the commit, of each alert's block that took the place
        of another at the cap (:meth:`~._blocks.BlockQueries._block_for`).

        Where the dialect counts after the commit (PostgreSQL, :meth:`_count_after_commit`),
        ``hits`` are stored in a transaction of their own, unless ``hits_stored`` says
        :meth:`store_hits` stored them with the events; only the keys that may fire are
        held, then (``keys`` only when ``decide`` writes without any)."""
        if not keys:
            return []
        if self._COUNT_AFTER_COMMIT:
            if not hits_stored:
                with self._windows_write() as cur:
                    self._insert_hits(cur, hits)
                    self._log_adds(cur, hits, added)
            return self._count_after_commit(
                keys,
                probes,
                decide,
                wanted,
                counted,
                on_replace,
                marked,
                (owner, others, horizon, present),
            )
        with self._windows_write() as cur:
            seen = self._windows_seen  # (set after a commit: at worst stale, read twice)
            if type(self)._lock_windows is not PlaybookQueries._lock_windows:
                # Taken in one order (two processes cannot deadlock); where there is nothing
                # to take (SQLite: one writer) the keys are not sorted at all.
                self._lock_windows(cur, sorted(keys))
            version = self._windows_version(cur)
            self._windows_begin(cur)
            mine = owner is not None and seen is not None and seen[1] is owner
            fresh = mine and version is not None and seen is not None and seen[0] == version
            last = seen[2] if mine and seen is not None else None
            trusted = False
            if not fresh and version is not None and last is not None and others is not None:
                told = self._writes_since(cur, last)
                if told is not None:  # every hit written since is known, by key
                    others(told)
                    fresh = trusted = True
            if horizon is not None and version is not None and (trusted or not fresh):
                # The ts index's last entry, one seek (SQLite: what memory knows).
                horizon(self._newest_hit(cur))
                if present is not None and not fresh:
                    self._present_hits(cur, *present)
            self._insert_hits(cur, hits)
            now = to_us(self.now())
            if version is not None and seen is not None and seen[0] != version:
                self._log_counts_until = now + LOG_COUNTS_FOR
            # Every transaction has its row; its counts by key when given and worth it.
            by_key = added if now < self._log_counts_until else None
            logged = self._log_writes(cur, by_key, now)
            counts = self._count_probes(cur, probes(fresh) if callable(probes) else probes)
            if counted is not None:
                counted(counts)
            stored = self._decide_windows(
                cur, candidates_of(counts), now, decide, wanted, on_replace, marked
            )
        # Once committed only: a row rolled back leaves its id to the next writer's. (In a
        # step tied to the events' transaction, before its commit: should it fail, the
        # storage's _tied_undone drops it.)
        self._windows_seen = None if owner is None else (version, owner, logged)
        return stored

    def _decide_windows(
        self,
        cur: Cursor,
        candidates: dict[WindowKey, int],
        now: int,
        decide: Callable[
            [dict[WindowKey, list[tuple[int, int, str | None]]], dict[QuietKey, int]], WindowWrite
        ],
        wanted: Callable[[WindowKey, dict[QuietKey, int]], bool] | None,
        on_replace: Callable[[Replacement], None] | None,
        marked: Callable[[dict[QuietKey, MarkValues]], None] | None,
    ) -> list[Alert]:
        """What :meth:`update_windows` does once counted, with the keys that may fire
        (``candidates``: the oldest time of a probe of each that reached its count) held:
        their quiet times, marks and hits read, ``decide`` told, what it returns stored."""
        arrays = self._ARRAYS
        quiet = quiet_times(cur, sorted({key for _, key in candidates}), now, arrays)
        if wanted is not None:
            candidates = {k: since for k, since in candidates.items() if wanted(k, quiet)}
        if marked is not None and candidates:
            marked(read_marks(cur, sorted({key for _, key in candidates}), arrays))
        write = decide(self._fetch_hits(cur, candidates), quiet)
        return self._store_write(cur, write, now, on_replace)

    def _store_write(
        self,
        cur: Cursor,
        write: WindowWrite,
        now: int,
        on_replace: Callable[[Replacement], None] | None,
    ) -> list[Alert]:
        """Store what the engine decided: quiet times, marks, alerts and their blocks."""
        if any(alert.block is not None for alert in write.alerts):
            # The lock a lift takes before it ends quiet rows: taken first, in one order.
            self._lock_actions(cur)
        self._insert(
            cur,
            "playbook_quiet",
            QUIET_COLUMNS,
            [(p, key, until) for (p, key), until in sorted(write.quiet.items())],
            QUIET_UPSERT,
            WINDOW_CHUNK,
        )
        self._insert(
            cur,
            "playbook_marks",
            MARK_COLUMNS,
            [(p, key, ts, seq) for (p, key), (ts, seq) in sorted(write.marks.items())],
            MARK_UPSERT,
            WINDOW_CHUNK,
        )
        return self._store_alerts(cur, write.alerts, now, on_replace)

    def purge_windows(self, older_than: datetime) -> int:
        """Forget hits older than ``older_than`` (longer ago than any window), the marks of
        events as old (every event up to them is out of every window), and quiet times that
        ended."""
        cutoff = to_us(older_than)
        purged = self._purge_hits(cutoff)
        with self._write() as cur:
            cur.execute("DELETE FROM playbook_quiet WHERE until_at < ?", (to_us(self.now()),))
            cur.execute("DELETE FROM playbook_marks WHERE ts < ?", (cutoff,))
            self._purge_writes(cur, to_us(self.now()) - LOG_KEPT)
        return purged
