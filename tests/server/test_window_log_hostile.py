"""Hostile tests of the windows' log (``window_writes``): interleavings of several
processes on one SQLite file that must decide exactly as one process alone.

Each test that fails names the bug it shows; those that pass are regression tests."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sqreen._wire_time import format_timestamp
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.playbooks import TEMPLATES, PlaybookRunner, PlaybookSource, _bounds
from sqreen.server.storage import open_storage
from sqreen.server.storage.backup import backup_sqlite, restore_sqlite
from sqreen.server.storage.model import WindowWrite
from sqreen.server.storage.sqlite import SQLiteStorage

from .conftest import Clock, envelope
from .test_playbooks import failure

#: One playbook: 5 failures from one IP in 5 minutes block it.
BRUTE = """\
[[playbook]]
id = "brute-force-ip"
events = ["auth.login.failure"]
group_by = "ip"
threshold = 5
window = "5m"
action = "block_ip"
duration = "1h"
"""
X = "198.51.100.66"  # the attacker


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "playbooks.toml"
    path.write_text(text)
    return path


class Node:
    """A collector process: its own storage (connection) on the file, a pipeline, a runner."""

    def __init__(self, db: Path, playbooks: Path, clock: Clock) -> None:
        self.storage = open_storage(str(db), clock=clock)
        self.runner = PlaybookRunner(self.storage, PlaybookSource(playbooks))
        self.pipeline = IngestPipeline(self.storage, hooks=[self.runner])
        self.clock = clock

    def send(self, *events: dict[str, Any]) -> None:
        now = format_timestamp(self.clock())
        self.pipeline(json.dumps(envelope([{**e, "timestamp": now} for e in events])).encode())

    def alerts(self) -> list[tuple[str, str, int]]:
        return sorted((a.playbook, a.group_key, a.total) for a in self.storage.list_alerts())


_ids = iter(range(1, 10**9))


def fail(ip: str, uid: str = "u1") -> dict[str, Any]:
    return failure(ip, uid, id=f"h{next(_ids)}")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(text: str = BRUTE, db: str = "w.db", clock: Clock | None = None) -> Node:
        node = Node(tmp_path / db, _file(tmp_path, text), clock or Clock())
        made.append(node)
        return node

    yield make
    for node in made:
        node.storage.close()


def _warm(a: Node, b: Node) -> None:
    """Both nodes write, twice each, so that each has seen the other commit: from then on
    their rows carry counts by key, and each reads the other's rows (fresh)."""
    for i, node in enumerate((a, b, a, b)):
        node.send(fail(f"192.0.2.{i + 1}"))


# --- Bug 1: a forget right after the log was read loses the other's newer hits ----------


def test_clock_back_after_reading_the_log_misses_the_other_process_hits(
    nodes: Callable[..., Node],
) -> None:
    """B stores 4 failures of X; the clock steps back; A's next batch reads B's row (fresh,
    told) and then forgets (clock went back) with ``_others`` at A's own latest time, older
    than B's hits. Five minutes on, X's fifth failure at A is not even probed: never blocked.
    Before the log, that batch was not fresh and read ``horizon`` (max(ts): B's hits)."""
    clock = Clock()
    a, b = nodes(clock=clock), nodes(clock=clock)
    _warm(a, b)
    clock.advance(seconds=30)  # within LOG_COUNTS_FOR: B's row has its counts
    b.send(*(fail(X) for _ in range(4)))  # at T+30 s
    clock.advance(seconds=-60)  # NTP steps the clock back
    a.send(fail("192.0.2.50"))  # at T-30 s: reads B's row (fresh), then forgets
    clock.advance(seconds=345)  # T+315 s: the window [T+15 s, T+315 s] holds B's 4
    a.send(fail(X))
    assert ("brute-force-ip", X, 5) in a.alerts()


def test_clock_back_a_batch_after_reading_the_log_misses_the_other_process_hits(
    nodes: Callable[..., Node],
) -> None:
    """The same, with the forget one batch later: A reads B's row (hits newer than A's own
    time, the clock having stepped back in between) without forgetting, then the clock
    steps back again and A's next batch (fresh: nobody wrote) forgets with ``_others`` at
    A's latest batch time, older than B's hits. So reading ``horizon`` in the batch that
    reads the log is not enough: Bounds must keep the newest time of the hits it was told."""
    clock = Clock()
    a, b = nodes(clock=clock), nodes(clock=clock)
    _warm(a, b)
    clock.advance(seconds=30)
    b.send(*(fail(X) for _ in range(4)))  # at T+30 s
    clock.advance(seconds=-20)
    a.send(fail("192.0.2.50"))  # at T+10 s: reads B's row (fresh), no forget (T+10 > T)
    clock.advance(seconds=-5)
    a.send(fail("192.0.2.51"))  # at T+5 s: fresh, forgets (the clock went back)
    clock.advance(seconds=315)  # T+320 s: the window [T+20 s, T+320 s] holds B's 4
    a.send(fail(X))
    assert ("brute-force-ip", X, 5) in a.alerts()


class _LateStore:
    """A runner's view of its storage whose ``now()`` is read, and then (as when the
    process waits for the write lock) another process's whole batch goes first."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.before_lock: Callable[[], None] | None = None

    def now(self) -> Any:
        t = self._storage.now()
        if self.before_lock is not None:
            run, self.before_lock = self.before_lock, None
            run()
        return t

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def test_forget_for_too_many_keys_after_reading_the_log_misses_the_other_process_hits(
    nodes: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No clock going back: A takes its batch's time, waits for the write lock while B
    stores 4 failures of X (10 s later), then reads B's row and forgets (too many keys:
    ``_added`` now holds every process's keys, so it reaches MAX_KEYS sooner) with
    ``_others`` = A's batch time, older than B's hits. Just over 5 minutes later X's fifth
    failure is not probed at A, though 5 are in its window.

    The race is the windows' own transaction's: PostgreSQL's, or SQLite's after the events'
    transaction of several bodies failed (their step is then not tied to it). A step tied
    to the events' transaction reads its time under the write lock, where B cannot go
    between (B's send here would wait for A's lock for ever)."""
    monkeypatch.setattr(_bounds, "MAX_KEYS", 1)
    monkeypatch.setattr(SQLiteStorage, "_TIES", False)
    clock = Clock()
    a, b = nodes(clock=clock), nodes(clock=clock)
    _warm(a, b)
    late = _LateStore(a.storage)
    a.runner.store = late

    def b_goes_first() -> None:
        clock.advance(seconds=10)
        b.send(*(fail(X) for _ in range(4)))  # at T+10 s

    late.before_lock = b_goes_first
    a.send(fail("192.0.2.50"))  # now_us = T; its transaction after B's
    clock.advance(seconds=300 - 10 + 5)  # T+305 s: window [T+5 s, T+305 s] holds B's 4
    a.send(fail(X))
    assert ("brute-force-ip", X, 5) in a.alerts()


# --- Bug 2: a restore into the live file gives ids again --------------------------------


def test_restore_into_the_live_file_gives_an_id_again_and_hides_a_row(
    nodes: Callable[..., Node], tmp_path: Path
) -> None:
    """``sqreen restore --force`` into the database a collector has open (which the backup
    module says every connection sees whole): the log goes back to the backup's rows, so
    the next id given is one a process already wrote and remembers as its own last row.
    C's row N+1 (before the restore) and A's row N+1 (after it, with 3 failures of X) look
    the same to C: it reads nothing, stays fresh, and never learns A's 3 hits. X's 5th
    failure at C is not probed (C's bound for X: 2)."""
    clock = Clock()
    a, c = nodes(clock=clock), nodes(clock=clock)
    _warm(a, c)
    c.send(fail(X))  # C counts X: 1 (its bound)
    backup_sqlite(str(tmp_path / "w.db"), str(tmp_path / "backup.db"))
    c.send(fail("192.0.2.60"))  # C's row N+1, then the restore takes the log back to N
    restore_sqlite(str(tmp_path / "backup.db"), str(tmp_path / "w.db"), force=True)
    a.send(*(fail(X) for _ in range(3)))  # A's row: N+1 again
    c.send(fail(X))  # X: 1 + 3 + 1 = 5 in the window
    assert ("brute-force-ip", X, 5) in c.alerts()


# --- What held: several processes decide as one ----------------------------------------


class FrozenClock(Clock):
    """A clock that moves only when told (forward or back): the processes on the shared
    file and the one alone read exactly the same times."""

    def __init__(self) -> None:
        super().__init__()
        self.base = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.base + self.offset


def _same_alerts(shared: Node, alone: Node) -> None:
    """The alerts of the processes on one file are those of the process alone (some)."""

    def alerts(node: Node) -> list[tuple[str, str, int, int, int]]:
        return sorted(
            (a.playbook, a.group_key, a.total, a.first_seq, a.last_seq)
            for a in node.storage.list_alerts()
        )

    want = alerts(alone)
    assert want
    assert alerts(shared) == want


def _traffic(rng: random.Random, n: int, clock: Clock) -> list[dict[str, Any]]:
    """A mixed batch: failures (brute force, stuffing, spray), successes after failures
    (takeover), sign-ups, some of them stamped in the past (beyond windows too)."""
    events = []
    for _ in range(n):
        ip = f"198.51.100.{rng.randint(0, 4)}"
        uid = f"u{rng.randint(0, 25)}"
        kind = rng.random()
        name = (
            "auth.login.failure"
            if kind < 0.8
            else "auth.login.success"
            if kind < 0.9
            else "auth.signup"
        )
        age = rng.choice([0, 0, 0, 1, 30, 200, 700, 4000])  # seconds
        event = failure(ip, uid, id=f"r{next(_ids)}", name=name)
        event["timestamp"] = format_timestamp(clock() - timedelta(seconds=age))
        events.append(event)
    return events


@pytest.mark.parametrize("seed", range(6))
def test_three_processes_with_purges_idle_gaps_and_reloads_decide_as_one(
    tmp_path: Path, seed: int
) -> None:
    """Three nodes on one file (taking turns at random, the third starting late and then
    idle for long spells, purges by any of them, playbook reloads, the clock moving forward
    by seconds to minutes: markers, counts and gaps all happen) against one node alone:
    the same alerts, totals and events."""
    rng = random.Random(seed)
    clock = FrozenClock()
    path = _file(tmp_path, TEMPLATES)
    shared = [Node(tmp_path / "three.db", path, clock) for _ in range(2)]
    alone = Node(tmp_path / "one.db", path, clock)
    try:
        for step in range(150):
            if step == 50:
                shared.append(Node(tmp_path / "three.db", path, clock))  # starts late
            clock.advance(seconds=rng.choice([0, 0.5, 2, 10, 45, 70, 130]))
            late = step >= 50 and step % 40 < 30
            node = shared[rng.choice([0, 0, 1, 1, 2]) if late else rng.randint(0, 1)]
            r = rng.random()
            if r < 0.05:
                node.runner.purge()
                alone.runner.purge()
                continue
            if r < 0.08:
                node.runner.source.reload_requested = True  # a new engine: new Bounds
            body = json.dumps(envelope(_traffic(rng, rng.randint(1, 10), clock))).encode()
            node.pipeline(body)
            alone.pipeline(body)
        _same_alerts(shared[0], alone)
    finally:
        for n in [*shared, alone]:
            n.storage.close()


@pytest.mark.parametrize("seed", range(8))
def test_two_processes_with_the_clock_stepping_back_decide_as_one(
    tmp_path: Path, seed: int
) -> None:
    """The differential test again, with the clock stepping back now and then (NTP): the
    design forgets on a step back, and must still decide as one process alone."""
    rng = random.Random(1000 + seed)
    clock = FrozenClock()
    path = _file(tmp_path, TEMPLATES)
    shared = [Node(tmp_path / "two.db", path, clock) for _ in range(2)]
    alone = Node(tmp_path / "one.db", path, clock)
    try:
        for _ in range(150):
            clock.advance(seconds=rng.choice([0, 1, 5, 20, 40, 40, 90, -25, -50]))
            body = json.dumps(envelope(_traffic(rng, rng.randint(1, 10), clock))).encode()
            rng.choice(shared).pipeline(body)
            alone.pipeline(body)
        _same_alerts(shared[0], alone)
    finally:
        for n in [*shared, alone]:
            n.storage.close()


# --- Performance: catching up on the log under the write lock ---------------------------


@contextmanager
def one_key_log(
    tmp_path: Path,
) -> Iterator[tuple[sqlite3.Connection, list[dict[tuple[str, str], int]], Callable[[], None]]]:
    """A store's file, a raw connection to it (to append rows of the windows' log as another
    process would), what the writer is told of them, and :func:`one_key_writer`."""
    a = open_storage(str(tmp_path / "w.db"))
    db = sqlite3.connect(str(tmp_path / "w.db"), isolation_level=None)
    told: list[dict[tuple[str, str], int]] = []
    try:
        yield db, told, one_key_writer(a, told)
    finally:
        db.close()
        a.close()


def one_key_writer(storage: Any, told: list[dict[tuple[str, str], int]]) -> Callable[[], None]:
    """A process's windows' transaction adding one hit to one key, what it is told of the
    others' rows appended to ``told``."""
    owner = object()

    def update() -> None:
        storage.update_windows(
            [("s", "k")],
            [("s", "k", 1_000, 1, None)],
            lambda fresh: [],
            lambda found, quiet: WindowWrite({}, []),
            owner=owner,
            added={("s", "k"): 1},
            others=told.append,
        )

    return update


def test_catching_up_on_a_long_log_is_bounded(tmp_path: Path) -> None:
    """A worker idle for a while under an attack from many IPs (another worker writing ~30
    transactions a second of 500 keys each) catches up on up to 2 minutes of rows in one
    transaction, under the write lock every worker waits for: 3000 rows of 500 keys, 1.5
    million keys, parsed and summed (then added to Bounds, which forgets them all at once,
    past MAX_KEYS). Whatever cannot be kept should not be read: bounded, well under a
    second (measured: ~0.9 s for this alone; 4000 rows, 2.2 s with Bounds.others). Now such
    a backlog is not read at all (``LOG_CATCH_UP``): the windows are counted in SQL."""
    with one_key_log(tmp_path) as (db, told, update):
        update()
        rows = []
        k = 0
        for _ in range(3000):
            flat: list[Any] = []
            for _ in range(500):
                flat += [f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}", 1]
                k += 1
            rows.append((0, json.dumps({"s": flat}, separators=(",", ":"))))
        db.execute("BEGIN")
        db.executemany("INSERT INTO window_writes (at, counts) VALUES (?, ?)", rows)
        db.execute("COMMIT")
        update()
        # Not read: more rows than a catch-up reads, so the windows are counted again.
        assert told == []
        db.execute('INSERT INTO window_writes (at, counts) VALUES (0, \'{"s":["k",2]}\')')
        update()  # from the row it wrote then, the log is followed again
        assert told == [{("s", "k"): 2}]


# --- Hostile keys through the log -------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "a\x00b",
        '{"uid":"\u00e9"\\"}',
        "\U0001f600",
        "\ufffd",
        "\u2028\u2029",
        "x" * 20_000,
        "",
    ],
)
def test_hostile_keys_are_told_as_written(tmp_path: Path, key: str) -> None:
    """Keys as events can make them (the parser replaces lone surrogates; a str holding a
    surrogate pair as two code points cannot be stored at all): read back from the log
    under the same (stream, key)."""
    a, b = open_storage(str(tmp_path / "w.db")), open_storage(str(tmp_path / "w.db"))
    owner_a, owner_b = object(), object()
    told: list[dict[tuple[str, str], int]] = []

    def update(storage: Any, owner: object, keys: dict[tuple[str, str], int]) -> None:
        hits = [(s, k, 1_000, i, None) for i, (s, k) in enumerate(keys, 1)]
        storage.update_windows(
            list(keys), hits, lambda fresh: [], lambda f, q: WindowWrite({}, []),
            owner=owner, added=keys, others=told.append if owner is owner_a else None,
        )  # fmt: skip

    try:
        update(a, owner_a, {("s", "w"): 1})
        update(b, owner_b, {("s", "w"): 1})
        update(a, owner_a, {("s", "w"): 1})
        update(b, owner_b, {("s", key): 3, ("s2", key): 1})  # logged with counts
        update(a, owner_a, {("s", "w"): 1})
        assert told[-1] == {("s", key): 3, ("s2", key): 1}
    finally:
        a.close()
        b.close()


class _Failing:
    """A runner's view of its storage whose next windows' transaction fails right after
    its probes (Bounds already told and advanced), and rolls back."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.fail_next = False
        self.failed = 0

    def update_windows(self, keys: Any, hits: Any, probes: Any, *a: Any, **k: Any) -> Any:
        if self.fail_next:
            self.fail_next = False
            self.failed += 1
            real = probes

            def probes(fresh: bool) -> Any:
                real(fresh)
                raise RuntimeError("the windows' transaction failed")

        return self._storage.update_windows(keys, hits, probes, *a, **k)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


@pytest.mark.parametrize("seed", range(6))
def test_rollbacks_and_two_runners_in_one_process_decide_as_one(tmp_path: Path, seed: int) -> None:
    """Three storages on one file, the first with two runners (two owners on one
    connection: the other's writes do not change data_version), windows' transactions
    rolled back now and then (the same batch failing alone too): the same alerts."""
    rng = random.Random(2000 + seed)
    clock = FrozenClock()
    path = _file(tmp_path, TEMPLATES)
    shared = [Node(tmp_path / "three.db", path, clock) for _ in range(3)]
    twin = PlaybookRunner(shared[0].storage, PlaybookSource(path))
    pipelines = [
        *(n.pipeline for n in shared),
        IngestPipeline(shared[0].storage, hooks=[twin]),
    ]
    runners = [*(n.runner for n in shared), twin]
    failing = [_Failing(r.store) for r in runners]
    for r, f in zip(runners, failing, strict=True):
        r.store = f
    alone = Node(tmp_path / "one.db", path, clock)
    alone_failing = _Failing(alone.runner.store)
    alone.runner.store = alone_failing
    try:
        for _ in range(150):
            clock.advance(seconds=rng.choice([0, 1, 5, 20, 40, 70]))
            i = rng.randrange(4)
            if rng.random() < 0.1:
                failing[i].fail_next = alone_failing.fail_next = True
            body = json.dumps(envelope(_traffic(rng, rng.randint(1, 10), clock))).encode()
            pipelines[i](body)
            alone.pipeline(body)
            # Disarmed: a batch that needed no windows' transaction (keys known quiet) on
            # one side only must not make the next one fail there alone.
            failing[i].fail_next = alone_failing.fail_next = False
        assert sum(f.failed for f in failing) == alone_failing.failed
        _same_alerts(shared[0], alone)
    finally:
        for n in [*shared, alone]:
            n.storage.close()


# --- Ids: never given twice, gaps always seen ---------------------------------------------


def test_purge_with_times_out_of_order_deletes_a_prefix_and_vacuum_keeps_ids(
    tmp_path: Path,
) -> None:
    """Rows whose times went back (the clock stepped back between two writers) are purged
    as a prefix of ids (never the newest), a reader whose last row went finds the gap, and
    VACUUM gives no id again (INTEGER PRIMARY KEY: the rowid)."""
    clock = FrozenClock()
    a = open_storage(str(tmp_path / "w.db"), clock=clock)
    b = open_storage(str(tmp_path / "w.db"), clock=clock)
    db = sqlite3.connect(str(tmp_path / "w.db"), isolation_level=None)
    told: list[dict[tuple[str, str], int]] = []
    owner_a, owner_b = object(), object()

    def update(storage: Any, owner: object) -> None:
        storage.update_windows(
            [("s", "k")],
            [("s", "k", 1_000, next(_ids), None)],
            lambda fresh: [],
            lambda f, q: WindowWrite({}, []),
            owner=owner,
            added={("s", "k"): 1},
            others=told.append if owner is owner_a else None,
        )

    try:
        update(a, owner_a)  # 1
        update(b, owner_b)  # 2
        update(a, owner_a)  # 3: a's last
        clock.advance(minutes=10)
        update(b, owner_b)  # 4
        clock.advance(minutes=-20)  # back: 5 is older than 4
        update(b, owner_b)  # 5
        clock.advance(minutes=12.5)  # 4 is 2.5 minutes old, 5 is 12.5 minutes old
        b.purge_windows(clock())
        ids = [i for (i,) in db.execute("SELECT id FROM window_writes ORDER BY id")]
        assert ids == [4, 5]  # a prefix; 5 is kept though older, as is the newest
        told.clear()
        update(a, owner_a)  # rows 4, 5 after its 3: consecutive, told
        assert told == [{("s", "k"): 2}]
        b.purge_windows(clock())
        db.execute("VACUUM")
        update(b, owner_b)
        (high,) = db.execute("SELECT max(id) FROM window_writes").fetchone()
        assert high == 7
    finally:
        db.close()
        a.close()
        b.close()


@pytest.mark.parametrize(
    "row",
    ["not json", '{"s": ["k"]}', '{"s": ["k", "two"]}', '["s", "k", 1]', '{"s": 7}'],
)
def test_a_log_row_that_cannot_be_read_makes_the_windows_counted_again(
    tmp_path: Path, row: str
) -> None:
    """A row of another version's format, or damaged: what the others added is not known,
    so the windows are counted in SQL (None), the batch goes on, and the next row is read."""
    with one_key_log(tmp_path) as (db, told, update):
        update()
        db.execute("INSERT INTO window_writes (at, counts) VALUES (0, ?)", (row,))
        update()  # did not raise
        assert told == []
        db.execute('INSERT INTO window_writes (at, counts) VALUES (0, \'{"s":["k",2]}\')')
        update()
        assert told == [{("s", "k"): 2}]
