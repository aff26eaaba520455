"""SQLite's hits: ``window_log``, in the order they were written, counted from each process's
memory while they are few enough (:class:`~._hit_index.HitIndex`), from the table's indexes
once they are not.

A table ordered by key (``window_hits``, which PostgreSQL keeps) gets each of a batch's hits
at its key's place: once it is larger than a batch's hits in pages, each hit dirties a page
of its own, written to the WAL at the commit and again by the checkpoint. That was half of
what the six templates cost ingest (``bench_playbooks_ab.py --hits``). Appended in id order,
a batch's hits fill one or two pages.

Every process reads the rows written since its previous windows' transaction at the start of
the next one (:meth:`HitLog._windows_begin`), under SQLite's write lock: it holds every hit
written before its own, whichever process wrote them, as the table did. A restart, or a
transaction that failed, reads them all again. The database says which way they are
counted, so every process counts the same way: while ``window_log`` holds at most
LOG_MEMORY_MAX rows (an hour of 35 failed logins a second), from memory, with no index on
the table; past that (a large attack, or a site that large), the transaction that crosses
it indexes the table as ``window_hits`` was, and every process counts in SQL, at what
``window_hits`` cost, until a purge leaves fewer than half as many rows, which drops the
indexes. Memory is bounded that way whatever an attacker sends: a process holds the hits
in the windows, which the table holds too, and the older ones it has not dropped yet (it
drops them every 50 000 hits added or 10 minutes); it drops them all when the table is
indexed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from ._hit_index import HIT_COST, HitIndex
from ._playbooks import PURGE_CHUNK, PlaybookQueries
from ._window_reads import ProbeValues, WindowKey

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["LOG_MEMORY_MAX", "HitLog"]

#: Rows of ``window_log`` counted from memory at most. Each costs a process about 200 bytes
#: when keys repeat (a site's users), up to about 480 when every hit is a key of its own (a
#: scan from new addresses): 50-120 MB at the bound. 250 000 rows are an hour of 35 failed
#: logins a second, each a hit by IP and one by user.
LOG_MEMORY_MAX: Final = 250_000
#: What the hits held in memory may cost at most, in characters of their text (with
#: :data:`~._hit_index.HIT_COST` a hit): 50-100 MB a process. Identifiers of 256
#: characters that NFKC folds into thousands reach it long before LOG_MEMORY_MAX rows.
LOG_TEXT_MAX: Final = 50_000_000
#: The indexes the rows get past those bounds: those ``window_hits`` has.
LOG_INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS window_log_key ON window_log (stream, key, ts, seq)",
    "CREATE INDEX IF NOT EXISTS window_log_ts ON window_log (ts)",
)


class HitLog(PlaybookQueries):
    """The playbooks' queries as SQLite keeps the hits (mixed into
    :class:`~.sqlite.SQLiteStorage` before :class:`~._sql.SqlStorage`)."""

    _HITS_TABLE = "window_log"
    #: This process's hits by key, up to a row of ``window_log``; None: read them all again
    #: (and, in the transaction, count in SQL: the table indexed, or the memory dropped).
    _hit_index: HitIndex | None = None
    #: Whether ``window_log`` was indexed when this process last looked: then a windows'
    #: savepoint journals a page of its indexes for nearly every hit (scattered keys), and
    #: the writer's journals go to files (:func:`~._temp_store.begin_write`).
    _log_indexed: bool = False

    if TYPE_CHECKING:

        def _transaction(self, weight: int) -> Any: ...

    @contextmanager
    def _windows_write(self) -> Iterator[Cursor]:
        # In the events' transaction when the playbooks' step is tied to it (one turn at the
        # write lock a batch, not two: with two workers each waited for the other's second
        # one); else a transaction after the batch's: a few WAL pages where the batch's
        # wrote hundreds. Counted as one commit, it doubled the checkpoints (their copy and
        # fsync, on the ingest's threads) for as much data written.
        try:
            with self._tied_write() or self._transaction(0) as cur:
                yield cur
        except BaseException:
            # What it added to memory is rolled back in the table (the body or the COMMIT
            # failed): read it all again. A transaction another thread began meanwhile
            # finds its last row gone (:func:`_still`), or no memory mid-way and counts in
            # SQL, as rightly if more slowly.
            self._hit_index = None
            raise

    def _tied_undone(self) -> None:
        self._hit_index = None  # (it holds the hits the step added)
        super()._tied_undone()

    def _windows_begin(self, cur: Cursor) -> None:
        self._log_indexed = _indexed(cur)
        if self._log_indexed:
            self._hit_index = None  # its memory back while the table is counted in SQL
            return
        index = self._hit_index
        if index is not None and index.last and not _still(cur, index):
            index = None  # its newest row gone (a restore, or purged): read them all again
        if index is None:
            if _rows(cur) > LOG_MEMORY_MAX:  # more than memory takes (a migrated table)
                self._index_log(cur)
                return
            index = self._hit_index = HitIndex()
        index.fold(
            cur.execute(
                "SELECT id, stream, key, ts, seq, value FROM window_log WHERE id > ? ORDER BY id",
                (index.last,),
            )
        )
        if index.text > LOG_TEXT_MAX:
            self._index_log(cur)

    def _index_log(self, cur: Cursor) -> None:
        """Past what memory should hold: index the table, and count in SQL from now on."""
        for statement in LOG_INDEXES:  # (a sort of the whole table: in files)
            cur.execute(statement)
        self._hit_index = None
        self._log_indexed = True

    def _insert_hits(
        self, cur: Cursor, hits: Sequence[tuple[str, str, int, int, str | None]]
    ) -> None:
        if not hits:
            return
        # One prepared statement, run for each hit: a multi-row statement of a new length
        # (a batch's hits vary) is parsed again, which costs more (bench_playbooks_ab.py).
        cur.executemany(
            "INSERT INTO window_log (stream, key, ts, seq, value) VALUES (?, ?, ?, ?, ?)", hits
        )
        index = self._hit_index
        if index is None:  # counted in SQL
            return
        # Under BEGIN IMMEDIATE, after every row before them was read: ids the newest + 1.
        (last,) = cur.execute("SELECT max(id) FROM window_log").fetchone()
        first = last - len(hits) + 1
        index.fold((first + n, *hit) for n, hit in enumerate(hits))
        if index.text > LOG_TEXT_MAX or _rows(cur) > LOG_MEMORY_MAX:
            self._index_log(cur)

    # From memory while it is there; else in SQL on window_log (its indexes made).
    def _newest_hit(self, cur: Cursor) -> int | None:
        if self._hit_index is not None:
            return self._hit_index.newest
        return super()._newest_hit(cur)

    def _present_hits(
        self, cur: Cursor, after: int, tell: Callable[[int, dict[WindowKey, int]], None]
    ) -> None:
        if self._hit_index is not None:
            self._hit_index.present(after, tell)
        else:
            super()._present_hits(cur, after, tell)

    def _count_probes(self, cur: Cursor, probes: Sequence[ProbeValues]) -> dict[ProbeValues, int]:
        if self._hit_index is not None:
            return self._hit_index.count(probes)
        return super()._count_probes(cur, probes)

    def _fetch_hits(
        self, cur: Cursor, wanted: dict[WindowKey, int]
    ) -> dict[WindowKey, list[tuple[int, int, str | None]]]:
        if self._hit_index is not None:
            return self._hit_index.fetch(wanted)
        return super()._fetch_hits(cur, wanted)

    def _purge_hits(self, cutoff: int) -> int:
        """Delete the rows before the first one of a time no earlier than ``cutoff`` (a row
        delivered late after it goes at a later purge: every count reads times, not ids; its
        id is never given again: AUTOINCREMENT), and the hits as old from this process's
        memory (the collector purges every minute in each process: a process that ingests
        nothing more drops them too); drop the indexes once the rows and their text are
        under half the bounds."""
        with self._write() as cur:
            if self._hit_index is not None:  # under the lock, as every use of it
                self._hit_index.prune(cutoff)
            (high,) = cur.execute("SELECT max(id) FROM window_log").fetchone()
            if high is None:
                return 0
            found = cur.execute(
                "SELECT id FROM window_log WHERE ts >= ? ORDER BY id LIMIT 1", (cutoff,)
            ).fetchone()
        end = int(high) + 1 if found is None else int(found[0])
        purged = self._delete_chunks(
            "DELETE FROM window_log WHERE id IN "
            "(SELECT id FROM window_log WHERE id < ? ORDER BY id LIMIT ?)",
            (end,),
            PURGE_CHUNK,
        )
        with self._write() as cur:
            if _indexed(cur) and _rows(cur) < LOG_MEMORY_MAX // 2:
                (text,) = cur.execute(
                    f"SELECT total(length(key)) + total(length(value)) + count(*) * {HIT_COST} "
                    "FROM window_log"
                ).fetchone()
                if text < LOG_TEXT_MAX // 2:
                    cur.execute("DROP INDEX IF EXISTS window_log_key")
                    cur.execute("DROP INDEX IF EXISTS window_log_ts")
                    self._log_indexed = False
        return purged


def _still(cur: Cursor, index: HitIndex) -> bool:
    """Whether the row ``index`` read last is in the table as it read it."""
    row = cur.execute(
        "SELECT stream, key, ts, seq FROM window_log WHERE id = ?", (index.last,)
    ).fetchone()
    return row is not None and tuple(row) == index.last_hit


def _indexed(cur: Cursor) -> bool:
    found = cur.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'window_log_key'"
    ).fetchone()
    return found is not None


def _rows(cur: Cursor) -> int:
    """The rows of ``window_log``: ids are given one after another and purged from the oldest,
    so the newest id less the oldest (two seeks)."""
    # Two statements of one aggregate each: SQLite reads an end of the rowid for each, where
    # min() and max() in one statement read every row.
    (low, high) = cur.execute(
        "SELECT (SELECT min(id) FROM window_log), (SELECT max(id) FROM window_log)"
    ).fetchone()
    return 0 if high is None else int(high) - int(low) + 1
