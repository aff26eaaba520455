"""Delivery to a real HTTP receiver on 127.0.0.1: batching, retries, drops, bounds.

The end-to-end layer: each branch of the delivery logic is unit-tested on a scripted
transport and a fake clock in test_queue.py."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import sqreen
from tests.receiver import Receiver


def _track_from_threads(total: int, threads: int) -> None:
    per = total // threads

    def work(t: int) -> None:
        for i in range(per):
            sqreen.track("load.test", properties={"thread": t, "i": i})

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()


def test_ten_thousand_events_from_eight_threads_arrive_once(receiver: Receiver) -> None:
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.2, max_queue_size=20_000)
    _track_from_threads(10_000, 8)
    assert sqreen.flush(timeout=30)
    ids = receiver.ids()
    assert len(ids) == 10_000
    assert len(set(ids)) == 10_000
    assert client.stats()["sent"] == 10_000
    # batches respect batch_size, and every request carried the token and gzip
    assert max(len(b["events"]) for b in receiver.batches) <= 500
    assert all(
        h.get("Content-Encoding") == "gzip"
        for h in receiver.headers
        if int(h["Content-Length"]) > 2000
    )


def test_token_is_sent_as_bearer(receiver: Receiver) -> None:
    sqreen.init(endpoint=receiver.url, token="sqk_secret", flush_interval=0.2)
    sqreen.track("x")
    assert sqreen.flush(timeout=5)
    assert receiver.headers[-1]["Authorization"] == "Bearer sqk_secret"
    assert receiver.batches[-1]["sdk"]["name"] == "sqreen-sdk-python"
    assert set(receiver.batches[-1]["app"]) == {"name", "host", "pid", "framework"}


@pytest.mark.slow
def test_receiver_down_then_back(receiver: Receiver) -> None:
    receiver.stop()
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.2)
    for i in range(300):
        sqreen.track("outage.test", properties={"i": i})
    sqreen.flush(timeout=0.5)  # starts the flusher; fails against the closed port
    deadline = time.monotonic() + 30
    while client.queue._attempt < 3:  # three failed deliveries, backing off
        assert time.monotonic() < deadline, "the flusher stopped retrying"
        time.sleep(0.05)
    assert receiver.events == []
    assert client.stats()["queue_depth"] == 300
    receiver.start()
    for i in range(300, 400):
        sqreen.track("outage.test", properties={"i": i})
    assert sqreen.flush(timeout=45)
    ids = receiver.ids()
    assert len(ids) == 400 and len(set(ids)) == 400
    assert sorted(e["properties"]["i"] for e in receiver.events) == list(range(400))


def test_server_error_then_success_is_delivered_after_retry(receiver: Receiver) -> None:
    receiver.respond(500, times=2, path="/v1/events")
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.1, heartbeat_interval=3600)
    sqreen.track("retry.test")
    assert sqreen.flush(timeout=15)
    assert [e["name"] for e in receiver.events] == ["retry.test"]
    statuses = [status for _, path, status in receiver.requests if path == "/v1/events"]
    assert statuses[:2] == [500, 500] and statuses[-1] == 200
    assert client.stats()["sent"] == 1


def test_429_with_retry_after_is_honoured(receiver: Receiver) -> None:
    receiver.respond(429, headers={"Retry-After": "2"})
    sqreen.init(endpoint=receiver.url, flush_interval=0.1, heartbeat_interval=3600)
    sqreen.track("rate.limited")
    assert sqreen.flush(timeout=15)
    (first, _, status), *later = receiver.requests
    assert status == 429
    assert later, "the event was never retried"
    assert all(t - first >= 2.0 for t, _, _ in later)
    assert [e["name"] for e in receiver.events] == ["rate.limited"]


def test_400_is_dropped_counted_and_not_retried(receiver: Receiver, sqreen_log) -> None:  # type: ignore[no-untyped-def]
    receiver.respond(400, path="/v1/events")
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.1, heartbeat_interval=3600)
    for i in range(3):
        sqreen.track("bad.batch", properties={"i": i})
    assert sqreen.flush(timeout=5)  # returns once the batch is settled: dropped, not queued
    event_posts = [r for r in receiver.requests if r[1] == "/v1/events"]
    assert len(event_posts) == 1
    assert client.stats()["dropped"]["rejected"] == 3
    assert client.stats()["sent"] == 0
    assert any("refused" in r.getMessage() for r in sqreen_log.records)


def test_413_splits_the_batch(receiver: Receiver) -> None:
    receiver.respond(413, path="/v1/events")
    # Sent when flushed, all 8 together: a flush interval could send the first alone, and a
    # 413 for one event drops it (nothing left to split).
    sqreen.init(endpoint=receiver.url, flush_interval=3600, heartbeat_interval=3600)
    for i in range(8):
        sqreen.track("big.batch", properties={"i": i})
    assert sqreen.flush(timeout=10)
    assert sorted(e["properties"]["i"] for e in receiver.events) == list(range(8))
    # the refused request held all 8; later ones hold halves (or less)
    sizes = [len(b["events"]) for b in receiver.batches]
    assert max(sizes) <= 4


def test_rejected_events_in_a_reply_are_counted(receiver: Receiver) -> None:
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.1)
    sqreen.track("fine")
    assert sqreen.flush(timeout=5)
    assert client.stats()["dropped"]["rejected"] == 0


def test_queue_smaller_than_a_burst_counts_every_event(receiver: Receiver) -> None:
    receiver.stop()
    client = sqreen.init(endpoint=receiver.url, max_queue_size=500, flush_interval=0.1)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        _track_from_threads(40_000, 8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stats = client.stats()
    accepted = 40_000 - stats["dropped"]["queue_full"]
    assert stats["tracked"] == 40_000
    assert accepted + stats["dropped"]["queue_full"] == stats["tracked"]
    assert accepted <= 500 + 0  # the bound is exact
    # 40 000 events tracked, at most 500 held: memory stays at the scale of the queue
    assert peak - base < 4 * 1024 * 1024
    receiver.start()
    assert sqreen.flush(timeout=60)
    stats = client.stats()
    assert stats["sent"] == accepted
    assert stats["sent"] + sum(stats["dropped"].values()) == stats["tracked"]
    assert len(receiver.events) == accepted


def test_byte_bound_drops_large_events_first(receiver: Receiver) -> None:
    receiver.stop()
    client = sqreen.init(endpoint=receiver.url, max_queue_bytes=200_000, flush_interval=0.1)
    big = {f"k{i}": "x" * 3000 for i in range(10)}
    results = [sqreen.track("big", properties=big) for _ in range(50)]
    assert results.count(True) <= 7  # ~30 KB each within 200 KB
    assert client.stats()["dropped"]["queue_full"] == results.count(False)
    assert client.stats()["queue_bytes"] <= 200_000


def test_max_batch_bytes_cuts_batches_and_keeps_the_order(receiver: Receiver) -> None:
    client = sqreen.init(endpoint=receiver.url, max_batch_bytes=200_000, flush_interval=0.1)
    big = {f"k{i}": "x" * 3000 for i in range(10)}  # about 30 KB an event
    for i in range(12):
        assert sqreen.track("big", properties={**big, "i": i})
    assert sqreen.flush(timeout=10)
    sizes = [len(json.dumps(b["events"])) for b in receiver.batches]
    assert len(sizes) >= 3 and max(sizes) <= 200_000
    assert [e["properties"]["i"] for e in receiver.events] == list(range(12))
    assert client.stats()["sent"] == 12


class _CountingLock:
    """A lock that counts its acquisitions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acquired = 0

    def __enter__(self) -> None:
        self.lock.acquire()
        self.acquired += 1

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_the_flusher_takes_the_callers_lock_once_a_batch() -> None:
    """put() and the flusher share one lock. Taken once an event by the flusher, the two
    threads fell into a convoy (each blocked on the lock the other held while waiting for
    the GIL): track() in a request took 40-90 us instead of 4 while the flusher was busy."""
    client = sqreen.init(transport="memory:")
    client.queue.start = lambda: None  # type: ignore[method-assign]  # this test prepares
    for i in range(1200):
        client.track("many", properties={"i": i})
    counting = _CountingLock()
    client.queue._lock = counting  # type: ignore[assignment]
    batches = [client.queue._prepare() for _ in range(3)]
    assert [len(b) for b in batches] == [500, 500, 200]
    assert counting.acquired == 3
    sent = [json.loads(p.data)["properties"]["i"] for b in batches for p in b]
    assert sent == list(range(1200))


def test_action_set_from_reply_is_applied(receiver: Receiver) -> None:
    receiver.block(
        [
            {
                "id": "b1",
                "type": "block_user",
                "user": {"uid": "666"},
                "expires_in": 60,
                "reason": "attack",
            }
        ]
    )
    sqreen.init(endpoint=receiver.url, flush_interval=0.1)
    sqreen.track("x")
    assert sqreen.flush(timeout=5)
    assert sqreen.is_blocked({"uid": "666"})
    assert not sqreen.is_blocked({"uid": "1"})
    receiver.block([])
    sqreen.track("y")
    assert sqreen.flush(timeout=5)
    assert not sqreen.is_blocked({"uid": "666"})


def _attempt(ip: str, path: str) -> dict[str, str]:
    """The WSGI environ of a request from ``ip`` (no proxy in front)."""
    return {"REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "", "REMOTE_ADDR": ip}


def test_a_flood_while_the_collector_is_down_cannot_hide_the_watched_login_failures(
    receiver: Receiver,
) -> None:
    """The attack on the playbooks: flood an endpoint the app tracks while the collector does
    not answer, so that the queue is full, then brute-force the login. The failures the
    playbooks watch take the room kept for them, and arrive once the collector answers."""
    receiver.block([], watch=["auth.login.failure"])
    client = sqreen.init(endpoint=receiver.url, max_queue_size=200, flush_interval=0.1)
    assert sqreen.flush(timeout=5)  # starts the flusher, whose first round gets the action set
    assert client.queue.first_actions.wait(10)
    assert client.queue.watched == {"auth.login.failure"}
    receiver.stop()

    def flood(n: int) -> list[bool]:
        return [
            sqreen.track("search", request=_attempt("203.0.113.9", "/search")) for _ in range(n)
        ]

    assert flood(2_000).count(True) == 180  # a tenth of the queue is kept
    failures = [
        sqreen.track(
            "auth.login.failure",
            user_identifiers={"uid": f"u{i}"},
            request=_attempt("203.0.113.9", "/login"),
        )
        for i in range(5)
    ]
    assert failures == [True] * 5
    assert flood(500).count(True) == 0  # the reserve is not the flood's
    stats = client.stats()
    assert stats["queue_depth"] == 185 and stats["dropped"]["queue_full"] == 2_320

    receiver.start()
    arrived = receiver.wait_for(5, timeout=60, name="auth.login.failure")
    assert sorted(e["user"]["uid"] for e in arrived) == [f"u{i}" for i in range(5)]
    assert sqreen.flush(timeout=60)
    stats = client.stats()
    assert stats["sent"] == 185 and len(receiver.wait_for(185, timeout=0)) == 185
    assert stats["sent"] + sum(stats["dropped"].values()) == stats["tracked"] == 2_505


def _five_tracked(receiver: Receiver, spool: Path, shutdown_timeout: float) -> Any:
    """A client sending to ``receiver`` (flushing only when told) with five events queued."""
    client = sqreen.init(
        endpoint=receiver.url,
        flush_interval=3600,
        heartbeat_interval=3600,
        shutdown_timeout=shutdown_timeout,
        spool=str(spool),
    )
    for i in range(5):
        sqreen.track("exit.test", properties={"i": i})
    return client


def test_after_a_lifespan_shutdown_that_failed_the_exit_tries_once(
    receiver: Receiver, tmp_path: Path
) -> None:
    """An ASGI server's lifespan shutdown found the collector failing and kept its events in
    the spool: the delivery at exit tries them once more, not for a second whole
    ``shutdown_timeout`` (a server took twice the timeout to stop)."""
    receiver.respond(503, times=100, path="/v1/events")
    client = _five_tracked(receiver, tmp_path, shutdown_timeout=30)
    assert not client.flush_or_spool(30)  # the lifespan's: the first failure ends it
    assert len(list(tmp_path.glob("*/*.batch"))) == 1
    assert not client.shutdown()
    tries = [status for _, path, status in receiver.requests if path == "/v1/events"]
    assert tries == [503, 503]  # the lifespan's, then the exit's one try
    assert len(list(tmp_path.glob("*/*.batch"))) == 1  # kept for the next process


def test_a_lifespan_that_gave_up_does_not_shorten_a_later_exit(
    receiver: Receiver, tmp_path: Path
) -> None:
    """A process that runs several lifespans (a test session's TestClients): one that found
    the collector failing does not cut the delivery at exit once the collector takes
    batches again (the events tracked after were left undelivered)."""
    receiver.respond(503, times=1, path="/v1/events")
    client = _five_tracked(receiver, tmp_path, shutdown_timeout=30)
    clock, ahead = client.queue._clock, [0.0]
    client.queue._clock = lambda: clock() + ahead[0]  # driven below, not slept through
    assert not client.flush_or_spool(0.5)  # gave up: the collector failed
    ahead[0] = 1.0  # that lifespan's timeout is over
    assert client.flush_or_spool(30)  # the next lifespan's: it takes them
    for i in range(3):
        sqreen.track("late.event", properties={"i": i})
    assert client.shutdown()
    assert len([e for e in receiver.events if e["name"] == "late.event"]) == 3


def test_at_exit_a_collector_refusing_once_is_retried_and_delivered(
    receiver: Receiver, tmp_path: Path
) -> None:
    """A 503 at exit (a collector restarting) is retried within ``shutdown_timeout``, a spool
    or not: the spool of a process whose container goes away, or of a job that never runs
    again, is lost with it. (Ending at the first failed send, as the lifespan shutdown does,
    delivered none of these.)"""
    receiver.respond(503, times=1, path="/v1/events")
    client = _five_tracked(receiver, tmp_path, shutdown_timeout=5)
    assert client.shutdown()
    tries = [status for _, path, status in receiver.requests if path == "/v1/events"]
    assert tries == [503, 200]
    assert sorted(e["properties"]["i"] for e in receiver.events) == list(range(5))
    assert not list(tmp_path.glob("*/*.batch"))  # nothing left for a next process
