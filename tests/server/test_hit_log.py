"""SQLite's hits in ``window_log`` (storage/_hit_log.py): counted from each process's memory
while they are few, in SQL past LOG_MEMORY_MAX rows, the same answers either way and in
every process; a transaction rolled back leaves nothing in memory; a database from before
the log keeps its hits."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqreen._wire_time import format_timestamp
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.playbooks import TEMPLATES, PlaybookRunner, PlaybookSource
from sqreen.server.storage import _hit_index, _hit_log, _window_reads, open_storage
from sqreen.server.storage._hit_index import HitIndex
from sqreen.server.storage._window_reads import count_probes, fetch_hits, present_hits
from sqreen.server.storage.backup import backup_sqlite, restore_sqlite
from sqreen.server.storage.model import WindowWrite

from .conftest import Clock, envelope
from .test_playbooks import failure, playbook_file

X = "198.51.100.66"


class Node:
    """A collector process, in effect: its storage on the shared file, its runner."""

    def __init__(self, db: Path, book: Path, clock: Clock) -> None:
        self.clock = clock
        self.storage: Any = open_storage(str(db), clock=clock)
        self.runner = PlaybookRunner(self.storage, PlaybookSource(book))
        self.pipeline = IngestPipeline(self.storage, hooks=[self.runner])

    def fail(self, ip: str, *users: str) -> None:
        at = format_timestamp(self.clock())
        events = [failure(ip, user, timestamp=at) for user in users]
        self.pipeline(json.dumps(envelope(events)).encode())

    def fired(self) -> list[tuple[str, str, int]]:
        return sorted((a.playbook, a.group_key, a.total) for a in self.storage.list_alerts())


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Node, Node, Path]]:
    clock = Clock()
    book = playbook_file(tmp_path, TEMPLATES)
    db = tmp_path / "w.db"
    a, b = Node(db, book, clock), Node(db, book, clock)
    try:
        yield a, b, db
    finally:
        a.storage.close()
        b.storage.close()


def _indexes(db: Path) -> set[str]:
    with sqlite3.connect(str(db)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'window_log'")
        return {name for (name,) in rows if name.startswith("window_log_")}


def test_two_processes_count_each_other_s_hits_from_memory(
    nodes: tuple[Node, Node, Path],
) -> None:
    """Three failures at one process and two at the other block at the 5th, not the 10th,
    with no index on the log: each read the other's rows into its memory."""
    a, b, db = nodes
    a.fail(X, "u1", "u2")
    b.fail(X, "u3")
    a.fail(X, "u4")
    assert b.fired() == []
    b.fail(X, "u5")
    assert ("brute-force-ip", X, 5) in b.fired()
    assert _indexes(db) == set()


def test_past_the_memory_bound_the_log_is_indexed_and_counts_stay_exact(
    nodes: tuple[Node, Node, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past LOG_MEMORY_MAX rows the transaction that crosses it indexes the log, both
    processes count in SQL (their memory dropped), and the threshold holds across the
    switch; once a purge leaves fewer than half as many rows, the indexes go and memory
    counts again, the same way."""
    monkeypatch.setattr(_hit_log, "LOG_MEMORY_MAX", 12)
    a, b, db = nodes
    a.fail(X, "u1", "u2")  # 4 rows (by IP, by user): counted from memory
    assert _indexes(db) == set() and a.storage._hit_index is not None
    b.fail("192.0.2.1", *(f"v{i}" for i in range(5)))  # 14 rows: indexed
    assert _indexes(db) == {"window_log_key", "window_log_ts"}
    a.fail(X, "u3")  # X: 3, counted in SQL
    assert a.storage._hit_index is None and b.storage._hit_index is None
    b.fail(X, "u4")
    assert ("brute-force-ip", X, 5) not in b.fired()
    a.fail(X, "u5")  # the 5th, from the other process
    assert ("brute-force-ip", X, 5) in a.fired()
    a.clock.advance(hours=3)  # every hit older than any window
    assert a.runner.purge() == 20  # 10 failures, each a hit by IP and one by user
    assert _indexes(db) == set()
    for n in range(4):
        (a if n % 2 else b).fail("203.0.113.9", f"w{n}")
    assert not [f for f in a.fired() if f[1] == "203.0.113.9"]
    b.fail("203.0.113.9", "w4")
    assert ("brute-force-ip", "203.0.113.9", 5) in b.fired()
    assert b.storage._hit_index is not None  # counted from memory again


def test_a_rolled_back_transaction_leaves_no_hit_in_memory(tmp_path: Path) -> None:
    """Hits a windows' transaction added to memory before it failed are not counted after:
    the process reads the table again."""
    storage: Any = open_storage(str(tmp_path / "w.db"))
    owner = object()
    counted: list[dict[Any, int]] = []

    def update(n: int, fail: bool) -> None:
        def decide(found: Any, quiet: Any) -> WindowWrite:
            if fail:
                raise RuntimeError("decide failed")
            return WindowWrite({}, [])

        hits = [("s", "k", 1_000 + i, 100 * n + i, None) for i in range(n)]
        probe = ("s", "k", 0, 1, False)
        storage.update_windows(
            [("s", "k")], hits, [probe], decide, owner=owner, counted=counted.append
        )

    try:
        with pytest.raises(RuntimeError, match="decide failed"):
            update(3, fail=True)
        assert storage._hit_index is None
        update(1, fail=False)
        assert [c[("s", "k", 0, 1, False)] for c in counted] == [3, 1]
    finally:
        storage.close()


def test_a_database_from_before_the_log_keeps_its_hits(tmp_path: Path) -> None:
    """A database whose hits are in ``window_hits`` (schema 17) gets them in the log, and
    they count: four failures stored before the upgrade and one after make five."""
    clock = Clock()
    db = tmp_path / "w.db"
    book = playbook_file(tmp_path, TEMPLATES)
    old = Node(db, book, clock)
    old.fail(X, "u1", "u2", "u3", "u4")
    old.storage.close()
    with sqlite3.connect(str(db), isolation_level=None) as conn:  # as schema 17 had them
        conn.execute(
            "CREATE TABLE window_hits (stream TEXT NOT NULL, key TEXT NOT NULL, ts INTEGER "
            "NOT NULL, seq INTEGER NOT NULL, value TEXT, PRIMARY KEY (stream, key, ts, seq)) "
            "WITHOUT ROWID"
        )
        conn.execute(
            "INSERT INTO window_hits SELECT stream, key, ts, seq, value FROM window_log "
            "ORDER BY id DESC"
        )
        conn.execute("DROP TABLE window_log")
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'window_log'")
        # (and the users' index as it was before schema 20)
        conn.execute("DROP TRIGGER event_user_buckets_kept")
        conn.execute("DROP TABLE event_user_buckets")
        conn.execute("DROP INDEX event_users_bkv")
        conn.execute("CREATE INDEX event_users_kv ON event_users (key, value, seq)")
        conn.execute("UPDATE schema_version SET version = 17")
    new = Node(db, book, clock)
    try:
        with sqlite3.connect(str(db)) as conn:
            assert conn.execute("SELECT count(*) FROM window_log").fetchone() == (8,)
            found = conn.execute("SELECT name FROM sqlite_master WHERE name = 'window_hits'")
            assert found.fetchone() is None
        new.fail(X, "u5")
        assert ("brute-force-ip", X, 5) in new.fired()
    finally:
        new.storage.close()


def test_memory_answers_what_sql_answers_over_the_same_rows(tmp_path: Path) -> None:
    """Random hits (times repeated, rows out of time order, values missing): the counts,
    the hits read and the hits present that memory gives are those the indexed log's
    statements give."""
    rng = random.Random(11)
    rows = [
        (
            rng.choice(["s1", "s2"]),
            f"k{rng.randrange(12)}",
            1_000_000 + rng.randrange(300) * 1_000,
            seq,
            rng.choice([None, "a", "b", "c", "d"]),
        )
        for seq in range(1, 3000)
    ]
    conn = sqlite3.connect(str(tmp_path / "h.db"), isolation_level=None)
    conn.execute(
        "CREATE TABLE window_log (id INTEGER PRIMARY KEY, stream TEXT, key TEXT, ts INT, "
        "seq INT, value TEXT)"
    )
    for statement in _hit_log.LOG_INDEXES:
        conn.execute(statement)
    conn.executemany(
        "INSERT INTO window_log (stream, key, ts, seq, value) VALUES (?,?,?,?,?)", rows
    )
    index = HitIndex()
    index.fold((n, *row) for n, row in enumerate(rows, 1))
    cur = conn.cursor()
    probes = [
        (s, f"k{k}", 1_000_000 + rng.randrange(320) * 1_000, 1, distinct)
        for s in ("s1", "s2", "s3")
        for k in range(14)
        for distinct in (False, True)
    ]
    assert index.count(probes) == count_probes(cur, probes, False, "window_log")
    wanted = {
        (s, f"k{k}"): 1_000_000 + rng.randrange(320) * 1_000
        for s in ("s1", "s2")
        for k in range(14)
    }
    monkey = pytest.MonkeyPatch()
    try:  # few enough to read them all back in order (FETCH_MAX newest otherwise)
        monkey.setattr(_hit_index, "FETCH_MAX", 50)
        monkey.setattr(_window_reads, "FETCH_MAX", 50)
        assert index.fetch(wanted) == fetch_hits(cur, wanted, "window_log")
    finally:
        monkey.undo()
    mine: list[Any] = []
    index.present(1_250_000, lambda at, counts: mine.append((at, counts)))
    theirs: list[Any] = []
    present_hits(cur, 1_250_000, lambda at, counts: theirs.append((at, counts)), "window_log")
    assert mine == theirs and mine[0][1]
    conn.close()


def test_hits_older_than_every_window_leave_memory_at_each_purge(
    nodes: tuple[Node, Node, Path],
) -> None:
    """Each process's purge (every minute in each) drops the old hits from its memory too,
    whether it ingests more or not."""
    a, b, _ = nodes
    a.fail(X, "u1", "u2")
    b.fail(X, "u3")
    assert a.storage._hit_index.held == 4
    a.fail("192.0.2.5", "u4")  # a reads b's rows: 8 hits held
    assert a.storage._hit_index.held == 8 and b.storage._hit_index.held == 6
    a.clock.advance(hours=3)
    a.runner.purge()
    b.runner.purge()  # b ingests nothing more: its memory is dropped all the same
    assert a.storage._hit_index.held == 0 and b.storage._hit_index.held == 0
    assert a.storage._hit_index.text == 0


def test_long_identifiers_index_the_log_long_before_its_rows_do(
    nodes: tuple[Node, Node, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory is bounded by the hits' text too: 256 characters that NFKC folds into 4 606
    each cost what they hold, and past LOG_TEXT_MAX the log is indexed (both processes then
    count in SQL, exactly), however few the rows."""
    monkeypatch.setattr(_hit_log, "LOG_TEXT_MAX", 50_000)
    a, b, db = nodes
    long_names = ["\ufdfa" * 255 + str(n) for n in range(6)]
    a.fail(X, *long_names[:2])
    assert _indexes(db) == set()
    b.fail(X, *long_names[2:4])  # the user keys' text: ~18 000 characters, and as values
    a.fail("192.0.2.7", *long_names[4:])
    assert _indexes(db) == {"window_log_key", "window_log_ts"}
    assert a.storage._hit_index is None
    b.fail(X, "u5")
    assert ("brute-force-ip", X, 5) in b.fired()


def test_a_restore_into_the_live_file_gives_no_hit_id_twice(
    nodes: tuple[Node, Node, Path], tmp_path: Path
) -> None:
    """``sqreen restore --force`` into a file a process has read the log of: the next hit
    gets an id past every one given before the restore, so that the row the process read
    last is gone rather than replaced, and it reads the log again; its count is then the
    restored database's."""
    a, b, db = nodes
    a.fail(X, "u1", "u2")
    backup_sqlite(str(db), str(tmp_path / "backup.db"))
    a.fail(X, "u3", "u4")  # ids 5-8: gone with the restore
    restore_sqlite(str(tmp_path / "backup.db"), str(db), force=True)
    b.fail("192.0.2.9", "v1")
    with sqlite3.connect(str(db)) as conn:
        ids = [i for (i,) in conn.execute("SELECT id FROM window_log ORDER BY id")]
    assert ids == [1, 2, 3, 4, 9, 10]
    a.fail(X, "u5", "u6")  # X: 2 restored + 2 = 4, not 6: no alert
    assert not [f for f in a.fired() if f[1] == X]
    a.fail(X, "u7")
    assert ("brute-force-ip", X, 5) in a.fired()


def test_the_writer_sorts_in_files_and_journals_in_memory_only_from_its_begin(
    nodes: tuple[Node, Node, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite places a transaction's statement journals at its BEGIN, and each statement's
    sorts and ephemeral tables when it runs: the writer asks for memory for the BEGIN alone,
    so the indexes made past the bound (a sort of the whole log) and the windows'
    ``count(DISTINCT ...)`` in SQL (one value a hit in the window) stay in files."""
    monkeypatch.setattr(_hit_log, "LOG_MEMORY_MAX", 12)
    _, b, db = nodes
    statements: list[str] = []
    b.storage._writer.set_trace_callback(statements.append)
    b.fail("192.0.2.1", *(f"v{i}" for i in range(7)))  # 14 rows: indexed
    b.storage._writer.set_trace_callback(None)
    assert _indexes(db) == {"window_log_key", "window_log_ts"}
    first = next(n for n, sql in enumerate(statements) if sql.startswith("CREATE INDEX"))
    begin = max(n for n, sql in enumerate(statements[:first]) if sql == "BEGIN IMMEDIATE")
    assert statements[begin - 1 : begin + 2] == [
        "PRAGMA temp_store=MEMORY",
        "BEGIN IMMEDIATE",
        "PRAGMA temp_store=FILE",
    ]
    assert "PRAGMA temp_store=MEMORY" not in statements[begin:first]
    assert b.storage._writer.execute("PRAGMA temp_store").fetchone() == (1,)
    # Indexed, the log's savepoint journals a page of its indexes for nearly every hit of
    # the bodies stored together: the transactions that follow keep their journals in files.
    statements.clear()
    b.storage._writer.set_trace_callback(statements.append)
    b.fail("192.0.2.2", "w1")
    b.storage._writer.set_trace_callback(None)
    assert "BEGIN IMMEDIATE" in statements and "PRAGMA temp_store=MEMORY" not in statements
