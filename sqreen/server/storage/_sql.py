"""The SQL both back ends share: everything but connections, schemas and dialect details.

Statements are written once, with ``?`` placeholders (the PostgreSQL back end translates
them), and every value, property keys included, travels as a parameter: no SQL is ever built
from what a client sent. The only identifiers interpolated come from fixed tables below.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from ..._wire import WireEvent
from ._after_commit import AfterCommit
from ._away import OncePer, away, what_failed
from ._entity_rows import AGENT_COLUMNS, KEY_COLUMNS, AgentRow, KeyRow, agent_from_row, key_from_row
from ._export import ExportQueries
from ._intel import IntelQueries
from ._logins import LoginQueries
from ._parts import placeholders
from ._places import PlaceQueries
from ._prepared import PreparedEvents, TiedStep, prepare
from ._queries import EventQueries
from ._retention import RetentionQueries
from ._rows import EVENT_COLUMNS, EventRecord, clean
from ._schema_parts import SchemaParts
from ._tied import TiedSteps
from ._users import UserQueries
from .model import (
    AGENT_TTL,
    KEY_SCOPES,
    MAX_AGENTS_PER_KEY,
    Agent,
    ApiKey,
    Clock,
    Heartbeat,
    InsertResult,
    KeyScope,
    StoredKey,
    from_us,
    to_us,
    utc_now,
)

__all__ = ["Cursor", "SqlStorage"]

logger = logging.getLogger("sqreen.server")

PURGE_CHUNK: Final = 5000
# Rows a statement: multi-row VALUES bind every parameter in C and run as one step, which is
# cheaper than executemany() in both drivers; the chunks stay under SQLite's 32766 and
# PostgreSQL's 65535 parameters.
INSERT_CHUNK: Final = 1000
INDEX_CHUNK: Final = 5000


class Cursor(Protocol):
    """What the shared SQL needs of a DB-API cursor (sqlite3's, or psycopg's behind a shim)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, params: Sequence[Sequence[Any]], /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class SqlStorage(
    EventQueries,
    AfterCommit,
    UserQueries,
    LoginQueries,
    IntelQueries,
    ExportQueries,
    PlaceQueries,
    RetentionQueries,
    SchemaParts,
    TiedSteps,
):
    """The :class:`~.base.Storage` implementation, less connections and migrations (event
    queries in :class:`~._queries.EventQueries`, playbooks' in
    :class:`~._playbooks.PlaybookQueries` (with :class:`~._after_commit.AfterCommit`, for a
    dialect that counts after the commit) over the blocks' :class:`~._blocks.BlockQueries`,
    users' traits in :class:`~._users.UserQueries`, the explorer's logins and sessions in
    :class:`~._logins.LoginQueries`, IP intelligence's in :class:`~._intel.IntelQueries`,
    the export forwarder's cursors and lease in :class:`~._export.ExportQueries`, impossible
    travel's placed logins in :class:`~._places.PlaceQueries`, retention of the other
    tables in :class:`~._retention.RetentionQueries`, migrations in
    :class:`~._schema_parts.SchemaParts`)."""

    def __init__(self, clock: Clock = utc_now) -> None:
        self._clock = clock
        self._said_away = OncePer()  # batches that failed together for the database away

    def now(self) -> datetime:
        return self._clock()

    def _write(self) -> AbstractContextManager[Cursor]:
        """A cursor inside a write transaction, committed when the block exits cleanly."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- events -------------------------------------------------------------------------

    def _insert_events(self, cur: Cursor, rows: list[EventRecord]) -> list[int | None]:
        """Insert serialised event rows (of one key, ids unique among them), skipping ids
        already stored under that key; return each row's seq, or None for those skipped."""
        seqs: dict[str, int] = {}
        columns = ", ".join(EVENT_COLUMNS)
        for i in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[i : i + INSERT_CHUNK]
            cur.execute(
                f"INSERT INTO events ({columns}) VALUES "
                f"{placeholders(len(chunk), len(EVENT_COLUMNS))} "
                "ON CONFLICT (id, key_id) DO NOTHING RETURNING seq, id",
                [v for row in chunk for v in row],
            )
            seqs.update((id_, seq) for seq, id_ in cur.fetchall())
        return [seqs.get(row.id) for row in rows]

    def _insert_index(self, cur: Cursor, table: str, flat: list[Any]) -> None:
        """Insert (seq, key, value) rows, flattened, into ``event_props`` or ``event_users``."""
        for i in range(0, len(flat), 3 * INDEX_CHUNK):
            chunk = flat[i : i + 3 * INDEX_CHUNK]
            cur.execute(
                f"INSERT INTO {table} (seq, key, value) VALUES {placeholders(len(chunk) // 3, 3)}",
                chunk,
            )

    def insert_events(
        self,
        events: Sequence[WireEvent],
        *,
        app: str | None = None,
        host: str | None = None,
        received_at: datetime | None = None,
        enrichment: Sequence[Mapping[str, Any]] | None = None,
        key_id: int = 0,
    ) -> InsertResult:
        prepared = self.prepare_events(
            events,
            app=app,
            host=host,
            received_at=received_at,
            enrichment=enrichment,
            key_id=key_id,
        )
        (result,) = self.store_prepared([prepared])
        if isinstance(result, Exception):
            raise result
        return result

    def prepare_events(
        self,
        events: Sequence[WireEvent],
        *,
        app: str | None = None,
        host: str | None = None,
        received_at: datetime | None = None,
        enrichment: Sequence[Mapping[str, Any]] | None = None,
        key_id: int = 0,
        places: Sequence[tuple[Any, ...]] = (),
    ) -> PreparedEvents:
        received_us = to_us(received_at or self.now())
        return prepare(events, app, host, received_us, enrichment, key_id, places)

    def store_prepared(
        self, batches: Sequence[PreparedEvents], tied: TiedStep | None = None
    ) -> list[InsertResult | Exception]:
        """Store each batch: together in one transaction when there are several (a commit, and
        the pages it writes, shared: 29 -> 23 µs of CPU an event for four batches of 500 in
        ``bench_ingest_cpu.py``'s store stage); should that transaction fail, each alone, so
        that one batch's failure stays its own. A transaction that cannot begin (the database
        locked beyond the busy timeout, or unreachable) is every batch's error at once.
        ``tied`` runs in the transaction that stores them all, where the dialect ties
        (:class:`~._tied.TiedSteps`), never in those storing them one by one after it failed."""
        todo = [p for p in batches if p.rows]
        tied = tied if self._TIES and todo else None
        if len(todo) > 1:
            began = ran = False
            try:
                with self._write() as cur:
                    began = True
                    seqs = {}
                    for n, p in enumerate(todo):
                        if n:
                            self._between_batches(cur)
                        seqs[id(p)] = self._store_rows(cur, p)
                    results: list[InsertResult | Exception] = [
                        p.result(seqs.get(id(p), ())) for p in batches
                    ]
                    ran = self._tie(cur, tied, results)
            except Exception as exc:
                if ran and tied is not None:  # rolled back with the transaction
                    self._untie(tied)
                if not began:  # no transaction (the database locked, or gone): no batch's
                    # fault, and each alone would wait for the lock again
                    return [p.result(()) if not p.rows else exc for p in batches]
                if not away(exc):
                    logger.warning(
                        "sqreen: %d batches failed to store together; storing each alone",
                        len(todo),
                        exc_info=True,
                    )
                elif self._said_away.due(
                    what_failed(exc)
                ):  # (a connection cut: each alone may pass; a
                    # full disk: a traceback each, nine in 20 s; what each alone meets is
                    # answered 503 and said once a minute)
                    logger.warning(
                        "sqreen: %d batches failed to store together (%s); storing each "
                        "alone (said once a minute at most)",
                        len(todo),
                        what_failed(exc),
                    )
            else:
                for p in todo:
                    self._places_stored(_new_places(p, seqs[id(p)]))
                return results
            tied = None
        out: list[InsertResult | Exception] = []
        for p in batches:
            ran = False
            try:
                if not p.rows:
                    out.append(p.result(()))
                    continue
                with self._write() as cur:
                    seqs_alone = self._store_rows(cur, p)
                    result = p.result(seqs_alone)
                    if tied is not None:  # the one batch with rows
                        rest = _empty(batches[len(out) + 1 :])
                        ran = self._tie(cur, tied, [*out, result, *rest])
            except Exception as exc:
                if ran and tied is not None:
                    self._untie(tied)
                out.append(exc)
                continue
            self._places_stored(_new_places(p, seqs_alone))
            out.append(result)
        return out

    def _between_batches(self, cur: Cursor) -> None:
        """Between two batches stored in one transaction (a dialect's business)."""

    def _store_rows(self, cur: Cursor, prepared: PreparedEvents) -> list[int | None]:
        """Insert one prepared batch in the transaction of ``cur``: its events' seqs."""
        self._fence(cur)
        seqs = self._insert_events(cur, prepared.rows)
        for table, flat in zip(("event_props", "event_users"), prepared.sides, strict=True):
            if None in seqs:  # duplicates: drop their rows
                flat = [
                    v
                    for i in range(0, len(flat), 3)
                    if seqs[flat[i]] is not None
                    for v in (flat[i], flat[i + 1], flat[i + 2])
                ]
            else:
                flat = flat.copy()  # the prepared rows stay as they are, should this fail
            flat[0::3] = [seqs[position] for position in flat[0::3]]
            if flat:
                self._insert_index(cur, table, flat)
        if rows := _new_places(prepared, seqs):  # impossible travel's
            self._insert_places(cur, rows)
        return seqs

    def purge_older_than(self, days: float) -> int:
        """Delete the events received more than ``days`` ago (by their receipt, never their
        own time, which a skewed SDK clock sets: see :meth:`~.base.EventStore.purge_older_than`)."""
        cutoff = to_us(self.now() - timedelta(days=days))
        total = 0
        while True:
            with self._write() as cur:
                seqs = [
                    seq
                    for (seq,) in cur.execute(
                        "SELECT seq FROM events WHERE received_at < ? LIMIT ?",
                        (cutoff, PURGE_CHUNK),
                    ).fetchall()
                ]
                if not seqs:
                    break
                marks = ", ".join("?" * len(seqs))
                for table in ("event_props", "event_users", "events"):
                    cur.execute(f"DELETE FROM {table} WHERE seq IN ({marks})", seqs)
            total += len(seqs)
        # Impossible travel's placed logins, by their own time (capped at receipt, as the
        # events' is): a login older than the retention compares with nothing stored.
        self.purge_places(cutoff)
        return total

    def newest_received_at(self) -> datetime | None:
        # By the primary key: one row read, however many events there are.
        found = self._read("SELECT received_at FROM events ORDER BY seq DESC LIMIT 1")
        return next((from_us(at) for (at,) in found), None)

    # -- API keys -----------------------------------------------------------------------

    def create_key(self, name: str, token_hash: str, scope: KeyScope = "ingest") -> ApiKey:
        if scope not in KEY_SCOPES:
            raise ValueError(f"scope must be one of {', '.join(KEY_SCOPES)}, not {scope!r}")
        created = to_us(self.now())
        with self._write() as cur:
            (key_id,) = cur.execute(
                "INSERT INTO api_keys (name, token_hash, created_at, scope) "
                "VALUES (?, ?, ?, ?) RETURNING id",
                (name, token_hash, created, scope),
            ).fetchone()
        return ApiKey(id=key_id, name=name, created_at=from_us(created), scope=scope)

    def key_by_hash(self, token_hash: str) -> StoredKey | None:
        rows = self._read(
            f"SELECT token_hash, {KEY_COLUMNS} FROM api_keys "
            "WHERE token_hash = ? AND revoked_at IS NULL",
            [token_hash],
        )
        return next((StoredKey(key_from_row(KeyRow._make(k)), h) for h, *k in rows), None)

    def list_keys(self) -> list[ApiKey]:
        rows = self._read_as(KeyRow._make, f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id")
        return [key_from_row(r) for r in rows]

    def revoke_key(self, key_id: int) -> bool:
        with self._write() as cur:
            cur.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (to_us(self.now()), key_id),
            )
            return cur.rowcount > 0

    # -- agents and settings ------------------------------------------------------------

    def record_heartbeat(self, heartbeat: Heartbeat) -> None:
        h, now = heartbeat, to_us(self.now())
        with self._write() as cur:
            (first_seen,) = cur.execute(
                "INSERT INTO agents (key_id, app, host, pid, framework, sdk_name, sdk_version, "
                "stats_json, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key_id, app, host, pid) DO UPDATE SET "
                "framework = excluded.framework, sdk_name = excluded.sdk_name, "
                "sdk_version = excluded.sdk_version, stats_json = excluded.stats_json, "
                "last_seen = excluded.last_seen RETURNING first_seen",
                (
                    h.key_id,
                    clean(h.app),
                    clean(h.host),
                    h.pid,
                    h.framework and clean(h.framework),
                    h.sdk_name and clean(h.sdk_name),
                    h.sdk_version and clean(h.sdk_version),
                    json.dumps(h.stats),
                    now,
                    now,
                ),
            ).fetchone()
            if first_seen == now:  # a new row: the key may now have one too many
                self._evict_agents(cur, h.key_id)

    @staticmethod
    def _evict_agents(cur: Cursor, key_id: int) -> None:
        """Delete the least recently seen processes of a key beyond
        :data:`~.model.MAX_AGENTS_PER_KEY` (a key making up processes fills its own share
        of the table, never more, and never touches another key's)."""
        (count,) = cur.execute("SELECT count(*) FROM agents WHERE key_id = ?", (key_id,)).fetchone()
        if count <= MAX_AGENTS_PER_KEY:
            return
        oldest = cur.execute(
            "SELECT app, host, pid FROM agents WHERE key_id = ? "
            "ORDER BY last_seen, app, host, pid LIMIT ?",
            (key_id, count - MAX_AGENTS_PER_KEY),
        ).fetchall()
        cur.executemany(
            "DELETE FROM agents WHERE key_id = ? AND app = ? AND host = ? AND pid = ?",
            [(key_id, app, host, pid) for app, host, pid in oldest],
        )

    def agents(self) -> list[Agent]:
        rows = self._read_as(
            AgentRow._make,
            f"SELECT {AGENT_COLUMNS} FROM agents WHERE last_seen >= ? "
            "ORDER BY last_seen DESC, key_id, app, host, pid",
            [to_us(self.now() - AGENT_TTL)],
        )
        return [agent_from_row(r) for r in rows]

    def purge_agents(self) -> int:
        cutoff = to_us(self.now() - AGENT_TTL)
        with self._write() as cur:
            cur.execute("DELETE FROM agents WHERE last_seen < ?", (cutoff,))
            return max(cur.rowcount, 0)

    def get_setting(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM settings WHERE key = ?", [key])
        return next((str(value) for (value,) in rows), None)

    def set_setting(self, key: str, value: str) -> None:
        with self._write() as cur:
            cur.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def add_setting(self, key: str, value: str) -> str:
        with self._write() as cur:
            cur.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (key, value),
            )
            (stored,) = cur.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return str(stored)


def _empty(batches: Sequence[PreparedEvents]) -> list[InsertResult]:
    """The results of batches without rows (nothing to store)."""
    return [p.result(()) for p in batches]


def _new_places(prepared: PreparedEvents, seqs: Sequence[int | None]) -> list[tuple[Any, ...]]:
    """The ``login_places`` rows of ``prepared``'s logins newly stored (their ``seqs``)."""
    return [place[1:] for place in prepared.places if seqs[place[0]] is not None]
