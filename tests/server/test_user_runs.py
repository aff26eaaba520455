"""SQLite's users' index is by run of 4 096 seqs first (``_schema`` migration 20): a walk down
a user's events visits the runs from the newest. What a user filter reads must be what it read
by (key, value, seq): every page, whatever the keyset, the other conditions, the runs crossed;
the table of runs must follow every writer, the purge and the upgrade of an older database.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sqreen.server.storage import EventFilter, open_storage
from sqreen.server.storage._schema import USER_BUCKET_SHIFT
from sqreen.server.storage.sqlite import SQLiteStorage
from tests.explorer.test_plans import plan, recorded

from .conftest import wire_event

RUN = 1 << USER_BUCKET_SHIFT
#: Four runs and part of a fifth (run 0 is short: seqs start at 1).
TOTAL = 4 * RUN + 300
#: Seqs of the rare user: both ends of the table and of runs.
RARE = {1, RUN - 1, RUN, RUN + 1, 2 * RUN - 1, 3 * RUN, TOTAL}
NAMES = ("auth.login.failure", "auth.login.success", "auth.logout")


def user_of(seq: int) -> dict[str, str]:
    if seq in RARE:
        return {"uid": "rare", "email": "rare@example.com"}
    return {"uid": str(seq % 5), "email": f"u{seq % 5}@example.com"}


def name_of(seq: int) -> str:
    return NAMES[seq % 3]


def events(first: int, last: int) -> list[dict[str, Any]]:
    """Wire events that get seqs ``first`` to ``last`` in an empty database."""
    return [wire_event(user=user_of(s), name=name_of(s)) for s in range(first, last + 1)]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteStorage]:
    storage = open_storage(str(tmp_path_factory.mktemp("runs") / "runs.db"))
    assert isinstance(storage, SQLiteStorage)
    for start in range(1, TOTAL + 1, 2000):  # batches across the runs' ends
        storage.insert_events(events(start, min(TOTAL, start + 1999)))  # type: ignore[arg-type]
    yield storage
    storage.close()


def expected(f: EventFilter) -> list[int]:
    """Every matching seq, newest first, from the definitions above."""
    (key, value), *_ = f.users
    return [
        s
        for s in range(TOTAL, 0, -1)
        if user_of(s)[key] == value and (f.name is None or name_of(s) == f.name)
    ]


def pages(storage: SQLiteStorage, f: EventFilter, size: int, **extra: Any) -> list[int]:
    """Every matching seq, newest first, page by page (keyset on seq, as the explorer)."""
    out: list[int] = []
    before = None
    while True:
        page = storage.query_events(f, before_seq=before, limit=size, **extra)
        seqs = [e.seq for e in page]
        assert seqs == sorted(seqs, reverse=True)
        out += seqs
        if len(seqs) < size:
            return out
        before = seqs[-1]


FILTERS = [
    EventFilter(users=(("uid", "3"),)),
    EventFilter(users=(("email", "u0@example.com"),)),
    EventFilter(users=(("uid", "rare"),)),
    EventFilter(users=(("uid", "2"),), name="auth.logout"),  # the path joined to events
    EventFilter(users=(("uid", "rare"),), name="auth.login.success"),
    EventFilter(users=(("uid", "rare"), ("email", "rare@example.com"))),
    EventFilter(users=(("uid", "nobody"),)),
]


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: repr((f.users, f.name)))
@pytest.mark.parametrize("size", [7, 1000, 50_000])
def test_every_page_of_a_user_is_read_across_runs(
    filled: SQLiteStorage, f: EventFilter, size: int
) -> None:
    assert pages(filled, f, size) == expected(f)


@pytest.mark.parametrize("f", [f for f in FILTERS if len(expected(f)) < 10])
def test_pages_of_one_event(filled: SQLiteStorage, f: EventFilter) -> None:
    assert pages(filled, f, 1) == expected(f)


@pytest.mark.parametrize("f", FILTERS[:5], ids=lambda f: repr((f.users, f.name)))
def test_pages_after_a_seq_and_a_scan_of_the_newest_rows(
    filled: SQLiteStorage, f: EventFilter
) -> None:
    want = expected(f)
    for after in (0, RUN - 1, RUN, 2 * RUN + 17, TOTAL - 1):
        found = [e.seq for e in filled.query_events(f, after_seq=after, limit=100_000)]
        assert found == [s for s in want if s > after]
    (key, value), *_ = f.users
    rows = [s for s in range(TOTAL, 0, -1) if user_of(s)[key] == value]
    for scan in (1, 5, RUN + 3, 10 * RUN):
        found = [e.seq for e in filled.query_events(f, limit=100_000, scan=scan)]
        assert found == [s for s in rows[:scan] if s in set(want)]


def test_the_counts_and_the_span_of_a_sample(filled: SQLiteStorage) -> None:
    f = EventFilter(users=(("uid", "rare"),))
    newest = Counter(name_of(s) for s in sorted(RARE)[-3:])
    want = sorted(newest.items(), key=lambda item: (-item[1], item[0]))
    assert filled.count_by("name", f, newest=3) == want
    count, oldest, latest = filled.span(f, newest=100)
    assert count == len(RARE) and oldest is not None and latest is not None
    assert filled.count_events(f) == len(RARE)
    assert filled.count_by("user.email", EventFilter(users=(("uid", "4"),)), newest=RUN * 2) == [
        ("u4@example.com", len(expected(EventFilter(users=(("uid", "4"),)))))
    ]


def plans(storage: SQLiteStorage, read: Any) -> list[tuple[str, str]]:
    """Each statement ``read(storage)`` runs, and its plan."""
    return [(sql, "\n".join(plan(storage, sql, p))) for sql, p in recorded(storage, read)]


@pytest.mark.parametrize(
    "read",
    [
        lambda s: s.query_events(EventFilter(users=(("uid", "3"),)), limit=50),
        lambda s: s.query_events(EventFilter(users=(("uid", "3"),)), before_seq=9000, limit=50),
        lambda s: s.query_events(EventFilter(users=(("uid", "3"),), name="auth.logout"), limit=5),
        lambda s: s.query_events(EventFilter(users=(("uid", "3"),)), limit=50, scan=500),
        lambda s: s.span(EventFilter(users=(("uid", "3"),)), newest=500),
    ],
    ids=["page", "keyset", "joined", "scan", "sample"],
)
def test_a_walk_seeks_each_run_and_never_sorts_a_users_rows(
    filled: SQLiteStorage, read: Any
) -> None:
    """A sort would read every row of the user (millions for a busy one) before the LIMIT:
    the runs come newest first from their table, each run's rows by seq from the index."""
    walks = [(sql, text) for sql, text in plans(filled, read) if "event_user_buckets" in sql]
    assert walks
    for sql, text in walks:
        assert "event_users_bkv (<expr>=? AND key=? AND value=?" in text, f"{sql}\n{text}"
        # (SQLite 3.46 put events outside a scan's walk: every event read)
        assert not re.search(r"^SCAN e\b", text, re.M), f"{sql}\n{text}"
        inner = text.split("LIST SUBQUERY")[-1] if "LIST SUBQUERY" in text else text
        for walked in ("MATERIALIZE d", "CO-ROUTINE d"):  # a scan: the walk, then its rows
            if walked in inner:  # joined and sorted (bounded: ``scan`` of them at most)
                inner = inner.split(walked)[1].split("\nSCAN d")[0]
        assert not re.search(r"TEMP B-TREE FOR (RIGHT PART OF )?ORDER BY", inner), f"{sql}\n{text}"
    keyset = [sql for sql, _ in walks if "b.n <= ?" in sql]
    assert keyset or "before_seq" not in repr(read)


def runs(db: str) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [n for (n,) in conn.execute("SELECT n FROM event_user_buckets ORDER BY n")]
    finally:
        conn.close()


def test_the_runs_table_follows_the_writes_and_the_purge(tmp_path: Path, clock: Any) -> None:
    db = str(tmp_path / "purge.db")
    storage = open_storage(db, clock=clock)
    try:
        old = datetime.now(UTC) - timedelta(days=10)
        storage.insert_events(events(1, 2 * RUN + 5), received_at=old)  # type: ignore[arg-type]
        assert runs(db) == [0, 1, 2]
        storage.insert_events(events(2 * RUN + 6, 3 * RUN + 2))  # type: ignore[arg-type]
        assert runs(db) == [0, 1, 2, 3]
        # Written in SQL by another writer (an older collector, an import): the trigger.
        conn = sqlite3.connect(db)
        with conn:
            conn.execute(
                "INSERT INTO events (seq, id, name, ts, received_at, properties_json, key_id) "
                "VALUES (?, 'raw', 'x', 0, 0, '{}', 0)",
                (5 * RUN,),
            )
        conn.close()
        assert runs(db) == [0, 1, 2, 3, 5]
        assert storage.purge_older_than(5) == 2 * RUN + 5 + 1  # (the raw one: received at 0)
        assert runs(db) == [2, 3, 5]  # run 2 still holds users' rows
        f = EventFilter(users=(("uid", "rare"),))
        assert [e.seq for e in storage.query_events(f, limit=100)] == [3 * RUN]
    finally:
        storage.close()


def test_an_older_database_is_upgraded_and_reads_the_same(tmp_path: Path) -> None:
    db = str(tmp_path / "old.db")
    current = SQLiteStorage.MIGRATIONS
    schema_19 = type("Schema19", (SQLiteStorage,), {"MIGRATIONS": current[:19], "RUN_INDEXED": {}})
    old = schema_19(db)
    try:
        old.insert_events(events(1, RUN + 10))  # type: ignore[arg-type]
        conn = sqlite3.connect(db)
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
        conn.close()
        assert "event_users_kv" in names and "event_user_buckets" not in names
    finally:
        old.close()
    upgraded = open_storage(db)
    try:
        conn = sqlite3.connect(db)
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
        conn.close()
        assert "event_users_kv" not in names and {"event_users_bkv", "event_user_buckets"} <= names
        assert runs(db) == [0, 1]
        upgraded.insert_events(events(RUN + 11, 2 * RUN + 1))  # type: ignore[arg-type]
        assert runs(db) == [0, 1, 2]
        for f in FILTERS[:3]:
            (key, value), *_ = f.users
            want = [s for s in range(2 * RUN + 1, 0, -1) if user_of(s)[key] == value]
            assert pages(upgraded, f, 300) == want
    finally:
        upgraded.close()


def test_a_run_is_kept_whichever_seqs_a_writer_skips(tmp_path: Path) -> None:
    """Another writer's ignored insert uses a seq up (SQLite's AUTOINCREMENT), here the first
    of a run: the run is kept by the first event stored in it, whatever its seq."""
    db = str(tmp_path / "skipped.db")
    storage = open_storage(db)
    try:
        storage.insert_events(events(1, RUN - 1))  # type: ignore[arg-type]
        conn = sqlite3.connect(db)
        with conn:  # an event stored already, sent again: seq RUN used up, no row
            columns = "id, name, ts, received_at, properties_json, key_id"
            conn.execute(
                f"INSERT OR IGNORE INTO events ({columns}) "
                f"SELECT {columns} FROM events WHERE seq = 1"
            )
        conn.close()
        assert runs(db) == [0]
        storage.insert_events(events(RUN + 1, 2 * RUN + 40))  # type: ignore[arg-type]
        assert runs(db) == [0, 1, 2]
        f = EventFilter(users=(("uid", "rare"),))
        want = [s for s in range(2 * RUN + 40, 0, -1) if s in RARE and s != RUN]
        assert [e.seq for e in storage.query_events(f, limit=100)] == want
        assert storage.count_events(f) == len(want)
    finally:
        storage.close()


def test_the_run_in_progress_at_the_upgrade_is_kept(tmp_path: Path) -> None:
    """An older database whose current run holds no user's row yet (events without a user
    since it began), or none at all (retention purged everything): the users' events stored
    after the upgrade in that run are read."""
    db = str(tmp_path / "current.db")
    schema_19 = type(
        "Schema19",
        (SQLiteStorage,),
        {"MIGRATIONS": SQLiteStorage.MIGRATIONS[:19], "RUN_INDEXED": {}},
    )
    old = schema_19(db)
    try:
        old.insert_events(events(1, RUN - 1))  # type: ignore[arg-type]
        old.insert_events([wire_event(user=None) for _ in range(5)])  # type: ignore[arg-type]
    finally:
        old.close()
    upgraded = open_storage(db)
    try:
        assert runs(db) == [0]
        upgraded.insert_events(events(RUN + 5, RUN + 30))  # type: ignore[arg-type]
        assert runs(db) == [0, 1]
        f = EventFilter(users=(("uid", "1"),))
        new = range(RUN + 30, 0, -1)
        want = [s for s in new if s not in range(RUN, RUN + 5) and user_of(s)["uid"] == "1"]
        assert [e.seq for e in upgraded.query_events(f, limit=20)] == want[:20]
        assert upgraded.count_events(f) == len(want)
    finally:
        upgraded.close()


def test_a_purge_of_every_user_drops_the_runs_and_later_events_are_read(
    tmp_path: Path, clock: Any
) -> None:
    db = str(tmp_path / "emptied.db")
    storage = open_storage(db, clock=clock)
    try:
        old = datetime.now(UTC) - timedelta(days=10)
        storage.insert_events(events(1, RUN + 5), received_at=old)  # type: ignore[arg-type]
        storage.insert_events([wire_event(user=None) for _ in range(3)])  # type: ignore[arg-type]
        assert storage.purge_older_than(5) == RUN + 5
        assert runs(db) == []  # no user's row left: no run to seek
        storage.insert_events(events(RUN + 9, RUN + 20))  # type: ignore[arg-type]
        assert runs(db) == [1]
        f = EventFilter(users=(("uid", "2"),))
        want = [s for s in range(RUN + 20, RUN + 8, -1) if s % 5 == 2]
        assert [e.seq for e in storage.query_events(f, limit=50)] == want
    finally:
        storage.close()
