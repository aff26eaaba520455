"""PostgreSQL's windows: a batch's hits committed with its events, counted after the commit,
and only the keys that may fire held (storage/_playbooks.py, ``_count_after_commit``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sqreen.server.storage import NewAlert, Storage, WindowWrite, _pgcopy, open_storage
from sqreen.server.storage._pg_log import HITS
from sqreen.server.storage._tied import TiedSteps
from sqreen.server.storage.postgres import PostgresStorage

from .conftest import wait_for
from .test_tied_windows import Node, two_bodies_failed_once_count_four_hits
from .test_window_log_hostile import BRUTE, X, fail

pytestmark = pytest.mark.postgres


class PgNode(Node):
    def hits(self) -> int:
        with psycopg.connect(str(self.db)) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {HITS}").fetchone()[0])  # type: ignore[index]


@pytest.fixture
def node(tmp_path: Path, postgres_db: str) -> Iterator[PgNode]:
    book = tmp_path / "playbooks.toml"
    book.write_text(BRUTE)
    made = PgNode(postgres_db, book)
    yield made
    made.storage.close()


def _transactions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each write transaction begun from now on: 'events' or 'windows' (which the
    windows' key locks tell apart)."""
    begun: list[str] = []
    write, lock = PostgresStorage._write, PostgresStorage._lock_windows

    def counted(self: PostgresStorage) -> Any:
        begun.append("events")
        return write(self)

    def locking(self: PostgresStorage, cur: Any, keys: Any) -> None:
        begun[-1] = "windows"
        lock(self, cur, keys)

    monkeypatch.setattr(PostgresStorage, "_write", counted)
    monkeypatch.setattr(PostgresStorage, "_lock_windows", locking)
    return begun


def test_hits_commit_with_the_events_and_only_a_crossing_takes_the_keys_lock(
    node: PgNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four failures: one transaction, the events' (their hits in it), counted after its
    commit, no key held. The fifth: its events', then the windows' for the one key that
    reached the threshold, where the alert and the block are written."""
    begun = _transactions(monkeypatch)
    node.send(node.body(*(fail(X) for _ in range(4))))
    assert begun == ["events"]
    assert node.hits() == 4
    assert node.alerts() == []
    node.send(node.body(fail(X)))
    assert begun == ["events", "events", "windows"]
    assert node.alerts() == [("brute-force-ip", X, 5)]
    assert [b.created_by for b in node.storage.list_blocks()] == ["playbook:brute-force-ip"]


def test_a_turn_that_fails_after_the_hits_were_written_counts_them_once(
    node: PgNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction of two bodies fails after the playbooks' step wrote their four hits:
    rolled back with the events, then stored again with each body alone (the hits in a
    transaction of their own, counted after it). Counted twice, X would be blocked at its
    fourth failure."""
    real_tie, write = TiedSteps._tie, PostgresStorage._write
    tied: list[bool] = []
    failed: list[bool] = []

    def tie(self: TiedSteps, *args: Any) -> bool:
        tied.append(real_tie(self, *args))
        return tied[-1]

    @contextmanager
    def fail_at_the_commit(self: PostgresStorage) -> Iterator[Any]:
        tied.clear()
        with write(self) as cur:
            yield cur
            if tied == [True] and not failed:  # the step wrote the hits: rolled back
                failed.append(True)
                raise psycopg.OperationalError("the server closed the connection")

    monkeypatch.setattr(TiedSteps, "_tie", tie)
    monkeypatch.setattr(PostgresStorage, "_write", fail_at_the_commit)
    two_bodies_failed_once_count_four_hits(node, failed)


def test_two_processes_that_commit_at_once_both_count_and_alert_once(
    postgres_db: str,
) -> None:
    """Two collectors commit a hit of one key each before either counts (what a lock taken
    to count kept apart): both count 2, both reach the threshold. The first to hold the key
    decides while the second waits for it (seen in pg_locks: without the key's lock, the
    second would decide meanwhile, read no quiet time, and alert too); the second then
    reads the quiet time the first wrote: one alert."""
    stores: list[Storage] = [open_storage(postgres_db) for _ in range(2)]
    try:
        now = stores[0].now()
        now_us = int(now.timestamp() * 1_000_000)
        key = ("s", X)
        committed = threading.Barrier(2, timeout=30)
        decided: list[dict[Any, int]] = []
        waited: list[bool] = []
        errors: list[BaseException] = []

        def other_waits_for_a_key() -> bool:
            with psycopg.connect(postgres_db, autocommit=True) as conn:
                (n,) = conn.execute(  # type: ignore[misc]
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchone()
            return bool(n)

        def decide(found: Any, quiet: dict[Any, int]) -> WindowWrite:
            decided.append(quiet)
            if len(decided) == 1:  # the first holds the key: the other waits, or decides too
                wait_for(lambda: other_waits_for_a_key() or len(decided) > 1, timeout=20)
                waited.append(len(decided) == 1)
            if ("x", X) in quiet:
                return WindowWrite({})
            alert = NewAlert("x", "ip", X, 2, now, now, 2, 2, (1, 2), "monitor", "alert", "s")
            return WindowWrite({("x", X): now_us + 3_600_000_000}, [alert])

        def run(n: int) -> None:
            store = stores[n]
            count = type(store)._count_cursor

            def after_both(self: Any) -> Any:
                committed.wait()  # each has committed its hit: neither has counted yet
                return count(self)

            store._count_cursor = after_both.__get__(store)  # type: ignore[method-assign]
            try:
                store.update_windows(
                    [key], [("s", X, now_us - n, n + 1, None)],
                    [("s", X, now_us - 10**6, 2, False)], decide,
                )  # fmt: skip
            except BaseException as exc:  # told below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(t.is_alive() for t in threads) and errors == []
        assert waited == [True]  # the second waited for the key while the first decided
        assert len(decided) == 2  # both counted 2, and held the key in turn
        assert decided[0] == {} and ("x", X) in decided[1]
        assert [a.playbook for a in stores[0].list_alerts()] == ["x"]
    finally:
        for store in stores:
            store.close()


def test_a_count_that_fails_after_the_commit_is_tried_again(
    node: PgNode, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The count after the commit fails once (a connection lost): counted again at once,
    as the hits are stored and nothing else would count them before X's next failure."""
    count, failed = PostgresStorage._count_cursor, []

    def once(self: PostgresStorage) -> Any:
        if not failed:
            failed.append(True)
            raise psycopg.OperationalError("the server closed the connection")
        return count(self)

    monkeypatch.setattr(PostgresStorage, "_count_cursor", once)
    node.send(node.body(*(fail(X) for _ in range(5))))
    assert failed == [True]
    assert "counting again" in caplog.text
    assert "Traceback" not in caplog.text  # the database gone: a line a minute at most
    assert node.alerts() == [("brute-force-ip", X, 5)]


def test_the_step_takes_no_second_connection_while_the_events_one_is_held(
    node: PgNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once X is blocked, the runner remembers quiet times and reads, in the next batch's
    step, whether a lift released them: on the events' transaction, not on a second
    connection of the pool taken while that one is held (ten such steps at once would
    hold every connection, each waiting for another)."""
    node.send(node.body(*(fail(X) for _ in range(5))))
    assert node.alerts() == [("brute-force-ip", X, 5)]
    real = PostgresStorage._connection
    held = threading.local()
    most: list[int] = [0]

    @contextmanager
    def counted(self: PostgresStorage) -> Iterator[Any]:
        depth = getattr(held, "depth", 0) + 1
        held.depth, most[0] = depth, max(most[0], depth)
        try:
            with real(self) as conn:
                yield conn
        finally:
            held.depth = depth - 1

    monkeypatch.setattr(PostgresStorage, "_connection", counted)
    released = PostgresStorage.quiet_released
    reads: list[str] = []
    monkeypatch.setattr(
        PostgresStorage, "quiet_released", lambda self: reads.append("read") or released(self)
    )
    node.send(node.body(fail("198.51.100.7")))
    assert reads == ["read"]  # (the runner remembers X's quiet time)
    assert most == [1]


def test_hits_copied_with_the_events_keep_every_character_and_null(
    postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The step's hits go through COPY's text format (``hits_text``): keys and values with
    its special characters, the text ``\\N``, an empty value and no value come back as
    they were; a key or a value holding NUL (which COPY's text cannot carry) goes the way
    of any other insert (a bare NUL key is refused by PostgreSQL, as it was)."""
    storage = open_storage(postgres_db)
    assert isinstance(storage, PostgresStorage)
    copied: list[int] = []
    real = _pgcopy.hits_text
    monkeypatch.setattr(
        "sqreen.server.storage.postgres.hits_text",
        lambda hits: copied.append(len(hits)) or real(hits),
    )
    hits = [
        ("s1", "tab\there", 1, 1, None),
        ("s1", "line\nfeed\rreturn", 2, 2, "v\\w"),
        ("s1", "\\N", 3, 3, "\\N"),
        ("s2", "é ü 𝄞", 4, 4, ""),
        ("s2", "plain", 5, 5, "a\tb\nc"),
    ]
    try:
        with storage._write() as cur:
            storage._insert_new_hits(cur, hits)
        with psycopg.connect(postgres_db) as conn:
            rows = conn.execute(
                f"SELECT stream, key, ts, seq, value FROM {HITS} ORDER BY seq"
            ).fetchall()
        assert rows == hits
        assert copied == [5]
        nul = [("s3", "ok", 6, 6, "nul\x00inside")]
        assert real(nul) is None
        with pytest.raises(psycopg.DataError), storage._write() as cur:
            storage._insert_new_hits(cur, nul)  # the arrays' insert: PostgreSQL refuses it
    finally:
        storage.close()
