"""The SQL both back ends share: everything but connections, schemas and dialect details.

Statements are written once, with ``?`` placeholders (the PostgreSQL back end translates
them), and every value, property keys included, travels as a parameter: no SQL is ever built
from what a client sent. The only identifiers interpolated come from fixed tables below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from ..._wire import WireEvent
from ._rows import (
    EVENT_COLUMNS,
    clean,
    dumped,
    event_from_row,
    event_record,
    index_rows,
    index_value,
)
from .base import (
    NO_FILTER,
    ActionSet,
    Agent,
    ApiKey,
    Block,
    BlockType,
    EventFilter,
    Heartbeat,
    StoredEvent,
    from_us,
    to_us,
)

__all__ = ["Cursor", "SqlStorage"]

SELECT_EVENT: Final = "e.seq, " + ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
#: The plain columns :meth:`SqlStorage.count_by` may group on (user input never names one).
GROUP_COLUMNS: Final = {"name": "e.name", "ip": "e.ip", "app": "e.app", "host": "e.host"}
#: The key/value side tables, by the prefix of a field name.
SIDE_TABLES: Final = {"user": "event_users", "properties": "event_props"}
BLOCK_COLUMNS: Final = (
    "id, type, user_json, ip, reason, created_at, expires_at, created_by, lifted_at, lifted_by"
)
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


def _now() -> datetime:
    return datetime.now(UTC)


def placeholders(rows: int, columns: int) -> str:
    one = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([one] * rows)


class SqlStorage:
    """The :class:`~.base.Storage` implementation, less connections and migrations."""

    #: Ordered schema migrations: each a list of statements; index + 1 is its version.
    MIGRATIONS: Sequence[Sequence[str]] = ()

    def _write(self) -> AbstractContextManager[Cursor]:
        """A cursor inside a write transaction, committed when the block exits cleanly."""
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one query outside any write transaction and fetch all its rows."""
        raise NotImplementedError

    def _lock_schema(self, cur: Cursor) -> None:
        """Serialise migrations between processes (inside the migration transaction)."""

    def close(self) -> None:
        raise NotImplementedError

    # -- schema -------------------------------------------------------------------------

    def migrate(self) -> int:
        """Bring the schema up to date; return its version. Refuses a newer schema."""
        with self._write() as cur:
            self._lock_schema(cur)
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = cur.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                cur.execute("INSERT INTO schema_version (version) VALUES (0)")
            current = row[0] if row else 0
            if current > len(self.MIGRATIONS):
                raise RuntimeError(
                    f"the database schema is version {current}, newer than this sqreen "
                    f"({len(self.MIGRATIONS)}): upgrade sqreen-sdk"
                )
            for version in range(current + 1, len(self.MIGRATIONS) + 1):
                for statement in self.MIGRATIONS[version - 1]:
                    cur.execute(statement)
                cur.execute("UPDATE schema_version SET version = ?", (version,))
        return len(self.MIGRATIONS)

    # -- events -------------------------------------------------------------------------

    def _insert_events(self, cur: Cursor, records: list[list[Any]]) -> list[tuple[int, str]]:
        """Insert event records (ids unique among them), skipping ids already stored;
        return (seq, id) of those inserted."""
        out: list[tuple[int, str]] = []
        columns = ", ".join(EVENT_COLUMNS)
        for i in range(0, len(records), INSERT_CHUNK):
            chunk = records[i : i + INSERT_CHUNK]
            cur.execute(
                f"INSERT INTO events ({columns}) VALUES "
                f"{placeholders(len(chunk), len(EVENT_COLUMNS))} "
                "ON CONFLICT (id) DO NOTHING RETURNING seq, id",
                [v for record in chunk for v in dumped(record)],
            )
            out.extend(cur.fetchall())
        return out

    def _insert_index(self, cur: Cursor, table: str, rows: list[tuple[int, str, str]]) -> None:
        """Insert (seq, key, value) rows into ``event_props`` or ``event_users``."""
        for i in range(0, len(rows), INDEX_CHUNK):
            chunk = rows[i : i + INDEX_CHUNK]
            cur.execute(
                f"INSERT INTO {table} (seq, key, value) VALUES {placeholders(len(chunk), 3)}",
                [v for row in chunk for v in row],
            )

    def insert_events(
        self,
        events: Sequence[WireEvent],
        *,
        app: str | None = None,
        host: str | None = None,
        received_at: datetime | None = None,
    ) -> tuple[int, int]:
        received = to_us(received_at or _now())
        app = None if app is None else clean(app)
        host = None if host is None else clean(host)
        records: dict[str, list[Any]] = {}
        wire: dict[str, WireEvent] = {}
        for event in events:
            record = event_record(event, app, host, received)
            if record[0] not in records:
                records[record[0]] = record
                wire[record[0]] = event
        if not records:
            return 0, len(events)
        with self._write() as cur:
            inserted = self._insert_events(cur, list(records.values()))
            props, users = index_rows((seq, wire[id_]) for seq, id_ in inserted)
            if props:
                self._insert_index(cur, "event_props", props)
            if users:
                self._insert_index(cur, "event_users", users)
        return len(inserted), len(events) - len(inserted)

    def _where(
        self, f: EventFilter, skip_side: int = -1, time_index: bool = True
    ) -> tuple[list[str], list[Any]]:
        """Conditions on ``events e`` for a filter; side filter number ``skip_side`` is left
        out (the caller joins on it instead). Without ``time_index``, the time conditions are
        written so that no database uses the time index for them (``+e.ts``)."""
        conds: list[str] = []
        params: list[Any] = []
        for column, value in (("e.name", f.name), ("e.ip", f.ip), ("e.app", f.app)):
            if value is not None:
                conds.append(f"{column} = ?")
                params.append(clean(value))
        ts = "e.ts" if time_index else "+e.ts"
        if f.since is not None:
            conds.append(f"{ts} >= ?")
            params.append(to_us(f.since))
        if f.until is not None:
            conds.append(f"{ts} < ?")
            params.append(to_us(f.until))
        for n, (table, key, value) in enumerate(self._side_filters(f)):
            if n != skip_side:
                conds.append(
                    f"EXISTS (SELECT 1 FROM {table} s WHERE s.seq = e.seq "
                    "AND s.key = ? AND s.value = ?)"
                )
                params += [key, value]
        return conds, params

    @staticmethod
    def _side_filters(f: EventFilter) -> list[tuple[str, str, str]]:
        out = [("event_users", clean(k), clean(v)) for k, v in f.users]
        for k, v in f.properties:
            out.append(("event_props", clean(k), index_value(v) or ""))
        return out

    def _newest(
        self,
        filters: EventFilter,
        columns: str,
        limit: int,
        before_seq: int | None = None,
        after_seq: int | None = None,
        sample: bool = False,
    ) -> tuple[str, list[Any]]:
        """SQL selecting ``columns`` (of ``events e``; ``{seq}`` names the seq column of the
        index walked) of the newest ``limit`` matching events, newest first, and its
        parameters. A ``sample`` of a filter on time alone is the newest by time instead
        (read backwards from the time index, no sort)."""
        side = self._side_filters(filters)
        # The most selective path for a page: walk one side table's (key, value, seq) index
        # backwards when there is a key/value filter, else events by seq.
        if side:
            table, key, value = side[0]
            conds, params = self._where(filters, skip_side=0)
            source = f"{table} d JOIN events e ON e.seq = d.seq"
            if not conds:
                # Walk the side table's index alone, and look up in events only what is asked
                # for, only for the rows the LIMIT keeps (a join would let PostgreSQL pick a
                # hash join over every event).
                source = f"{table} d"
                columns = _EVENT_COLUMN.sub(_lookup_column, columns.replace("e.seq", "d.seq"))
            conds = ["d.key = ?", "d.value = ?", *conds]
            params = [key, value, *params]
            order, sort = "d.seq", ""
        else:
            source, order = "events e", "e.seq"
            if sample and self._time_only(filters):
                conds, params = self._where(filters)
                order, sort = "e.ts", ""
            elif self._time_only(filters):
                walk = self._walk_by_seq(filters, limit)
                conds, params = self._where(filters, time_index=not walk)
                # Sorting what the time index finds: keep the planner off the seq order.
                sort = "" if walk else "+"
            else:
                conds, params = self._where(filters)
                sort = ""
        if before_seq is not None:
            conds.append(f"{order} < ?")
            params.append(before_seq)
        if after_seq is not None:
            conds.append(f"{order} > ?")
            params.append(after_seq)
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        columns = columns.replace("{seq}", "e.seq" if order == "e.ts" else order)
        sql = f"SELECT {columns} FROM {source} {where} ORDER BY {sort}{order} DESC LIMIT ?"
        return sql, [*params, max(0, limit)]

    @staticmethod
    def _time_only(f: EventFilter) -> bool:
        """Whether a filter is on time alone (with no other index to walk)."""
        by_time = f.since is not None or f.until is not None
        return (
            by_time
            and f.name is None
            and f.ip is None
            and f.app is None
            and not (f.users or f.properties)
        )

    def _walk_by_seq(self, f: EventFilter, limit: int) -> bool:
        """For a filter on time alone: whether walking down the events by ``seq`` (checking
        each one's time) finds ``limit`` of them sooner than reading the range from the time
        index and sorting it by ``seq``.

        Walking costs the newer events skipped first, and the whole table when the range holds
        fewer than ``limit`` events; sorting costs the events in the range. Both counts are
        estimated from the ``seq`` of the events at the range's ends (events are mostly stored
        in time order), with two index lookups: no planner statistics needed.
        """
        first = "(SELECT seq FROM events WHERE ts >= ? ORDER BY ts LIMIT 1)"
        top, low, high = self._read(
            f"SELECT (SELECT max(seq) FROM events), {first}, {first}",
            [
                -(2**62) if f.since is None else to_us(f.since),
                2**62 if f.until is None else to_us(f.until),
            ],
        )[0]
        if top is None:
            return True
        low = top + 1 if low is None else low
        high = top + 1 if high is None else high
        in_range, newer = max(0, high - low), top + 1 - high
        return bool(in_range >= 2 * limit and newer < in_range)

    def query_events(
        self,
        filters: EventFilter = NO_FILTER,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 50,
    ) -> list[StoredEvent]:
        # The page's seqs first (from indexes alone), then its rows: a sort never carries
        # whole rows.
        page, params = self._newest(filters, "e.seq", limit, before_seq, after_seq)
        rows = self._read(
            f"SELECT {SELECT_EVENT} FROM events e WHERE e.seq IN ({page}) ORDER BY e.seq DESC",
            params,
        )
        return [event_from_row(r) for r in rows]

    def span(
        self, filters: EventFilter = NO_FILTER, *, newest: int
    ) -> tuple[int, datetime | None, datetime | None]:
        if self._time_only(filters):
            sample, params = self._newest(filters, "e.ts AS ts", newest, sample=True)
            sql = f"SELECT count(*), min(m.ts), max(m.ts) FROM ({sample}) m"
        else:
            # Seqs only (index-only walks), then the times of the two ends: two lookups.
            sample, params = self._newest(filters, "{seq} AS seq", newest, sample=True)
            at = "(SELECT ts FROM events WHERE seq = x.{})"
            sql = (
                f"SELECT x.n, {at.format('lo')}, {at.format('hi')} FROM (SELECT count(*) AS n, "
                f"min(m.seq) AS lo, max(m.seq) AS hi FROM ({sample}) m) x"
            )
        count, oldest, latest = self._read(sql, params)[0]
        return int(count), _opt_time(oldest), _opt_time(latest)

    def get_event(self, event_id: str) -> StoredEvent | None:
        rows = self._read(f"SELECT {SELECT_EVENT} FROM events e WHERE e.id = ?", [clean(event_id)])
        return event_from_row(rows[0]) if rows else None

    def count_events(self, filters: EventFilter = NO_FILTER) -> int:
        conds, params = self._where(filters)
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        return int(self._read(f"SELECT count(*) FROM events e {where}", params)[0][0])

    def count_by(
        self,
        field: str,
        filters: EventFilter = NO_FILTER,
        limit: int = 10,
        *,
        newest: int | None = None,
    ) -> list[tuple[str | None, int]]:
        conds, params = self._where(filters)
        prefix, _, key = field.partition(".")
        if field in GROUP_COLUMNS:
            column, source = GROUP_COLUMNS[field], "events e"
        elif prefix in SIDE_TABLES and key:
            column, source = "g.value", f"{SIDE_TABLES[prefix]} g JOIN events e ON e.seq = g.seq"
            conds, params = ["g.key = ?", *conds], [clean(key), *params]
        else:
            raise ValueError(
                f"cannot count by {field!r}: use name, ip, app, host, user.<key> "
                "or properties.<key>"
            )
        if newest is not None and field in GROUP_COLUMNS:
            # Count over the newest matching events only, walked as a page is: bounded.
            sample, params = self._newest(filters, f"{column} AS v", newest, sample=True)
            column, source, conds = "m.v", f"({sample}) m", []
        elif newest is not None:
            # A correlated subquery inside the sample (whose LIMIT keeps PostgreSQL from
            # repeating it): one primary-key lookup a sampled event in both databases, never a
            # read of every row of that key.
            lookup = (
                f"SELECT g.value FROM {SIDE_TABLES[prefix]} g WHERE g.seq = {{seq}} AND g.key = ?"
            )
            sample, params = self._newest(filters, f"({lookup}) AS v", newest, sample=True)
            column, source = "m.v", f"({sample}) m"
            conds, params = ["m.v IS NOT NULL"], [clean(key), *params]
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        rows = self._read(
            f"SELECT {column}, count(*) FROM {source} {where} GROUP BY {column} "
            f"ORDER BY count(*) DESC, {column} IS NULL, {column} LIMIT ?",
            [*params, max(0, limit)],
        )
        return [(r[0], int(r[1])) for r in rows]

    def histogram(
        self,
        filters: EventFilter = NO_FILTER,
        buckets: int = 60,
        *,
        newest: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[tuple[datetime, int]]:
        buckets = max(1, buckets)
        until = to_us(end or filters.until or _now())
        first = start or filters.since
        if first is not None:
            since = to_us(first)
        else:
            if newest is None:
                conds, params = self._where(filters)
                where = f"WHERE {' AND '.join(conds)}" if conds else ""
                oldest = self._read(f"SELECT min(e.ts) FROM events e {where}", params)[0][0]
            else:
                found = self.span(filters, newest=newest)[1]
                oldest = None if found is None else to_us(found)
            since = until - 3_600_000_000 if oldest is None else min(oldest, until - 1)
        width = max(1, -(-(until - since) // buckets))
        if newest is None:
            conds, params = self._where(filters)
            source = "events e"
        else:
            sample, params = self._newest(filters, "e.ts AS ts", newest, sample=True)
            conds, source = [], f"({sample}) e"
        conds += ["e.ts >= ?", "e.ts < ?"]
        rows = self._read(
            f"SELECT (e.ts - ?) / CAST(? AS BIGINT), count(*) FROM {source} "
            f"WHERE {' AND '.join(conds)} GROUP BY 1",
            [since, width, *params, since, until],
        )
        counts = dict.fromkeys(range(buckets), 0)
        for bucket, n in rows:
            counts[min(int(bucket), buckets - 1)] += int(n)
        return [(from_us(since + i * width), n) for i, n in counts.items()]

    def purge_older_than(self, days: float) -> int:
        cutoff = to_us(_now() - timedelta(days=days))
        total = 0
        while True:
            with self._write() as cur:
                seqs = [
                    r[0]
                    for r in cur.execute(
                        "SELECT seq FROM events WHERE ts < ? LIMIT ?", (cutoff, PURGE_CHUNK)
                    ).fetchall()
                ]
                if not seqs:
                    return total
                marks = ", ".join("?" * len(seqs))
                for table in ("event_props", "event_users", "events"):
                    cur.execute(f"DELETE FROM {table} WHERE seq IN ({marks})", seqs)
            total += len(seqs)

    # -- API keys -----------------------------------------------------------------------

    def create_key(self, name: str, token_hash: str) -> ApiKey:
        created = to_us(_now())
        with self._write() as cur:
            row = cur.execute(
                "INSERT INTO api_keys (name, token_hash, created_at) VALUES (?, ?, ?) RETURNING id",
                (name, token_hash, created),
            ).fetchone()
        return ApiKey(id=row[0], name=name, created_at=from_us(created))

    def key_by_hash(self, token_hash: str) -> tuple[ApiKey, str] | None:
        rows = self._read(
            "SELECT id, name, created_at, token_hash FROM api_keys "
            "WHERE token_hash = ? AND revoked_at IS NULL",
            [token_hash],
        )
        if not rows:
            return None
        id_, name, created, stored = rows[0]
        return ApiKey(id=id_, name=name, created_at=from_us(created)), stored

    def list_keys(self) -> list[ApiKey]:
        rows = self._read("SELECT id, name, created_at, revoked_at FROM api_keys ORDER BY id")
        return [
            ApiKey(id=r[0], name=r[1], created_at=from_us(r[2]), revoked_at=_opt_time(r[3]))
            for r in rows
        ]

    def revoke_key(self, key_id: int) -> bool:
        with self._write() as cur:
            cur.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (to_us(_now()), key_id),
            )
            return cur.rowcount > 0

    # -- blocks -------------------------------------------------------------------------

    def create_block(
        self,
        type: BlockType,
        *,
        user: dict[str, str] | None = None,
        ip: str | None = None,
        duration: timedelta | None = None,
        reason: str = "",
        created_by: str = "",
    ) -> Block:
        now = _now()
        expires = None if duration is None else to_us(now + duration)
        with self._write() as cur:
            row = cur.execute(
                "INSERT INTO blocks (type, user_json, ip, reason, created_at, expires_at, "
                f"created_by) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {BLOCK_COLUMNS}",
                (
                    type,
                    None if user is None else json.dumps(user),
                    ip,
                    reason,
                    to_us(now),
                    expires,
                    created_by,
                ),
            ).fetchone()
            self._bump_actions(cur)
        return _block(row)

    def lift_block(self, block_id: int, lifted_by: str = "") -> Block | None:
        now = to_us(_now())
        with self._write() as cur:
            row = cur.execute(
                "UPDATE blocks SET lifted_at = ?, lifted_by = ? WHERE id = ? "
                "AND lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?) "
                f"RETURNING {BLOCK_COLUMNS}",
                (now, lifted_by, block_id, now),
            ).fetchone()
            if row is not None:
                self._bump_actions(cur)
        return None if row is None else _block(row)

    @staticmethod
    def _bump_actions(cur: Cursor) -> None:
        cur.execute("UPDATE counters SET value = value + 1 WHERE name = 'actions'")

    def list_blocks(self, *, include_inactive: bool = False) -> list[Block]:
        if include_inactive:
            rows = self._read(f"SELECT {BLOCK_COLUMNS} FROM blocks ORDER BY id DESC")
        else:
            rows = self._read(
                f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE lifted_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > ?) ORDER BY id DESC",
                [to_us(_now())],
            )
        return [_block(r) for r in rows]

    def action_set(self) -> ActionSet:
        now = _now()
        # One statement, so the version and the items come from the same snapshot.
        rows = self._read(
            f"SELECT c.value, {', '.join('b.' + c for c in BLOCK_COLUMNS.split(', '))} "
            "FROM counters c LEFT JOIN blocks b ON b.lifted_at IS NULL "
            "AND (b.expires_at IS NULL OR b.expires_at > ?) WHERE c.name = 'actions' "
            "ORDER BY b.id",
            [to_us(now)],
        )
        blocks = tuple(_block(r[1:]) for r in rows if r[1] is not None)
        return ActionSet(version=int(rows[0][0]) if rows else 0, blocks=blocks, now=now)

    # -- agents and settings ------------------------------------------------------------

    def record_heartbeat(self, heartbeat: Heartbeat) -> None:
        h, now = heartbeat, to_us(_now())
        with self._write() as cur:
            cur.execute(
                "INSERT INTO agents (app, host, pid, framework, sdk_name, sdk_version, "
                "stats_json, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (app, host, pid) DO UPDATE SET framework = excluded.framework, "
                "sdk_name = excluded.sdk_name, sdk_version = excluded.sdk_version, "
                "stats_json = excluded.stats_json, last_seen = excluded.last_seen",
                (
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
            )

    def agents(self) -> list[Agent]:
        rows = self._read(
            "SELECT app, host, pid, framework, sdk_name, sdk_version, stats_json, first_seen, "
            "last_seen FROM agents ORDER BY last_seen DESC, app, host, pid"
        )
        return [
            Agent(
                app=r[0],
                host=r[1],
                pid=r[2],
                framework=r[3],
                sdk_name=r[4],
                sdk_version=r[5],
                stats=json.loads(r[6]),
                first_seen=from_us(r[7]),
                last_seen=from_us(r[8]),
            )
            for r in rows
        ]

    def get_setting(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM settings WHERE key = ?", [key])
        return rows[0][0] if rows else None

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
            row = cur.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return str(row[0])


_EVENT_COLUMN: Final = re.compile(r"\be\.(\w+)")


def _lookup_column(match: re.Match[str]) -> str:
    return f"(SELECT x.{match[1]} FROM events x WHERE x.seq = d.seq)"


def _opt_time(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def _block(row: Sequence[Any]) -> Block:
    id_, type_, user, ip, reason, created, expires, by, lifted, lifted_by = row
    return Block(
        id=id_,
        type=type_,
        user=None if user is None else json.loads(user),
        ip=ip,
        reason=reason,
        created_at=from_us(created),
        expires_at=_opt_time(expires),
        created_by=by,
        lifted_at=_opt_time(lifted),
        lifted_by=lifted_by,
    )
