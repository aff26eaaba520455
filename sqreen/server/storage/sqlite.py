"""SQLite storage: the default, one file, one collector process.

WAL mode, so readers never wait for the writer; ``synchronous=NORMAL``, so a commit survives
the collector being killed (the WAL is in the OS's hands), though not a power cut. Writes go
through one connection behind one lock, each in ``BEGIN IMMEDIATE`` (taking the write lock up
front, with a busy timeout, so the CLI can block a user while ``sqreen serve`` ingests).
Reads use a small pool of other connections.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from ._rows import EVENT_COLUMNS, dumps
from ._schema import migrations
from ._sql import Cursor, SqlStorage

__all__ = ["SQLiteStorage"]

BUSY_TIMEOUT: Final = 10.0
MAX_IDLE_READERS: Final = 8


# Bulk writes: a batch travels as one JSON array that SQLite expands with json_each, so that
# each statement is one call into SQLite. The sqlite3 module releases the GIL around every
# step of every row of an executemany() and must win it back after each, which under
# concurrent requests makes the writer wait behind the threads parsing the next batches; one
# long call runs beside them instead (measured: twice the ingest rate on 2 cores).
_KNOWN = (
    "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'events'), "
    "(SELECT json_group_array(id) FROM events WHERE id IN (SELECT value FROM json_each(?)))"
)
_INSERT_EVENTS = (
    f"INSERT INTO events (seq, {', '.join(EVENT_COLUMNS)}) "
    f"SELECT {', '.join(f'value ->> {i}' for i in range(len(EVENT_COLUMNS) + 1))} "
    "FROM json_each(?) WHERE true ON CONFLICT (id) DO NOTHING"
)


class SQLiteStorage(SqlStorage):
    MIGRATIONS = migrations("sqlite")

    def _insert_events(self, cur: Cursor, records: list[list[Any]]) -> list[tuple[int, str]]:
        # One writer: what is stored and the next seq cannot change before the commit.
        last, known = cur.execute(_KNOWN, (dumps([r[0] for r in records]),)).fetchone()
        stored = set(json.loads(known))
        seq = last or 0
        rows = []
        for record in records:
            if record[0] not in stored:
                seq += 1
                rows.append([seq, *record])
        if rows:
            cur.execute(_INSERT_EVENTS, (dumps(rows),))
            if cur.rowcount != len(rows):
                raise RuntimeError("events changed during an insert transaction")
        return [(row[0], row[1]) for row in rows]

    def _insert_index(self, cur: Cursor, table: str, rows: list[tuple[int, str, str]]) -> None:
        cur.execute(
            f"INSERT INTO {table} (seq, key, value) "
            "SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?)",
            (dumps(rows),),
        )

    def __init__(self, path: str) -> None:
        self.path = path
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._writer = self._connect()
        try:
            self._writer.execute("PRAGMA journal_mode=WAL")
            self.migrate()
        except BaseException:
            self.close()
            raise

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
        with self._write_lock:
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
