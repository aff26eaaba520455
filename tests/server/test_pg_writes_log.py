"""PostgreSQL's log of what each windows' write added, read by snapshot (storage/_pg_log.py):
each collector told, once, what the others added by key; anything it cannot tell all of
makes it count again in SQL."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sqreen.server.playbooks import TEMPLATES
from sqreen.server.storage import WindowWrite, _pg_log, open_storage
from sqreen.server.storage._pg_log import HITS
from sqreen.server.storage.postgres import PostgresStorage

from .conftest import Clock
from .test_count_after_commit import PgNode
from .test_playbooks import playbook_file
from .test_window_log import replay
from .test_window_log_hostile import BRUTE, X, fail

pytestmark = pytest.mark.postgres

K = ("s", "203.0.113.9")


class Writer:
    """One collector process's storage and runner, as ``update_windows`` sees them."""

    def __init__(self, dsn: str, clock: Clock | None = None) -> None:
        self.storage = open_storage(dsn, clock=clock) if clock else open_storage(dsn)
        assert isinstance(self.storage, PostgresStorage)
        self.owner = object()
        self.fresh: list[bool] = []
        self.told: list[dict[Any, int]] = []
        self._seq = 0

    def write(self, n: int = 1, key: tuple[str, str] = K) -> None:
        now = int(self.storage.now().timestamp() * 1_000_000)
        hits = []
        for _ in range(n):
            self._seq += 1
            hits.append((key[0], key[1], now, id(self) % 10**6 * 1000 + self._seq, None))
        self.storage.update_windows(
            [key],
            hits,
            lambda fresh: self.fresh.append(fresh) or [],
            lambda found, quiet: WindowWrite({}),
            owner=self.owner,
            added={key: n},
            others=self.told.append,
        )


@pytest.fixture
def writers(postgres_db: str) -> Iterator[Callable[..., Writer]]:
    made: list[Writer] = []

    def make(clock: Clock | None = None) -> Writer:
        made.append(Writer(postgres_db, clock))
        return made[-1]

    yield make
    for writer in made:
        writer.storage.close()


def test_each_collector_is_told_what_the_others_added_once_and_not_its_own(
    writers: Callable[..., Writer],
) -> None:
    one, two = writers(), writers()
    one.write(2)
    two.write(1)
    one.write(1)
    one.write(1)
    two.write(3)
    # The first read of each knows nothing before it; then each row is told once, to the
    # other (one's first row was committed before two's first read: not told).
    assert one.fresh == [False, True, True]
    assert one.told == [{K: 1}]
    assert two.fresh == [False, True]
    assert two.told == [{K: 2}]


def test_a_row_purged_before_it_was_read_is_a_gap(
    writers: Callable[..., Writer], postgres_db: str
) -> None:
    clock = Clock()
    one, two = writers(clock), writers()
    one.write()
    one.write()
    clock.advance(minutes=10)
    one.storage.purge_windows(one.storage.now() - timedelta(hours=2))
    one.write()  # rows purged, all read before: the log still tells all
    two.write()  # its row, which one has not read, purged
    one.storage.purge_windows(one.storage.now() - timedelta(hours=2))
    one.write()
    assert one.fresh == [False, True, True, False]
    assert one.told == []
    with psycopg.connect(postgres_db) as conn:
        (purged,) = conn.execute(
            "SELECT value FROM counters WHERE name = %s", (_pg_log.PURGED,)
        ).fetchone()  # type: ignore[misc]
    assert purged > 0


def test_a_row_it_cannot_read_or_too_many_rows_count_again(
    writers: Callable[..., Writer], postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = writers(), writers()
    one.write()
    with psycopg.connect(postgres_db) as conn:  # another version's row, or a damaged one
        conn.execute(
            "INSERT INTO window_writes (id, at, counts) "
            'VALUES (pg_current_xact_id()::text::int8, 0, \'{"s": ["k"]\')'
        )
    one.write()
    one.write()
    monkeypatch.setattr(_pg_log, "LOG_CATCH_UP", 2)  # (its own row read back counts)
    for _ in range(3):
        two.write()
    one.write()
    two.write()
    one.write()
    assert one.fresh == [False, False, True, False, True]
    assert one.told == [{K: 1}]


def test_a_read_that_fails_reads_from_scratch(
    writers: Callable[..., Writer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Told nothing it may not have counted: a read that raised is no read."""
    one, two = writers(), writers()
    one.write()
    two.write()
    real = _pg_log.adds_of

    def broken(texts: Any) -> Any:
        raise RuntimeError("lost")

    monkeypatch.setattr(_pg_log, "adds_of", broken)
    with pytest.raises(RuntimeError):
        one.write()
    monkeypatch.setattr(_pg_log, "adds_of", real)
    one.write()
    assert one.fresh == [False, False]
    assert one.told == []


@pytest.fixture
def pair(tmp_path: Path, postgres_db: str) -> Iterator[tuple[PgNode, PgNode]]:
    book = tmp_path / "playbooks.toml"
    book.write_text(BRUTE)
    made = PgNode(postgres_db, book), PgNode(postgres_db, book)
    yield made
    for node in made:
        node.storage.close()


def test_two_collectors_count_in_sql_only_near_the_threshold_and_alert_once(
    pair: tuple[PgNode, PgNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failures of X sent to two collectors in turn: the fifth blocks X, once, whichever
    collector stores it; batches whose keys the log shows far below the threshold ask
    nothing of SQL."""
    asked: list[int] = []
    real = PostgresStorage._count_probes

    def counting(self: PostgresStorage, cur: Any, probes: Any) -> Any:
        asked.append(len(probes))
        return real(self, cur, probes)

    monkeypatch.setattr(PostgresStorage, "_count_probes", counting)
    one, two = pair
    others = [f"198.51.100.{i}" for i in range(1, 4)]
    for ip in others:  # each collector's first batch, and keys far from any threshold
        one.send(one.body(fail(ip)))
        two.send(two.body(fail(ip)))
    asked.clear()
    for n, node in enumerate((one, two, one, two)):
        node.send(node.body(fail(X), fail(others[n % 3])))
    assert one.alerts() == []
    one.send(one.body(fail(X)))
    assert one.alerts() == [("brute-force-ip", X, 5)]
    assert [b.created_by for b in one.storage.list_blocks()] == ["playbook:brute-force-ip"]
    two.send(two.body(fail(X)))
    assert two.alerts() == [("brute-force-ip", X, 5)]
    assert asked[:2] == [0, 0]  # X at 1, then 2 of 5: nothing counted
    assert sum(asked) < 2 * len(asked)


def test_a_batch_of_its_own_whose_count_never_ran_is_told_as_another_would_be(
    writers: Callable[..., Writer],
) -> None:
    """Only the row of the batch being counted is this process's to add itself: a row of
    an earlier batch whose runner failed after the commit is told, not skipped."""
    one = writers()
    one.write()
    lost = ("s", "192.0.2.1")
    with one.storage._write() as cur:  # its hits and row committed, then no count
        one.storage._log_adds(cur, [(*lost, 1, 1, None)] * 3, {lost: 3})
    one.write()
    assert one.fresh == [False, True]
    assert one.told == [{lost: 3}]


def test_a_count_that_fails_after_the_read_makes_the_next_read_start_afresh(
    writers: Callable[..., Writer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows a read told were used by no count: what they said may never have reached
    what the process remembers, so the next read tells nothing and forgets."""
    one, two = writers(), writers()
    one.write()
    two.write()
    real = PostgresStorage._count_probes

    def failing(self: PostgresStorage, cur: Any, probes: Any) -> Any:
        raise psycopg.OperationalError("the connection was lost")

    monkeypatch.setattr(PostgresStorage, "_count_probes", failing)
    with pytest.raises(psycopg.OperationalError):
        one.write()
    monkeypatch.setattr(PostgresStorage, "_count_probes", real)
    one.write()
    one.write()
    assert one.fresh == [False, True, False, True]
    assert one.told == [{K: 1}]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_three_collectors_decide_as_one_alone(tmp_path: Path, postgres_db: str, seed: int) -> None:
    """The same batches, in the same order, through three collectors on one PostgreSQL
    database (taking turns at random, each counting from what its log tells) and through
    one collector alone on SQLite: the same alerts, with the same counts."""
    rng = random.Random(seed)
    path = playbook_file(tmp_path, TEMPLATES)
    shared = [open_storage(postgres_db) for _ in range(3)]
    alone = open_storage(str(tmp_path / "one.db"))
    try:
        replay(rng, 80, path, shared, alone)
        got = sorted((a.playbook, a.group_key, a.total) for a in shared[0].list_alerts())
        want = sorted((a.playbook, a.group_key, a.total) for a in alone.list_alerts())
        assert want, "the traffic fires some playbooks"
        assert got == want
        with psycopg.connect(postgres_db) as conn:
            (rows,) = conn.execute("SELECT count(*) FROM window_writes").fetchone()  # type: ignore[misc]
        assert rows > 0
    finally:
        for s in [*shared, alone]:
            s.close()


def test_an_older_collector_cannot_write_hits_unlogged(postgres_db: str) -> None:
    """Schema 19 renamed the hits' table: a collector of the build before, still running on
    the database, fails to write its hits, loudly, rather than writing hits no collector's
    log tells; the hits stored before the migration are kept."""
    current = PostgresStorage
    schema_18 = type("Schema18", (current,), {"MIGRATIONS": current.MIGRATIONS[:18]})
    old = schema_18(postgres_db)
    with old._write() as cur:
        cur.execute(
            "INSERT INTO window_hits (stream, key, ts, seq, value) VALUES (?, ?, ?, ?, ?)",
            ("s", "k", 1, 1, None),
        )
    old.close()
    open_storage(postgres_db).close()
    with psycopg.connect(postgres_db) as conn:
        assert conn.execute(f"SELECT stream, key FROM {HITS}").fetchall() == [("s", "k")]
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute(
                "INSERT INTO window_hits (stream, key, ts, seq, value) "
                "VALUES ('s', 'k', 2, 2, NULL)"
            )


def test_a_batch_whose_count_never_ran_is_told_even_when_the_next_writes_no_row(
    writers: Callable[..., Writer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's hits and row committed, then its count could not get a connection (twice:
    the runner's retry too); the next batch has keys but no hits (events that only trigger
    an ``after`` rule), so writes no row: the lost batch is still told, not taken for the
    next batch's own."""
    one, two = writers(), writers()
    one.write()
    two.write()
    one.write()
    lost = ("s", "192.0.2.1")
    real = PostgresStorage._count_cursor

    def down(self: PostgresStorage) -> Any:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(PostgresStorage, "_count_cursor", down)
    with pytest.raises(psycopg.OperationalError):
        one.write(3, lost)
    monkeypatch.setattr(PostgresStorage, "_count_cursor", real)
    one.storage.update_windows(
        [K],
        [],
        lambda fresh: one.fresh.append(fresh) or [],
        lambda found, quiet: WindowWrite({}),
        owner=one.owner,
        added={},
        others=one.told.append,
    )
    assert one.fresh == [False, True, True]
    assert one.told == [{K: 1}, {lost: 3}]


def test_a_log_restored_from_another_cluster_is_cleared_at_start(postgres_db: str) -> None:
    """Ids past the next transaction's (a restore from another cluster) would make every
    read forget (a purge mark) and take the ids of transactions to come (rows)."""
    open_storage(postgres_db).close()
    far = 1 << 40
    with psycopg.connect(postgres_db) as conn:
        conn.execute(
            "INSERT INTO window_writes (id, at, counts) VALUES (%s, 0, '{}'), (5, 0, '{}')",
            (far,),
        )
        conn.execute("INSERT INTO counters (name, value) VALUES (%s, %s)", (_pg_log.PURGED, far))
    open_storage(postgres_db).close()
    with psycopg.connect(postgres_db) as conn:
        assert conn.execute("SELECT id FROM window_writes").fetchall() == [(5,)]
        assert (
            conn.execute("SELECT value FROM counters WHERE name = %s", (_pg_log.PURGED,)).fetchall()
            == []
        )
