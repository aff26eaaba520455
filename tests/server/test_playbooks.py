"""Playbooks in the collector: windows in the database, alerts, blocks, the long-poll."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx2 as httpx
import psycopg
import pytest
from click.testing import CliRunner

import sqreen
from sqreen._wire_time import format_timestamp
from sqreen.server import _cli_playbooks
from sqreen.server.app import create_app
from sqreen.server.auth import hash_token, new_token
from sqreen.server.cli import main
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.playbooks import (
    TEMPLATES,
    Engine,
    PlaybookError,
    PlaybookRunner,
    PlaybookSource,
    load_playbooks,
    never_firing,
    parse_playbooks,
)
from sqreen.server.storage import (
    BlockSpec,
    EventFilter,
    NewAlert,
    Storage,
    WindowWrite,
    _hit_log,
    _playbooks,
    open_storage,
)

from .conftest import Collector, ServeProcess, envelope, recent, wait_for, wire_event


def failure(ip: str, uid: str, **overrides: Any) -> dict[str, Any]:
    event = wire_event(user={"uid": uid}, **overrides)
    event["request"] = {**event["request"], "ip": ip}
    return event


def playbook_file(tmp_path: Path, text: str = TEMPLATES) -> Path:
    path = tmp_path / "playbooks.toml"
    path.write_text(text)
    return path


@pytest.fixture
def armed(collector: Collector, live_app: Any, tmp_path: Path) -> Collector:
    """The collector of the ``collector`` fixture, with the built-in playbooks enforced."""
    switch, _ = live_app
    source = PlaybookSource(playbook_file(tmp_path))
    switch.app = create_app(collector.storage, key_cache_ttl=0.2, playbooks=source)
    switch.app.state.actions.cache.watched.record_now()  # as its lifespan would (off here)
    return collector


def test_update_windows_counts_in_sql_and_stores_alerts_and_one_block_a_target(
    storage: Storage,
) -> None:
    now = storage.now()
    now_us = int(now.timestamp() * 1_000_000)
    spec = BlockSpec("block_ip", None, "203.0.113.9/32", timedelta(hours=1), "r", "playbook:x")

    def alert(n: int, block: BlockSpec | None) -> NewAlert:
        return NewAlert("x", "ip", "203.0.113.9", n, now, now, n, n, (n,), "enforce", "block_ip",
                        f"alert {n}", block)  # fmt: skip

    key = ("s", "203.0.113.9")
    other = ("s", "198.51.100.1")
    hits = [("s", "203.0.113.9", now_us - i, i, f"u{i % 2}") for i in range(5)]
    hits.append(("s", "198.51.100.1", now_us, 99, "u9"))
    seen: list[Any] = []

    probes = [
        ("s", "203.0.113.9", now_us - 10, 5, False),  # 5 hits: a candidate
        ("s", "198.51.100.1", now_us - 10, 5, False),  # 1 hit: not
        ("s", "203.0.113.9", now_us - 10, 3, True),  # 2 distinct values: not
    ]

    def decide(found: dict[Any, Any], quiet: dict[Any, int]) -> WindowWrite:
        seen.append((found, quiet))
        return WindowWrite({("x", "203.0.113.9"): now_us + 10**9}, [alert(1, spec)])

    first = storage.update_windows([other, key], hits, probes, decide)
    ((found, quiet),) = seen
    assert list(found) == [key] and quiet == {}
    assert [seq for _, seq, _ in found[key]] == [4, 3, 2, 1, 0]  # oldest first
    longer = BlockSpec("block_ip", None, "203.0.113.9/32", timedelta(hours=6), "r", "playbook:y")
    second = storage.update_windows(
        [key],
        [],
        [],
        lambda found, quiet: WindowWrite({}, [alert(2, longer), alert(3, None)]),
    )
    assert first[0].block_id == second[0].block_id  # the active block, extended
    assert second[1].block_id is None
    (block,) = storage.list_blocks()
    assert block.created_by == "playbook:x"
    assert block.expires_at is not None and block.expires_at - now > timedelta(hours=5)
    assert [a.summary for a in storage.list_alerts()] == ["alert 3", "alert 2", "alert 1"]
    assert storage.alert_counts()["x"][0] == 3

    def read_back(found: dict[Any, Any], quiet: dict[Any, int]) -> WindowWrite:
        seen.append((found, quiet))
        return WindowWrite({})

    # Quiet times are read back for the keys that could fire; a key every rule of which is
    # quiet (``wanted`` says so) is not fetched.
    storage.update_windows([key], [], probes[:1], read_back, lambda k, quiet: True)
    assert list(seen[-1][0]) == [key]
    assert seen[-1][1] == {("x", "203.0.113.9"): now_us + 10**9}
    storage.update_windows([key], [], probes[:1], read_back, lambda k, quiet: not quiet)
    assert seen[-1] == ({}, {("x", "203.0.113.9"): now_us + 10**9})

    # Lifting the block ends the quiet of the playbooks that placed or extended it, and says
    # so to every process (the value changes); a block of nobody's alert changes nothing.
    released = storage.quiet_released()
    by_hand = storage.create_block("block_ip", ip="198.51.100.3", created_by="cli:root")
    assert storage.lift_block(by_hand.id) is not None
    assert storage.quiet_released() == released
    assert storage.lift_block(block.id, "cli:root") is not None
    assert storage.quiet_released() != released
    storage.update_windows([key], [], probes[:1], read_back, lambda k, quiet: True)
    lifted_at = int(storage.now().timestamp() * 1_000_000)
    assert seen[-1][1] == {} or max(seen[-1][1].values()) <= lifted_at
    again = storage.quiet_released()
    storage.lift_block(block.id)  # lifted already: nothing
    assert storage.quiet_released() == again


def test_a_lift_while_a_playbook_blocks_the_same_key_waits_for_it(
    storage: Storage, db_url: str, clock: Any
) -> None:
    """Two collectors on one database, the lifting one's clock 10 s behind: it sees the
    key's quiet (ended 5 s ago for the other) still in force. The other writes the key's
    quiet again and places its block; the lift, meanwhile, takes the action set's lock and
    would end that quiet. Each waited for what the other held (PostgreSQL aborted one
    with a deadlock, after a second); the playbook's transaction now takes the action
    set's lock before its quiet rows, the lift waits for it, and lifts the block it
    extended, quiet released."""
    now_us = int(storage.now().timestamp() * 1_000_000)
    ip = "203.0.113.9"
    spec = BlockSpec("block_ip", None, f"{ip}/32", timedelta(hours=1), "r", "playbook:x")
    alert = NewAlert("x", "ip", ip, 5, storage.now(), storage.now(), 1, 5, (1, 5), "enforce",
                     "block_ip", "alert", spec)  # fmt: skip
    key = ("s", ip)
    probe = [("s", ip, now_us - 10**6, 1, False)]
    hit = [("s", ip, now_us, 1, "u")]
    storage.update_windows(
        [key], hit, probe, lambda f, q: WindowWrite({("x", ip): now_us + 5 * 10**6}, [alert])
    )
    (block,) = storage.list_blocks()
    clock.advance(seconds=10)  # this collector's clock; the lifter's stays behind
    lifter = open_storage(db_url, clock=lambda: storage.now() - timedelta(seconds=10))
    outcome: dict[str, Any] = {}
    started = threading.Event()

    def lift() -> None:
        started.set()
        outcome.update(lifted=lifter.lift_block(block.id, "cli:root"))

    lifting = threading.Thread(target=lift)
    placing = storage._block_for

    def place(*args: Any, **kwargs: Any) -> Any:
        lifting.start()  # with this key's quiet row written (unless locked before it)
        assert started.wait(30)
        if db_url.startswith("postgresql"):  # the lift waiting for a lock this one holds
            with psycopg.connect(db_url, autocommit=True) as conn:
                query = "SELECT count(*) FROM pg_locks WHERE NOT granted"
                wait_for(lambda: conn.execute(query).fetchone()[0] > 0)  # type: ignore[index]
        # (SQLite: one writer; the lift waits for this transaction, or starts after it.)
        return placing(*args, **kwargs)

    storage._block_for = place  # type: ignore[method-assign]
    try:
        later = int(storage.now().timestamp() * 1_000_000)
        again = storage.update_windows(
            [key], [("s", ip, later, 2, "u")], probe,
            lambda f, q: WindowWrite({("x", ip): later + 3600 * 10**6}, [alert]),
        )  # fmt: skip
        lifting.join(30)
    finally:
        lifter.close()
    assert again[0].block_id == block.id  # extended, then lifted by the waiting lift
    assert outcome["lifted"] is not None and outcome["lifted"].id == block.id
    assert storage.list_blocks() == []
    seen: list[dict[Any, int]] = []
    storage.update_windows([key], [], probe, lambda f, q: seen.append(q) or WindowWrite({}))
    assert all(until <= later for until in seen[0].values())  # the quiet ended by the lift


def test_update_windows_says_when_nobody_else_wrote(storage: Storage, db_url: str) -> None:
    """``probes`` is told the windows are as its owner left them only while no other
    connection wrote (SQLite's data_version; PostgreSQL: no other's row in the log since its
    previous read) or all it wrote is known by key and told to ``others`` (none here), and
    ``counted`` gets every probe's count, below its threshold or not."""
    now_us = int(storage.now().timestamp() * 1_000_000)
    key = ("s", "203.0.113.9")
    probe = ("s", "203.0.113.9", now_us - 10, 5, False)
    fresh: list[bool] = []
    counts: list[Any] = []

    def write(owner: object, n: int) -> None:
        hits = [("s", "203.0.113.9", now_us - n, n, None)]
        storage.update_windows(
            [key],
            hits,
            lambda ok: fresh.append(ok) or [probe],
            lambda found, quiet: WindowWrite({}),
            owner=owner,
            counted=counts.append,
        )

    me, other = object(), object()
    write(me, 1)
    write(me, 2)
    write(other, 3)  # another runner on the same connection
    write(me, 4)
    write(me, 5)
    elsewhere = open_storage(db_url)  # another connection (another worker) writes
    try:
        elsewhere.update_windows(
            [key], [("s", "203.0.113.9", now_us, 6, None)], [], lambda f, q: WindowWrite({})
        )
    finally:
        elsewhere.close()
    write(me, 7)
    assert fresh == [False, True, False, False, True, False]
    assert [c[probe] for c in counts] == [1, 2, 3, 4, 5, 7]


def test_brute_force_blocks_the_ip_at_the_fifth_failure(armed: Collector) -> None:
    replies = []
    for i in range(5):
        reply = armed.post("/v1/events", envelope([failure("198.51.100.23", f"u{i % 2}")]))
        replies.append(reply.json())
    blocked = [
        any(item.get("ip") == "198.51.100.23/32" for item in r["actions"]["items"]) for r in replies
    ]
    assert blocked == [False, False, False, False, True]  # the crossing batch's own reply
    assert "auth.login.failure" in replies[-1]["actions"]["watch"]
    (alert,) = armed.storage.list_alerts(playbook="brute-force-ip")
    assert alert.total == 5 and alert.block_id is not None
    (block,) = [b for b in armed.storage.list_blocks() if b.id == alert.block_id]
    assert block.created_by == "playbook:brute-force-ip"


class Held:
    """Holds each request until :attr:`released`, then passes it to ``app``: a collector that
    does not answer for a while (overloaded, or cut off), then does."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.released = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await anyio.to_thread.run_sync(self.released.wait, 60)  # (60: a failed test ends)
        await self.app(scope, receive, send)


def _from(ip: str, path: str) -> dict[str, str]:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "", "REMOTE_ADDR": ip}


def test_a_flood_cannot_hide_a_brute_force_from_the_playbooks(
    armed: Collector, live_app: Any
) -> None:
    """The SDK's queue is full of a flood while the collector does not answer; the login
    failures that follow take the room the queue keeps for what the playbooks watch, and the
    attacker is blocked once the collector answers."""
    client = sqreen.init(endpoint=armed.url, token=armed.token, max_queue_size=100)
    client.start()
    assert client.queue.first_actions.wait(10)
    assert "auth.login.failure" in client.queue.watched
    switch, _ = live_app
    held = switch.app = Held(switch.app)
    tracked = [sqreen.track("search", request=_from("203.0.113.9", "/s")) for _ in range(1000)]
    assert tracked.count(True) == 90
    for i in range(5):
        failure = _from("198.51.100.23", "/login")
        assert sqreen.track(
            "auth.login.failure", user_identifiers={"uid": f"u{i}"}, request=failure
        )
    assert client.stats()["dropped"]["queue_full"] == 910
    held.released.set()
    wait_for(lambda: client.is_blocked(ip="198.51.100.23"))  # the brute force blocked
    (alert,) = armed.storage.list_alerts(playbook="brute-force-ip")
    assert alert.total == 5
    assert sqreen.flush(timeout=30) and client.stats()["sent"] == 95


def test_a_retried_batch_counts_once(armed: Collector) -> None:
    batch = envelope([failure("198.51.100.24", "a"), failure("198.51.100.24", "b")])
    for _ in range(4):  # the same two events, sent four times: two failures, not eight
        armed.post("/v1/events", batch)
    assert armed.storage.list_alerts() == []


def test_hits_no_window_reads_are_purged_in_chunks_and_counting_goes_on(
    storage: Storage, clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_playbooks, "PURGE_CHUNK", 4)
    runner = PlaybookRunner(storage, PlaybookSource(playbook_file(tmp_path)))
    pipeline = IngestPipeline(storage, hooks=[runner])

    def send(ip: str, n: int) -> None:
        at = format_timestamp(clock())  # the storage clock's now, moved below
        events = [failure(ip, f"u{i}", timestamp=at) for i in range(n)]
        pipeline(json.dumps(envelope(events)).encode())

    send("198.51.100.1", 3)
    assert runner.purge() == 0  # every hit is still in some window
    clock.advance(hours=3)  # beyond the longest template window (1 h) and the margin
    purged = runner.purge()
    assert purged >= 3 * 2  # 3 events, each a hit in two streams (by IP, by user): 2 chunks
    assert runner.purge() == 0
    send("198.51.100.1", 4)  # the old hits are gone: 4 new failures do not make 5
    assert storage.list_alerts() == []
    send("198.51.100.1", 1)
    assert [a.playbook for a in storage.list_alerts()] == ["brute-force-ip"]


@pytest.mark.parametrize("mode", ["memory", "indexed"])
def test_window_statements_use_their_indexes(
    sqlite_storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Every statement on the playbook tables reads through an index (SQLite plans without
    statistics: what it plans here it plans with millions of hits). While the hits are
    counted from memory (``window_log`` unindexed), no statement counts them, and the one
    statement that reads the log in id order is the purge's, which reads the rows it then
    deletes, up to the first it keeps. Past LOG_MEMORY_MAX rows they are counted in SQL."""
    writer = sqlite_storage._writer  # type: ignore[attr-defined]
    if mode == "indexed":  # as a table past LOG_MEMORY_MAX rows is
        monkeypatch.setattr(_hit_log, "LOG_MEMORY_MAX", 4)
        for statement in _hit_log.LOG_INDEXES:
            writer.execute(statement)
    runner = PlaybookRunner(sqlite_storage, PlaybookSource(playbook_file(tmp_path)))
    pipeline = IngestPipeline(sqlite_storage, hooks=[runner])
    seen: list[str] = []
    writer.set_trace_callback(seen.append)
    try:
        events = [
            failure(f"198.51.100.{i % 3}", f"u{i % 4}") for i in range(18)
        ]  # 6 an IP: counted
        pipeline(json.dumps(envelope(events)).encode())
        runner.purge()
    finally:
        writer.set_trace_callback(None)
    statements = {
        sql
        for sql in seen
        if ("playbook_" in sql or "window_" in sql) and not sql.startswith("INSERT")
    }
    counted = any("count(" in sql and "window_log" in sql for sql in statements)
    assert counted == (mode == "indexed")
    assert any("DELETE" in sql for sql in statements)
    assert any("max(ts)" in sql for sql in statements) == (mode == "indexed")
    assert [a.playbook for a in sqlite_storage.list_alerts()].count("brute-force-ip") == 3
    purge_read = "SELECT id FROM window_log WHERE ts >= "  # the traced text has the values
    for sql in {sql for sql in statements if not sql.startswith(purge_read)}:
        plan = " / ".join(row[3] for row in writer.execute("EXPLAIN QUERY PLAN " + sql))
        assert not re.search(r"\bSCAN (playbook|window)_\w+\b(?! USING)", plan), (sql, plan)


def test_past_events_block_nobody_and_the_backtest_reports_them(
    armed: Collector, tmp_path: Path
) -> None:
    past = [
        failure("192.0.2.77", f"victim{i}", timestamp=recent(days=3, seconds=-i)) for i in range(40)
    ]
    reply = armed.post("/v1/events", envelope(past)).json()
    assert reply["accepted"] == 40 and reply["actions"]["items"] == []
    assert armed.storage.list_alerts() == []
    db = armed.storage.path  # type: ignore[attr-defined]
    result = CliRunner().invoke(
        main, ["playbooks", "test", str(playbook_file(tmp_path)), "--since", "7d", "--db", db]
    )
    assert result.exit_code == 0, result.output
    assert "brute-force-ip" in result.output and "192.0.2.77" in result.output
    assert "credential-stuffing" in result.output


class Posted:
    """A notifier that keeps what it would have posted."""

    def __init__(self) -> None:
        self.posts: list[tuple[tuple[str, ...], Any]] = []

    def submit(self, urls: tuple[str, ...], payload: Any, more: Any = None) -> None:
        self.posts.append((urls, payload if more is None else {**payload, **more()}))


def test_a_takeover_alert_holds_the_success_with_the_attackers_ip(
    storage: Storage, clock: Any, tmp_path: Path
) -> None:
    """Twelve failures for carol, then her success from another address six minutes later:
    the alert (stored, listed, posted) is dated at the success and holds its seq."""
    text = 'webhook_secret = "s"\n' + TEMPLATES.replace(
        'id = "account-takeover"', 'id = "account-takeover"\nnotify = ["https://hooks.example"]'
    )
    posted = Posted()
    source = PlaybookSource(playbook_file(tmp_path, text))
    runner = PlaybookRunner(
        storage,
        source,
        posted,  # type: ignore[arg-type]
        events=storage.events_by_seq,
    )
    pipeline = IngestPipeline(storage, hooks=[runner])
    carol = {"username": "carol"}

    def send(name: str, ip: str, minutes_ago: float) -> None:
        at = format_timestamp(clock() - timedelta(minutes=minutes_ago))
        event = failure(ip, "-", name=name, timestamp=at) | {"user": carol}
        pipeline(json.dumps(envelope([event])).encode())

    for i in range(12):
        send("auth.login.failure", "198.51.100.3", 8 - i / 10)
    assert [a.playbook for a in storage.list_alerts()] == ["brute-force-account"]
    send("auth.login.success", "81.2.69.99", 8 - 1.1 - 6)
    *failures, success = [e.seq for e in storage.scan_events()]
    (alert,) = storage.list_alerts(playbook="account-takeover")
    assert alert.seqs == (*failures, success) and alert.last_seq == success
    assert alert.first_seq == failures[0] and alert.total == 12
    (event,) = storage.events_by_seq([success])
    assert event.ip == "81.2.69.99" and alert.last_at == event.timestamp
    assert alert.first_at == storage.events_by_seq([failures[0]])[0].timestamp
    assert alert.summary == (
        "account-takeover: auth.login.success after 12 auth.login.failure in 10m "
        'for user={"username":"carol"}'
    )
    ((urls, payload),) = posted.posts
    assert urls == ("https://hooks.example",) and payload["alert"] == alert.to_json()
    assert payload["alert"]["events"][-1] == payload["alert"]["last_seq"] == success
    # The success's address first (the lead), then where the tries came from.
    assert payload["addresses"] == [
        {"ip": "81.2.69.99", "events": 1},
        {"ip": "198.51.100.3", "events": 12},
    ]
    assert payload["users"] == [{"user": carol, "events": 13}]
    assert payload["from_events"] == 13


def test_the_backtest_lists_alerts_in_time_order_across_pages(
    sqlite_storage: Storage, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events stored late (an SDK's retried batch) happened before those stored first, in
    another page: the list is by time all the same."""
    monkeypatch.setattr(_cli_playbooks, "PAGE", 5)

    def signups(ip: str, minutes_ago: float) -> None:
        at = format_timestamp(clock() - timedelta(minutes=minutes_ago))
        events = [failure(ip, str(i), name="auth.signup", timestamp=at) for i in range(5)]
        sqlite_storage.insert_events(events, app="shop", host="web1")  # type: ignore[arg-type]

    signups("198.51.100.1", 2)  # stored first, happened last
    signups("198.51.100.2", 30)
    engine = Engine(parse_playbooks(TEMPLATES))
    found = _cli_playbooks.backtest(sqlite_storage, engine, EventFilter())
    assert [a.group_key for a in found] == ["198.51.100.2", "198.51.100.1"]
    assert [a.created_at for a in found] == sorted(a.created_at for a in found)


def test_the_backtest_replays_events_imported_late_in_time_order(
    storage: Storage, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past events imported after newer ones (`sqreen import`): an address's three failures
    two days ago and one a minute ago are stored first, two more from two days ago next, in
    a later page. Replayed by time, the five make the brute force of two days ago; by seq,
    the recent one cleared the older hits before the last two were counted."""
    monkeypatch.setattr(_cli_playbooks, "PAGE", 4)
    then = clock() - timedelta(days=2)

    def stored(*times: Any) -> None:
        events = [
            failure("203.0.113.66", f"v{i}", timestamp=format_timestamp(at))
            for i, at in enumerate(times)
        ]
        storage.insert_events(events, app="shop", host="web1")  # type: ignore[arg-type]

    stored(*(then + timedelta(seconds=s) for s in (0, 10, 20)), clock() - timedelta(minutes=1))
    stored(then + timedelta(seconds=30), then + timedelta(seconds=40))
    engine = Engine(parse_playbooks(TEMPLATES))
    found = _cli_playbooks.backtest(storage, engine, EventFilter(since=clock() - timedelta(7)))
    (alert,) = [a for a in found if a.playbook == "brute-force-ip"]
    assert alert.group_key == "203.0.113.66" and alert.total == 5
    assert alert.created_at == then + timedelta(seconds=40)


def test_monitor_mode_records_the_alert_and_blocks_nobody(
    collector: Collector, live_app: Any, tmp_path: Path
) -> None:
    text = TEMPLATES.replace('action = "block_ip"\nduration = "1h"', 'action = "block_ip"\n'
                             'duration = "1h"\nmode = "monitor"', 1)  # fmt: skip
    switch, _ = live_app
    source = PlaybookSource(playbook_file(tmp_path, text))
    switch.app = create_app(collector.storage, key_cache_ttl=0.2, playbooks=source)
    for i in range(6):
        collector.post("/v1/events", envelope([failure("198.51.100.40", str(i % 2))]))
    (alert,) = collector.storage.list_alerts(playbook="brute-force-ip")
    assert alert.mode == "monitor" and alert.block_id is None
    assert collector.storage.list_blocks() == []


def test_a_lifted_playbook_block_leaves_the_attacker_counted_again_by_every_process(
    armed: Collector, live_app: Any, tmp_path: Path
) -> None:
    """A playbook is quiet for a key while its block lasts; lifting the block (the CLI, the
    explorer, the API) ends that, in every process: an address still failing was free of
    the playbook for the rest of the hour (six for the stuffing and spray templates). A
    second process (another worker) that had read the quiet time forgets it too."""
    switch, _ = live_app
    first = switch.app
    second = create_app(
        armed.storage, key_cache_ttl=0.2, playbooks=PlaybookSource(playbook_file(tmp_path))
    )
    ip = "198.51.100.77"
    for i in range(5):
        armed.post("/v1/events", envelope([failure(ip, f"u{i % 2}")]))
    (block,) = armed.storage.list_blocks()
    switch.app = second  # reads the quiet time, and remembers it
    armed.post("/v1/events", envelope([failure(ip, "u0")]))
    assert len(armed.storage.list_alerts(playbook="brute-force-ip")) == 1
    assert armed.storage.lift_block(block.id, "cli:root") is not None
    armed.post("/v1/events", envelope([failure(ip, "u1")]))  # in the window with the rest
    (again,) = armed.storage.list_blocks()
    assert again.id != block.id and again.ip == f"{ip}/32"
    assert again.created_by == "playbook:brute-force-ip"
    # And in the first process, which made the first block.
    assert armed.storage.lift_block(again.id, "cli:root") is not None
    switch.app = first
    armed.post("/v1/events", envelope([failure(ip, "u0")]))
    (third,) = armed.storage.list_blocks()
    assert third.id not in (block.id, again.id)


def test_switched_to_enforce_a_playbook_blocks_what_it_alerted_on_while_monitoring(
    collector: Collector, live_app: Any, tmp_path: Path
) -> None:
    """An alert made in monitor mode leaves its key quiet (one alert while the block would
    have lasted), but only for monitoring: once the file says ``enforce``, the next failure
    of an address it alerted on blocks it (it went on unblocked for the hour)."""
    monitor = TEMPLATES.replace('action = "block_ip"\nduration = "1h"', 'action = "block_ip"\n'
                                'duration = "1h"\nmode = "monitor"', 1)  # fmt: skip
    switch, _ = live_app
    path = playbook_file(tmp_path, monitor)
    source = PlaybookSource(path)
    switch.app = create_app(collector.storage, key_cache_ttl=0.2, playbooks=source)
    for i in range(8):
        collector.post("/v1/events", envelope([failure("198.51.100.41", str(i % 2))]))
    (alert,) = collector.storage.list_alerts(playbook="brute-force-ip")
    assert alert.mode == "monitor" and collector.storage.list_blocks() == []
    path.write_text(TEMPLATES)
    source.reload_requested = True
    assert source.current().playbooks.playbooks[0].mode == "enforce"
    collector.post("/v1/events", envelope([failure("198.51.100.41", "0")]))
    (block,) = collector.storage.list_blocks()
    assert block.ip == "198.51.100.41/32" and block.created_by == "playbook:brute-force-ip"
    modes = [a.mode for a in collector.storage.list_alerts(playbook="brute-force-ip")]
    assert modes == ["enforce", "monitor"]  # newest first


@pytest.mark.parametrize(
    "address",
    [
        "10.99.0.1",
        "172.20.3.4",
        "100.64.1.1",
        "fd12:3456::7",
        "::ffff:10.0.0.9",
        "64:ff9b::a00:6",
        "64:ff9b:1::a00:7",
        "fec0::10",
        "2002:a00:1::1",
    ],
)
def test_a_private_address_is_alerted_on_not_blocked_unless_the_playbook_says(
    collector: Collector, live_app: Any, tmp_path: Path, address: str
) -> None:
    """Behind a proxy the SDKs do not trust, every client is the proxy's private address:
    blocking it after one attacker's five failures refused every user of the site."""
    switch, _ = live_app
    source = PlaybookSource(playbook_file(tmp_path))
    switch.app = create_app(collector.storage, key_cache_ttl=0.2, playbooks=source)
    for i in range(6):
        collector.post("/v1/events", envelope([failure(address, f"u{i % 2}")]))
    (alert,) = collector.storage.list_alerts(playbook="brute-force-ip")
    assert alert.mode == "enforce" and alert.block_id is None
    assert "not blocked: a private address" in alert.summary
    assert "block_private = true" in alert.summary
    assert collector.storage.list_blocks() == []

    opted = TEMPLATES.replace('duration = "1h"', 'duration = "1h"\nblock_private = true', 1)
    (tmp_path / "opted").mkdir()
    source = PlaybookSource(playbook_file(tmp_path / "opted", opted))
    switch.app = create_app(collector.storage, key_cache_ttl=0.2, playbooks=source)
    other = "10.99.0.2" if ":" not in address else "fd12:3456:0:1::7"
    for i in range(5):
        collector.post("/v1/events", envelope([failure(other, f"v{i % 2}")]))
    (blocked,) = collector.storage.list_alerts(playbook="brute-force-ip", limit=1)
    assert blocked.block_id is not None and "not blocked" not in blocked.summary


def test_block_private_is_for_block_ip_playbooks_only(tmp_path: Path) -> None:
    text = TEMPLATES.replace('action = "alert"', 'action = "alert"\nblock_private = true', 1)
    result = CliRunner().invoke(main, ["playbooks", "check", str(playbook_file(tmp_path, text))])
    assert result.exit_code != 0
    assert 'block_private: applies to action = "block_ip" only' in result.output
    text = TEMPLATES.replace('duration = "1h"', 'duration = "1h"\nblock_private = "yes"', 1)
    result = CliRunner().invoke(main, ["playbooks", "check", str(playbook_file(tmp_path, text))])
    assert result.exit_code != 0 and "block_private: must be true or false" in result.output


def test_the_long_poll_answers_when_a_block_is_made(armed: Collector) -> None:
    version = armed.client.get(armed.url + "/v1/actions").json()["actions"]["version"]
    results: list[tuple[float, Any]] = []

    def poll() -> None:
        start = time.monotonic()
        reply = armed.client.get(
            armed.url + "/v1/actions", params={"version": version, "wait": 20}, timeout=30
        )
        results.append((time.monotonic() - start, reply.json()["actions"]))

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    armed.post("/v1/blocks", {"type": "block_ip", "ip": "203.0.113.50"}, admin=True)
    thread.join(10)
    (elapsed, actions) = results[0]
    assert elapsed < 2.0 and actions["version"] == version + 1
    assert [item["ip"] for item in actions["items"]] == ["203.0.113.50/32"]
    unchanged = armed.client.get(
        armed.url + "/v1/actions", params={"version": version + 1, "wait": 1}
    ).json()
    assert unchanged == {"actions": {"version": version + 1, "unchanged": True}}


def test_a_bad_playbook_file_stops_serve_with_its_line(tmp_path: Path) -> None:
    path = playbook_file(tmp_path, TEMPLATES.replace("threshold = 5", "threshold = 0", 1))
    result = CliRunner().invoke(
        main, ["serve", "--db", str(tmp_path / "x.db"), "--playbooks", str(path)]
    )
    assert result.exit_code != 0
    assert f"{path}:" in result.output and "threshold: must be an integer" in result.output


def test_check_prints_each_rule_as_the_file_wrote_it(tmp_path: Path) -> None:
    """What each playbook counts, in what window, and what it does, in the file's units."""
    extra = """
[[playbook]]
id = "admin-logins"
events = ["auth.login.failure"]
where = { "request.path" = ["/login", "/admin/login"], "ip.country" = "RU" }
group_by = "user.email"
threshold = 3
window = "90s"
action = "block_user"
duration = "2d"
cooldown = "10m"
mode = "monitor"

[[playbook]]
id = "risky"
events = ["auth.login.failure"]
where = { "ip.score" = { at_least = 50 }, "ip.kind" = ["tor", "vpn"] }
group_by = "ip"
threshold = 3
window = "5m"
action = "alert"
"""
    result = CliRunner().invoke(
        main, ["playbooks", "check", str(playbook_file(tmp_path, TEMPLATES + extra))]
    )
    assert result.exit_code == 0, result.output
    rules = {line.split()[0]: line.split(None, 3)[3] for line in result.output.splitlines()[:8]}
    assert rules == {
        "brute-force-ip": "by ip: 5 in 5m -> block_ip for 1h",
        "brute-force-account": "by user: 10 in 1h -> alert",
        "credential-stuffing": "by ip: 8 distinct user in 15m -> block_ip for 6h",
        "password-spray": "by ip: 10 distinct user in 1h -> block_ip for 6h",
        "account-takeover": "by user: 1 after 10 auth.login.failure in 10m -> alert",
        "signup-abuse": "by ip: 5 in 10m -> block_ip for 1h",
        "admin-logins": "by user.email where request.path=/admin/login|/login and "
        "ip.country=RU: 3 in 1m30s -> block_user for 2d, quiet 10m",
        # A lower bound as written, not "ip.score=>=50".
        "risky": "by ip where ip.score>=50 and ip.kind=tor|vpn: 3 in 5m -> alert",
    }
    assert result.output.splitlines()[8].startswith("8 playbooks; SDKs send at once: ")


def test_check_warns_of_a_lockout_and_of_exemptions_that_exempt_nothing(
    tmp_path: Path, sqlite_storage: Storage
) -> None:
    """A playbook blocking users on failed logins lets anyone lock any account out; an
    ``exempt_users`` in a playbook grouped by ip (or ``exempt_ips`` by user) is never read:
    ``playbooks check`` says both, and ``serve`` the second at start."""
    text = """
[[playbook]]
id = "lock"
events = ["auth.login.failure"]
group_by = "user"
threshold = 4
window = "10m"
action = "block_user"
duration = "1h"
exempt_ips = ["198.51.100.230"]

[[playbook]]
id = "by-ip"
events = ["auth.login.failure"]
group_by = "ip"
threshold = 3
window = "10m"
action = "alert"
exempt_users = [{ username = "ci-bot" }]
"""
    path = playbook_file(tmp_path, TEMPLATES + text)
    checked = CliRunner().invoke(main, ["playbooks", "check", str(path)])
    assert checked.exit_code == 0, checked.output
    assert checked.stderr.splitlines() == [
        "warning: lock blocks users on auth.login.failure: anyone who types a username can "
        'fail 4 times and lock its owner out; consider action = "alert", or block_ip grouped '
        "by ip",
        "warning: playbook 'lock' has exempt_ips, which only a playbook grouped by ip reads "
        "(this one is grouped by user): they exempt nothing here",
        "warning: playbook 'by-ip' has exempt_users, which only a playbook grouped by user "
        "reads (this one is grouped by ip): they exempt nothing here",
    ]
    said = never_firing(load_playbooks(str(path)).playbooks, ip_intel=True, geoip=True, travel=True)
    assert [line.split(" has ")[0] for line in said] == ["playbook 'lock'", "playbook 'by-ip'"]
    (tmp_path / "templates").mkdir()
    templates = playbook_file(tmp_path / "templates", TEMPLATES)
    quiet = CliRunner().invoke(main, ["playbooks", "check", str(templates)])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_check_and_serve_warn_of_a_playbook_another_s_blocks_keep_under_its_threshold(
    tmp_path: Path,
) -> None:
    """The templates' credential stuffing counted 15 accounts in 15 minutes from one IP,
    which brute-force-ip blocks at 5 failures in 5 minutes for an hour: an address made 13
    at most, and it never fired."""
    old = TEMPLATES.replace(
        'threshold = 8\nwindow = "15m"\naction = "block_ip"\nduration = "6h"',
        'threshold = 15\nwindow = "15m"\naction = "block_ip"\nduration = "6h"',
    )
    assert old != TEMPLATES
    path = playbook_file(tmp_path, old)
    checked = CliRunner().invoke(main, ["playbooks", "check", str(path)])
    assert checked.exit_code == 0, checked.output
    said = (
        "playbook 'credential-stuffing' can fire only where 'brute-force-ip' does not block: "
        "'brute-force-ip' blocks an address at 5 of its events in 5m for 1h, so an address "
        "makes at most 13 in the 15m window of 'credential-stuffing', under its threshold of 15"
    )
    assert checked.stderr.splitlines() == [f"warning: {said}"]
    playbooks = load_playbooks(str(path)).playbooks
    assert never_firing(playbooks, ip_intel=True, geoip=True, travel=True) == [said]
    # Reachable: 13 (or fewer) in 15m; a blocker in monitor mode, with a `where`, or whose
    # block ends within the window lets addresses go on.
    for reachable in (
        old.replace("threshold = 15\n", "threshold = 13\n"),
        old.replace('id = "brute-force-ip"\n', 'id = "brute-force-ip"\nmode = "monitor"\n'),
        old.replace(
            'window = "5m"\naction = "block_ip"\nduration = "1h"',
            'window = "5m"\naction = "block_ip"\nduration = "10m"',
        ),
        old.replace('id = "brute-force-ip"\n', 'id = "brute-force-ip"\nwhere = { app = "x" }\n'),
        old.replace('id = "brute-force-ip"\n', 'id = "brute-force-ip"\ncooldown = "1d"\n'),
    ):
        assert reachable != old
        books = parse_playbooks(reachable).playbooks
        assert never_firing(books, ip_intel=True, geoip=True, travel=True) == []


def test_check_and_test_warn_of_a_name_close_to_a_standard_one(
    tmp_path: Path, sqlite_storage: Storage
) -> None:
    typo = TEMPLATES.replace('events = ["auth.signup"]', 'events = ["auth.sigup"]')
    typo += '\n[[playbook]]\nid = "own"\nevents = ["app.checkout"]\ngroup_by = "ip"\n'
    typo += 'threshold = 3\nwindow = "1m"\naction = "alert"\n'
    path = playbook_file(tmp_path, typo)
    checked = CliRunner().invoke(main, ["playbooks", "check", str(path)])
    assert checked.exit_code == 0, checked.output
    assert checked.stderr.splitlines() == [
        "warning: signup-abuse reads 'auth.sigup', which is not a standard event name: did "
        "you mean 'auth.signup'? (an app's own event names are fine; this one fires only if "
        "the app tracks it)"
    ]
    db = sqlite_storage.path  # type: ignore[attr-defined]
    tested = CliRunner().invoke(main, ["playbooks", "test", str(path), "--db", db])
    assert tested.exit_code == 0 and "did you mean 'auth.signup'?" in tested.stderr


def test_the_backtest_says_a_private_address_would_be_alerted_on_not_blocked(
    tmp_path: Path, armed: Collector
) -> None:
    for i in range(5):
        armed.post("/v1/events", envelope([failure("192.168.1.20", f"u{i}")]))
        armed.post("/v1/events", envelope([failure("198.51.100.20", f"v{i}")]))
    db = armed.storage.path  # type: ignore[attr-defined]
    path = str(playbook_file(tmp_path))
    result = CliRunner().invoke(main, ["playbooks", "test", path, "--db", db])
    assert result.exit_code == 0, result.output
    lines = {line.split("  ")[1].strip(): line for line in result.stdout.splitlines()}
    assert "192.168.1.20" in lines["alert"] and "not blocked: a private address" in lines["alert"]
    assert "198.51.100.20" in lines["block ip"]


def test_a_file_with_a_byte_order_mark_loads_and_one_not_utf8_names_its_line(
    tmp_path: Path,
) -> None:
    """Notepad writes a byte-order mark first ("not valid TOML" at line 1, column 1,
    before); a Latin-1 file was refused without a line."""

    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + TEMPLATES.encode())
    assert len(load_playbooks(bom).playbooks) == 6
    latin = tmp_path / "latin.toml"
    latin.write_bytes(TEMPLATES.encode() + b'\n[[playbook]]\nid = "caf\xe9"\n')
    with pytest.raises(PlaybookError) as refused:
        load_playbooks(latin)
    line = TEMPLATES.count("\n") + 3
    assert str(refused.value) == (
        f"{latin}:{line}: not UTF-8 (byte 0xe9: invalid continuation byte): save it as UTF-8"
    )


def test_a_file_of_no_playbook_is_said_as_a_warning(tmp_path: Path, caplog: Any) -> None:
    """Every protection off (an empty file, or one cut short while it was saved): said at
    INFO as any reload, before."""
    path = playbook_file(tmp_path)
    source = PlaybookSource(path)
    path.write_text("")
    source.reload_requested = True
    assert source.current().empty
    (said,) = [r for r in caplog.records if "loaded from" in r.getMessage()]
    assert said.levelname == "WARNING" and "no playbook in force" in said.getMessage()
    from sqreen.server._cli_serve import _playbooks_loaded

    said_at_start = _playbooks_loaded(PlaybookSource(path))
    assert said_at_start.startswith(f"0 playbooks loaded from {path}: no playbook in force")


def test_a_bad_reload_keeps_the_playbooks_in_force(tmp_path: Path, caplog: Any) -> None:
    path = playbook_file(tmp_path)
    source = PlaybookSource(path)
    assert len(source.current().playbooks.playbooks) == 6
    path.write_text(TEMPLATES + "\nthis is not toml\n")
    source.reload_requested = True
    assert len(source.current().playbooks.playbooks) == 6
    assert any("not reloaded" in r.getMessage() for r in caplog.records)
    path.write_text(
        TEMPLATES.split("[[playbook]]", 2)[0]
        + "[[playbook]]"
        + TEMPLATES.split("[[playbook]]", 2)[1]
    )
    source.reload_requested = True
    assert [p.id for p in source.current().playbooks.playbooks] == ["brute-force-ip"]


def test_a_value_nested_past_the_toml_readers_depth_is_one_line_at_a_reload(
    tmp_path: Path, caplog: Any
) -> None:
    path = playbook_file(tmp_path)
    source = PlaybookSource(path)
    deep = TEMPLATES + '\n[[playbook]]\nid = "x"\nwhere = { "request.route" = '
    path.write_text(deep + "[" * 2000 + "]" * 2000 + " }\n")
    with pytest.raises(PlaybookError, match="a value nests too deeply to read"):
        load_playbooks(path)
    source.reload_requested = True
    assert len(source.current().playbooks.playbooks) == 6
    (said,) = [r for r in caplog.records if "not reloaded" in r.getMessage()]
    assert "nests too deeply" in said.getMessage() and said.exc_info is None


def test_an_error_of_ours_at_a_reload_is_said_once_per_content(
    tmp_path: Path, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher checks every second: an error that is not the file's (a bug) was logged
    with its traceback each time until the file changed."""
    from sqreen.server.playbooks import _source

    path = playbook_file(tmp_path)
    source = PlaybookSource(path)

    def broken(text: str, source: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(_source, "parse_playbooks", broken)
    path.write_text(TEMPLATES + "\n")
    for _ in range(3):
        source.check()
    failed = [r for r in caplog.records if "reading the playbooks failed" in r.getMessage()]
    assert len(failed) == 1 and "the 6 in force stay" in failed[0].getMessage()
    assert len(source.current().playbooks.playbooks) == 6


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_two_collectors_count_one_window(
    backend: str, tmp_path: Path, serve: Callable[..., ServeProcess], request: Any
) -> None:
    """Five failures spread over two collector processes on one database (two `serve` on one
    SQLite file, as `--workers 2` runs; two collectors on one PostgreSQL) block at the fifth,
    once."""
    db = (
        str(tmp_path / "w.db")
        if backend == "sqlite"
        else str(request.getfixturevalue("postgres_db"))
    )
    storage = open_storage(db)
    token = new_token()
    storage.create_key("k", hash_token(token))
    storage.close()
    path = str(playbook_file(tmp_path))
    collectors = [serve(db, None, "--playbooks", path) for _ in range(2)]
    blocked_at = []
    for i in range(1, 9):
        reply = httpx.post(
            collectors[i % 2].url + "/v1/events",
            json=envelope([failure("198.51.100.99", f"w{i}")]),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        if any(it.get("ip") == "198.51.100.99/32" for it in reply.json()["actions"]["items"]):
            blocked_at.append(i)
    assert blocked_at[0] == 5
    storage = open_storage(db)
    try:
        assert len(storage.list_alerts(playbook="brute-force-ip")) == 1
        assert len(storage.list_blocks()) == 1
    finally:
        storage.close()


def test_a_watched_source_reads_the_file_in_its_watcher_never_in_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While its watcher runs, taking the engine in force (what each batch does) touches no
    file; the watcher re-reads it at once when asked, from a signal handler say."""
    path = playbook_file(tmp_path)
    source = PlaybookSource(path)

    async def scenario() -> None:
        watcher = asyncio.create_task(source.watch())
        while source._wake is None:
            await asyncio.sleep(0.01)
        stats: list[object] = []
        real_stat = os.stat
        monkeypatch.setattr(os, "stat", lambda *a, **k: stats.append(a) or real_stat(*a, **k))
        for _ in range(1000):
            source.current()
        assert stats == []
        path.write_text("")
        source.request_reload()
        deadline = time.monotonic() + 30
        while source.current().playbooks.playbooks:
            assert time.monotonic() < deadline, "not reloaded"
            await asyncio.sleep(0.01)
        watcher.cancel()

    asyncio.run(scenario())
    assert source._wake is None


def test_an_sdk_watches_the_templates_enforcing_events_before_the_collector_says_which() -> None:
    """An SDK started while the collector is unreachable keeps its queue's reserve for
    ``DEFAULT_WATCH``: the names the templates' enforcing playbooks read, what a collector
    serving them would list."""
    from sqreen._delivery import DEFAULT_WATCH

    assert parse_playbooks(TEMPLATES).watched() == DEFAULT_WATCH


def test_check_warns_of_a_block_shorter_than_its_window(tmp_path: Path) -> None:
    """A block of 1 minute in a window of 10: once it ended, the user's next failure blocked
    them again (the failures before the block still in the window), which nothing said."""
    text = """
[[playbook]]
id = "short"
events = ["login.failed"]
group_by = "ip"
threshold = 3
window = "10m"
action = "block_ip"
duration = "1m"
"""
    checked = CliRunner().invoke(main, ["playbooks", "check", str(playbook_file(tmp_path, text))])
    assert checked.exit_code == 0, checked.output
    assert checked.stderr.splitlines() == [
        "warning: short blocks for 1m, less than its window (10m): when a block ends, the "
        "events before it are still in the window, and the key's next one blocks it again "
        "at once"
    ]


def test_check_warns_of_a_short_webhook_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``webhook_secret = "a"`` was taken without a word: anybody able to reach the receiver
    could then forge signed alerts."""
    hook = """
[[playbook]]
id = "x"
events = ["auth.login.failure"]
group_by = "ip"
threshold = 3
window = "5m"
action = "alert"
notify = ["https://hooks.example.com/x"]
"""
    for top, said in (
        ('webhook_secret = "a"\n', True),
        ('webhook_secret = "' + "k" * 32 + '"\n', False),
    ):
        path = playbook_file(tmp_path, top + hook)
        checked = CliRunner().invoke(main, ["playbooks", "check", str(path)])
        assert checked.exit_code == 0, checked.output
        assert ("the webhook secret is 1 characters" in checked.stderr) is said, checked.stderr
    monkeypatch.setenv("SQREEN_WEBHOOK_SECRET", "short")
    checked = CliRunner().invoke(main, ["playbooks", "check", str(playbook_file(tmp_path, hook))])
    assert "the webhook secret is 5 characters" in checked.stderr, checked.stderr
