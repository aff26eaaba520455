"""The action set in replies: a few bytes when unchanged, a diff when it changed, the whole
set for an SDK that holds none (or takes no diff); read once per process, not once a reply;
and the long-polls one key may hold."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from sqreen._blocking import Blocklist
from sqreen._client_ip import TrustedProxies
from sqreen.server.blocks import BlockService, ip_block, user_block
from sqreen.server.storage import BlockSpec, NewAlert, Storage, WindowWrite, open_storage

from .conftest import (
    Collector,
    ServeProcess,
    action_version,
    add_key,
    envelope,
    wait_for,
    wire_event,
)


def batch(version: int | None = None, diff: bool = True) -> dict[str, Any]:
    body = envelope([wire_event()])
    if version is not None:
        body["actions"] = {"version": version, "diff": diff} if diff else {"version": version}
    return body


def heartbeat(version: int, diff: bool = True) -> dict[str, Any]:
    body = envelope([])
    del body["events"]
    body["actions"] = {"version": version, "diff": diff}
    return body


def make_blocks(storage: Storage, count: int, start: int = 0) -> None:
    service = BlockService(storage, max_active=None)
    for n in range(start, start + count):
        network = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
        reason = f"brute-force-ip: 5 auth.login.failure in 5m for ip={network}"
        wanted = ip_block(network, duration=timedelta(hours=1), reason=reason)
        service.create(wanted, created_by="playbook:brute-force-ip")


@pytest.mark.slow
def test_ten_thousand_blocks_cost_a_few_bytes_a_reply(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    db = str(tmp_path / "sqreen.db")
    token = add_key(db)
    storage = open_storage(db)
    make_blocks(storage, 10_000)
    collector = serve(db, None, "--max-blocks", "20000")
    by_hand = BlockService(storage, max_active=20_000)  # (sqreen block --max-blocks 20000)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, timeout=30) as client:

        def post(path: str, body: dict[str, Any]) -> httpx.Response:
            reply = client.post(collector.url + path, json=body)
            assert reply.status_code == 200, reply.text
            return reply

        first = post("/v1/events", batch()).json()["actions"]  # a new SDK: the whole set
        version = first["version"]
        assert len(first["items"]) == 10_000
        current = post("/v1/events", batch(version))
        assert current.json()["actions"] == {"version": version, "unchanged": True}
        assert len(current.content) < 120
        beat = post("/v1/heartbeat", heartbeat(version))
        assert beat.json() == {"actions": {"version": version, "unchanged": True}}
        assert len(beat.content) < 60

        made = by_hand.create(ip_block("192.0.2.7"), created_by="cli:test")
        changed = post("/v1/events", batch(version))
        diff = changed.json()["actions"]
        assert (diff["version"], diff["since"], diff["remove"]) == (version + 1, version, [])
        assert [item["id"] for item in diff["add"]] == [str(made.id)]
        assert len(changed.content) < 400
        lifted = by_hand.lift(made.id - 1, lifted_by="cli:test")
        assert lifted is not None
        beat = post("/v1/heartbeat", heartbeat(version + 1))
        assert beat.json()["actions"]["remove"] == [str(lifted.id)]
        assert len(beat.content) < 120

        old_sdk = post("/v1/events", batch(version, diff=False)).json()["actions"]
        assert old_sdk["version"] == version + 2 and len(old_sdk["items"]) == 10_000
        whole = client.get(collector.url + "/v1/actions").json()["actions"]
        assert whole == old_sdk

        polled: list[dict[str, Any]] = []
        params = {"version": version + 2, "wait": 20, "diff": 1}
        poll = threading.Thread(
            target=lambda: polled.append(client.get(collector.url + "/v1/actions", params=params))
        )
        poll.start()
        by_hand.create(user_block({"uid": "7"}), created_by="cli:test")
        poll.join(30)
        (reply,) = polled
        woken = reply.json()["actions"]
        assert woken["since"] == version + 2 and woken["add"][0]["user"] == {"uid": "7"}
        assert len(reply.content) < 400
    storage.close()


def test_the_set_is_read_whole_once_per_process(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every reply reads the version (one row); the set itself is read whole once, then
    only what changed: with 300 blocks, 40 replies of every kind read 3 rows."""
    storage = collector.storage
    make_blocks(storage, 300)
    whole, changes = [], []
    action_set, action_changes = storage.action_set, storage.action_changes
    monkeypatch.setattr(storage, "action_set", lambda: whole.append(1) or action_set())
    monkeypatch.setattr(
        storage,
        "action_changes",
        lambda since: changes.append(since) or action_changes(since),
    )
    frozen = storage.now()  # (replies are re-rendered each FRESH second: not in this test)
    monkeypatch.setattr(storage, "now", lambda: frozen)
    version = storage.action_version()
    for n in range(3):
        for _ in range(10):
            replies = [
                collector.post("/v1/events", batch()),
                collector.post("/v1/events", batch(version)),
                collector.post("/v1/events", batch(version - 1)),
                collector.post("/v1/heartbeat", heartbeat(version)),
            ]
            assert {r.status_code for r in replies} == {200}
        make_blocks(storage, 1, start=1000 + n)
        version += 1
    assert whole == [1]
    # Each version: one read of what changed since the one in memory, one per diff asked.
    assert len(changes) <= 3 * 2


def test_an_sdk_following_diffs_holds_what_a_new_one_receives_whole(
    collector: Collector,
) -> None:
    """Blocks made, lifted and expired in any order: the SDK that applied each diff holds
    the same blocks as one given the whole set."""
    rng = random.Random(14)
    service = BlockService(collector.storage)

    def now() -> float:  # the SDK's clock: the collector's
        return collector.clock().timestamp()

    follower = Blocklist(TrustedProxies([]), clock=now)
    made: list[int] = []
    diffs = 0
    for step in range(60):
        action = rng.random()
        if action < 0.6 or not made:
            wanted = (
                ip_block(f"198.51.{rng.randrange(256)}.{rng.randrange(256)}", duration=600)
                if rng.random() < 0.5
                else user_block({"uid": str(step)}, reason="r")
            )
            made.append(service.create(wanted, created_by="test").id)
        elif action < 0.9:
            service.lift(made.pop(rng.randrange(len(made))), lifted_by="test")
        else:
            collector.clock.advance(minutes=11)  # every IP block made so far expires
        if rng.random() < 0.6:  # the SDK falls behind, now and then
            continue
        reply = collector.post("/v1/events", batch(follower.version)).json()["actions"]
        diffs += "since" in reply
        follower.apply(reply)
        fresh = Blocklist(TrustedProxies([]), clock=now)
        fresh.apply(collector.post("/v1/events", batch()).json()["actions"])
        assert follower.version == fresh.version
        assert _held(follower) == _held(fresh)
    assert diffs > 10


def _held(blocklist: Blocklist) -> list[tuple[str, str]]:
    """The blocks in force (id and whom), deadlines aside (the two differ by the ms)."""
    items = blocklist.snapshot()["items"]
    return sorted(
        (item["id"], json.dumps(item.get("user") or item.get("ip")))
        for item in items
        if item["expires_in"] is None or item["expires_in"] > 0
    )


@pytest.mark.slow
def test_one_key_holds_a_bounded_number_of_long_polls(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """Past --max-polls-per-key, a key's next long-poll is answered at once (its SDK asks
    again after its wait); the held ones, and another key's, still get the change."""
    db = str(tmp_path / "sqreen.db")
    fleet, other = add_key(db, "fleet"), add_key(db, "other")
    log = tmp_path / "serve.log"
    collector = serve(db, None, "--max-polls-per-key", "2", log=log)
    params = {"version": action_version(collector.url, fleet), "wait": 30, "diff": 1}
    answers: dict[str, dict[str, Any]] = {}

    def poll(name: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        while True:  # (a probe below may hold a slot for its second as this one arrives)
            reply = httpx.get(
                collector.url + "/v1/actions", params=params, headers=headers, timeout=60
            )
            if reply.status_code != 429:
                break
            time.sleep(0.05)
        answers[name] = reply.json()["actions"]

    held = [threading.Thread(target=poll, args=(f"fleet {n}", fleet)) for n in range(2)]
    held.append(threading.Thread(target=poll, args=("other", other)))
    for thread in held:
        thread.start()
    _until(lambda: _third_poll(collector.url, fleet, params).status_code == 429)
    refused = _third_poll(collector.url, fleet, params)
    assert refused.headers["retry-after"] == "30" and "API key #1" in refused.json()["error"]
    assert all(thread.is_alive() for thread in held)  # still held, all three
    storage = open_storage(db)
    try:
        BlockService(storage).create(ip_block("192.0.2.9"), created_by="cli:test")
    finally:
        storage.close()
    for thread in held:
        thread.join(30)
    assert sorted(answers) == ["fleet 0", "fleet 1", "other"]
    assert all(answer["version"] == params["version"] + 1 for answer in answers.values())
    lines = [line for line in log.read_text().splitlines() if "long-polls" in line]
    assert len(lines) == 1 and "API key #1" in lines[0] and "--max-polls-per-key" in lines[0]


@pytest.mark.slow
def test_a_long_poll_whose_client_hung_up_gives_its_slot_back_at_once(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """A client that closes its long-poll (a process gone, a proxy's timeout, an attacker
    opening and closing polls) holds none of its key's --max-polls-per-key: the key's next
    poll is held, not refused for the rest of the minute the closed ones asked for."""
    db = str(tmp_path / "sqreen.db")
    fleet = add_key(db, "fleet")
    collector = serve(db, None, "--max-polls-per-key", "2")
    held = action_version(collector.url, fleet)
    params = {"version": held, "wait": 60}
    at_once = {"version": 10**9, "wait": 60}
    request = (
        f"GET /v1/actions?version={held}&wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {fleet}\r\n\r\n"
    ).encode()
    for _ in range(3):  # each time, every slot the key has
        polls = [socket.create_connection(("127.0.0.1", collector.port)) for _ in range(2)]
        for poll in polls:
            poll.sendall(request)
        # Both held: a probe for a version the collector never had is answered at once once
        # its slot is checked, so it holds none long enough to take one from the two.
        wait_for(lambda: _third_poll(collector.url, fleet, at_once).status_code == 429, 10)
        _until(lambda: _third_poll(collector.url, fleet, params).status_code == 429)
        for poll in polls:
            poll.close()
        hung_up = time.monotonic()
        wait_for(lambda: _third_poll(collector.url, fleet, params).status_code == 200, 10)
        assert time.monotonic() - hung_up < 5


def _third_poll(url: str, token: str, params: dict[str, Any]) -> httpx.Response:
    """A third long-poll of the key (refused once two are held; else held a second)."""
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(url + "/v1/actions", params={**params, "wait": 1}, headers=headers)


def _until(check: Callable[[], bool], attempts: int = 50) -> None:
    for _ in range(attempts):
        if check():
            return
    raise AssertionError("never")


def test_what_changed_since_a_version_on_both_databases(storage: Storage) -> None:
    """Each change stamps its block with the version it took (made, extended by a playbook,
    lifted): what changed since version n is those blocks, as of now, with the version."""
    service = BlockService(storage)
    start = storage.action_version()
    short = service.create(ip_block("192.0.2.1", duration=timedelta(minutes=5)), created_by="t")
    kept = service.create(user_block({"uid": "7"}, duration=600), created_by="t")
    middle = storage.action_version()
    assert middle == start + 2
    assert service.lift(short.id, lifted_by="t") is not None
    now = storage.now()
    spec = BlockSpec("block_user", {"uid": "7"}, None, timedelta(hours=1), "r", "playbook:x")
    alert = NewAlert("x", "user", "uid=7", 5, now, now, 5, 5, (1,), "enforce", "block_user",
                     "s", spec)  # fmt: skip
    (stored,) = storage.update_windows(
        [("s", "uid=7")], [], [], lambda found, quiet: WindowWrite({}, [alert])
    )
    assert stored.block_id == kept.id  # the same user: extended to an hour, not a new block

    changes = storage.action_changes(middle)
    assert changes.version == middle + 2 and changes.since == middle
    assert [(b.id, b.changed_in) for b in changes.blocks] == [
        (short.id, middle + 1),
        (kept.id, middle + 2),
    ]
    lifted, extended = changes.blocks
    assert lifted.lifted_at is not None
    assert extended.expires_at is not None and extended.expires_at > now + timedelta(minutes=50)
    assert [b.id for b in storage.action_changes(start).blocks] == [short.id, kept.id]
    assert storage.action_changes(middle + 2).blocks == ()


def test_new_watched_names_take_one_version_for_every_process(storage: Storage) -> None:
    """Playbooks change no block, yet the names they watch reach SDKs only with a new
    version: the first process to record a new list takes one (in a thread of its own, off
    the reply path), the others (same list) none, and a collector without playbooks never
    does. Every process's replies carry the list recorded with the version, its own or not."""
    from sqreen.server.action_cache import ActionCache
    from sqreen.server.watched_names import WatchedNames

    def settled(cache: ActionCache, version: int) -> tuple[int, Any]:
        wait_for(lambda: cache.encoded(None)[0] == version, timeout=10)
        found, body = cache.encoded(None)
        return found, json.loads(body)["watch"]

    mine: list[frozenset[str]] = [frozenset()]
    theirs: list[frozenset[str]] = [frozenset()]
    woken: list[int] = []
    first = ActionCache(storage, WatchedNames(storage, lambda: mine[0], lambda: woken.append(1)))
    second = ActionCache(storage, WatchedNames(storage, lambda: theirs[0]))  # another process
    assert first.encoded(0) == (0, b'{"version":0,"unchanged":true}')
    assert second.encoded(0)[0] == 0
    wait_for(lambda: not first.watched.pending() and not second.watched.pending())
    assert storage.action_version() == 0 and not woken  # no playbooks: no version
    mine[0] = frozenset({"auth.login.failure", "auth.signup"})  # loaded in the first
    assert settled(first, 1) == (1, ["auth.login.failure", "auth.signup"])
    assert woken == [1]  # the long-polls are woken at once
    # The second has not reloaded yet: it hands out the version with the recorded list.
    assert settled(second, 1) == (1, ["auth.login.failure", "auth.signup"])
    theirs[0] = mine[0]  # then it does: nothing more to take
    second.encoded(1)
    wait_for(lambda: not second.watched.pending())
    assert storage.action_version() == 1
    mine[0] = theirs[0] = frozenset()  # playbooks removed: SDKs stop sending at once too
    assert settled(second, 2) == (2, [])
    first.encoded(2)
    wait_for(lambda: not first.watched.pending())
    assert storage.action_version() == 2
    # A block made meanwhile goes as before, with the list.
    BlockService(storage).create(ip_block("203.0.113.7", reason="r"), created_by="cli")
    assert settled(first, 3) == (3, [])


def test_a_failure_to_record_the_names_does_not_hold_or_fail_a_reply(
    storage: Storage, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that refuses the write (locked, read-only) leaves replies as they were,
    at once; the failure is said once, and the list is recorded when the store takes it."""
    from sqreen.server import watched_names
    from sqreen.server.action_cache import ActionCache
    from sqreen.server.watched_names import WatchedNames

    monkeypatch.setattr(watched_names, "RETRY_AFTER", 0.1)
    refuse = [True]
    note = storage.note_watched
    busy = threading.Event()  # a busy database: the write waits until it is set
    attempts: list[Any] = []

    def note_watched(names: Any) -> Any:
        attempts.append(names)
        busy.wait(30)
        if refuse[0]:
            raise RuntimeError("database is locked")
        return note(names)

    storage.note_watched = note_watched  # type: ignore[method-assign]
    cache = ActionCache(storage, WatchedNames(storage, lambda: frozenset({"auth.login.failure"})))
    with caplog.at_level("ERROR", logger="sqreen.server"):
        started = time.monotonic()
        for _ in range(10):
            assert cache.encoded(0) == (0, b'{"version":0,"unchanged":true}')
        assert time.monotonic() - started < 0.4  # none waited for the write
        busy.set()
        wait_for(lambda: bool(caplog.records))
        # Retried (a reply after RETRY_AFTER starts it), refused again: said once.
        wait_for(lambda: cache.encoded(0)[0] == 0 and len(attempts) >= 3)
        wait_for(lambda: not cache.watched.pending())
    assert [r.getMessage() for r in caplog.records] == [
        "sqreen: recording the watched event names failed"
    ]
    refuse[0] = False
    wait_for(lambda: cache.encoded(0)[0] == 1, timeout=10)
    assert json.loads(cache.encoded(None)[1])["watch"] == ["auth.login.failure"]
