"""SQLite storage: the default, one file, one collector process.

WAL mode, so readers never wait for the writer; ``synchronous=NORMAL``, so a commit survives
the collector being killed (the WAL is in the OS's hands), though not a power cut. Writes go
through one connection behind one lock, each in ``BEGIN IMMEDIATE`` (taking the write lock up
front, with a busy timeout, so the CLI can block a user while ``sqreen serve`` ingests).
Reads use a small pool of other connections.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]

from ._rows import EVENT_COLUMNS, dumped, dumps
from ._schema import migrations
from ._sql import INSERT_CHUNK, Cursor, SqlStorage, placeholders

__all__ = ["SQLiteStorage"]

BUSY_TIMEOUT: Final = 10.0
MAX_IDLE_READERS: Final = 8
_KNOWN: Final = (
    "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'events'), "
    "(SELECT json_group_array(id) FROM events WHERE id IN (SELECT value FROM json_each(?)))"
)


class SQLiteStorage(SqlStorage):
    MIGRATIONS = migrations("sqlite")

    def __init__(self, path: str) -> None:
        self.path = path
        self._write_lock = threading.Lock()
        self._process_lock: int | None = None
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._writer = self._connect()
        try:
            self._writer.execute("PRAGMA journal_mode=WAL")
            if fcntl is not None and path not in ("", ":memory:"):
                self._process_lock = os.open(f"{path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
            self.migrate()
        except BaseException:
            self.close()
            raise

    def _insert_events(self, cur: Cursor, records: list[list[Any]]) -> list[tuple[int, str]]:
        # One writer: the stored ids and the last seq cannot change before the commit, so the
        # new events and their seqs are known up front (no RETURNING, which the sqlite3 module
        # would fetch row by row).
        last, known = cur.execute(_KNOWN, (dumps([r[0] for r in records]),)).fetchone()
        stored = set(json.loads(known))
        seq = last or 0
        rows = []
        for record in records:
            if record[0] not in stored:
                seq += 1
                rows.append([seq, *dumped(record)])
        columns = ", ".join(("seq", *EVENT_COLUMNS))
        for i in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[i : i + INSERT_CHUNK]
            cur.execute(
                f"INSERT INTO events ({columns}) VALUES "
                f"{placeholders(len(chunk), len(EVENT_COLUMNS) + 1)} ON CONFLICT (id) DO NOTHING",
                [v for row in chunk for v in row],
            )
            if cur.rowcount != len(chunk):
                raise RuntimeError("events were stored by another writer during a transaction")
        return [(row[0], row[1]) for row in rows]

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.OperationalError as exc:
            raise RuntimeError(f"cannot open the SQLite database {self.path!r}: {exc}") from None
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        with self._write_lock, self._between_processes():
            cur = self._writer.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise
            finally:
                cur.close()

    @contextmanager
    def _between_processes(self) -> Iterator[None]:
        """Queue for the write lock across processes (``serve --workers``, the CLI).

        ``BEGIN IMMEDIATE`` alone is correct, but a writer finding the database locked polls
        it from SQLite's busy handler, sleeping 1, 2, 5, 10... ms in between: an ``flock`` on a
        side file wakes the next writer as soon as the lock is free instead.
        """
        if self._process_lock is None or fcntl is None:
            yield
            return
        fcntl.flock(self._process_lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._process_lock, fcntl.LOCK_UN)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
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

    def close(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        with self._write_lock:
            self._writer.close()
            if self._process_lock is not None:
                os.close(self._process_lock)
                self._process_lock = None
