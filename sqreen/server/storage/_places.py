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

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

from ._parts import Columns, SqlPart, unnest

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["PLACE_COLUMNS", "LatestPlaces", "PlaceAsk", "PlaceQueries", "PlaceRow", "neighbours"]

logger = logging.getLogger("sqreen.server")

#: A row's columns, in order (what :class:`PlaceRow` holds).
PLACE_COLUMNS: Final = "user_key, at, event_id, ip, latitude, longitude, accuracy_km, country, city"
#: The same, with their PostgreSQL types (:meth:`~._parts.SqlPart._insert`).
_TYPED: Final[Columns] = tuple(
    zip(
        PLACE_COLUMNS.split(", "),
        ("text", "int8", "text", "text", "float8", "float8", "float8", "text", "text"),
        strict=True,
    )
)
#: Stored logins read between the first and the last of one user's logins in a batch, at
#: most (a spool of a service account's week: the rest of that span is not compared).
MOST_BETWEEN: Final = 2000
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
#: A user's newest stored logins (:class:`LatestPlaces`).
_NEWEST: Final = (
    f"SELECT {PLACE_COLUMNS} FROM login_places "
    "WHERE user_key = ? ORDER BY at DESC, event_id DESC LIMIT ?"
)
#: A user's stored logins read at once, around theirs in a batch, at most: most users have
#: a few within the window; one with more is read by seeks (:func:`_seeks`).
MOST_AROUND: Final = 32
#: A statement and its parameters.
Read = tuple[str, list[object]]


#: The type of each parameter of each read, in order (PostgreSQL's names: each parameter
#: is sent as an array of them, :meth:`PlaceQueries._read_places_arrays`).
_KINDS: Final = {
    _AROUND: ("text", "int8", "int8", "int8"),
    _BEFORE: ("text", "int8", "text", "int8"),
    _AFTER: ("text", "int8", "text", "int8"),
    _BETWEEN: ("text", "int8", "text", "int8", "text", "int8"),
    _NEWEST: ("text", "int8"),
}
#: The times a read compares with, at most (both databases' 64-bit integers): a window
#: past them (a ``--travel-speed`` of a few millimetres an hour) reads as unbounded.
_EARLIEST: Final = -(1 << 63)
_LATEST: Final = (1 << 63) - 1


def _around(ask: PlaceAsk) -> Read:
    """Every stored login of the ask's user within its window: one read, bounded."""
    since = max(ask.first_at - ask.window, _EARLIEST)
    until = min(ask.last_at + ask.window, _LATEST)
    return _AROUND, [ask.user_key, since, until, MOST_AROUND]


def _seeks(ask: PlaceAsk) -> list[Read]:
    """The reads of one ask: the login before its first, after its last, those between."""
    key, window = ask.user_key, ask.window
    first, last = (ask.first_at, ask.first_id), (ask.last_at, ask.last_id)
    reads: list[Read] = [
        (_BEFORE, [key, *first, max(ask.first_at - window, _EARLIEST)]),
        (_AFTER, [key, *last, min(ask.last_at + window, _LATEST)]),
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
    """The newest stored places of users this process has read or written, while nobody
    else writes the database (SQLite's ``data_version`` says so; PostgreSQL has no such
    cheap word and keeps none): a user's next login, later than the oldest of those, needs
    no read, as its neighbours are among them. Logins mostly arrive in time order, or
    nearly (a few SDK processes flushing in turn): a user then costs one read a process,
    not one a batch.

    What is known of a user is ``(floor, rows)``: ``rows`` (time order, at most
    :data:`KEPT`) are every stored place of theirs from ``floor`` (a time and an event id)
    on. It is learnt from a read of their newest places (:data:`_NEWEST`) and from the rows
    this process committed; forgotten when another connection commits (any table: a cheap
    word, not a precise one), when this one purges, and all at once past :data:`MOST_ROWS`.
    """

    #: Places kept a user, at most (the newest).
    KEPT: Final = 8
    #: Places kept in all, at most (about 500 bytes each: 50 MiB at most), a user without
    #: any counting one.
    MOST_ROWS: Final = 100_000

    def __init__(self) -> None:
        self.version: object = None
        self.known: dict[str, tuple[tuple[int, str], list[PlaceRow]]] = {}
        #: Places kept, a user without any counting one (what bounds the memory).
        self.rows = 0
        #: Bumped by :meth:`forget`: a read begun before it is not learnt from.
        self.generation = 0

    def check(self, version: object) -> None:
        """Forget everything when the database's ``version`` is not the one last seen."""
        if version != self.version:
            self.forget()
            self.version = version

    def forget(self) -> None:
        self.known.clear()
        self.rows = 0
        self.generation += 1

    def answer(self, ask: PlaceAsk) -> list[PlaceRow] | None:
        """The ask's neighbours (:func:`neighbours`), or None when what is known does not
        tell them: the stored place just before its first login may be older than the floor."""
        found = self.known.get(ask.user_key)
        if found is None:
            return None
        floor, places = found
        if places and (ask.first_at, ask.first_id) > _when(newest := places[-1]):
            # The usual case, a login after every one kept: its neighbour is the newest.
            return [newest] if newest.at >= ask.first_at - ask.window else []
        if floor <= (ask.first_at - ask.window, "") or (
            places and _when(places[0]) < (ask.first_at, ask.first_id)
        ):
            return neighbours(ask, places)
        return None

    def read(self, user_key: str, newest: Sequence[PlaceRow], generation: int) -> None:
        """Learn from a read of the user's :data:`KEPT` newest places (``newest``, any
        order): fewer, and they are all the user has. ``generation``: :attr:`generation`
        when the read began (a purge since, in another thread, may have deleted some)."""
        if generation != self.generation:
            return
        places = sorted(newest, key=_when)
        floor = _when(places[0]) if len(places) >= self.KEPT else BOTTOM
        self._keep(user_key, floor, places)

    def wrote(self, rows: Sequence[PlaceRow]) -> None:
        """Learn from ``rows``, which this process committed."""
        for row in rows:
            found = self.known.get(row.user_key)
            if found is None or _when(row) < found[0]:
                continue  # (older than the floor: what is known from there on still holds)
            floor, kept = found
            when = _when(row)
            if not kept or when > _when(kept[-1]):  # the usual case: the newest
                self._keep(row.user_key, floor, [*kept, row])
            elif all(_when(other) != when for other in kept):  # (else stored already)
                self._keep(row.user_key, floor, sorted([*kept, row], key=_when))

    def _keep(self, user_key: str, floor: tuple[int, str], places: list[PlaceRow]) -> None:
        if len(places) > self.KEPT:  # the oldest go: the floor rises to the oldest kept
            places = places[-self.KEPT :]
            floor = _when(places[0])
        before = self.known.get(user_key)
        self.rows += max(1, len(places)) - (max(1, len(before[1])) if before else 0)
        if self.rows > self.MOST_ROWS:
            self.forget()
            self.rows = max(1, len(places))
        self.known[user_key] = (floor, places)


#: Below every place's time and id.
BOTTOM: Final = (-(1 << 63), "")


def _when(row: PlaceRow) -> tuple[int, str]:
    return (row.at, row.event_id)


class PlaceQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    #: What this process knows of users' newest places (None: nothing kept, see
    #: :class:`LatestPlaces`; a dialect with :meth:`_places_version` keeps it).
    _latest_places: LatestPlaces | None = None

    def _places_version(self) -> object:
        """A value that changes whenever another connection commits to the database."""
        raise NotImplementedError

    def nearby_places(self, asks: Sequence[PlaceAsk]) -> list[PlaceRow]:
        """For each ask, the stored placed logins of its user that it wants (see
        :class:`PlaceAsk` and :func:`neighbours`): from what this process knows of the
        user (:class:`LatestPlaces`, after one read of their newest), else one read a user,
        or for a user with more than :data:`MOST_AROUND` since their window's start, seeks."""
        latest = self._latest_places
        out: list[PlaceRow] = []
        todo = list(asks)
        if latest is not None:
            latest.check(self._places_version())
            generation = latest.generation
            unknown = {ask.user_key for ask in asks if ask.user_key not in latest.known}
            newest: dict[str, list[PlaceRow]] = {key: [] for key in unknown}
            for row in self._read_places([(_NEWEST, [key, latest.KEPT]) for key in unknown]):
                newest[row.user_key].append(row)
            for key, found in newest.items():
                latest.read(key, found, generation)
            todo = []
            for ask in asks:
                known = latest.answer(ask)
                if known is None:  # older than the places kept: read as below
                    todo.append(ask)
                else:
                    out += known
        around: dict[str, list[PlaceRow]] = {ask.user_key: [] for ask in todo}
        for row in self._read_places([_around(ask) for ask in todo]):
            around[row.user_key].append(row)
        many: list[PlaceAsk] = []
        for ask in todo:
            found = around[ask.user_key]
            if len(found) >= MOST_AROUND:
                many.append(ask)
            else:
                out += neighbours(ask, found)
        seeks = [read for ask in many for read in _seeks(ask)]
        return out + self._read_places(seeks)

    def _read_places(self, reads: Sequence[Read]) -> list[PlaceRow]:
        if not reads:
            return []
        if self._ARRAYS:
            return self._read_places_arrays(reads)
        # SQLite, in process: the same few statements, kept compiled (a UNION ALL of
        # hundreds was compiled anew each batch).
        return [PlaceRow._make(row) for row in self._read_each(reads)]

    def _read_places_arrays(self, reads: Sequence[Read]) -> list[PlaceRow]:
        """:meth:`_read_places` where the dialect takes arrays (PostgreSQL): the reads of one
        statement as one, their parameters a column each (``unnest``, typed by
        :data:`_KINDS`), the statement run for each row of them (``LATERAL``), in no order:
        a round trip a kind of read. A ``UNION ALL`` of hundreds of reads was parsed again
        at each batch, by psycopg and by PostgreSQL."""
        by_text: dict[str, list[list[object]]] = {}
        for sql, params in reads:
            by_text.setdefault(sql, []).append(params)
        out: list[PlaceRow] = []
        for sql, asked in by_text.items():
            parts = sql.split("?")
            inner = "".join(f"{part}a.c{n}" for n, part in enumerate(parts[:-1])) + parts[-1]
            source, params = unnest(_KINDS[sql], asked)
            names = ", ".join(f"c{n}" for n in range(len(params)))
            found = self._read(
                f"SELECT s.* FROM {source} AS a({names}), LATERAL ({inner}) AS s", params
            )
            out.extend(PlaceRow._make(row) for row in found)
        return out

    def _places_stored(self, rows: Sequence[Sequence[object]]) -> None:
        """Told, after the commit, the rows :meth:`_insert_places` inserted (what it learns
        is a cache: should that fail, it is dropped, never the batch's outcome)."""
        latest = self._latest_places
        if latest is None:
            return
        try:
            latest.wrote([PlaceRow._make(row) for row in rows])
        except Exception:
            logger.exception("sqreen: impossible travel's newest places dropped")
            latest.forget()

    def _insert_places(self, cur: Cursor, rows: Sequence[Sequence[object]]) -> None:
        """Store placed logins in the events' transaction (one already there: kept)."""
        self._insert(cur, "login_places", _TYPED, rows, " ON CONFLICT DO NOTHING", 300)

    def purge_places(self, before_us: int) -> int:
        """Delete the placed logins older than ``before_us`` (by their own time), a chunk a
        transaction; how many."""

        def forget(done: int) -> None:
            if done and self._latest_places is not None:
                # A place known may be gone: forgotten before the commit, under the write
                # lock, so no read learns it again (one begun before is not learnt from).
                self._latest_places.forget()

        return self._delete_chunks(
            "DELETE FROM login_places WHERE (user_key, at, event_id) IN ("
            "SELECT user_key, at, event_id FROM login_places WHERE at < ? LIMIT ?)",
            (before_us,),
            PURGE_CHUNK,
            forget,
        )
