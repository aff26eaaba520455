"""Where each user last logged in from: impossible travel's own table.

``login_places`` holds one row per successful login that IP intelligence placed in a city
with coordinates (:mod:`~..intel._travel` decides which; the pipeline hands the rows over
with the batch, and they are written in the events' own transaction, for the events newly
stored only). Its key is the user as impossible travel knows them (a digest of every
identifier, folded: ``Alice`` is ``alice``), then the login's time: a user's logins around
new ones are one bounded read (:meth:`PlaceQueries.nearby_places`), however long the user's
history, and whatever spelling the earlier login came in. Rows leave with the events'
retention (:meth:`purge_places`).

Before this table, each placed login read the user's newest events through the identifiers'
index and decoded them: about 200 µs of CPU a login, which made a collector with a City file
about half as fast on traffic with a third of logins (``bench/bench_ingest.py --geoip
dense``).
"""

from __future__ import annotations

from collections import Counter
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
#: Seeks in one statement, where they are one (at most six parameters each).
ASK_CHUNK: Final = 500
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


_AROUND: Final = (
    f"SELECT {PLACE_COLUMNS} FROM login_places "
    "WHERE user_key = ? AND at >= ? AND at <= ? ORDER BY at, event_id LIMIT ?"
)
_BEFORE: Final = (
    f"SELECT {PLACE_COLUMNS} FROM login_places "
    "WHERE user_key = ? AND (at, event_id) < (?, ?) AND at >= ? "
    "ORDER BY at DESC, event_id DESC LIMIT 1"
)
_AFTER: Final = (
    f"SELECT {PLACE_COLUMNS} FROM login_places "
    "WHERE user_key = ? AND (at, event_id) > (?, ?) AND at <= ? "
    "ORDER BY at, event_id LIMIT 1"
)
_BETWEEN: Final = (
    f"SELECT {PLACE_COLUMNS} FROM login_places "
    "WHERE user_key = ? AND (at, event_id) > (?, ?) AND (at, event_id) < (?, ?) "
    "ORDER BY at, event_id LIMIT ?"
)
#: A user's stored logins read at once, around theirs in a batch, at most: most users have
#: a few within the window; one with more is read by seeks (:func:`_seeks`).
MOST_AROUND: Final = 32
#: A statement and its parameters.
Read = tuple[str, list[object]]


def _around(ask: PlaceAsk) -> Read:
    """Every stored login of the ask's user within its window: one read, bounded."""
    since, until = ask.first_at - ask.window, ask.last_at + ask.window
    return _AROUND, [ask.user_key, since, until, MOST_AROUND]


def _seeks(ask: PlaceAsk) -> list[Read]:
    """The reads of one ask: the login before its first, after its last, those between."""
    key, window = ask.user_key, ask.window
    first, last = (ask.first_at, ask.first_id), (ask.last_at, ask.last_id)
    reads: list[Read] = [
        (_BEFORE, [key, *first, ask.first_at - window]),
        (_AFTER, [key, *last, ask.last_at + window]),
    ]
    if first < last:
        reads.append((_BETWEEN, [key, *first, *last, MOST_BETWEEN]))
    return reads


class PlaceQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    #: Whether reads go as one statement a chunk (a UNION ALL: PostgreSQL, one round trip)
    #: or each as its own (SQLite, in process: the same few statements, kept compiled,
    #: where a UNION ALL of hundreds was compiled anew each batch).
    _places_union: bool = True

    def nearby_places(self, asks: Sequence[PlaceAsk]) -> list[PlaceRow]:
        """For each ask, the stored placed logins of its user around its logins (see
        :class:`PlaceAsk`): every one within the window, in one read a user, or for a
        user with more than :data:`MOST_AROUND` there, those seeks find."""
        rows = self._read_places([_around(ask) for ask in asks])
        counts = Counter(row.user_key for row in rows)
        many = {ask.user_key: ask for ask in asks if counts[ask.user_key] >= MOST_AROUND}
        if not many:
            return rows
        kept = [row for row in rows if row.user_key not in many]
        return kept + self._read_places([read for ask in many.values() for read in _seeks(ask)])

    def _read_places(self, reads: Sequence[Read]) -> list[PlaceRow]:
        if not reads:
            return []
        if not self._places_union:
            return [PlaceRow._make(row) for row in self._read_each(reads)]
        out: list[PlaceRow] = []
        for start in range(0, len(reads), ASK_CHUNK):
            part = reads[start : start + ASK_CHUNK]
            sql = " UNION ALL ".join(
                f"SELECT * FROM ({q}) AS s{n}" for n, (q, _) in enumerate(part)
            )
            params = [value for _, values in part for value in values]
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
