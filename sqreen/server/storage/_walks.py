"""Which index a read of events walks, and the conditions of a filter; the SQL both back
ends share, under :class:`~._queries.EventQueries`.

A page (keyset on ``seq``) and a bounded *sample* (the newest N matching events, for the Event
Explorer's histogram and group counts, ``newest=N``) walk one index down from the newest events
and stop at a ``LIMIT``; only the unbounded counts (``count_events``, and ``count_by`` or
``histogram`` without ``newest``) read every match. Which index is walked is decided here, not
left to the planner, because SQLite plans without statistics and PostgreSQL's cost model
prefers hash joins over millions of rows to thousands of index lookups:

- a user or property filter walks its side table's (key, value, seq) index (SQLite's users'
  is by run of 4 096 seqs first: walked run by run from the newest), alone when no other
  condition needs the event row, looking events up only for the rows kept;
- a filter on time alone walks the seq order (recent, wide ranges) or reads the range from the
  time index and sorts it (narrow or old ranges), by a cost estimated from two index lookups;
  a sample of it is the newest by time, read backwards from the time index;
- group counts on a side table look each sampled event up by primary key.

Values, property keys included, always travel as parameters; identifiers come from fixed
tables (the filter's columns below, :mod:`._queries`' ``GROUP_COLUMNS`` and ``SIDE_TABLES``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

from ...events import STANDARD_EVENTS
from ._rows import clean
from ._side_rows import index_value, indexed_identifier
from .model import MAX_IPS, EventFilter, to_us

__all__ = ["EventWalks", "severity_names"]

_EVENT_COLUMN: Final = re.compile(r"\be\.(\w+)")

R = TypeVar("R")


def severity_names(level: str) -> list[str]:
    """The standard names of severity ``level``; for ``info``, those of every other level
    (an info event is one whose name is none of them)."""
    if level == "info":
        return sorted(n for n, e in STANDARD_EVENTS.items() if e.severity != "info")
    return sorted(n for n, e in STANDARD_EVENTS.items() if e.severity == level)


class EventWalks:
    """How the event reads of :class:`~._queries.EventQueries` find their rows: the
    conditions of a filter, and the walk down one index to the newest matching events."""

    #: Side tables whose (key, value) index is by run of seqs first (``seq >> shift``), by
    #: name: the table of their runs (a row a run, its number ``n``) and the shift (a back
    #: end's business: SQLite's users, ``_schema`` migration 20).
    RUN_INDEXED: Mapping[str, tuple[str, int]] = {}

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

    def _side_walk(self, table: str) -> tuple[str, str]:
        """The rows ``d`` of side table ``table`` as a walk newest first reads them: its FROM
        part and its ORDER BY.

        An index by run first (:attr:`RUN_INDEXED`) is walked run by run from the newest (from
        the table of runs, ``b``), each run's rows by seq: a seek a run, and no sort, so a
        ``LIMIT`` stops the walk. ``CROSS JOIN`` keeps the runs outside; ``+ 0``: SQLite
        (3.40) seeks the index on ``seq >> shift`` for ``b.n + 0``, not for ``b.n`` (it
        scanned ``d``)."""
        if table not in self.RUN_INDEXED:
            return f"{table} d", "d.seq DESC"
        runs, shift = self.RUN_INDEXED[table]
        return (
            f"{runs} b CROSS JOIN {table} d ON (d.seq >> {shift}) = b.n + 0",
            "b.n DESC, d.seq DESC",
        )

    @staticmethod
    def _side_filters(f: EventFilter) -> list[tuple[str, str, str]]:
        out = [("event_users", clean(k), indexed_identifier(v)) for k, v in f.users]
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
        scan: int | None = None,
    ) -> tuple[str, list[Any]]:
        """SQL selecting ``columns`` (of ``events e``; ``{seq}`` names the seq column of the
        index walked) of the newest ``limit`` matching events, newest first, and its
        parameters. A ``sample`` of a filter on time alone is the newest by time instead
        (read backwards from the time index, no sort). ``scan``: with a key/value filter,
        look at the newest ``scan`` rows of its side table only."""
        side = self._side_filters(filters)
        by = ""  # the ORDER BY of a walk down a side table (none: by ``order``)
        # The most selective path for a page: walk one side table's (key, value) index
        # backwards when there is a key/value filter (:meth:`_side_walk`), else events by seq.
        if side and scan is not None:
            table, key, value = side[0]
            conds, params = self._where(filters, skip_side=0)
            rows, newest = self._side_walk(table)
            # (CROSS, SQLite only: 3.46 put events outside the walk and scanned them)
            join = "CROSS JOIN" if table in self.RUN_INDEXED else "JOIN"
            source = (
                f"(SELECT d.seq FROM {rows} WHERE d.key = ? AND d.value = ? ORDER BY {newest} "
                f"LIMIT ?) d {join} events e ON e.seq = d.seq"
            )
            params = [key, value, max(0, scan), *params]
            order, sort = "d.seq", ""
        elif side:
            table, key, value = side[0]
            conds, params = self._where(filters, skip_side=0)
            rows, by = self._side_walk(table)
            source = f"{rows} JOIN events e ON e.seq = d.seq"
            if not conds:
                # Walk the side table's index alone, and look up in events only what is asked
                # for, only for the rows the LIMIT keeps (a join would let PostgreSQL pick a
                # hash join over every event).
                source = rows
                columns = _EVENT_COLUMN.sub(_lookup_column, columns.replace("e.seq", "d.seq"))
            conds = ["d.key = ?", "d.value = ?", *conds]
            params = [key, value, *params]
            order, sort = "d.seq", ""
            if table in self.RUN_INDEXED:
                # The runs the keyset leaves out are not visited.
                _, shift = self.RUN_INDEXED[table]
                for seq, op in ((before_seq, "<="), (after_seq, ">=")):
                    if seq is not None:
                        conds.append(f"b.n {op} ?")
                        params.append(seq >> shift)
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
        by = by or f"{sort}{order} DESC"
        sql = f"SELECT {columns} FROM {source} {where} ORDER BY {by} LIMIT ?"
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


def _lookup_column(match: re.Match[str]) -> str:
    return f"(SELECT x.{match[1]} FROM events x WHERE x.seq = d.seq)"
