"""The windows' log (``window_writes``): a process that finds another one wrote since its
previous batch adds what the log says to what it remembers, instead of counting again; and
what it decides is the same as one process deciding alone."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sqreen.server.pipeline import IngestPipeline
from sqreen.server.playbooks import TEMPLATES, PlaybookRunner, PlaybookSource
from sqreen.server.storage import _window_reads, open_storage
from sqreen.server.storage._hit_log import LOG_INDEXES
from sqreen.server.storage.model import WindowWrite

from .conftest import Clock, envelope
from .test_playbooks import failure, playbook_file

HIT = ("s1", "k1", 1_000, 1, None)


def _update(
    storage: Any,
    owner: object,
    added: dict[tuple[str, str], int],
    told: list[dict[tuple[str, str], int]],
    fresh: list[bool],
    fail: bool = False,
) -> None:
    """One windows' transaction of ``owner`` adding ``added`` (one hit a key), recording what
    it was told of the others and whether its windows were fresh."""

    def probes(is_fresh: bool) -> list[Any]:
        fresh.append(is_fresh)
        return []

    def decide(found: Any, quiet: Any) -> WindowWrite:
        if fail:
            raise RuntimeError("decide failed")
        return WindowWrite({}, [])

    hits = [(s, k, 1_000, i, None) for i, (s, k) in enumerate(added, 1)]
    storage.update_windows(
        list(added), hits, probes, decide, owner=owner, added=added, others=told.append
    )


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """Two storages on one SQLite file: two collector processes, in effect."""
    a, b = open_storage(str(tmp_path / "w.db")), open_storage(str(tmp_path / "w.db"))
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_the_other_process_rows_are_told_and_the_windows_stay_fresh(pair: tuple[Any, Any]) -> None:
    """Each process logs its counts by key once it has seen the other commit; from then on
    each reads the other's rows instead of counting again."""
    a, b = pair
    owner_a, owner_b = object(), object()
    told_a: list[dict[tuple[str, str], int]] = []
    told_b: list[dict[tuple[str, str], int]] = []
    fresh_a: list[bool] = []
    fresh_b: list[bool] = []
    _update(a, owner_a, {("s", "x"): 1}, told_a, fresh_a)  # nothing known yet
    _update(b, owner_b, {("s", "x"): 1}, told_b, fresh_b)
    _update(a, owner_a, {("s", "x"): 2}, told_a, fresh_a)  # b's row has no counts
    _update(b, owner_b, {("s", "x"): 1, ("s", "y"): 1}, told_b, fresh_b)  # a's has
    _update(b, owner_b, {("s", "y"): 1}, told_b, fresh_b)  # nobody else wrote
    _update(a, owner_a, {("s", "z"): 1}, told_a, fresh_a)  # b wrote twice: told
    assert fresh_a == [False, False, True] and fresh_b == [False, True, True]
    assert told_b == [{("s", "x"): 2}]
    assert told_a == [{("s", "x"): 1, ("s", "y"): 2}]


def test_a_gap_in_the_rows_forgets(pair: tuple[Any, Any], tmp_path: Path) -> None:
    """A row purged before this process read it: not everything is known, count again."""
    a, b = pair
    told: list[dict[tuple[str, str], int]] = []
    fresh: list[bool] = []
    owner_a, owner_b = object(), object()
    db = sqlite3.connect(str(tmp_path / "w.db"), isolation_level=None)
    try:
        _update(a, owner_a, {("s", "x"): 1}, told, fresh)
        _update(b, owner_b, {("s", "x"): 1}, [], [])
        _update(a, owner_a, {("s", "x"): 1}, told, fresh)
        _update(b, owner_b, {("s", "x"): 1}, [], [])  # both rows of b's with their counts
        _update(b, owner_b, {("s", "y"): 1}, [], [])
        (last,) = db.execute("SELECT max(id) FROM window_writes").fetchone()
        assert all(
            t for (t,) in db.execute("SELECT counts FROM window_writes WHERE id >= ?", (last - 1,))
        )
        db.execute("DELETE FROM window_writes WHERE id = ?", (last - 1,))  # the first of them
        _update(a, owner_a, {("s", "z"): 1}, told, fresh)
        assert fresh == [False, False, False] and told == []
        # Every row gone: the table's newest id is no longer the last one read.
        _update(b, owner_b, {("s", "y"): 1}, [], [])
        db.execute("DELETE FROM window_writes")
        _update(a, owner_a, {("s", "z"): 1}, told, fresh)
        assert fresh == [False, False, False, False] and told == []
    finally:
        db.close()


def test_alone_a_process_logs_no_counts_and_a_newcomer_counts_again(tmp_path: Path) -> None:
    """A process that has seen no other connection commit for a minute writes rows without
    their counts (its hits are not told by key): a process reading one counts again; and
    as soon as it sees another writer, it writes its counts again."""
    clock = Clock()
    a = open_storage(str(tmp_path / "w.db"), clock=clock)
    b = open_storage(str(tmp_path / "w.db"), clock=clock)
    owner_a, owner_b = object(), object()
    told_a: list[dict[tuple[str, str], int]] = []
    told_b: list[dict[tuple[str, str], int]] = []
    fresh_a: list[bool] = []
    fresh_b: list[bool] = []
    try:
        _update(a, owner_a, {("s", "x"): 1}, told_a, fresh_a)
        _update(b, owner_b, {("s", "w"): 1}, told_b, fresh_b)
        _update(a, owner_a, {("s", "x"): 1}, told_a, fresh_a)  # saw b: counts for a minute
        clock.advance(minutes=2)
        _update(a, owner_a, {("s", "x"): 1}, told_a, fresh_a)  # alone since: no counts
        with sqlite3.connect(str(tmp_path / "w.db")) as db:
            texts = [t for (t,) in db.execute("SELECT counts FROM window_writes ORDER BY id")]
        assert [bool(t) for t in texts] == [False, False, True, False]
        _update(b, owner_b, {("s", "y"): 1}, told_b, fresh_b)  # a's last row tells no counts
        assert fresh_b == [False, False] and told_b == []
        _update(a, owner_a, {("s", "z"): 1}, told_a, fresh_a)  # b wrote: a reads it, counts
        assert fresh_a == [False, False, True, True] and told_a == [{("s", "y"): 1}]
        _update(b, owner_b, {("s", "y"): 1}, told_b, fresh_b)
        assert fresh_b[-1] is True and told_b == [{("s", "z"): 1}]
    finally:
        a.close()
        b.close()


def test_a_transaction_rolled_back_does_not_hide_the_next_writer(pair: tuple[Any, Any]) -> None:
    """A's row rolled back gives its id back: b's row takes it, and a still reads it."""
    a, b = pair
    told: list[dict[tuple[str, str], int]] = []
    fresh: list[bool] = []
    owner_a, owner_b = object(), object()
    _update(a, owner_a, {("s", "x"): 1}, told, fresh)
    _update(b, owner_b, {("s", "x"): 1}, [], [])
    _update(a, owner_a, {("s", "x"): 1}, told, fresh)  # saw b: logs its counts
    with pytest.raises(RuntimeError, match="decide failed"):
        _update(a, owner_a, {("s", "x"): 1}, told, fresh, fail=True)
    _update(b, owner_b, {("s", "w"): 1}, [], [])  # saw a: counts, in the id given back
    _update(a, owner_a, {("s", "z"): 1}, told, fresh)
    assert told == [{("s", "w"): 1}]
    assert fresh[-1] is True


def test_the_purge_keeps_the_newest_row(tmp_path: Path) -> None:
    """Rows older than every window go, but never the newest: an id is never given twice."""
    clock = Clock()
    a = open_storage(str(tmp_path / "w.db"), clock=clock)
    db = sqlite3.connect(str(tmp_path / "w.db"), isolation_level=None)
    try:
        for _ in range(3):
            _update(a, object(), {("s", "x"): 1}, [], [])
        clock.advance(hours=3)
        a.purge_windows(clock() - timedelta(hours=2))
        assert db.execute("SELECT id FROM window_writes").fetchall() == [(3,)]
        _update(a, object(), {("s", "x"): 1}, [], [])
        assert db.execute("SELECT id FROM window_writes").fetchall() == [(3,), (4,)]
        a.purge_windows(clock() - timedelta(hours=2))  # no longer the newest: it goes
        assert db.execute("SELECT id FROM window_writes").fetchall() == [(4,)]
    finally:
        db.close()
        a.close()


def test_an_older_collector_cannot_write_hits_unlogged(tmp_path: Path) -> None:
    """The hits' table was renamed with the log's migration: a collector of an older version
    still running on the file fails to write its hits, loudly, rather than being
    miscounted by the others."""
    open_storage(str(tmp_path / "w.db")).close()
    with sqlite3.connect(str(tmp_path / "w.db")) as db:
        with pytest.raises(sqlite3.OperationalError, match="no such table: playbook_hits"):
            db.execute(
                "INSERT INTO playbook_hits (stream, key, ts, seq, value) VALUES (?,?,?,?,?)", HIT
            )


def _alerts(storage: Any) -> list[tuple[str, str, int, int, int]]:
    return sorted(
        (a.playbook, a.group_key, a.total, a.first_seq, a.last_seq) for a in storage.list_alerts()
    )


def random_batch(rng: random.Random, batch: int) -> bytes:
    """A body of 1 to 12 events of 6 addresses and 31 users: mostly failures, some
    successes and sign-ups (ids unique by ``batch``)."""
    events = []
    for i in range(rng.randint(1, 12)):
        n = batch * 12 + i
        ip = f"198.51.100.{rng.randint(0, 5)}"
        uid = f"u{rng.randint(0, 30)}"
        kind = rng.random()
        if kind < 0.8:
            events.append(failure(ip, uid, id=f"e{n}"))
        elif kind < 0.9:
            events.append(failure(ip, uid, id=f"e{n}", name="auth.login.success"))
        else:
            events.append(failure(ip, uid, id=f"e{n}", name="auth.signup"))
    return json.dumps(envelope(events)).encode()


def replay(
    rng: random.Random, batches: int, playbooks: Path, shared: list[Any], alone: Any
) -> None:
    """:func:`random_batch` bodies through a runner on each of ``shared`` (one drawn at
    random a body, as workers take turns) and the same through one on ``alone``."""
    pipelines = [
        IngestPipeline(s, hooks=[PlaybookRunner(s, PlaybookSource(playbooks))]) for s in shared
    ]
    reference = IngestPipeline(alone, hooks=[PlaybookRunner(alone, PlaybookSource(playbooks))])
    for batch in range(batches):
        body = random_batch(rng, batch)
        rng.choice(pipelines)(body)
        reference(body)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_writers_decide_as_one(tmp_path: Path, seed: int) -> None:
    """The same batches, in the same order, through two runners on one file (taking turns at
    random, as two workers do) and through one runner alone on another: the same alerts,
    with the same counts and events behind them."""
    rng = random.Random(seed)
    path = playbook_file(tmp_path, TEMPLATES)
    shared = [open_storage(str(tmp_path / "two.db")) for _ in range(2)]
    alone = open_storage(str(tmp_path / "one.db"))
    try:
        replay(rng, 60, path, shared, alone)
        got, want = _alerts(shared[0]), _alerts(alone)
        assert want, "the traffic fires some playbooks"
        assert got == want
        with sqlite3.connect(str(tmp_path / "two.db")) as db:
            (rows,) = db.execute("SELECT count(*) FROM window_writes").fetchone()
        assert rows > 0
    finally:
        for s in [*shared, alone]:
            s.close()


def test_the_windows_transaction_does_not_bring_a_checkpoint_closer(tmp_path: Path) -> None:
    """SQLite checkpoints every CHECKPOINT_EVERY commits of events: the playbooks' own
    transaction (a few pages) does not count as one."""
    storage = open_storage(str(tmp_path / "w.db"))
    try:
        commits = storage._commits
        _update(storage, object(), {("s", "x"): 1}, [], [])
        assert storage._commits == commits
    finally:
        storage.close()


def _failures(ip: str, users: range, first: int) -> bytes:
    events = [failure(ip, f"u{n}", id=f"e{first + i}") for i, n in enumerate(users)]
    return json.dumps(envelope(events)).encode()


@pytest.mark.parametrize("present_max", [_window_reads.PRESENT_MAX, 2])
def test_a_newcomer_counts_the_hits_stored_before_its_first_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, present_max: int
) -> None:
    """A process's first batch finds hits another one stored (few: read by key; more than
    PRESENT_MAX: counted in SQL): a threshold they and its own hit cross fires; keys with
    no hit before its batch do not."""
    monkeypatch.setattr(_window_reads, "PRESENT_MAX", present_max)
    path = playbook_file(tmp_path, TEMPLATES)
    a, b = (open_storage(str(tmp_path / "w.db")) for _ in range(2))
    try:
        first = IngestPipeline(a, hooks=[PlaybookRunner(a, PlaybookSource(path))])
        first(_failures("198.51.100.7", range(4), 0))  # 4 of brute-force-ip's 5
        first(_failures("198.51.100.8", range(10, 14), 10))
        second = IngestPipeline(b, hooks=[PlaybookRunner(b, PlaybookSource(path))])
        second(_failures("198.51.100.7", range(4, 5), 20))  # the 5th
        second(_failures("198.51.100.9", range(20, 24), 30))  # 4 on a key of its own
        got = {(x.playbook, x.group_key, x.total) for x in a.list_alerts()}
        assert got == {("brute-force-ip", "198.51.100.7", 5)}
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("indexed", [False, True])
def test_a_newcomer_told_the_few_hits_stored_counts_no_new_key_in_sql(
    tmp_path: Path, indexed: bool
) -> None:
    """Told every hit in the windows by key at its first batch (the table holds few), a
    process counts in SQL neither the keys of that batch nor of the next that had none.
    While the hits are counted from memory (SQLite's log unindexed), nothing is counted in
    SQL at all."""
    path = playbook_file(tmp_path, TEMPLATES)
    a, b = (open_storage(str(tmp_path / "w.db")) for _ in range(2))
    if indexed:  # as past LOG_MEMORY_MAX rows
        for statement in LOG_INDEXES:
            a._writer.execute(statement)
    seen: list[str] = []
    try:
        IngestPipeline(a, hooks=[PlaybookRunner(a, PlaybookSource(path))])(
            _failures("198.51.100.7", range(3), 0)
        )
        second = IngestPipeline(b, hooks=[PlaybookRunner(b, PlaybookSource(path))])
        b._writer.set_trace_callback(seen.append)
        second(_failures("198.51.100.8", range(10, 13), 10))
        second(_failures("198.51.100.9", range(20, 23), 20))
        assert any("GROUP BY stream, key" in sql for sql in seen) == indexed  # told, once
        assert not [sql for sql in seen if "GROUP BY key" in sql]
        assert any("count(" in sql and "window_log" in sql for sql in seen) == indexed
    finally:
        b._writer.set_trace_callback(None)
        a.close()
        b.close()
