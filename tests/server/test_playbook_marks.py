"""Alert playbooks count each event once: an alert's events count for nothing again for
its key, and the next alert needs new events, however soon. A forged burst (a leaked ingest
key) can no longer keep a real attack's alerts quiet, and one burst still alerts once."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from sqreen._wire_time import format_timestamp
from sqreen.server import _cli_playbooks
from sqreen.server.auth import hash_token, new_token
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.playbooks import (
    TEMPLATES,
    Engine,
    EventView,
    PlaybookRunner,
    PlaybookSource,
    is_exempt,
    parse_playbooks,
)
from sqreen.server.playbooks._engine import MAX_AFTER_FIRINGS
from sqreen.server.playbooks._memory import MemoryWindows
from sqreen.server.storage import Alert, EventFilter, Storage, open_storage
from sqreen.server.storage._hit_index import HitIndex
from sqreen.server.storage._hit_log import LOG_INDEXES
from sqreen.server.storage._window_reads import COLUMNS_MAX, count_probes

from .conftest import Clock, ServeProcess, envelope, wire_event

S = 1_000_000  # a second in µs
#: The playbooks that only alert, per account.
PER_USER = ("brute-force-account", "account-takeover")


class Site:
    """Events of user dave through ingest pipelines (each with its runner, as a collector
    process has), dated on the storage's clock."""

    def __init__(self, storages: list[Storage], clock: Clock, playbooks: Path) -> None:
        self.pipelines = [
            IngestPipeline(s, hooks=[PlaybookRunner(s, PlaybookSource(playbooks))])
            for s in storages
        ]
        self.clock = clock
        self.turn = 0

    def event(self, name: str, ip: str, seconds_ago: float = 0) -> dict[str, Any]:
        event = wire_event(name=name, user={"username": "dave"})
        event["timestamp"] = format_timestamp(self.clock() - timedelta(seconds=seconds_ago))
        event["request"] = {**event["request"], "ip": ip, "params": {"username": "dave"}}
        return event

    def send(self, *events: dict[str, Any]) -> None:
        """One body, to the next pipeline in turn (two: two processes taking turns)."""
        pipeline = self.pipelines[self.turn % len(self.pipelines)]
        self.turn += 1
        pipeline(json.dumps(envelope(list(events))).encode())

    def forged_burst(self) -> None:
        """What a holder of a leaked ingest key sends: 10 failures and a success, at once."""
        failures = [self.event("auth.login.failure", "11.9.9.9", 30) for _ in range(10)]
        self.send(*failures, self.event("auth.login.success", "11.9.9.9", 20))

    def real_attack(self) -> None:
        """12 failures from 4 addresses (3 each: no address blocked), then the success,
        each sent as the app's SDK sends them."""
        for i in range(12):
            self.send(self.event("auth.login.failure", f"198.51.100.{10 + i // 3}"))
        self.send(self.event("auth.login.success", "198.51.100.50"))


def playbook_file(tmp_path: Path) -> Path:
    path = tmp_path / "playbooks.toml"
    path.write_text(TEMPLATES)
    return path


def per_user(storage: Storage) -> list[Alert]:
    return sorted(
        (a for a in storage.list_alerts(limit=1000) if a.playbook in PER_USER), key=lambda a: a.id
    )


def counted(storage: Storage) -> Counter[str]:
    return Counter(a.playbook for a in per_user(storage))


def test_a_forged_burst_does_not_silence_a_real_attack(
    storage: Storage, clock: Clock, tmp_path: Path
) -> None:
    """A leaked ingest key's forged events alert on dave; two minutes later (within both
    playbooks' quiet times before: 1 h and 10 min) the real attack alerts again, on its own
    events."""
    site = Site([storage], clock, playbook_file(tmp_path))
    site.forged_burst()
    assert counted(storage) == {"brute-force-account": 1, "account-takeover": 1}
    forged = {e.seq for e in storage.scan_events()}
    clock.advance(minutes=2)
    site.real_attack()
    assert counted(storage) == {"brute-force-account": 2, "account-takeover": 2}
    brute, takeover = (a for a in per_user(storage)[2:])
    real = sorted(e.seq for e in storage.scan_events() if e.seq not in forged)
    # The second brute force counts the real failures only: the 10th fired it.
    assert brute.playbook == "brute-force-account" and brute.seqs == tuple(real[:10])
    assert brute.total == 10
    # The second takeover is the real success, after the 22 failures of the window (a
    # success after new failures counts the window's, forged ones included).
    assert takeover.playbook == "account-takeover" and takeover.last_seq == real[-1]
    assert takeover.total == 22
    (success,) = storage.events_by_seq([real[-1]])
    assert success.ip == "198.51.100.50"


def test_one_burst_alerts_once_and_the_next_needs_new_events(
    storage: Storage, clock: Clock, tmp_path: Path
) -> None:
    """An attack's failures and success, each its own batch: one alert each, not one an
    event. More failures alert again only at ``threshold`` new ones."""
    site = Site([storage], clock, playbook_file(tmp_path))
    site.real_attack()
    assert counted(storage) == {"brute-force-account": 1, "account-takeover": 1}
    for _ in range(7):  # 2 of the attack's after its 10th, 7 more: 19 in the window, 9 new
        site.send(site.event("auth.login.failure", "198.51.100.60"))
    assert counted(storage) == {"brute-force-account": 1, "account-takeover": 1}
    site.send(site.event("auth.login.failure", "198.51.100.61"))  # the 10th new one
    assert counted(storage) == {"brute-force-account": 2, "account-takeover": 1}


@pytest.mark.parametrize("seed", [1, 2])
def test_two_processes_and_a_restart_alert_as_one(
    db_url: str, clock: Clock, tmp_path: Path, seed: int
) -> None:
    """The same scenario through two runners on one database taking turns at random (two
    workers, two collectors on one PostgreSQL), then through a new runner (a restart): the
    alerts of one runner alone, as the marks are in the database."""
    rng = random.Random(seed)
    storages = [open_storage(db_url, clock=clock) for _ in range(2)]
    try:
        site = Site(storages, clock, playbook_file(tmp_path))
        site.turn = rng.randint(0, 1)
        site.forged_burst()
        for i in range(12):  # one batch each, to either process
            site.turn = rng.randint(0, 1)
            site.send(site.event("auth.login.failure", f"198.51.100.{10 + i // 3}"))
        site.send(site.event("auth.login.success", "198.51.100.50"))
        assert counted(storages[0]) == {"brute-force-account": 2, "account-takeover": 2}
        restarted = Site([storages[1]], clock, playbook_file(tmp_path))
        for _ in range(7):  # a process that remembers nothing: 9 after the mark, 31 in all
            restarted.send(restarted.event("auth.login.failure", "198.51.100.70"))
        assert counted(storages[0]) == {"brute-force-account": 2, "account-takeover": 2}
        restarted.send(restarted.event("auth.login.failure", "198.51.100.71"))
        assert counted(storages[0]) == {"brute-force-account": 3, "account-takeover": 2}
    finally:
        for s in storages:
            s.close()


@pytest.fixture
def two_processes(db_url: str, clock: Clock, tmp_path: Path) -> Iterator[tuple[Site, Storage]]:
    """A site whose bodies go to two runners in turn on one database (of each back end)."""
    storages = [open_storage(db_url, clock=clock) for _ in range(2)]
    try:
        yield Site(storages, clock, playbook_file(tmp_path)), storages[0]
    finally:
        for s in storages:
            s.close()


def test_a_failure_stored_late_with_an_earlier_time_counts_for_the_next_alert(
    two_processes: tuple[Site, Storage],
) -> None:
    """10 failures alert; one stored after that alert with an earlier time of its own than
    the alert's last (a process that committed after the one that alerted) and 9 more later
    make 10 new ones: it alerts again (the late one counted for nothing before: 20 failures
    of one user raised one alert). None of the first alert's failures counts again."""
    site, storage = two_processes
    for n in range(10):
        site.send(site.event("auth.login.failure", f"198.51.100.{n}", 60 - n))
    assert counted(storage) == {"brute-force-account": 1}
    site.send(site.event("auth.login.failure", "198.51.100.20", 55.5))
    for n in range(8):
        site.send(site.event("auth.login.failure", f"198.51.100.{30 + n}", 29 - n))
    assert counted(storage) == {"brute-force-account": 1}  # 9 new
    site.send(site.event("auth.login.failure", "198.51.100.40", 21))
    assert counted(storage) == {"brute-force-account": 2}
    first, second = per_user(storage)
    assert not set(first.seqs) & set(second.seqs) and second.total == 10


def test_failures_from_a_clock_behind_count_once_each_in_the_store(
    two_processes: tuple[Site, Storage],
) -> None:
    """10 current failures alert; 20 more from an app server a minute behind (each stored
    after the alert, each earlier than its last event) alert twice more, on 10 events each,
    none counted twice (the store kept the greater (time, seq) mark and dropped the late
    alert's, so every later late failure alerted again, recounting)."""
    site, storage = two_processes
    for n in range(10):
        site.send(site.event("auth.login.failure", f"198.51.100.{n}", 10 - n))
    for n in range(20):
        site.send(site.event("auth.login.failure", f"198.51.100.{20 + n}", 90 - n))
    alerts = [a for a in per_user(storage) if a.playbook == "brute-force-account"]
    assert [a.total for a in alerts] == [10, 10, 10]
    seqs = [s for a in alerts for s in a.seqs]
    assert len(seqs) == len(set(seqs)) == 30


def test_the_backtest_agrees_with_the_collector(
    storage: Storage, clock: Clock, tmp_path: Path
) -> None:
    """``sqreen playbooks test`` over the stored events raises the alerts the collector did,
    on the same events."""
    site = Site([storage], clock, playbook_file(tmp_path))
    site.forged_burst()
    site.real_attack()
    for _ in range(11):
        site.send(site.event("auth.login.failure", "198.51.100.80"))
    site.send(site.event("auth.login.success", "198.51.100.81"))
    live = [(a.playbook, a.group_key, a.total, a.last_seq, a.seqs) for a in per_user(storage)]
    assert Counter(a[0] for a in live) == {"brute-force-account": 3, "account-takeover": 3}
    engine = Engine(parse_playbooks(TEMPLATES))
    found = _cli_playbooks.backtest(storage, engine, EventFilter())
    replayed = [(a.playbook, a.group_key, a.total, a.last_seq, a.seqs) for a in found]
    assert [a for a in replayed if a[0] in PER_USER] == live


def test_probes_past_the_columns_are_counted_alone(storage: Storage) -> None:
    """A stream's probes asking more times than one statement has columns (marks, one key's
    each): every count is the one a probe of its own finds."""
    now = 1_800_000_000_000_000
    rng = random.Random(7)
    hits = [
        ("s", f"k{k}", now - rng.randint(0, 3600) * 1_000_000, n, f"v{rng.randint(0, 5)}")
        for n, k in enumerate(rng.choices(range(20), k=600))
    ]
    probes = [
        ("s", f"k{k}", now - rng.randint(0, 3600) * 1_000_000, 1, rng.random() < 0.5)
        for k in range(20)
        for _ in range(3)
    ]
    assert len({(p[2], p[4]) for p in probes}) > COLUMNS_MAX
    seen: list[str] = []
    writer = getattr(storage, "_writer", None)  # SQLite's connection: its statements traced
    if writer is not None:
        writer.set_trace_callback(seen.append)
    arrays = storage._ARRAYS  # type: ignore[attr-defined]
    table = storage._HITS_TABLE  # type: ignore[attr-defined]
    if writer is not None:  # SQLite's log, as indexed past what memory holds
        for statement in LOG_INDEXES:
            writer.execute(statement)
    with storage._write() as cur:  # type: ignore[attr-defined]
        storage._insert_hits(cur, hits)  # type: ignore[attr-defined]
        together = count_probes(cur, probes, arrays, table)
        each = {p: count_probes(cur, [p], arrays, table)[p] for p in probes}
    assert together == each
    if writer is not None:  # each term of the probes counted alone reads the key's index
        writer.set_trace_callback(None)
        (alone, *_) = [sql for sql in seen if "UNION ALL" in sql]
        plan = " / ".join(row[3] for row in writer.execute("EXPLAIN QUERY PLAN " + alone))
        assert "SCAN window_log" not in plan and "INDEX window_log_key" in plan, plan
        # What memory counts, for the same hits, is the same.
        index = HitIndex()
        index.fold((n + 1, *hit) for n, hit in enumerate(sorted(hits, key=lambda h: h[2:4])))
        assert index.count(probes) == together
    for stream, key, since, _, distinct in probes[:5]:
        mine = [h for h in hits if h[1] == key and h[2] >= since]
        want = len({h[4] for h in mine}) if distinct else len(mine)
        assert together[(stream, key, since, 1, distinct)] == want


def views(name: str, at: int, seqs: range) -> list[EventView]:
    return [EventView(s, name, at, None, {"username": "dave"}, {}, {"path": "/"}) for s in seqs]


def test_a_cooldown_still_quiets_and_a_success_older_than_the_mark_fires_nothing() -> None:
    """The backtest's windows: ``cooldown`` keeps an alert playbook quiet that long, as the
    file asks; an ``after`` rule alerts again on a success later than its mark, not on one
    dated before it (delivered late)."""
    text = TEMPLATES.replace(
        'threshold = 10\nwindow = "1h"\naction = "alert"',
        'threshold = 10\nwindow = "1h"\naction = "alert"\ncooldown = "1h"',
    )
    windows = MemoryWindows(Engine(parse_playbooks(text)), is_exempt)
    now = 1_800_000_000 * S

    def run(name: str, seconds: int, seqs: range) -> list[str]:
        at = now + seconds * S
        return [f.playbook.id for f in windows.run(views(name, at, seqs), at)]

    assert run("auth.login.failure", 0, range(1, 11)) == ["brute-force-account"]
    assert run("auth.login.success", 1, range(11, 12)) == ["account-takeover"]
    assert run("auth.login.failure", 2, range(12, 32)) == []  # 20 new: within the cooldown
    assert run("auth.login.success", 3, range(32, 33)) == ["account-takeover"]
    # Dated before the last success (an SDK's spool): no success after the mark.
    assert windows.run(views("auth.login.success", now + 2 * S, range(33, 34)), now + 4 * S) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_two_collectors_alert_on_the_real_attack_after_a_forged_one(
    backend: str, tmp_path: Path, serve: Callable[..., ServeProcess], request: Any
) -> None:
    """Two ``sqreen serve`` on one database (``--workers 2`` on SQLite, two collectors on one
    PostgreSQL): the forged burst to one, the real attack's events to either in turn."""
    db = str(tmp_path / "w.db") if backend == "sqlite" else request.getfixturevalue("postgres_db")
    storage = open_storage(db)
    token = new_token()
    storage.create_key("k", hash_token(token))
    storage.close()
    collectors = [serve(db, None, "--playbooks", str(playbook_file(tmp_path))) for _ in range(2)]
    site = Site([], Clock(), tmp_path)

    def post(n: int, *events: dict[str, Any]) -> None:
        reply = httpx.post(
            collectors[n % 2].url + "/v1/events",
            json=envelope(list(events)),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text

    failures = [site.event("auth.login.failure", "11.9.9.9", 30) for _ in range(10)]
    post(0, *failures, site.event("auth.login.success", "11.9.9.9", 20))
    for i in range(12):
        post(i, site.event("auth.login.failure", f"198.51.100.{10 + i // 3}"))
    post(1, site.event("auth.login.success", "198.51.100.50"))
    storage = open_storage(db)
    try:
        assert counted(storage) == {"brute-force-account": 2, "account-takeover": 2}
    finally:
        storage.close()


def test_successes_sent_in_one_batch_alert_as_one_by_one_and_as_the_backtest(
    storage: Storage, clock: Clock, tmp_path: Path
) -> None:
    """An SDK sends a failure at once and a success with its next flush: five successes,
    each after a new failure, come in one batch, after the failures between them. Each
    alerts, as it would have alone, and as the backtest replays them; it used to be one
    alert a batch."""
    site = Site([storage], clock, playbook_file(tmp_path))
    for i in range(10):
        site.send(site.event("auth.login.failure", f"198.51.100.{10 + i // 3}", 100 - i))
    successes = []
    for i in range(5):
        site.send(site.event("auth.login.failure", "198.51.100.40", 50 - 10 * i))
        successes.append(site.event("auth.login.success", "198.51.100.50", 49 - 10 * i))
    site.send(*successes)
    takeovers = [a for a in per_user(storage) if a.playbook == "account-takeover"]
    assert [a.total for a in takeovers] == [11, 12, 13, 14, 15]
    assert len({a.last_seq for a in takeovers}) == 5  # each success its own alert
    engine = Engine(parse_playbooks(TEMPLATES))
    found = _cli_playbooks.backtest(storage, engine, EventFilter())
    replayed = [(a.total, a.last_seq, a.seqs) for a in found if a.playbook == "account-takeover"]
    assert replayed == [(a.total, a.last_seq, a.seqs) for a in takeovers]


def test_a_batch_of_successes_with_no_failure_between_them_alerts_once(
    storage: Storage, clock: Clock, tmp_path: Path
) -> None:
    """The owner logging in three times after an attack (no failure between): one alert,
    in one batch as one by one."""
    site = Site([storage], clock, playbook_file(tmp_path))
    for i in range(10):
        site.send(site.event("auth.login.failure", f"198.51.100.{10 + i // 3}", 100 - i))
    site.send(*(site.event("auth.login.success", "198.51.100.50", 50 - i) for i in range(3)))
    assert counted(storage)["account-takeover"] == 1


def test_a_crafted_batch_of_a_user_s_failures_and_successes_alerts_a_bounded_number(
    storage: Storage, clock: Clock, tmp_path: Path
) -> None:
    """500 failures of one user, each followed by a success, in one body: each success
    after the 10th failure could alert, each with the window's hits; a batch raises
    MAX_AFTER_FIRINGS at most for a key (they were 500 alerts of up to 500 hits)."""
    site = Site([storage], clock, playbook_file(tmp_path))
    events = []
    for i in range(500):
        events.append(site.event("auth.login.failure", "198.51.100.9", 500 - i))
        events.append(site.event("auth.login.success", "198.51.100.9", 499.5 - i))
    site.send(*events)
    takeovers = [a for a in per_user(storage) if a.playbook == "account-takeover"]
    assert len(takeovers) == MAX_AFTER_FIRINGS
    assert [a.total for a in takeovers] == list(range(10, 10 + MAX_AFTER_FIRINGS))
