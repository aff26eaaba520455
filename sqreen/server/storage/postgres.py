"""PostgreSQL storage: several collector processes against one database.

psycopg 3, synchronous connections in a small pool (the collector calls storage from its
thread pool). Everything that must be consistent across processes lives in the database: the
unique event id of a key (``ON CONFLICT (id, key_id) DO NOTHING`` waits for a concurrent
insert of the same id and then skips it, so an event is stored once whichever process gets
it), the action version counter (a row lock), and migrations (an advisory lock, so processes
starting together do not race to create the schema). A batch's rows are inserted in id order,
so that two processes inserting overlapping batches take their row locks in the same order
and cannot deadlock; they go through COPY and a staging table (``_pgcopy.py``).
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from ._export import COMMITTED_MARKS
from ._pg_log import HITS, PURGED, WritesLog
from ._pgcopy import EventCopier, hits_text
from ._rows import EventRecord
from ._schema import migrations
from ._sql import Cursor, SqlStorage
from .model import Clock, DatabaseUnreachable, utc_now

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStorage"]

#: Connections a collector process opens at most (PostgreSQL allows 100 by default, and
#: several collectors share them); requests beyond wait for a free one.
MAX_CONNECTIONS: Final = 10

#: Seconds a new connection may take to open, unless the URL (``connect_timeout``) or libpq's
#: environment (``PGCONNECT_TIMEOUT``) says otherwise: a host that takes the connection and
#: never answers held a command, or a collector's start, without end.
CONNECT_TIMEOUT: Final = 10
#: pg_advisory_xact_lock key for migrations ("sqreen" in ASCII).
MIGRATION_LOCK: Final = 0x737172_65656E
#: The export fence's advisory lock key ("sqrexp"): taken shared by every transaction that
#: inserts events or alerts, exclusive by :meth:`PostgresStorage.committed_marks`.
EXPORT_FENCE: Final = 0x737172_657870
#: How long committed_marks waits for the transactions in flight (each takes milliseconds).
FENCE_TIMEOUT: Final = "10s"


def _q(sql: str) -> str:
    """The shared SQL's ``?`` placeholders in psycopg's spelling (the SQL has no ``%``): a
    typed one (``?::text[]``) as ``%b``, sent in binary, so that psycopg writes a list's
    items as they are (its text form escapes each item with a regular expression: a tenth
    of the playbooks' CPU for a batch's keys, measured), the others as ``%s``."""
    return sql.replace("?::", "%b::").replace("?", "%s")


class _PgCursor:
    """A psycopg cursor that speaks the shared SQL's placeholders."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.raw = cur  # for COPY, which the shared SQL never uses
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> _PgCursor:
        self._cur.execute(_q(sql), params)
        return self

    def executemany(self, sql: str, params: Sequence[Sequence[Any]], /) -> _PgCursor:
        self._cur.executemany(_q(sql), params)
        return self

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()


def _usable(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection of the pool can take a request.

    An idle connection has nothing to read: one that does was ended by the server (a restart
    or a failover sends each session a FATAL message and closes it), and would fail the
    request given it. psycopg only notices at the next use; a poll of the socket, without
    waiting, notices now (4 µs measured on the loaded 2-core machine, against a query's
    hundreds), so that after a database restart no request is served on a connection that
    died with it (tests/server/test_probes.py). ``poll``, not ``select``: a collector with
    thousands of connections has descriptors past select's 1024.
    """
    if conn.closed or conn.broken:
        return False
    poller = select.poll()
    try:
        poller.register(conn.fileno(), select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


def _connect_timeout(psycopg: Any, dsn: str) -> dict[str, Any]:
    """``{"connect_timeout": CONNECT_TIMEOUT}``, unless the URL or the environment gives
    one (a URL psycopg cannot read gets none: connecting says why, as before)."""
    if os.environ.get("PGCONNECT_TIMEOUT"):
        return {}
    try:
        given = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return {}
    return {} if "connect_timeout" in given else {"connect_timeout": CONNECT_TIMEOUT}


def _refused_schema(exc: Any) -> str:
    """What to say of an SQL error creating or reading the schema (the server's words)."""
    message = exc.diag.message_primary or str(exc).strip()
    if exc.sqlstate == "42P07":  # duplicate_table: another application's tables
        return (
            f"cannot use the PostgreSQL database: {message}, and it is not sqreen's "
            "(the database holds another application's tables: give sqreen a database of "
            "its own)"
        )
    return f"cannot use the PostgreSQL database: {message}"


class PostgresStorage(WritesLog, SqlStorage):
    MIGRATIONS = migrations("postgresql")
    _ARRAYS = True
    # A batch's hits are written in the events' own transaction (a step tied to it,
    # _tied.py) and counted after its commit; only the keys that may fire are then held,
    # in a transaction of their own (AfterCommit._count_after_commit). The windows'
    # whole transaction tied to the events' held every key's lock to their commit:
    # side by side, no gain (-5.6 % and +3.6 % of events/s).
    _TIES = True
    _COUNT_AFTER_COMMIT = True
    _HITS_TABLE = HITS

    def __init__(
        self, dsn: str, *, clock: Clock = utc_now, create: bool = True, upgrade: bool = True
    ) -> None:
        super().__init__(clock)
        try:
            import psycopg
        except ImportError:  # pragma: no cover - an extra of the collector
            raise ImportError(
                "PostgreSQL storage needs psycopg: pip install 'sqreen-sdk[server]'"
            ) from None
        self._psycopg = psycopg
        self.dsn = dsn
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._idle: list[psycopg.Connection[Any]] = []
        self._closed = False
        self._copier = EventCopier()
        self._timeout = _connect_timeout(psycopg, dsn)
        try:
            if not create and not self._has_schema():
                raise RuntimeError(
                    "no sqreen database at that PostgreSQL URL: it holds no sqreen tables "
                    "(give --db, or set SQREEN_DB; `sqreen serve` creates them)"
                )
            if upgrade:
                self.migrate()
                self._repair_log()
            else:
                self.check_schema()
        except psycopg.OperationalError as exc:
            self.close()
            # libpq's hint goes on a line of its own ("\n\tIs the server running..."): one
            # line, for the CLI's error and the worker's "waits for the database".
            said = " ".join(str(exc).split())
            raise DatabaseUnreachable(f"cannot connect to PostgreSQL: {said}".strip()) from None
        except psycopg.ProgrammingError as exc:  # (InsufficientPrivilege among them)
            self.close()
            if exc.sqlstate is not None:  # the server's answer (which holds no URL)
                raise RuntimeError(_refused_schema(exc)) from None
            # psycopg's message quotes the URL, or a piece of it: its password, perhaps.
            raise RuntimeError(
                "cannot use the PostgreSQL URL: psycopg cannot parse it (its host, port, "
                "percent-escapes or options); it is not repeated here, as it may hold a password"
            ) from None
        except BaseException:
            self.close()
            raise

    def _has_schema(self) -> bool:
        """Whether the database holds a sqreen schema (a read-only command creates none)."""
        with self._connection() as conn:
            found = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        return found == (True,)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self._slots:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is not None and not _usable(conn):
                conn.close()
                conn = None
            if conn is None:
                conn = self._psycopg.connect(self.dsn, autocommit=True, **self._timeout)
            try:
                yield conn
            finally:
                with self._lock:
                    # A connection in use when close() ran (a request or a job thread that
                    # outlived the app) is closed as it comes back, not kept open for no one.
                    keep = not (conn.closed or conn.broken or self._closed)
                    if keep:
                        self._idle.append(conn)
                if not keep:
                    conn.close()

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        self._not_tied()
        with self._connection() as conn:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield _PgCursor(cur)
            except BaseException:
                self._copier.forget(conn)
                raise

    @contextmanager
    def _count_cursor(self) -> Iterator[Cursor]:
        # Outside any transaction: each statement reads what is committed when it starts.
        self._not_tied()
        with self._connection() as conn, conn.cursor() as cur:
            yield _PgCursor(cur)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._connection() as conn:
            return conn.execute(_q(sql), params).fetchall()

    def _lock_windows(self, cur: Cursor, keys: Sequence[tuple[str, str]]) -> None:
        # One transaction-scoped advisory lock a key (a 64-bit hash of stream and key), taken
        # in key order: two processes counting one key take turns, and cannot deadlock.
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
            "FROM unnest(?::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
            [[f"{stream}\x1f{key}" for stream, key in keys]],
        )

    def _insert_new_hits(
        self, cur: Cursor, hits: Sequence[tuple[str, str, int, int, str | None]]
    ) -> None:
        # The hits of the events this transaction stored: none is stored already, so COPY,
        # its rows built as one string (no array for psycopg to dump an item at a time, no
        # conflict check a row), rather than the arrays' INSERT ... ON CONFLICT DO NOTHING:
        # +2.4 % events/s with the templates, side by side (bench_ingest_ab.py --backend
        # postgres --playbooks templates --against).
        text = hits_text(hits) if hits else None
        if text is None:
            super()._insert_new_hits(cur, hits)
            return
        assert isinstance(cur, _PgCursor)
        with cur.raw.copy(f"COPY {HITS} (stream, key, ts, seq, value) FROM STDIN") as copy:
            copy.write(text)

    def _purge_writes(self, cur: Cursor, before: int) -> None:
        # By time; the highest id deleted kept, which a reader whose previous snapshot
        # may not have seen it takes for a gap (_pg_log.py).
        cur.execute(
            "WITH gone AS (DELETE FROM window_writes WHERE at < ? RETURNING id) "
            "INSERT INTO counters (name, value) SELECT ?, max(id) FROM gone "
            "HAVING max(id) IS NOT NULL "
            "ON CONFLICT (name) DO UPDATE SET value = greatest(counters.value, excluded.value)",
            (before, PURGED),
        )

    def _lock_actions(self, cur: Cursor) -> None:
        cur.execute("SELECT value FROM counters WHERE name = 'actions' FOR UPDATE")

    def _hold(self, cur: Cursor, name: str) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (name,))

    def _fence(self, cur: Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock_shared(?)", (EXPORT_FENCE,))

    def committed_marks(self) -> tuple[int, int]:
        # Once the exclusive lock is held, every transaction that took a seq or an alert id
        # before has ended, and every later one takes a higher one: the newest rows read
        # then (each statement reads what is committed at its start) are marks no row
        # committed later can fall below. Ingest waits meanwhile, for one read.
        with self._write() as cur:
            cur.execute(f"SET LOCAL lock_timeout = '{FENCE_TIMEOUT}'")
            cur.execute("SELECT pg_advisory_xact_lock(?)", (EXPORT_FENCE,))
            events, alerts = cur.execute(COMMITTED_MARKS).fetchone()
        return int(events), int(alerts)

    def _lock_schema(self, cur: Cursor) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))

    def _insert_events(self, cur: Cursor, rows: list[EventRecord]) -> list[int | None]:
        # COPY through a staging table, inserted in id order (see _pgcopy.py).
        assert isinstance(cur, _PgCursor)
        seqs = self._copier.insert_events(cur.raw, rows)
        return [seqs.get(row.id) for row in rows]

    def _between_batches(self, cur: Cursor) -> None:
        # The staging table empties at the commit (see _pgcopy.py): emptied here for the
        # next batch of the same transaction, which would insert these rows again.
        assert isinstance(cur, _PgCursor)
        self._copier.clear(cur.raw)

    def _insert_index(self, cur: Cursor, table: str, flat: list[Any]) -> None:
        assert isinstance(cur, _PgCursor)
        self._copier.insert_side(cur.raw, table, flat)

    def database_bytes(self) -> int:
        (size,), *_ = self._read("SELECT pg_database_size(current_database())")
        return int(size)

    def reclaim_space(self) -> bool:
        return False  # autovacuum makes it reusable; VACUUM FULL locks: the operator's call

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
