"""Reading events back: pages, counts, histograms; the SQL both back ends share.

A page (keyset on ``seq``) and a bounded *sample* (the newest N matching events, for the Event
Explorer's histogram and group counts, ``newest=N``) walk one index down from the newest events
and stop at a ``LIMIT``; only the unbounded counts (``count_events``, and ``count_by`` or
``histogram`` without ``newest``) read every match. Which index is walked is decided here, not
left to the planner,
because SQLite plans without statistics and PostgreSQL's cost model prefers hash joins over
millions of rows to thousands of index lookups:

- a user or property filter walks its side table's (key, value, seq) index, alone when no
  other condition needs the event row, looking events up only for the rows kept;
- a filter on time alone walks the seq order (recent, wide ranges) or reads the range from the
  time index and sorts it (narrow or old ranges), by a cost estimated from two index lookups;
  a sample of it is the newest by time, read backwards from the time index;
- group counts on a side table look each sampled event up by primary key.

Values, property keys included, always travel as parameters; identifiers come from the fixed
tables below.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

from ...events import STANDARD_EVENTS
from ._rows import EVENT_COLUMNS, clean, event_from_row
from ._side_rows import index_value
from .model import MAX_IPS, NO_FILTER, EventFilter, StoredEvent, from_us, to_us

__all__ = ["MAX_IDS", "EventQueries", "id_list"]

SELECT_EVENT: Final = "e.seq, " + ", ".join(f"e.{c}" for c in EVENT_COLUMNS)
#: The plain columns :meth:`EventQueries.count_by` may group on (user input never names one).
GROUP_COLUMNS: Final = {
    "name": "e.name",
    "ip": "e.ip",
    "app": "e.app",
    "host": "e.host",
    "ip.country": "e.ip_country",
    "ip.kind": "e.ip_kind",
    "ip.asn": "e.ip_asn",
}
#: The key/value side tables, by the prefix of a field name.
SIDE_TABLES: Final = {"user": "event_users", "properties": "event_props"}
_EVENT_COLUMN: Final = re.compile(r"\be\.(\w+)")
#: Ids (or seqs) one read of rows by id may ask for.
MAX_IDS: Final = 1000

R = TypeVar("R")


def severity_names(level: str) -> list[str]:
    """The standard names of severity ``level``; for ``info``, those of every other level
    (an info event is one whose name is none of them)."""
    if level == "info":
        return sorted(n for n, e in STANDARD_EVENTS.items() if e.severity != "info")
    return sorted(n for n, e in STANDARD_EVENTS.items() if e.severity == level)


class EventQueries:
    """The event reads of :class:`~._sql.SqlStorage`."""

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one query outside any write transaction and fetch all its rows."""
        raise NotImplementedError

    def now(self) -> datetime:
        """The time by the storage's clock."""
        raise NotImplementedError

    def _read_as(
        self, make: Callable[[Iterable[Any]], R], sql: str, params: Sequence[Any] = ()
    ) -> list[R]:
        """The rows of a query as named rows (``make`` is a row type's ``_make``)."""
        return [make(row) for row in self._read(sql, params)]

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The one row of a query that always returns one (an aggregate)."""
        (row,) = self._read(sql, params)
        return tuple(row)

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The one value of a query that always returns one row of one column."""
        (value,) = self._one(sql, params)
        return value

    def _where(
        self, f: EventFilter, skip_side: int = -1, time_index: bool = True
    ) -> tuple[list[str], list[Any]]:
        """Conditions on ``events e`` for a filter; side filter number ``skip_side`` is left
        out (the caller joins on it instead). Without ``time_index``, the time conditions are
        written so that no database uses the time index for them (``+e.ts``)."""
        conds: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("e.name", f.name),
            ("e.ip", f.ip),
            ("e.app", f.app),
            ("e.ip_country", f.country),
            ("e.ip_kind", f.kind),
            ("e.ip_asn", f.asn),
        ):
            if value is not None:
                conds.append(f"{column} = ?")
                params.append(clean(value))
        if f.ips:
            wanted = sorted({clean(ip) for ip in f.ips})
            if len(wanted) > MAX_IPS:
                raise ValueError(f"{len(wanted)} addresses, at most {MAX_IPS}")
            conds.append(f"e.ip IN ({', '.join('?' * len(wanted))})")
            params += wanted
        if f.severity is not None:
            # Names of other severities are few and fixed; names of the app's own are info.
            names = severity_names(f.severity)
            marks = ", ".join("?" * len(names))
            conds.append(f"e.name {'NOT IN' if f.severity == 'info' else 'IN'} ({marks})")
            params += names
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
            and not f.ips
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
        top, low, high = self._one(
            f"SELECT (SELECT max(seq) FROM events), {first}, {first}",
            [
                -(2**62) if f.since is None else to_us(f.since),
                2**62 if f.until is None else to_us(f.until),
            ],
        )
        if top is None:
            return True
        low = top + 1 if low is None else low
        high = top + 1 if high is None else high
        in_range, newer = max(0, high - low), top + 1 - high
        return bool(in_range >= 2 * limit and newer < in_range)

    def scan_events(
        self, filters: EventFilter = NO_FILTER, *, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        """Matching events stored after ``after_seq``, oldest (lowest seq) first: a walk over
        everything, page by page (the backtest's)."""
        conds, params = self._where(filters)
        conds.append("e.seq > ?")
        rows = self._read(
            f"SELECT {SELECT_EVENT} FROM events e WHERE {' AND '.join(conds)} "
            "ORDER BY e.seq LIMIT ?",
            [*params, after_seq, max(0, limit)],
        )
        return [event_from_row(r) for r in rows]

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
        count, oldest, latest = self._one(sql, params)
        return int(count), _time(oldest), _time(latest)

    def get_event(self, event_id: str, *, seq: int | None = None) -> StoredEvent | None:
        """The event of this id: ids are unique per key, so the first stored of them, or the
        one of ``seq``."""
        at, params = ("", []) if seq is None else (" AND e.seq = ?", [seq])
        rows = self._read(
            f"SELECT {SELECT_EVENT} FROM events e WHERE e.id = ?{at} ORDER BY e.seq LIMIT 1",
            [clean(event_id), *params],
        )
        return next(map(event_from_row, rows), None)

    def events_by_seq(self, seqs: Collection[int]) -> list[StoredEvent]:
        """The stored events of these seqs (at most :data:`MAX_IDS`), oldest first; those no
        longer stored (retention) are missing. One primary-key lookup each."""
        wanted, marks = id_list(seqs, "seqs")
        if not wanted:
            return []
        rows = self._read(
            f"SELECT {SELECT_EVENT} FROM events e WHERE e.seq IN ({marks}) ORDER BY e.seq", wanted
        )
        return [event_from_row(r) for r in rows]

    def count_events(self, filters: EventFilter = NO_FILTER) -> int:
        conds, params = self._where(filters)
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        return int(self._scalar(f"SELECT count(*) FROM events e {where}", params))

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
                f"cannot count by {field!r}: use name, ip, app, host, ip.country, ip.kind, "
                "ip.asn, user.<key> or properties.<key>"
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
        return [(value, int(n)) for value, n in rows]

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
        until = to_us(end or filters.until or self.now())
        first = start or filters.since
        if first is not None:
            since = to_us(first)
        else:
            if newest is None:
                conds, params = self._where(filters)
                where = f"WHERE {' AND '.join(conds)}" if conds else ""
                oldest = self._scalar(f"SELECT min(e.ts) FROM events e {where}", params)
            else:
                _, found, _ = self.span(filters, newest=newest)
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


def id_list(ids: Collection[int], what: str) -> tuple[list[int], str]:
    """``ids`` sorted without repeats, and their placeholders for ``IN (...)``;
    :class:`ValueError` beyond :data:`MAX_IDS` (a read by id is always bounded)."""
    wanted = sorted(set(ids))
    if len(wanted) > MAX_IDS:
        raise ValueError(f"{len(wanted)} {what}, at most {MAX_IDS}")
    return wanted, ", ".join("?" * len(wanted))


def _lookup_column(match: re.Match[str]) -> str:
    return f"(SELECT x.{match[1]} FROM events x WHERE x.seq = d.seq)"


def _time(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)
