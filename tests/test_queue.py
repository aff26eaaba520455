"""The queue's delivery logic on a scripted transport and a fake clock: no thread, no sleep.

Each test drives the flusher by hand with :meth:`Queue.step`, the round the flusher thread
runs in a loop, and moves the clock itself. The real-receiver tests (test_delivery.py) are
the end-to-end layer above these.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from sqreen._blocking import Blocklist
from sqreen._config import Config
from sqreen._delivery import MAX_BACKOFF, spellings
from sqreen._event import QueuedEvent
from sqreen._queue import Queue
from sqreen._request import RequestSnapshot
from sqreen._spool import Spool
from sqreen.transports import Reply, ScriptedTransport, replies


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def encode(event: QueuedEvent) -> bytes:
    return json.dumps({"id": str(event.seq), "name": event.name}).encode()


def make(
    *script: Reply, handler: Any = None, spool: Spool | None = None, **options: Any
) -> tuple[Queue, ScriptedTransport, Clock]:
    options.setdefault("heartbeat_interval", 3600)
    config = Config.resolve(options, environ={})
    clock = Clock()
    transport = ScriptedTransport(handler or replies(*script))
    blocklist = Blocklist(config.trusted, clock)
    queue = Queue(
        config,
        transport,
        blocklist,
        encode,
        lambda: {"sdk": {}, "app": {}},
        clock=clock,
        jitter=lambda low, high: high,  # the longest wait of each range: deterministic
        spool=spool,
    )
    queue.start = lambda: None  # type: ignore[method-assign]  # the test is the flusher
    return queue, transport, clock


def put(queue: Queue, n: int, name: str = "e", size: int = 300) -> None:
    for i in range(n):
        assert queue.put(QueuedEvent(i, name, 0.0, {}, None, None, None, False, size))


def event_posts(transport: ScriptedTransport) -> int:
    return sum(call.kind == "events" for call in transport.calls)


def test_the_first_round_fetches_the_action_set_then_waits_for_the_interval() -> None:
    queue, transport, clock = make(flush_interval=5)
    wake = queue.step()
    assert [c.kind for c in transport.calls] == ["heartbeat"]
    assert wake == clock.now + 5
    put(queue, 3)
    clock.advance(4.9)
    queue.step()
    assert event_posts(transport) == 0  # not due yet
    clock.advance(0.1)
    queue.step()
    assert [len(b) for b in transport.batches()] == [3]
    assert queue.stats()["sent"] == 3 and queue.stats()["queue_depth"] == 0


def test_full_batches_are_sent_without_waiting_for_the_interval_and_the_rest_with_it() -> None:
    queue, transport, clock = make(batch_size=10, flush_interval=5)
    queue.step()
    put(queue, 25)
    queue.step()
    assert [len(b) for b in transport.batches()] == [10, 10]
    clock.advance(4.9)
    queue.step()
    assert [len(b) for b in transport.batches()] == [10, 10]
    clock.advance(0.1)
    queue.step()
    assert [len(b) for b in transport.batches()] == [10, 10, 5]
    assert queue.stats()["sent"] == 25


def test_events_that_arrive_while_a_full_batch_goes_wait_for_the_interval() -> None:
    """Under steady load, what is tracked while a full batch is on the wire was sent at once
    as a batch of its own, then what arrived meanwhile, and so on: a stream of requests of a
    few dozen events (each a request's cost, on the app's server and the collector's). Only
    full batches go before the interval."""
    arrivals = iter(range(5))

    def handler(call: Any) -> Reply:
        if call.kind == "events" and next(arrivals, None) is not None:
            put(queue, 3, name="during")
        return Reply("ok")

    queue, transport, clock = make(handler=handler, batch_size=10, flush_interval=5)
    queue.step()
    put(queue, 10)
    queue.step()
    assert [len(b) for b in transport.batches()] == [10]  # the 3 that came wait
    assert queue.stats()["queue_depth"] == 3
    put(queue, 7)  # a full batch again: it goes, and what came during it waits
    queue.step()
    assert [len(b) for b in transport.batches()] == [10, 10]
    clock.advance(5)
    queue.step()  # the interval: everything, then nothing arrives any more
    assert [len(b) for b in transport.batches()] == [10, 10, 3, 3, 3, 3]
    assert queue.stats()["sent"] == queue.stats()["tracked"] == 32


def test_a_watched_event_still_leaves_at_once_with_what_waits() -> None:
    queue, transport, clock = make(batch_size=10, flush_interval=5)
    queue.step()
    queue.watched = queue.urgent = frozenset({"auth.login.failure"})
    put(queue, 4)
    put(queue, 1, name="auth.login.failure")
    clock.advance(0.2)
    queue.step()
    assert [len(b) for b in transport.batches()] == [5]


@pytest.mark.parametrize(
    "name", ["Auth.login.Failure", "auth.LOGIN.failure", "AUTH_login-Failure", "login.failure"]
)
def test_a_watched_standard_name_in_any_case_leaves_at_once(name: str) -> None:
    """The collector stores a standard name in any case and with any separator under that
    name, and its playbooks count it: such an event is sent at once too, not at the flush."""
    queue, transport, clock = make(batch_size=10, flush_interval=5)
    queue.step()
    queue.watched = frozenset({"auth.login.failure"})
    queue.urgent = spellings(queue.watched)
    put(queue, 1, name=name)
    put(queue, 1, name="Auth.Login.Failed")  # not a standard name: the app's own
    clock.advance(0.2)
    queue.step()
    assert [len(b) for b in transport.batches()] == [2]
    queue.urgent = frozenset()  # a new watch list: nothing kept of the last one
    put(queue, 1, name=name)
    clock.advance(0.2)
    queue.step()
    assert [len(b) for b in transport.batches()] == [2]


def test_server_errors_back_off_exponentially_up_to_the_cap() -> None:
    queue, transport, clock = make(
        handler=lambda call: Reply("retry", detail="HTTP 503"), flush_interval=0.1
    )
    queue.step()
    put(queue, 1)
    queue._flush_requested = True
    delays = []
    for _ in range(10):
        before = event_posts(transport)
        wake = queue.step()
        assert event_posts(transport) == before + 1
        delays.append(wake - clock.now)
        clock.advance(delays[-1] - 0.01)
        queue.step()  # just before the retry is due: nothing is sent
        assert event_posts(transport) == before + 1
        clock.advance(0.01)
        queue._flush_requested = True
    assert delays[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_BACKOFF]
    assert max(delays) == MAX_BACKOFF
    assert queue.stats()["queue_depth"] == 1  # still waiting, not dropped


def test_retries_come_no_faster_than_the_flush_interval() -> None:
    queue, _transport, clock = make(Reply("ok"), Reply("retry"), flush_interval=5)
    queue.step()
    put(queue, 1)
    clock.advance(5)
    wake = queue.step()  # fails; the 0.5 s backoff is shorter than the interval
    assert wake - clock.now == 5.0


def test_retry_after_is_honoured_for_events_and_heartbeats() -> None:
    queue, transport, clock = make(Reply("retry", retry_after=7.0), flush_interval=1)
    queue.step()  # the heartbeat is answered with Retry-After 7
    put(queue, 1)
    clock.advance(6.9)
    queue.step()
    assert event_posts(transport) == 0  # the collector asked everybody to wait
    clock.advance(0.1)
    queue.step()
    assert event_posts(transport) == 1


def test_a_retried_batch_arrives_whole_and_once() -> None:
    queue, transport, clock = make(Reply("ok"), Reply("retry"), Reply("retry"), flush_interval=1)
    queue.step()
    put(queue, 4)
    for _ in range(6):
        clock.advance(2)
        queue.step()
    assert [len(b) for b in transport.batches()] == [4, 4, 4]
    assert queue.stats()["sent"] == 4


def test_413_halves_the_batch_until_it_fits() -> None:
    def handler(call: Any) -> Reply:
        return Reply("split") if len(call.events) > 2 else Reply("ok")

    queue, transport, clock = make(handler=handler, flush_interval=1)
    queue.step()
    put(queue, 8)
    clock.advance(1)
    queue.step()
    assert [len(b) for b in transport.batches()] == [8, 4, 2, 2, 4, 2, 2]
    delivered = [e["id"] for b in transport.batches() if len(b) <= 2 for e in b]
    assert delivered == [str(i) for i in range(8)]  # in order, each once
    assert queue.stats()["sent"] == 8


def test_a_single_event_still_too_large_is_dropped_and_counted() -> None:
    queue, _transport, clock = make(handler=lambda call: Reply("split"), flush_interval=1)
    queue.step()
    put(queue, 2)
    clock.advance(1)
    queue.step()
    stats = queue.stats()
    assert stats["dropped"]["rejected"] == 2 and stats["queue_depth"] == 0


def test_400_is_dropped_counted_logged_and_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="sqreen")
    queue, transport, clock = make(Reply("ok"), Reply("drop", detail="HTTP 400: bad"))
    queue.step()
    put(queue, 3)
    for _ in range(5):
        clock.advance(10)
        queue.step()
    assert event_posts(transport) == 1
    assert queue.stats()["dropped"]["rejected"] == 3 and queue.stats()["sent"] == 0
    assert any("refused" in r.getMessage() and "HTTP 400" in r.getMessage() for r in caplog.records)


def test_events_the_reply_rejects_are_counted_each_once() -> None:
    queue, _transport, clock = make(Reply("ok"), Reply("ok", rejected=[1, 1, 3]))
    queue.step()
    put(queue, 5)
    clock.advance(5)
    queue.step()
    stats = queue.stats()
    assert (stats["sent"], stats["dropped"]["rejected"]) == (3, 2)


def test_max_retry_age_counts_from_enqueue() -> None:
    queue, _transport, clock = make(
        handler=lambda call: Reply("retry") if call.kind == "events" else Reply("ok"),
        max_retry_age=60,
        flush_interval=1,
    )
    queue.step()
    put(queue, 3)
    clock.advance(30)
    put(queue, 2)  # queued 30 s later: expire 30 s later
    for _ in range(8):
        clock.advance(5)
        queue._flush_requested = True
        queue.step()
    assert queue.stats()["dropped"]["retry_expired"] == 3
    assert queue.stats()["queue_depth"] == 2
    clock.advance(40)
    queue._flush_requested = True
    queue.step()
    assert queue.stats()["dropped"]["retry_expired"] == 5
    assert queue.stats()["queue_depth"] == 0 and queue.stats()["queue_bytes"] == 0


def test_bounds_count_every_event_tracked() -> None:
    queue, _, _ = make(max_queue_size=10, max_queue_bytes=2000)
    results = [
        queue.put(QueuedEvent(i, "e", 0.0, {}, None, None, None, False, 300)) for i in range(12)
    ]
    stats = queue.stats()
    assert results.count(True) == 6  # 6 x 300 bytes fit in 2000, the 7th does not
    assert stats["dropped"]["queue_full"] == 6 and stats["tracked"] == 12


def test_heartbeats_carry_the_stats_and_their_actions_are_applied() -> None:
    actions = {"version": 3, "items": [{"id": "1", "type": "block_user", "user": {"uid": "6"}}]}
    queue, transport, clock = make(Reply("ok", actions=actions), heartbeat_interval=60)
    queue.step()
    assert queue.blocklist.user_block({"uid": "6"}) is not None
    assert transport.calls[0].payload["stats"]["tracked"] == 0
    clock.advance(59)
    queue.step()
    assert len(transport.calls) == 1
    clock.advance(1)
    queue.step()
    assert [c.kind for c in transport.calls] == ["heartbeat", "heartbeat"]


def test_block_expiry_follows_the_clock() -> None:
    actions = {
        "version": 1,
        "items": [{"id": "1", "type": "block_ip", "ip": "203.0.113.0/24", "expires_in": 30}],
    }
    queue, _, clock = make(Reply("ok", actions=actions))
    queue.step()
    assert queue.blocklist.ip_block("203.0.113.9") is not None
    clock.advance(29.9)
    assert queue.blocklist.ip_block("203.0.113.9") is not None
    clock.advance(0.1)
    assert queue.blocklist.ip_block("203.0.113.9") is None


def test_an_error_of_ours_in_a_round_is_counted_and_backed_off() -> None:
    def broken(event: QueuedEvent) -> bytes:
        raise RuntimeError("bug")

    queue, _transport, clock = make(flush_interval=1)
    queue._encode = broken  # type: ignore[method-assign]
    queue.step()
    put(queue, 2)
    clock.advance(1)
    queue.step()
    stats = queue.stats()
    assert stats["internal_errors"] == 2 and stats["dropped"]["invalid"] == 2
    queue.errors.count = 0  # expected here


def test_a_watched_event_leaves_within_a_tenth_of_a_second() -> None:
    actions = {"version": 2, "items": [], "watch": ["auth.login.failure"]}
    queue, transport, clock = make(Reply("ok", actions=actions), flush_interval=5)
    queue.step()
    assert queue.watched == {"auth.login.failure"}
    put(queue, 2, name="page.view")
    clock.advance(0.05)
    put(queue, 1, name="auth.login.failure")
    clock.advance(0.05)
    put(queue, 1, name="auth.login.failure")  # joins the same batch
    queue.step()
    assert event_posts(transport) == 0  # 0.05 s after the first watched one
    clock.advance(0.051)
    queue.step()
    assert [len(b) for b in transport.batches()] == [4]  # everything queued goes along
    put(queue, 1, name="page.view")
    clock.advance(1)
    queue.step()
    assert event_posts(transport) == 1  # others wait for the interval


@pytest.mark.parametrize("watch", ["auth.login.failure", "login.failure"])
def test_a_watched_event_tracked_under_another_spelling_leaves_as_soon(watch: str) -> None:
    """The collector stores LiteSOC's other spellings under the standard name, which its
    playbooks read: an event tracked as ``AUTH_LOGIN_FAILURE`` is one of theirs too."""
    actions = {"version": 2, "items": [], "watch": [watch]}
    queue, transport, clock = make(Reply("ok", actions=actions), flush_interval=5)
    queue.step()
    for name in ("AUTH_LOGIN_FAILURE", "login.failure", "auth.login.failure"):
        put(queue, 1, name=name)
        clock.advance(0.101)
        queue.step()
        assert event_posts(transport) == 1, name
        transport.calls.clear()
    put(queue, 1, name="auth.login.success")  # another name's spellings wait
    clock.advance(1)
    queue.step()
    assert event_posts(transport) == 0


def test_an_unchanged_action_set_keeps_blocks_and_watch_list() -> None:
    actions = {
        "version": 3,
        "items": [{"id": "9", "type": "block_ip", "ip": "203.0.113.0/24"}],
        "watch": ["auth.signup"],
    }
    queue, _, clock = make(
        Reply("ok", actions=actions),
        Reply("ok", actions={"version": 3, "unchanged": True}),
        heartbeat_interval=1,
    )
    queue.step()
    clock.advance(1)
    queue.step()
    assert queue.blocklist.ip_block("203.0.113.5") is not None
    assert queue.watched == {"auth.signup"}


def test_the_last_heartbeat_at_shutdown_gets_only_the_time_left() -> None:
    def slow(call: Any) -> Reply:
        if call.kind == "events":
            clock.advance(1.5)  # the delivery took most of the 2 s
        return Reply("ok")

    queue, transport, clock = make(handler=slow, shutdown_timeout=2)
    put(queue, 3)
    assert queue.shutdown(2.0)
    last = transport.calls[-1]
    assert last.kind == "heartbeat"
    assert last.timeout is not None and 0 < last.timeout <= 0.5


def test_events_not_delivered_at_shutdown_without_a_spool_are_said_lost(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    """ "Not delivered" left open whether they were kept anywhere: with no spool, they are
    lost, and the line says so and how the spool was turned off."""

    def down(call: Any) -> Reply:
        clock.advance(0.6)  # each try takes its time, as a refused connection's
        return Reply("retry", detail="down")

    queue, _, clock = make(handler=down)
    put(queue, 2)
    queue.shutdown(1.0)
    assert _said(sqreen_log, "not delivered at shutdown") == [
        "sqreen: 2 events not delivered at shutdown; 2 lost (no spool: SQREEN_SPOOL=off)"
    ]


def test_only_the_last_heartbeat_says_the_process_stopped() -> None:
    queue, transport, _ = make()
    put(queue, 2)
    queue.step()
    assert queue.shutdown(2.0)
    beats = [c.payload["stats"] for c in transport.calls if c.kind == "heartbeat"]
    assert len(beats) >= 2
    assert [b.get("stopped") for b in beats] == [None] * (len(beats) - 1) + [1]


def test_a_transport_written_without_the_heartbeat_timeout_still_gets_its_last_heartbeat() -> None:
    class OldTransport(ScriptedTransport):
        def heartbeat(self, payload: dict[str, Any]) -> Reply:  # type: ignore[override]
            return super().heartbeat(payload)

    config = Config.resolve({"heartbeat_interval": 3600}, environ={})
    transport = OldTransport(replies())
    queue = Queue(config, transport, Blocklist(config.trusted, Clock()), encode, dict)
    queue.start = lambda: None  # type: ignore[method-assign]
    put(queue, 1)
    assert queue.shutdown(2.0)
    assert [c.kind for c in transport.calls] == ["events", "heartbeat"]
    assert transport.calls[-1].timeout is None


def test_a_reply_overtaken_by_a_newer_action_set_does_not_lift_its_blocks() -> None:
    blocked = {"id": "1", "type": "block_ip", "ip": "203.0.113.9", "expires_in": 600}

    def handler(call: Any) -> Reply:
        if call.kind == "events":
            # While the batch is out, the long-poll brings version 2 (the block); the batch's
            # reply, made before it, arrives after it with version 1 (no block).
            queue.apply_actions({"version": 2, "items": [blocked]}, queue.blocklist.version)
            return Reply("ok", actions={"version": 1, "items": []})
        return Reply("ok")

    queue, _, clock = make(handler=handler, flush_interval=5)
    put(queue, 1)
    clock.advance(5)
    queue.step()
    assert queue.blocklist.version == 2
    assert queue.blocklist.ip_block("203.0.113.9") is not None


def _said(log: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in log.records if words in r.getMessage()]


def test_events_dropped_for_a_full_queue_are_said_once_a_minute_at_most(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    """put() only counts (the request path); the flusher says how many since its last line."""
    queue, _, clock = make(Reply("retry"), max_queue_size=2, flush_interval=3600)
    put(queue, 1)  # the other place is kept for watched events
    for i in range(3):
        assert not queue.put(QueuedEvent(i, "e", 0.0, {}, None, None, None, False, 300))
    assert not _said(sqreen_log, "queue was full")  # nothing on the caller's thread
    queue.step()
    assert _said(sqreen_log, "queue was full") == [
        "sqreen: 3 events dropped: the queue was full (max_queue_size=2, "
        "max_queue_bytes=16777216); the collector is down, or slower than the app tracks"
    ]
    for i in range(5):
        queue.put(QueuedEvent(i, "e", 0.0, {}, None, None, None, False, 300))
    clock.advance(59)  # a line a minute at most
    queue.step()
    assert len(_said(sqreen_log, "queue was full")) == 1
    clock.advance(1)
    queue.step()
    assert _said(sqreen_log, "queue was full")[1].startswith(
        "sqreen: 5 events dropped in the last 60 s: the queue was full"
    )
    queue.put(QueuedEvent(9, "e", 0.0, {}, None, None, None, False, 300))
    queue.shutdown(0)  # what the last line did not count, at exit
    assert _said(sqreen_log, "queue was full")[2].startswith("sqreen: 1 events dropped in the last")
    assert queue.stats()["dropped"]["queue_full"] == 9


def test_events_expired_while_the_collector_was_down_are_said(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    queue, _, clock = make(
        handler=lambda call: Reply("retry") if call.kind == "events" else Reply("ok"),
        max_retry_age=60,
        flush_interval=1,
    )
    queue.step()
    put(queue, 3)
    for _ in range(3):
        clock.advance(MAX_BACKOFF + 1)  # a retry is due each time; the last one past 60 s
        queue._flush_requested = True
        queue.step()
    assert queue.stats()["dropped"]["retry_expired"] == 3
    assert _said(sqreen_log, "max_retry_age") == [
        "sqreen: 3 events dropped: not delivered within max_retry_age (60s)"
    ]


def test_an_event_tracked_after_shutdown_is_kept_in_the_spool_and_said(
    tmp_path: Path, sqreen_log: pytest.LogCaptureFixture
) -> None:
    """A thread still tracking once the delivery at exit is over: nothing will send its events
    from this process, so they go to the spool, for the next one."""
    queue, transport, _ = make(spool=Spool(tmp_path, "p"))
    put(queue, 1, name="before")
    assert queue.shutdown(1.0)
    assert [e["name"] for b in transport.batches() for e in b] == ["before"]
    put(queue, 2, name="after")  # put() asserts it returned True: accepted, and kept
    kept = [
        json.loads(line)["name"]
        for f in tmp_path.glob("*.batch")
        for line in f.read_bytes().splitlines()
    ]
    assert kept == ["after", "after"]
    assert len(_said(sqreen_log, "tracked after the delivery at shutdown: kept in")) == 1
    stats = queue.stats()
    assert stats["sent"] + sum(stats["dropped"].values()) + stats["queue_depth"] == 3


def test_without_a_spool_an_event_tracked_after_shutdown_is_refused_counted_and_said(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    queue, transport, _ = make()
    assert queue.shutdown(1.0)
    assert not queue.put(QueuedEvent(1, "late", 0.0, {}, None, None, None, False, 300))
    assert queue.stats()["dropped"]["after_shutdown"] == 1
    assert _said(sqreen_log, "tracked after the delivery at shutdown, with no spool") == [
        "sqreen: 1 events dropped: tracked after the delivery at shutdown, with no spool to "
        "keep them in; track() returned False"
    ]
    assert not transport.batches()


# -- the room kept for the events the playbooks watch ------------------------------------------

LOGIN_FAILURE = "auth.login.failure"


def watching(*names: str, **options: Any) -> tuple[Queue, ScriptedTransport, Clock]:
    """A queue that holds an action set watching ``names`` (and stays down: nothing leaves
    until a test asks)."""
    queue, transport, clock = make(flush_interval=3600, **options)
    queue.apply_actions({"version": 2, "items": [], "watch": list(names)})
    return queue, transport, clock


def offer(queue: Queue, name: str, n: int = 1, size: int = 300) -> list[bool]:
    return [
        queue.put(QueuedEvent(i, name, 0.0, {}, None, None, None, False, size)) for i in range(n)
    ]


def names_sent(transport: ScriptedTransport) -> dict[str, int]:
    sent: dict[str, int] = {}
    for batch in transport.batches():
        for event in batch:
            sent[event["name"]] = sent.get(event["name"], 0) + 1
    return sent


def test_a_flood_of_unwatched_events_cannot_crowd_out_the_watched_ones(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    """The attack: flood an endpoint the app tracks, then brute-force the login. Ordinary
    events stop a tenth short of the bound; the rest is kept for what the playbooks read."""
    queue, transport, _ = watching(LOGIN_FAILURE, max_queue_size=20)
    flood = offer(queue, "page.view", 100)
    assert flood == [True] * 18 + [False] * 82  # 20 less a reserve of 2
    assert offer(queue, LOGIN_FAILURE) == [True]
    assert offer(queue, "AUTH_LOGIN_FAILURE") == [True]  # another spelling of the same name
    assert offer(queue, "page.view") == [False]  # the reserve is not theirs
    assert offer(queue, LOGIN_FAILURE) == [False]  # the whole bound, for watched ones too
    stats = queue.stats()
    assert stats["queue_depth"] == 20 and stats["tracked"] == 104
    assert stats["dropped"]["queue_full"] == 84  # every drop, watched or not
    queue.step()
    (line,) = _said(sqreen_log, "queue was full")
    assert line.endswith("; 1 of them watched by the collector's playbooks")
    queue._flush_requested = True  # the collector answers: nothing accepted was lost
    queue.step()
    assert names_sent(transport) == {"page.view": 18, LOGIN_FAILURE: 1, "AUTH_LOGIN_FAILURE": 1}
    stats = queue.stats()
    assert stats["sent"] + sum(stats["dropped"].values()) == stats["tracked"]


def test_the_byte_bound_keeps_a_reserve_for_watched_events_too() -> None:
    queue, transport, _ = watching(LOGIN_FAILURE, max_queue_bytes=3000)
    assert offer(queue, "page.view", 12) == [True] * 9 + [False] * 3  # 2700 of 3000 bytes
    assert offer(queue, "page.view", size=1) == [False]  # the last 300 are kept
    assert offer(queue, LOGIN_FAILURE, 2) == [True, False]  # 3000: the whole bound
    assert offer(queue, LOGIN_FAILURE, size=301) == [False]
    assert queue.stats()["queue_bytes"] == 3000
    assert queue.stats()["dropped"]["queue_full"] == 6
    queue._flush_requested = True
    queue.step()
    assert names_sent(transport) == {"page.view": 9, LOGIN_FAILURE: 1}


def padded(seq: int, name: str) -> QueuedEvent:
    """An event whose request a client padded: a 64 KiB body the app read, an 8 KB query,
    a 4 KB User-Agent and forwarded header, counted at its weight as track() counts it."""
    request = RequestSnapshot(
        "POST",
        "/login",
        "q=" + "B" * 8000,
        "192.0.2.9",
        "U" * 4000,
        "198.51.100.7, " * 300 + "203.0.113.5",
        "application/x-www-form-urlencoded",
        body_chunks=(b"password=" + b"A" * 65536,),
    )
    return QueuedEvent(seq, name, 0.0, {}, None, None, request, False, 256 + request.weight)


def test_padded_watched_events_cannot_use_up_the_reserve_s_bytes() -> None:
    """The attacker's own login failures, padded, took about 76 KB each: two dozen filled the
    reserve's bytes, and every later login failure (the real brute force) was refused. In
    the reserve an event's request loses its body and keeps 512 characters of its query,
    User-Agent and forwarded header (the hops nearest the server): about 2 KB."""
    queue, transport, _ = watching(LOGIN_FAILURE, max_queue_bytes=300_000)
    assert offer(queue, "page.view", 28, size=10_000) == [True] * 27 + [False]  # 270 000
    shared = padded(0, LOGIN_FAILURE)
    kept = [queue.put(padded(n, LOGIN_FAILURE)) for n in range(10)]
    assert kept == [True] * 10
    assert queue.stats()["queue_bytes"] <= 270_000 + 10 * 2_500
    assert all(
        queue.put(QueuedEvent(n, LOGIN_FAILURE, 0.0, {}, None, None, None, False, 300))
        for n in range(5)
    )  # the brute force after them
    assert shared.request is not None and shared.request.body_chunks  # a copy was slimmed
    queue._flush_requested = True
    queue.step()
    assert names_sent(transport) == {"page.view": 27, LOGIN_FAILURE: 15}
    sent = [e for batch in transport.batches() for e in batch if e["name"] == LOGIN_FAILURE]
    assert len(sent) == 15


def test_a_slimmed_request_keeps_the_hops_nearest_the_server() -> None:
    snapshot = padded(0, LOGIN_FAILURE).request
    assert snapshot is not None
    slim = snapshot.slimmed(512)
    assert slim.body_chunks == () and slim.body_truncated
    # Cut at a word, as they are scrubbed after the cut: padding of one word goes whole
    # (a secret cut in two no longer looked like one, and went out as it was).
    assert slim.query == "" and slim.user_agent == ""
    words = RequestSnapshot(
        "GET", "/", "a=1&b=" + "2" * 600, None, "Mozilla/5.0 (X11) " * 40, None, None
    )
    cut = words.slimmed(512)
    assert cut.query == "a=1&" and cut.user_agent == ("Mozilla/5.0 (X11) " * 40)[:504].rstrip()
    assert isinstance(slim.forwarded, str) and slim.forwarded.endswith("203.0.113.5")
    assert len(slim.forwarded) == 512 and snapshot.body_chunks  # the original is as it was
    assert slim.weight < 2_500 < snapshot.weight


def test_room_freed_by_a_delivery_goes_to_ordinary_events_again() -> None:
    queue, transport, _ = watching(LOGIN_FAILURE, max_queue_size=10)
    assert offer(queue, "page.view", 10) == [True] * 9 + [False]
    assert offer(queue, LOGIN_FAILURE) == [True]
    queue._flush_requested = True
    queue.step()
    assert queue.stats()["queue_depth"] == 0
    assert offer(queue, "page.view", 10) == [True] * 9 + [False]
    assert names_sent(transport) == {"page.view": 9, LOGIN_FAILURE: 1}


@pytest.mark.parametrize(
    ("size", "ordinary", "watched"),
    [(1, 1, 0), (2, 1, 1), (3, 2, 1), (9, 8, 1), (10, 9, 1), (25, 23, 2), (10_000, 9_000, 1_000)],
)
def test_the_reserve_is_a_tenth_at_least_one_but_never_the_whole_queue(
    size: int, ordinary: int, watched: int
) -> None:
    """A queue of one place keeps it for any event: refusing every ordinary one would make
    ``track()`` useless; from two places on, one at least is kept for the watched events."""
    queue, _, _ = watching(LOGIN_FAILURE, max_queue_size=size, max_queue_bytes=1 << 30)
    assert offer(queue, "page.view", size + 1, size=1).count(True) == ordinary
    assert offer(queue, LOGIN_FAILURE, size + 1, size=1).count(True) == watched
    assert queue.stats()["queue_depth"] == size


def test_before_any_watch_list_the_reserve_is_the_templates_login_failures_and_signups() -> None:
    """Nothing is watched yet (no action set, none in the spool: a worker started while the
    collector is unreachable): the reserve keeps the names the collector's templates block
    on, in any spelling the collector stores as them, and no other event; the collector's
    first list replaces them."""
    queue, _, _ = make(max_queue_size=10)
    assert offer(queue, "search.query", 10) == [True] * 9 + [False]
    assert offer(queue, "AUTH_LOGIN_FAILURE", 2) == [True, False]
    queue, _, _ = make(max_queue_size=10)
    assert offer(queue, "search.query", 9) == [True] * 9
    assert offer(queue, "auth.signup", 2) == [True, False]
    queue, _, _ = make(max_queue_size=10)
    queue.apply_actions({"version": 2, "items": [], "watch": ["order.refunded"]})
    assert offer(queue, "search.query", 9) == [True] * 9
    assert offer(queue, LOGIN_FAILURE) == [False]  # the collector's list says what counts
    assert offer(queue, "order.refunded") == [True]


def test_a_watched_event_tracked_after_shutdown_takes_no_reserve(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    """Closing, the bound is -1 for every event: a watched one goes the way of the others
    (the spool, or refused and counted as such), not into a queue that nothing sends."""
    queue, transport, _ = watching(LOGIN_FAILURE)
    assert queue.shutdown(1.0)
    assert offer(queue, LOGIN_FAILURE) == [False]
    stats = queue.stats()
    assert stats["dropped"]["after_shutdown"] == 1 and stats["dropped"]["queue_full"] == 0
    assert stats["queue_depth"] == 0 and not transport.batches()
    assert len(_said(sqreen_log, "tracked after the delivery at shutdown, with no spool")) == 1


@pytest.mark.parametrize("asked", [None, 60.0])
def test_a_collector_answering_again_ends_the_back_off_unless_it_asked_for_a_wait(
    asked: float | None,
) -> None:
    """After failures the next try waits up to 30 s; when the action long-poll gets an
    answer (the collector is back), the events go at once: a brute force went on for that
    long after a collector's restart or its database's outage, its failures unsent. A wait
    the collector asked for (``Retry-After``) is kept."""
    failing = [Reply("retry", retry_after=asked)] * 5
    queue, transport, clock = make(Reply("ok"), *failing, Reply("ok"), flush_interval=1)
    queue.step()  # the heartbeat
    put(queue, 3)
    for _ in range(5):  # each failure waits longer: 0.5, 1, 2, 4, then 8 s
        clock.advance(60 if asked else 10)
        queue.step()
    assert event_posts(transport) == 5 and queue.stats()["sent"] == 0
    clock.advance(0.1)
    queue.step()
    assert event_posts(transport) == 5  # its back-off
    queue.collector_answered()
    queue.step()
    assert event_posts(transport) == (5 if asked else 6)
    assert queue.stats()["sent"] == (0 if asked else 3)
