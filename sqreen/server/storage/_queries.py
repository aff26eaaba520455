"""Reading events back: pages, scans, counts, group counts, histograms, spans, by id or seq;
the SQL both back ends share. Which index each read walks (chosen by the code rather than the
planner, and why) is decided in :mod:`._walks`.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Final, TypeVar

from ._rows import EVENT_COLUMNS, clean, event_from_row
from ._walks import EventWalks
from .model import NO_FILTER, EventFilter, StoredEvent, from_us, to_us

HOUR_US: Final = 3_600_000_000


def span_of(times: list[int]) -> tuple[int, datetime | None, datetime | None]:
    """How many ``times`` (µs) there are, and the earliest and the latest (events arrive out
    of time order: spools, imports, late senders; a chart starts at the earliest)."""
    if not times:
        return 0, None, None
    return len(times), from_us(min(times)), from_us(max(times))


def histogram_of(
    times: list[int], buckets: int, start: datetime | None, end: datetime
) -> list[tuple[datetime, int]]:
    """Counts of ``times`` (µs) in ``buckets`` equal slices of [start, end) (``start``
    None: an hour before ``end``), as :meth:`EventQueries.histogram` gives them."""
    buckets = max(1, buckets)
    until = to_us(end)
    since = until - HOUR_US if start is None else min(to_us(start), until - 1)
    width = max(1, -(-(until - since) // buckets))
    counts = [0] * buckets
    last = buckets - 1
    for ts in times:
        if since <= ts < until:
            bucket = (ts - since) // width
            counts[bucket if bucket < last else last] += 1
    return [(from_us(since + i * width), n) for i, n in enumerate(counts)]


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
#: Ids (or seqs) one read of rows by id may ask for.
MAX_IDS: Final = 1000
#: Events of one id read at once, at most (:meth:`EventQueries.events_with_id`): one a key.
MOST_WITH_ID: Final = 64
#: What rows are read by: seqs and block ids (int), event ids (str).
Id = TypeVar("Id", int, str)


class EventQueries(EventWalks):
    """The event reads of :class:`~._sql.SqlStorage`."""

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

    def scan_events_by_time(
        self,
        filters: EventFilter = NO_FILTER,
        *,
        after: tuple[datetime, int] | None = None,
        limit: int = 1000,
    ) -> list[StoredEvent]:
        """Matching events by time, then seq, after ``after`` (a time and a seq): a walk of
        the time index (``events_ts``, whose entries are in that order on both back ends).

        The rest of the events of ``after``'s time first, then those of later times: two
        seeks of the index. One condition, ``(ts, seq) > (?, ?)``, would be one statement,
        but SQLite seeks it by the time alone and reads every event of that time again for
        each page (an import of events all of one time: pages times its events).
        """
        conds, params = self._where(filters)
        limit = max(0, limit)
        found = []
        if after is not None:
            at = to_us(after[0])
            found = self._read(
                f"SELECT {SELECT_EVENT} FROM events e WHERE "
                f"{' AND '.join([*conds, 'e.ts = ?', 'e.seq > ?'])} ORDER BY e.seq LIMIT ?",
                [*params, at, after[1], limit],
            )
            conds, params = [*conds, "e.ts > ?"], [*params, at]
        if len(found) < limit:
            where = f"WHERE {' AND '.join(conds)} " if conds else ""
            found += self._read(
                f"SELECT {SELECT_EVENT} FROM events e {where}ORDER BY e.ts, e.seq LIMIT ?",
                [*params, limit - len(found)],
            )
        return [event_from_row(r) for r in found]

    def query_events(
        self,
        filters: EventFilter = NO_FILTER,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 50,
        scan: int | None = None,
    ) -> list[StoredEvent]:
        # The page's seqs first (from indexes alone), then its rows: a sort never carries
        # whole rows.
        page, params = self._newest(filters, "e.seq", limit, before_seq, after_seq, scan=scan)
        rows = self._read(
            f"SELECT {SELECT_EVENT} FROM events e WHERE e.seq IN ({page}) ORDER BY e.seq DESC",
            params,
        )
        return [event_from_row(r) for r in rows]

    def span(
        self, filters: EventFilter = NO_FILTER, *, newest: int
    ) -> tuple[int, datetime | None, datetime | None]:
        return span_of(self.sample_times(filters, newest=newest))

    def sample_times(self, filters: EventFilter = NO_FILTER, *, newest: int) -> list[int]:
        sample, params = self._newest(filters, "e.ts AS ts", newest, sample=True)
        return [int(ts) for (ts,) in self._read(sample, params)]

    def get_event(self, event_id: str, *, seq: int | None = None) -> StoredEvent | None:
        """The event of this id: ids are unique per key, so the first stored of them, or the
        one of ``seq``."""
        at, params = ("", []) if seq is None else (" AND e.seq = ?", [seq])
        rows = self._read(
            f"SELECT {SELECT_EVENT} FROM events e WHERE e.id = ?{at} ORDER BY e.seq LIMIT 1",
            [clean(event_id), *params],
        )
        return next(map(event_from_row, rows), None)

    def events_with_id(self, event_id: str) -> list[StoredEvent]:
        """Every stored event of this id, oldest first: one a key at most (ids are unique per
        key), :data:`MOST_WITH_ID` at most."""
        rows = self._read(
            f"SELECT {SELECT_EVENT} FROM events e WHERE e.id = ? ORDER BY e.seq LIMIT ?",
            [clean(event_id), MOST_WITH_ID],
        )
        return [event_from_row(row) for row in rows]

    def stored_ids(self, ids: Collection[str]) -> set[str]:
        """Which of ``ids`` (at most :data:`MAX_IDS`) an event stored under any key has: the
        ``(id, key)`` index by its first column."""
        cleaned = {clean(i): i for i in ids}
        wanted, marks = id_list(cleaned, "ids")
        if not wanted:
            return set()
        rows = self._read(f"SELECT DISTINCT id FROM events WHERE id IN ({marks})", wanted)
        return {cleaned[found] for (found,) in rows if found in cleaned}

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
        end = end or filters.until or self.now()
        start = start or filters.since
        if newest is not None:  # the sample's times, read once, counted here
            times = self.sample_times(filters, newest=newest)
            return histogram_of(times, buckets, start or span_of(times)[1], end)
        until = to_us(end)
        if start is not None:
            since = to_us(start)
        else:
            conds, params = self._where(filters)
            where = f"WHERE {' AND '.join(conds)}" if conds else ""
            oldest = self._scalar(f"SELECT min(e.ts) FROM events e {where}", params)
            since = until - HOUR_US if oldest is None else min(oldest, until - 1)
        width = max(1, -(-(until - since) // buckets))
        conds, params = self._where(filters)
        conds += ["e.ts >= ?", "e.ts < ?"]
        rows = self._read(
            f"SELECT (e.ts - ?) / CAST(? AS BIGINT), count(*) FROM events e "
            f"WHERE {' AND '.join(conds)} GROUP BY 1",
            [since, width, *params, since, until],
        )
        counts = dict.fromkeys(range(buckets), 0)
        for bucket, n in rows:
            counts[min(int(bucket), buckets - 1)] += int(n)
        return [(from_us(since + i * width), n) for i, n in counts.items()]


def id_list(ids: Collection[Id], what: str) -> tuple[list[Id], str]:
    """``ids`` sorted without repeats, and their placeholders for ``IN (...)``;
    :class:`ValueError` beyond :data:`MAX_IDS` (a read by id is always bounded)."""
    wanted = sorted(set(ids))
    if len(wanted) > MAX_IDS:
        raise ValueError(f"{len(wanted)} {what}, at most {MAX_IDS}")
    return wanted, ", ".join("?" * len(wanted))
