"""Where each user last logged in from: impossible travel's own table.

``login_places`` holds one row per successful login that IP intelligence placed in a city
with coordinates (:mod:`~..intel._travel` decides which; the pipeline hands the rows over
with the batch, and they are written in the events' own transaction, for the events newly
stored only). Its key is the user as impossible travel knows them (every identifier, folded:
``Alice`` is ``alice``), then the login's time: finding the logins just before and just after
a new one is a seek each, however long the user's history, and whatever spelling the
earlier login came in. Rows leave with the events' retention (:meth:`purge_places`).

Before this table, each placed login read the user's newest events through the identifiers'
index and decoded them: about 200 µs of CPU a login, which made a collector with a City file
about half as fast on traffic with a third of logins (``bench/bench_ingest.py --geoip
dense``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

from ._parts import SqlPart, insert_rows

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["PLACE_COLUMNS", "PlaceAsk", "PlaceQueries", "PlaceRow"]

#: A row's columns, in order (what :class:`PlaceRow` holds).
PLACE_COLUMNS: Final = "user_key, at, event_id, ip, latitude, longitude, accuracy_km, country, city"
_INSERT: Final = f"INSERT INTO login_places ({PLACE_COLUMNS})"
#: Stored logins read between the first and the last of one user's logins in a batch, at
#: most (a spool of a service account's week: the rest of that span is not compared).
MOST_BETWEEN: Final = 2000
#: Users asked about in one statement (each ask is three seeks, eleven parameters).
ASK_CHUNK: Final = 200
#: Rows deleted a transaction at most, when purging.
PURGE_CHUNK: Final = 20_000


class PlaceRow(NamedTuple):
    """A placed login, as stored (times in µs)."""

    user_key: str
    at: int
    event_id: str
    ip: str
    latitude: float
    longitude: float
    accuracy_km: float
    country: str | None
    city: str | None


class PlaceAsk(NamedTuple):
    """One user's logins in a batch: the stored ones just before the first, just after the
    last, and those between, are wanted, within ``window`` µs."""

    user_key: str
    first_at: int
    first_id: str
    last_at: int
    last_id: str
    window: int


def _seeks(ask: PlaceAsk) -> tuple[str, list[object]]:
    """The three reads of one ask, as a part of a UNION ALL, and its parameters."""
    sql = (
        f"SELECT * FROM (SELECT {PLACE_COLUMNS} FROM login_places "
        "WHERE user_key = ? AND (at, event_id) < (?, ?) AND at >= ? "
        "ORDER BY at DESC, event_id DESC LIMIT 1) AS b "
        f"UNION ALL SELECT * FROM (SELECT {PLACE_COLUMNS} FROM login_places "
        "WHERE user_key = ? AND (at, event_id) > (?, ?) AND at <= ? "
        "ORDER BY at, event_id LIMIT 1) AS a"
    )
    key, window = ask.user_key, ask.window
    params: list[object] = [
        key, ask.first_at, ask.first_id, ask.first_at - window,
        key, ask.last_at, ask.last_id, ask.last_at + window,
    ]  # fmt: skip
    if (ask.first_at, ask.first_id) < (ask.last_at, ask.last_id):
        sql += (
            f" UNION ALL SELECT * FROM (SELECT {PLACE_COLUMNS} FROM login_places "
            "WHERE user_key = ? AND (at, event_id) > (?, ?) AND (at, event_id) < (?, ?) "
            "ORDER BY at, event_id LIMIT ?) AS m"
        )
        params += [key, ask.first_at, ask.first_id, ask.last_at, ask.last_id, MOST_BETWEEN]
    return sql, params


class PlaceQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    def nearby_places(self, asks: Sequence[PlaceAsk]) -> list[PlaceRow]:
        """For each ask, the stored placed logins of its user around its logins (see
        :class:`PlaceAsk`): a statement for up to :data:`ASK_CHUNK` users."""
        out: list[PlaceRow] = []
        for start in range(0, len(asks), ASK_CHUNK):
            parts = [_seeks(ask) for ask in asks[start : start + ASK_CHUNK]]
            sql = " UNION ALL ".join(part for part, _ in parts)
            params = [value for _, values in parts for value in values]
            out.extend(PlaceRow._make(row) for row in self._read(sql, params))
        return out

    def _insert_places(self, cur: Cursor, rows: Sequence[Sequence[object]]) -> None:
        """Store placed logins in the events' transaction (one already there: kept)."""
        insert_rows(cur, _INSERT, rows, " ON CONFLICT DO NOTHING", 300)

    def purge_places(self, before_us: int) -> int:
        """Delete the placed logins older than ``before_us`` (by their own time), a chunk a
        transaction; how many."""
        total = 0
        while True:
            with self._write() as cur:
                cur.execute(
                    "DELETE FROM login_places WHERE (user_key, at, event_id) IN ("
                    "SELECT user_key, at, event_id FROM login_places WHERE at < ? LIMIT ?)",
                    (before_us, PURGE_CHUNK),
                )
                done = cur.rowcount
            total += max(0, done)
            if done < PURGE_CHUNK:
                return total
