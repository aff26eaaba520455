"""What a SQLite collector knows of each user's newest placed login (``LatestPlaces`` in
storage/_places.py): the same neighbours as a read of the table, whatever the order of the
logins, retries, another process writing or purging, this one purging; and no read at all
for a user's next login in time order while nobody else writes."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sqreen.server.intel import ImpossibleTravel, IpIntel
from sqreen.server.intel._travel import _key_text
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.storage import PlaceAsk, PlaceRow, open_storage
from sqreen.server.storage.sqlite import SQLiteStorage

from .test_travel import LONDON_IP, PARIS_IP, SYDNEY_IP, body, city_mmdb, login

__all__ = ["city_mmdb"]  # the fixture, shared with test_travel.py

USERS = [f"user{n}" for n in range(5)]
PLACES = [LONDON_IP, SYDNEY_IP, PARIS_IP]


class Counted:
    """A storage's reads of ``login_places``, counted."""

    def __init__(self, storage: SQLiteStorage) -> None:
        self.reads = 0
        self.read_each = storage._read_each
        storage._read_each = self  # type: ignore[method-assign]

    def __call__(self, reads: Sequence[Any]) -> Any:
        self.reads += len(reads)
        return self.read_each(reads)


@pytest.fixture
def three(tmp_path: Path, clock: Any) -> Iterator[tuple[SQLiteStorage, ...]]:
    """This collector, another process's on the same file, and a reader that keeps
    nothing (what a read of the table says)."""
    path = str(tmp_path / "sqreen.db")
    opened = [open_storage(path, clock=clock) for _ in range(3)]
    assert all(isinstance(s, SQLiteStorage) for s in opened)
    opened[2]._latest_places = None  # type: ignore[union-attr]
    yield tuple(opened)  # type: ignore[misc]
    for s in opened:
        s.close()


def pipeline(storage: SQLiteStorage, mmdb: str) -> IngestPipeline:
    return IngestPipeline(storage, enrichers=[IpIntel.open([mmdb]), ImpossibleTravel(storage)])


def key(row: PlaceRow) -> tuple[Any, ...]:
    return tuple(row)


def test_known_places_give_the_neighbours_a_read_gives(
    three: tuple[SQLiteStorage, ...], city_mmdb: str, clock: Any
) -> None:
    """400 random steps: logins of 5 users from 3 cities, in and out of time order, some
    retried, some stored by another process, some purged by either; after each, random asks
    (times around the stored logins, windows of 1 to 40 hours) answered by this collector as
    by a plain read, while most were answered without reading."""
    ours, other, plain = three
    ingest = {id(ours): pipeline(ours, city_mmdb), id(other): pipeline(other, city_mmdb)}
    latest = ours._latest_places
    assert latest is not None
    rng = random.Random(16)
    base = clock() - timedelta(days=3)
    sent: list[dict[str, Any]] = []
    asks = known = 0
    for step in range(400):
        roll = rng.random()
        if roll < 0.03:
            (ours if rng.random() < 0.5 else other).purge_places(
                int((base + timedelta(hours=rng.uniform(0, step * 0.15 + 2))).timestamp() * 1e6)
            )
        else:
            writer = other if roll < 0.15 else ours
            events = []
            for _ in range(rng.randint(1, 4)):
                if sent and rng.random() < 0.1:
                    events.append(rng.choice(sent))  # a retry
                    continue
                # Mostly later than every login before (time order), sometimes earlier.
                hours = step * 0.15 + (rng.uniform(-30, 0) if rng.random() < 0.2 else 0)
                event = login(
                    rng.choice(PLACES),
                    base + timedelta(hours=hours, seconds=rng.randint(0, 59)),
                    uid=rng.choice(USERS),
                )
                sent.append(event)
                events.append(event)
            ingest[id(writer)](body(*events))
        for uid in USERS:
            # Half after every login so far (a user's next login), half anywhere.
            low = step * 0.15 + 1 if rng.random() < 0.5 else -5
            first = int((base + timedelta(hours=rng.uniform(low, step * 0.15 + 5))).timestamp())
            last = first + rng.choice([0, 0, 60, 3600, 7200])
            ask = PlaceAsk(
                _key_text((("uid", uid),)),
                first * 1_000_000,
                rng.choice(["", "m", "~"]),
                last * 1_000_000,
                rng.choice(["", "m", "~"]),
                rng.randint(1, 40) * 3600 * 1_000_000,
            )
            if ask[1:3] > ask[3:5]:
                continue
            asks += 1
            latest.check(ours._places_version())
            known += latest.answer(ask) is not None
            assert sorted(ours.nearby_places([ask]), key=key) == sorted(
                plain.nearby_places([ask]), key=key
            ), (step, ask)
    assert asks > 1000
    assert known > asks / 4, (known, asks)  # the comparison is of known places, not reads


def test_a_user_s_next_login_reads_nothing_until_another_process_writes(
    three: tuple[SQLiteStorage, ...], city_mmdb: str, clock: Any
) -> None:
    """A user's logins in time order: the first batch reads, the next ones do not (and still
    find the login before: London then Sydney raises the alert); after another process
    stores a login, the next batch reads again, and finds it."""
    ours, other, _ = three
    ingest = pipeline(ours, city_mmdb)
    counted = Counted(ours)
    start = clock() - timedelta(hours=3)
    ingest(body(login(PARIS_IP, start, uid="ann")))
    assert counted.reads == 1
    ingest(body(login(PARIS_IP, start + timedelta(minutes=10), uid="ann")))
    ingest(body(login(LONDON_IP, start + timedelta(minutes=70), uid="ann")))
    assert counted.reads == 1
    ingest(body(login(SYDNEY_IP, start + timedelta(minutes=80), uid="ann")))
    assert counted.reads == 1
    alerts = ours.query_events(limit=10)
    assert [e.properties.get("from_ip") for e in alerts if e.name.startswith("security.")] == [
        LONDON_IP
    ]
    # Another process stores a later login from Paris: known places are forgotten, and the
    # next login (Sydney, 10 minutes after Paris) is compared with it.
    pipeline(other, city_mmdb)(body(login(PARIS_IP, start + timedelta(minutes=100), uid="ann")))
    last = login(SYDNEY_IP, start + timedelta(minutes=110), uid="ann")
    ingest(body(last))
    assert counted.reads == 2
    (alert,) = [
        e for e in ours.query_events(limit=10) if e.properties.get("to_event") == last["id"]
    ]
    assert alert.properties["from_ip"] == PARIS_IP


def test_known_places_are_bounded(three: tuple[SQLiteStorage, ...]) -> None:
    """A user's newest places are kept, no more; past the bound in all, everything is
    forgotten at once, not grown."""
    latest = three[0]._latest_places
    assert latest is not None
    latest.read("one", [row("one", at) for at in range(100)], latest.generation)
    floor, rows = latest.known["one"]
    assert [r.at for r in rows] == list(range(100 - latest.KEPT, 100))
    assert floor == (100 - latest.KEPT, "e")
    latest.wrote([row("one", 500)])
    floor, rows = latest.known["one"]
    assert len(rows) == latest.KEPT and rows[-1].at == 500 and floor == (101 - latest.KEPT, "e")
    for n in range(latest.MOST_ROWS // latest.KEPT + 5):
        latest.read(str(n), [row(str(n), at) for at in range(latest.KEPT)], latest.generation)
    assert sum(len(rows) for _, rows in latest.known.values()) <= latest.MOST_ROWS


def row(user: str, at: int) -> PlaceRow:
    return PlaceRow(user, at, "e", "1.2.3.4", 0.0, 0.0, 10.0, None, None)


def test_what_is_known_follows_the_rows_written() -> None:
    """Known: all of a user's places (a read found fewer than the most it asks). Written:
    older and newer ones; what is known answers as the table would, and a user with more
    places than are kept is answered only from above the oldest kept."""
    from sqreen.server.storage import LatestPlaces

    latest = LatestPlaces()
    latest.read("few", [row("few", 100)], latest.generation)
    latest.wrote([row("few", 50), row("few", 150), row("few", 150), row("nobody", 1)])
    assert [r.at for r in latest.known["few"][1]] == [50, 100, 150]
    assert latest.answer(PlaceAsk("few", 120, "", 120, "", 10**6)) == [
        row("few", 100),
        row("few", 150),
    ]
    assert latest.answer(PlaceAsk("few", 10, "", 10, "", 5)) == []  # nothing within 5 µs
    assert latest.answer(PlaceAsk("nobody", 200, "", 200, "", 10)) is None
    latest.read(
        "many", [row("many", at) for at in range(1000, 1000 + latest.KEPT)], latest.generation
    )
    # Older than every place kept: the one before may be older still, unread.
    assert latest.answer(PlaceAsk("many", 999, "", 1001, "", 10**6)) is None
    # A place written below the floor says nothing of those between it and the floor.
    latest.wrote([row("many", 500)])
    assert latest.answer(PlaceAsk("many", 800, "", 800, "", 10**6)) is None
    # Between two kept: both neighbours known.
    assert latest.answer(PlaceAsk("many", 1001, "f", 1001, "f", 10**6)) == [
        row("many", 1001),
        row("many", 1002),
    ]


def test_a_purge_between_a_read_and_what_it_teaches_leaves_nothing_purged_known(
    three: tuple[SQLiteStorage, ...], city_mmdb: str, clock: Any
) -> None:
    """Retention runs in another thread: a purge that deletes a user's place just after
    a read of their newest places, before the read is learnt from, must not leave the
    deleted place known (a later login would be compared with it, where a read of the
    table finds nothing)."""
    ours, _, plain = three
    ingest = pipeline(ours, city_mmdb)
    start = clock() - timedelta(hours=3)
    ingest(body(login(SYDNEY_IP, start, uid="zoe")))
    latest = ours._latest_places
    assert latest is not None
    latest.forget()  # as after another process's commit: the next ask reads
    read_each = ours._read_each
    cutoff = int((start + timedelta(minutes=1)).timestamp() * 1_000_000)

    def read_then_purge(reads: Sequence[Any]) -> Any:
        rows = read_each(reads)
        ours.purge_places(cutoff)  # the retention thread, right after the read
        return rows

    ours._read_each = read_then_purge  # type: ignore[method-assign]
    ask = PlaceAsk(
        _key_text((("uid", "zoe"),)),
        int((start + timedelta(minutes=30)).timestamp() * 1_000_000),
        "",
        int((start + timedelta(minutes=30)).timestamp() * 1_000_000),
        "",
        20 * 3600 * 1_000_000,
    )
    ours.nearby_places([ask])
    ours._read_each = read_each  # type: ignore[method-assign]
    assert ours.nearby_places([ask]) == plain.nearby_places([ask]) == []


def test_users_without_a_place_count_toward_the_bound() -> None:
    """An ingest key can make logins of ever new users whose places are never stored (their
    events are duplicates): each is known with no place, and must count."""
    from sqreen.server.storage import LatestPlaces

    latest = LatestPlaces()
    for n in range(latest.MOST_ROWS + 10):
        latest.read(str(n), [], latest.generation)
    assert len(latest.known) <= latest.MOST_ROWS
