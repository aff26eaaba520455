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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

from ._parts import SqlPart, insert_rows

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["PLACE_COLUMNS", "LatestPlaces", "PlaceAsk", "PlaceQueries", "PlaceRow", "neighbours"]

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
    "WHERE user_key = ? AND at >= ? ORDER BY at, event_id LIMIT ?"
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
#: A user's stored logins read at once, from the window's start on, at most: most users have
#: a few since then; one with more is read by seeks (:func:`_seeks`).
MOST_AROUND: Final = 32
#: A statement and its parameters.
Read = tuple[str, list[object]]


def _around(ask: PlaceAsk) -> Read:
    """Every stored login of the ask's user from its window's start on: one read, bounded
    (open at the end, so that a read of fewer rows than its bound also says which is the
    user's newest: :class:`LatestPlaces`)."""
    return _AROUND, [ask.user_key, ask.first_at - ask.window, MOST_AROUND]


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


def neighbours(ask: PlaceAsk, rows: Sequence[PlaceRow]) -> list[PlaceRow]:
    """Of ``rows`` (stored logins of the ask's user, any order), those the ask wants: the
    newest before its first login and the oldest after its last, each within its window,
    and those between (at most :data:`MOST_BETWEEN`), in time order."""
    first, last = (ask.first_at, ask.first_id), (ask.last_at, ask.last_id)
    before = after = None
    between: list[PlaceRow] = []
    for row in rows:
        key = (row.at, row.event_id)
        if key < first:
            if row.at >= ask.first_at - ask.window and (
                before is None or key > (before.at, before.event_id)
            ):
                before = row
        elif key > last:
            if row.at <= ask.last_at + ask.window and (
                after is None or key < (after.at, after.event_id)
            ):
                after = row
        else:
            between.append(row)
    between.sort(key=lambda row: (row.at, row.event_id))
    return [
        *([before] if before else []),
        *between[:MOST_BETWEEN],
        *([after] if after else []),
    ]


class LatestPlaces:
    """The newest stored place of users this process has read or written, while nobody
    else writes the database (SQLite's ``data_version`` says so; PostgreSQL has no such
    cheap word and keeps none): the next login of such a user, later than that place, needs
    no read, as its only stored neighbour is that place. A user's next login in time order
    is the usual case: a user with one worker then costs one read a process, not one a
    batch.

    What is known of a user is ``(row, floor)``: ``row`` is their newest stored place, or,
    when None, they have none at or after ``floor`` µs. It is learnt from a read that was
    not cut at its bound (:data:`MOST_AROUND`) and from the rows this process committed;
    forgotten when another connection commits (any table: a cheap word, not a precise one),
    when this one purges, and all at once past :data:`MOST_USERS` users.
    """

    #: Users known at most (a few hundred bytes each).
    MOST_USERS: Final = 100_000

    def __init__(self) -> None:
        self.version: object = None
        self.known: dict[str, tuple[PlaceRow | None, int]] = {}

    def check(self, version: object) -> None:
        """Forget everything when the database's ``version`` is not the one last seen."""
        if version != self.version:
            self.known.clear()
            self.version = version

    def answer(self, ask: PlaceAsk) -> list[PlaceRow] | None:
        """The ask's neighbours, or None when what is known does not tell them."""
        found = self.known.get(ask.user_key)
        if found is None:
            return None
        row, floor = found
        since = ask.first_at - ask.window
        if row is None:  # nothing stored at or after floor
            return [] if since >= floor else None
        if (row.at, row.event_id) >= (ask.first_at, ask.first_id):
            return None  # a login older than the newest stored: those around it are unknown
        return [row] if row.at >= since else []

    def read(self, ask: PlaceAsk, rows: Sequence[PlaceRow]) -> None:
        """Learn from the ask's whole read (``rows``: every stored login of its user from its
        window's start on, fewer than the read's bound)."""
        if len(self.known) >= self.MOST_USERS:
            self.known.clear()
        newest = max(rows, key=lambda row: (row.at, row.event_id), default=None)
        self.known[ask.user_key] = (newest, ask.first_at - ask.window)

    def wrote(self, rows: Sequence[PlaceRow]) -> None:
        """Learn from ``rows``, which this process committed."""
        for row in rows:
            found = self.known.get(row.user_key)
            if found is None:
                continue
            newest, floor = found
            if newest is None:
                if row.at >= floor:  # the only one at or after floor: the newest
                    self.known[row.user_key] = (row, floor)
                # (older: still none at or after floor)
            elif (row.at, row.event_id) > (newest.at, newest.event_id):
                self.known[row.user_key] = (row, floor)


class PlaceQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    #: Whether reads go as one statement a chunk (a UNION ALL: PostgreSQL, one round trip)
    #: or each as its own (SQLite, in process: the same few statements, kept compiled,
    #: where a UNION ALL of hundreds was compiled anew each batch).
    _places_union: bool = True
    #: What this process knows of users' newest places (None: nothing kept, see
    #: :class:`LatestPlaces`; a dialect with :meth:`_places_version` keeps it).
    _latest_places: LatestPlaces | None = None

    def _places_version(self) -> object:
        """A value that changes whenever another connection commits to the database."""
        raise NotImplementedError

    def nearby_places(self, asks: Sequence[PlaceAsk]) -> list[PlaceRow]:
        """For each ask, the stored placed logins of its user that it wants (see
        :class:`PlaceAsk` and :func:`neighbours`): from what this process knows of the
        user (:class:`LatestPlaces`), else one read a user, or for a user with more than
        :data:`MOST_AROUND` since their window's start, seeks."""
        latest = self._latest_places
        out: list[PlaceRow] = []
        todo: list[PlaceAsk] = []
        if latest is not None:
            latest.check(self._places_version())
            for ask in asks:
                known = latest.answer(ask)
                if known is None:
                    todo.append(ask)
                else:
                    out += known
        else:
            todo = list(asks)
        rows: dict[str, list[PlaceRow]] = {ask.user_key: [] for ask in todo}
        for row in self._read_places([_around(ask) for ask in todo]):
            rows[row.user_key].append(row)
        many: list[PlaceAsk] = []
        for ask in todo:
            found = rows[ask.user_key]
            if len(found) >= MOST_AROUND:
                many.append(ask)
                continue
            if latest is not None:
                latest.read(ask, found)
            out += neighbours(ask, found)
        seeks = [read for ask in many for read in _seeks(ask)]
        return out + self._read_places(seeks)

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

    def _places_stored(self, rows: Sequence[Sequence[object]]) -> None:
        """Told, after the commit, the rows :meth:`_insert_places` inserted."""
        if self._latest_places is not None:
            self._latest_places.wrote([PlaceRow._make(row) for row in rows])

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
            if done and self._latest_places is not None:  # a newest row known may be gone
                self._latest_places.known.clear()
            if done < PURGE_CHUNK:
                return total
