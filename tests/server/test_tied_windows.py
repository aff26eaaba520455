"""The playbooks' windows written in the events' own transaction (storage/_tied.py): one turn
at SQLite's write lock a batch, and what a failure there or after it leaves."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sqreen._wire_time import format_timestamp
from sqreen.server._tied_hooks import TiedHooks
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.playbooks import PlaybookRunner, PlaybookSource
from sqreen.server.playbooks._late import LateEvents
from sqreen.server.storage import open_storage
from sqreen.server.storage.sqlite import SQLiteStorage

from .conftest import Clock, envelope
from .test_window_log_hostile import BRUTE, X, fail


class Node:
    def __init__(self, db: Path | str, playbooks: Path) -> None:
        self.clock = Clock()
        self.storage = open_storage(str(db), clock=self.clock)
        self.runner = PlaybookRunner(self.storage, PlaybookSource(playbooks))
        self.pipeline = IngestPipeline(self.storage, hooks=[self.runner])
        self.db = db

    def body(self, *events: dict[str, Any]) -> tuple[bytes, int]:
        now = format_timestamp(self.clock())
        return json.dumps(envelope([{**e, "timestamp": now} for e in events])).encode(), 0

    def send(self, *bodies: tuple[bytes, int]) -> list[Any]:
        """Post ``bodies`` in one turn (their events stored in one transaction)."""
        return self.pipeline.ingest_many(list(bodies))

    def alerts(self) -> list[tuple[str, str, int]]:
        return sorted((a.playbook, a.group_key, a.total) for a in self.storage.list_alerts())

    def hits(self) -> int:
        with sqlite3.connect(self.db) as conn:
            return int(conn.execute("SELECT count(*) FROM window_log").fetchone()[0])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    book = tmp_path / "playbooks.toml"
    book.write_text(BRUTE)
    made = Node(tmp_path / "t.db", book)
    yield made
    made.storage.close()


def _count_transactions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The weight of every write transaction begun from now on."""
    begun: list[int] = []
    real = SQLiteStorage._transaction

    def counted(self: SQLiteStorage, weight: int) -> Any:
        begun.append(weight)
        return real(self, weight)

    monkeypatch.setattr(SQLiteStorage, "_transaction", counted)
    return begun


def test_a_turn_with_playbooks_takes_the_write_lock_once(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two bodies of failures in one turn: their events and the windows in one transaction
    (there were two: the events', then the windows'), and the block made by then."""
    begun = _count_transactions(monkeypatch)
    node.send(node.body(*(fail(X) for _ in range(3))), node.body(*(fail(X) for _ in range(2))))
    assert begun == [1]
    assert node.alerts() == [("brute-force-ip", X, 5)]
    assert [(b.ip, b.created_by) for b in node.storage.list_blocks()] == [
        (f"{X}/32", "playbook:brute-force-ip")
    ]
    assert node.hits() == 5


def test_a_step_that_fails_rolls_back_its_own_writes_and_runs_after_the_commit(
    node: Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The playbooks' step raises in the events' transaction, after writing its hits: the
    events are stored, the step's hits rolled back, and the runner told again after the
    commit, in a transaction of its own: each hit once, the alert made."""
    real = TiedHooks.run
    failed: list[bool] = []

    def run_then_fail(self: TiedHooks, results: Any) -> None:
        real(self, results)
        if not failed:
            failed.append(True)
            raise RuntimeError("the step broke after its writes")

    monkeypatch.setattr(TiedHooks, "run", run_then_fail)
    begun = _count_transactions(monkeypatch)
    replies = node.send(node.body(*(fail(X) for _ in range(5))))
    assert replies[0][0]["accepted"] == 5
    assert "the step broke" in caplog.text
    assert begun == [1, 0]  # the events' (the step's rolled back), then the windows'
    assert node.storage.count_events() == 5
    assert node.hits() == 5
    assert node.alerts() == [("brute-force-ip", X, 5)]


def _fail_after_the_step(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The next transaction the playbooks' step wrote in fails at its end, as its COMMIT
    would with the disk full (rolled back, the error raised)."""
    real = SQLiteStorage._transaction
    failed: list[bool] = []

    @contextmanager
    def failing_commit(self: SQLiteStorage, weight: int) -> Iterator[Any]:
        with real(self, weight) as cur:
            yield cur
            if self._tied_wrote and not failed:
                failed.append(True)
                raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SQLiteStorage, "_transaction", failing_commit)
    return failed


def test_a_turn_that_fails_after_the_step_forgets_what_it_counted(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction of two bodies fails after the playbooks' step counted their 4
    failures (in the runner's memory, and the hits' in the storage's): the bodies are then
    stored one by one, the runner told after. Had the memory kept the 4 rolled back, X
    would count 8 and be blocked at 4 failures."""
    failed = _fail_after_the_step(monkeypatch)
    two_bodies_failed_once_count_four_hits(node, failed)
    assert node.hits() == 5


def two_bodies_failed_once_count_four_hits(node: Node, failed: list[bool]) -> None:
    """Two bodies of two failures of X in one turn, whose transaction fails once after
    the playbooks' step: stored, counted once (4), and X blocked at its fifth failure."""
    replies = node.send(node.body(fail(X), fail(X)), node.body(fail(X), fail(X)))
    assert failed == [True]
    assert [reply[0]["accepted"] for reply in replies] == [2, 2]
    assert node.storage.count_events() == 4
    assert node.hits() == 4
    assert node.alerts() == []
    node.send(node.body(fail(X)))
    assert node.alerts() == [("brute-force-ip", X, 5)]


def test_a_body_that_fails_after_the_step_is_stored_once_when_sent_again(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One body: its transaction fails after the step, so the body fails (the SDK sends it
    again); sent again it is stored and counted once."""
    _fail_after_the_step(monkeypatch)
    body = node.body(*(fail(X) for _ in range(4)))
    (outcome,) = node.send(body)
    assert isinstance(outcome, sqlite3.OperationalError)
    assert node.storage.count_events() == 0
    assert node.hits() == 0
    node.send(body)
    assert node.storage.count_events() == 4
    assert node.alerts() == []
    node.send(node.body(fail(X)))
    assert node.alerts() == [("brute-force-ip", X, 5)]
    assert node.hits() == 5


def test_a_storage_that_does_not_tie(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dialect that does not tie (``_TIES`` false; PostgreSQL ties the hits alone:
    test_count_after_commit.py): the windows in a transaction of their own after the
    events'."""
    monkeypatch.setattr(SQLiteStorage, "_TIES", False)
    begun = _count_transactions(monkeypatch)
    node.send(node.body(*(fail(X) for _ in range(5))))
    assert begun == [1, 0]
    assert node.alerts() == [("brute-force-ip", X, 5)]


def test_the_alert_is_said_after_the_commit(
    node: Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What the runner says of an alert (its log line, the blocks' news) comes once the
    alert is committed: a reader sees the alert when it is said."""
    seen: list[list[tuple[str, str, int]]] = []
    node.runner.on_block = lambda: seen.append(node.alerts())
    node.send(node.body(*(fail(X) for _ in range(5))))
    assert seen == [[("brute-force-ip", X, 5)]]
    assert "playbook alert #1" in caplog.text


def _announced(node: Node) -> list[int]:
    """Counts the runner's news of blocks made (called once committed)."""
    told: list[int] = []
    node.runner.on_block = lambda: told.append(len(node.alerts()))
    return told


def test_an_alert_rolled_back_is_not_announced_and_its_retry_is_once(
    node: Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The turn whose step made the alert fails at its commit: nothing of the alert is said
    (it is not stored); the bodies stored one by one then make it, said once."""
    told = _announced(node)
    node.send(node.body(fail(X), fail(X)))
    failed = _fail_after_the_step(monkeypatch)
    caplog.clear()
    node.send(node.body(fail(X), fail(X)), node.body(fail(X)))
    assert failed == [True]
    assert node.alerts() == [("brute-force-ip", X, 5)]
    assert told == [1]
    assert caplog.text.count("playbook alert #") == 1
    assert node.hits() == 5


def test_the_step_counts_after_the_bodies_with_nothing_to_store(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One body of the turn has rows, the others none (every event refused, or duplicates
    of events stored): the step runs in that body's transaction, told every body's result."""
    stored = node.body(fail(X))
    node.send(stored)
    begun = _count_transactions(monkeypatch)
    refused = node.body({"name": "auth.login.failure", "timestamp": "not a time"})
    replies = node.send(refused, node.body(*(fail(X) for _ in range(4))), stored)
    assert begun == [1]
    assert [reply[0]["accepted"] for reply in replies] == [0, 4, 0]
    assert replies[2][0]["duplicates"] == 1
    assert node.alerts() == [("brute-force-ip", X, 5)]


def test_a_cache_that_fails_after_the_commit_leaves_the_outcome_alone(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the storage learns after the commit (impossible travel's newest places) fails:
    the bodies are stored and counted once, and the alert said once, not stored again one
    by one as if the transaction had failed."""
    told = _announced(node)
    latest = node.storage._latest_places
    assert latest is not None

    def broken(rows: Any) -> None:
        raise RuntimeError("a cache broke")

    monkeypatch.setattr(latest, "wrote", broken)
    replies = node.send(node.body(*(fail(X) for _ in range(3))), node.body(fail(X), fail(X)))
    assert [(r[0]["accepted"], r[0]["duplicates"]) for r in replies] == [(3, 0), (2, 0)]
    assert node.alerts() == [("brute-force-ip", X, 5)]
    assert told == [1]


def test_another_process_given_the_id_of_a_rolled_back_row_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A's turn fails at its commit after its step wrote the windows (its row of
    ``window_writes``, id L, rolled back). B then writes 4 failures of X, in a row given
    the id L again. A must count them: had A kept L as the last row it wrote, it would read
    the rows after L only, and never see B's."""
    book = tmp_path / "playbooks.toml"
    book.write_text(BRUTE)
    a, b = Node(tmp_path / "w.db", book), Node(tmp_path / "w.db", book)
    b.clock = a.clock
    b.storage._clock = a.clock  # type: ignore[attr-defined]
    try:
        for i, node in enumerate((a, b, a, b)):  # each sees the other commit: rows by key
            node.send(node.body(fail(f"192.0.2.{i + 1}")))
        failed = _fail_after_the_step(monkeypatch)
        (outcome,) = a.send(a.body(fail("192.0.2.50")))
        assert failed == [True] and isinstance(outcome, sqlite3.OperationalError)
        monkeypatch.undo()
        b.send(b.body(*(fail(X) for _ in range(4))))
        a.send(a.body(fail(X)))
        assert ("brute-force-ip", X, 5) in a.alerts()
    finally:
        a.storage.close()
        b.storage.close()


@pytest.mark.parametrize("failure", ["the step", "its transaction"])
def test_late_events_are_counted_once_when_the_step_runs_again(
    node: Node, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """Two bodies, one with an event older than the window (delivered late), and five
    failures: the step fails, or the transaction after it (the bodies then stored one by
    one), and the runner is told again after the commit. The late event is counted once (it
    was counted by each run before)."""
    counted: list[tuple[str, int]] = []
    node.runner.late = LateEvents(lambda playbook, n: counted.append((playbook, n)))
    if failure == "the step":
        real = TiedHooks.run

        def run_then_fail(self: TiedHooks, results: Any) -> None:
            real(self, results)
            raise RuntimeError("the step broke after its writes")

        monkeypatch.setattr(TiedHooks, "run", run_then_fail)
    else:
        _fail_after_the_step(monkeypatch)
    old = format_timestamp(node.clock() - timedelta(minutes=10))
    now = format_timestamp(node.clock())
    late = [{**fail(X), "timestamp": old}, *({**fail(X), "timestamp": now} for _ in range(2))]
    three = node.body(*(fail(X) for _ in range(3)))
    replies = node.send((json.dumps(envelope(late)).encode(), 0), three)
    assert [reply[0]["accepted"] for reply in replies] == [3, 3]
    assert counted == [("brute-force-ip", 1)]
    assert node.alerts() == [("brute-force-ip", X, 5)]
