"""SQLite storage: the default, one file, on one machine.

WAL mode, so readers never wait for the writer; ``synchronous=NORMAL``, so a commit survives
the collector being killed (the WAL is in the OS's hands), though not a power cut. There is
one writer at a time: in a process, one connection behind one lock; between processes
(``sqreen serve --workers N``, the CLI while the collector runs), ``BEGIN IMMEDIATE`` takes
SQLite's write lock up front, and an ``flock`` queues the writers for it. Everything that must
not change under a writer (the ids already stored, the next seq) is read inside that
transaction. Reads use a small pool of other connections.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Final
from urllib.parse import quote

from ._hit_log import HitLog
from ._places import LatestPlaces
from ._rows import EVENT_COLUMNS, EventRecord, dumps
from ._schema import USER_BUCKET_SHIFT, migrations
from ._sql import INSERT_CHUNK, Cursor, SqlStorage, logger
from ._temp_store import WRITER_TEMP_STORE, begin_write
from ._wal import FileGuard, WalRestarts, file_path
from ._window_reads import WindowKey, adds_of, adds_text
from ._write_lock import WriteLock
from .model import Clock, utc_now

__all__ = ["SQLiteStorage", "create_private"]

BUSY_TIMEOUT: Final = 10.0
MAX_IDLE_READERS: Final = 8
#: Write transactions between two checkpoints (a batch of 500 events adds ~300 WAL pages).
CHECKPOINT_EVERY: Final = 8
#: The page size of a new database (SQLite's default too; a database keeps the size it was
#: created with: earlier versions made 8192). An event's index entries land at scattered places
#: of the ip and user/property (key, value) indexes. While those are small, a batch's entries
#: share pages, and larger pages mean fewer dirtied; once they are large, each entry dirties a
#: page of its own, written to the WAL at the commit and copied by the checkpoint, and smaller
#: pages mean fewer bytes written (pwrite was 30 % of the ingest thread's CPU at 500 000
#: events with 8 KiB). Measured against 8192 (docs/benchmarks.md, "The page size, measured at
#: scale"): the same CPU an event on a fresh database (±3 % over HTTP, +8 % in one process
#: over 100 000 events), -15 % with a million events stored (bench_ingest_cpu.py --preload),
#: +9 to +16 % events/s over HTTP from 400 000 events, a million imported in 91 s against 120;
#: the explorer's first pages a few ms slower at a million events, every p95 under 35 ms.
PAGE_SIZE: Final = 4096
#: The writer's page cache, in KiB (SQLite's default: 2 MiB). The pages an insert touches in
#: those scattered places are read again from the OS at every batch once the indexes outgrow
#: the cache: 72 -> 68 µs an event with 32 MiB at 100 000 events. Filled only as pages are
#: used, and only on the one writer connection of each process (readers keep the default).
WRITER_CACHE_KIB: Final = 65536
#: The size the WAL is cut back to, in bytes, when a writer starts it again from its first
#: frame (every frame copied into the database and no reader using it; without it the file
#: keeps the largest size it ever reached), and past which a checkpoint starts the WAL again
#: by force when nobody did (:mod:`._wal`). Ingest's WAL between two checkpoints: ~20 MiB for
#: single batches, up to ~100 MiB for bodies stored together.
WAL_LIMIT: Final = 64 * 1024 * 1024
#: How long a TRUNCATE checkpoint waits for readers and writers (seconds): it holds SQLite's
#: write lock while it waits for readers, so ingest waits as long, at most.
TRUNCATE_WAIT: Final = 1.0
#: How long the restart of a WAL grown past :data:`WAL_LIMIT` waits for readers (seconds),
#: every writer of the database waiting meanwhile (:meth:`SQLiteStorage._restart_wal`).
RESTART_WAIT: Final = 0.05
_KNOWN: Final = (
    "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'events'), "
    "(SELECT json_group_array(id) FROM events "
    "WHERE key_id = ? AND id IN (SELECT value FROM json_each(?)))"
)


#: Rows of the windows' log a process reads at most to catch up (another worker writes one
#: or two between two batches of this one's); more, and it counts its windows again.
LOG_CATCH_UP: Final = 64


class SQLiteStorage(HitLog, SqlStorage):
    MIGRATIONS = migrations("sqlite")
    RUN_INDEXED: Mapping[str, tuple[str, int]] = {
        "event_users": ("event_user_buckets", USER_BUCKET_SHIFT)
    }
    _TIES = True

    def __init__(self, path: str, *, clock: Clock = utc_now, upgrade: bool = True) -> None:
        super().__init__(clock)
        self.path = path
        self._lock = WriteLock()
        self._commits = 0
        self._checkpointing = threading.Lock()
        self._restarts = WalRestarts()
        self._frame_bytes = 24 + PAGE_SIZE
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._latest_places = LatestPlaces()
        self._journals_in_memory = False
        create_private(path)
        #: What each connection opens: the file, never created again (``mode=rw``: a
        #: connection opened after the file was removed made a new, empty one).
        file = file_path(path)
        self._uri = file is not None
        self._target = path if file is None else f"file:{quote(file)}?mode=rw"
        self._writer = self._connect()
        try:
            # Before WAL mode and the first table; no effect on an existing database.
            self._writer.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self._writer.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._guard = FileGuard(path)  # (the WAL index exists now)
            # Checkpoints copy the WAL into the database and fsync it: let writers not wait for
            # that (see _checkpoint).
            self._writer.execute("PRAGMA wal_autocheckpoint=0")
            self._lock.open(path)
            self._writer.execute(f"PRAGMA temp_store={WRITER_TEMP_STORE}")
            self.migrate() if upgrade else self.check_schema()
            self._journals_in_memory = True  # (not the migrations': see _temp_store)
            # A WAL frame: a page and its 24-byte header (a database keeps its page size).
            self._frame_bytes = 24 + self._writer.execute("PRAGMA page_size").fetchone()[0]
        except sqlite3.DatabaseError as exc:  # "file is not a database", a locked file...
            self.close()
            raise RuntimeError(f"cannot use {path!r} as a SQLite database: {exc}") from None
        except BaseException:
            self.close()
            raise

    def _insert_events(self, cur: Cursor, rows: list[EventRecord]) -> list[int | None]:
        # Under BEGIN IMMEDIATE nobody else writes: the stored ids and the last seq cannot
        # change before the commit, so the seqs are assigned here (no RETURNING, which the
        # sqlite3 module would fetch row by row). The rows are of one key.
        (key_id,) = {row.key_id for row in rows}
        last, known = cur.execute(_KNOWN, (key_id, dumps([row.id for row in rows]))).fetchone()
        stored = set(json.loads(known))
        seq = last or 0
        seqs: list[int | None] = []
        new: list[Any] = []
        for row in rows:
            if row.id in stored:
                seqs.append(None)
            else:
                seq += 1
                seqs.append(seq)
                new.append(seq)
                new += row
        width = len(EVENT_COLUMNS) + 1
        unbound_nulls(new, width)
        for i in range(0, len(new), width * INSERT_CHUNK):
            chunk = new[i : i + width * INSERT_CHUNK]
            cur.execute(_insert_sql(len(chunk) // width), chunk)
            if cur.rowcount != len(chunk) // width:
                raise RuntimeError("events were stored by another writer during a transaction")
        return seqs

    def _log_writes(
        self, cur: Cursor, counts: Mapping[WindowKey, int] | None, at: int
    ) -> int | None:
        # Under BEGIN IMMEDIATE: ids (the newest + 1) are given in commit order, and never
        # again, as the purge keeps the newest row (a row rolled back gives its id back with
        # its transaction).
        text = "" if counts is None else adds_text(counts)
        (row,) = cur.execute(
            "INSERT INTO window_writes (at, counts) VALUES (?, ?) RETURNING id", (at, text)
        ).fetchone()
        return int(row)

    def _writes_since(self, cur: Cursor, last: int) -> dict[WindowKey, int] | None:
        (high,) = cur.execute("SELECT max(id) FROM window_writes").fetchone()
        if high is None or high - last > LOG_CATCH_UP:
            return None  # counting again costs less than reading that much, under the lock
        rows = cur.execute(
            "SELECT id, counts FROM window_writes WHERE id > ? ORDER BY id", (last,)
        ).fetchall()
        newest = last
        for id_, text in rows:
            if id_ != newest + 1 or not text:
                return None  # rows purged since, or without their counts: not all is known
            newest = id_
        if high != newest:  # the rows after ``last`` purged, down to the newest
            return None
        return adds_of(text for _, text in rows)

    def _windows_version(self, cur: Cursor) -> object | None:
        # Changes when another connection (another worker, another collector, the CLI)
        # commits: until then what this process remembers of the windows holds.
        return cur.execute("PRAGMA data_version").fetchone()[0]  # type: ignore[no-any-return]

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._target,
                timeout=BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
                uri=self._uri,
            )
        except sqlite3.OperationalError as exc:
            raise RuntimeError(f"cannot open the SQLite database {self.path!r}: {exc}") from None
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        except sqlite3.DatabaseError as exc:  # "file is not a database" (a file sqlite3 opens)
            conn.close()
            raise RuntimeError(f"cannot use {self.path!r} as a SQLite database: {exc}") from None
        return conn

    def _write(self) -> AbstractContextManager[Cursor]:
        return self._transaction(1)

    @contextmanager
    def _transaction(self, weight: int) -> Iterator[Cursor]:
        self._not_tied()
        self._guard.check()
        with self._lock.held():
            cur = self._writer.cursor()
            try:  # (what fails once BEGIN is done is rolled back)
                begin_write(cur, self._journals_in_memory and not self._log_indexed)
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise
            finally:
                cur.close()
            self._commits += weight
            due = weight > 0 and self._commits % CHECKPOINT_EVERY == 0
        if due:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database, outside the write lock.

        SQLite's automatic checkpoint runs inside the COMMIT of the writer that crosses its
        threshold, holding the write lock through the copy and its fsync, so every other
        writer (thread or ``--workers`` process) waits for the disk. A PASSIVE checkpoint on a
        reader connection, after the lock is released, runs beside the next writes instead
        (measured: 12 000 -> 17 000 events/s with two workers). One at a time per process;
        the last connection to close checkpoints what is left.
        """
        if not self._checkpointing.acquire(blocking=False):
            return
        try:
            try:
                (passive, *_) = self._read("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.OperationalError:  # the database locked: the next checkpoint
                return
            if self._restarts.due(passive, self._frame_bytes, WAL_LIMIT):
                self._restart_wal()
        except Exception:  # the batch is committed: its reply must not say otherwise
            logger.warning("sqreen: WAL checkpoint failed; the next one tries again", exc_info=True)
        finally:
            self._checkpointing.release()

    def _restart_wal(self) -> None:
        """Start the WAL again from its first frame, every writer held off meanwhile (the
        in-process lock, then the ``flock``: :meth:`_transaction`'s order): see :mod:`._wal`."""
        with self._lock.held():
            outcome = self._checkpoint_alone(RESTART_WAIT, "RESTART")
        self._restarts.tried(outcome)

    def purge_older_than(self, days: float) -> int:
        purged = super().purge_older_than(days)
        if purged:
            runs, shift = self.RUN_INDEXED["event_users"]
            with self._write() as cur:  # the users' runs now empty: a walk seeks each one
                cur.execute(
                    f"DELETE FROM {runs} WHERE NOT EXISTS (SELECT 1 FROM event_users) "
                    f"OR n < (SELECT min(seq) FROM event_users) >> {shift}"
                )
            self.shrink_wal()
        return purged

    def shrink_wal(self) -> bool:
        """When the WAL is larger than :data:`WAL_LIMIT` (a purge wrote every page it freed
        there), copy it into the database and cut it to nothing; whether it was cut. Never
        on the ingest path: ``journal_size_limit`` bounds what ingest leaves."""
        return _file_size(self.path + "-wal") > WAL_LIMIT and self._truncate_wal(TRUNCATE_WAIT)

    def reclaim_space(self) -> bool:
        """``VACUUM``: the database written again without its free pages (those of purged
        rows), under the write lock, which every writer (ingest too) waits for meanwhile;
        then the WAL, which held the whole copy, cut to nothing."""
        self._guard.check()
        with self._lock.held():
            self._writer.execute("VACUUM")  # (its copy of the database: a file)
        if self.path not in ("", ":memory:"):
            self._truncate_wal(BUSY_TIMEOUT)
        return True

    def _truncate_wal(self, wait: float) -> bool:
        """A TRUNCATE checkpoint (the WAL copied into the database, then cut to nothing),
        waiting ``wait`` seconds at most for readers; whether it was done. Under the write
        lock: it blocks writers while it waits, who then queue for the lock (and count
        their wait as such) rather than poll SQLite's."""
        with self._lock.held():
            outcome = self._checkpoint_alone(wait, "TRUNCATE")
        return outcome is not None and not outcome[0]

    def _checkpoint_alone(self, wait: float, mode: str) -> tuple[int, int, int] | None:
        """A checkpoint of ``mode`` on a connection of its own that waits ``wait`` seconds at
        most: SQLite's (busy, frames, frames copied), None when locked past the wait."""
        self._guard.check()
        conn = self._connect()
        try:
            conn.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            (outcome, *_) = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        except sqlite3.OperationalError:  # locked past the wait: journal_size_limit, later
            return None
        finally:
            conn.close()
        return (int(outcome[0]), int(outcome[1]), int(outcome[2]))

    @property
    def on_write_lock(self) -> Callable[[float, float], None] | None:
        """Told, after each hold of the database's write lock, the seconds spent waiting for
        it and holding it (``sqreen serve``: the metrics; see :mod:`._write_lock`)."""
        return self._lock.observer

    @on_write_lock.setter
    def on_write_lock(self, observer: Callable[[float, float], None] | None) -> None:
        self._lock.observer = observer

    def _read_each(self, reads: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        # On the writer's connection, in one read transaction: its page cache holds what
        # the last transactions wrote, where a reader's is dropped whenever another
        # connection commits (each seek then read its pages again from the WAL: a batch's
        # impossible-travel reads cost 23 µs a statement on a reader, 4-5 here, measured).
        # The write lock is held for them: a few ms a batch.
        self._guard.check()
        with self._lock.thread:
            conn = self._writer
            conn.execute("BEGIN")
            try:
                return [row for sql, params in reads for row in conn.execute(sql, params)]
            finally:
                conn.execute("COMMIT")

    def _places_version(self) -> object:
        self._guard.check()
        with self._lock.thread:
            return self._windows_version(self._writer.cursor())

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self._guard.check()
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            with self._pool_lock:
                if len(self._idle) < MAX_IDLE_READERS:
                    self._idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    def database_bytes(self) -> int:
        sizes = [_file_size(self.path + suffix) for suffix in ("", "-wal")]
        if not sizes[0]:  # in memory
            (pages, size), *_ = self._read("SELECT * FROM pragma_page_count, pragma_page_size")
            return int(pages) * int(size)
        return sum(sizes)

    def close(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        with self._lock.thread:
            self._writer.close()
            self._lock.close()


def create_private(path: str) -> None:
    """Create the database file ``path``, empty, readable by its owner alone (0600), unless it
    exists: it holds every event, the admin password's hash and the explorer's session
    secret, and SQLite creates its ``-wal`` and ``-shm`` with the database's permissions. An
    existing file keeps the mode its operator gave it."""
    file = file_path(path)
    if file is None:
        return
    try:  # (through a symbolic link to a file not made yet: O_EXCL refuses the link itself)
        os.close(os.open(os.path.realpath(file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:  # it exists (kept as it is), or SQLite will say why it cannot open it
        pass


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


#: The events' text columns that may be NULL (no target, no enrichment, an address the data
#: does not place), bound as 0 and turned back into NULL by the statement: the sqlite3
#: module binds ``None`` through its adapters' lookup (``need_adapt``: only exact int, float,
#: str and bytearray skip it), about 0.2 µs a value where an int costs nothing more. Their
#: values are text or NULL, never the integer 0, which ``nullif(?, 0)`` alone turns into
#: NULL: only columns declared ``str | None`` (a number column's 0 would be lost).
_NULLABLE: Final = frozenset(
    i + 1  # after seq
    for i, kind in enumerate(typing.get_type_hints(EventRecord).values())
    if kind == str | None
)


def unbound_nulls(flat: list[Any], width: int) -> None:
    """Put 0 for ``None`` in the :data:`_NULLABLE` columns of the rows ``flat`` holds
    (``width`` values each), column by column in C: ``nullif(?, 0)`` in
    :func:`_insert_sql` binds them back to NULL."""
    for column in _NULLABLE:
        values = flat[column::width]
        nulls = values.count(None)
        if nulls == len(values):
            flat[column::width] = [0] * nulls
        elif nulls:
            flat[column::width] = [0 if v is None else v for v in values]


@functools.lru_cache(maxsize=8)
def _insert_sql(rows: int) -> str:
    """The events' multi-row insert of ``rows`` rows (see :func:`unbound_nulls`)."""
    one = ", ".join(
        "nullif(?, 0)" if i in _NULLABLE else "?" for i in range(len(EVENT_COLUMNS) + 1)
    )
    columns = ", ".join(("seq", *EVENT_COLUMNS))
    values = ", ".join([f"({one})"] * rows)
    return f"INSERT INTO events ({columns}) VALUES {values} ON CONFLICT (id, key_id) DO NOTHING"
