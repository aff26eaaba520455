"""Blocks reach the SDK fast: the action long-poll, and the refusals an SDK reports."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import sqreen
from sqreen._actions import ActionPoller
from sqreen._blocking import Blocked, Blocklist
from sqreen._client_ip import TrustedProxies
from sqreen._errors import InternalErrors
from sqreen._refusals import SAMPLE_EVERY, Refusals
from sqreen.middleware.wsgi import SqreenWSGIMiddleware
from sqreen.testing import CapturedEvents
from sqreen.transports import Reply, ScriptedTransport


def _set(version: int, *ips: str) -> dict[str, Any]:
    items = [{"id": str(n), "type": "block_ip", "ip": ip} for n, ip in enumerate(ips)]
    return {"version": version, "items": items}


def test_the_long_poll_applies_each_new_set_and_asks_again_with_its_version() -> None:
    blocklist = Blocklist(TrustedProxies(None))
    asked: list[int] = []
    answers = [_set(1, "203.0.113.9"), _set(2)]
    done = threading.Event()

    def poll(version: int, wait: float) -> Reply:
        asked.append(version)
        if not answers:
            done.set()
            time.sleep(0.05)
            return Reply("ok", actions={"version": version, "unchanged": True})
        time.sleep(0.01 if len(asked) > 1 else 0)
        return Reply("ok", actions=answers.pop(0))

    seen: list[bool] = []

    def apply(actions: Any, held: int) -> None:
        blocklist.apply(actions)
        seen.append(blocklist.ip_block("203.0.113.9") is not None)

    poller = ActionPoller(poll, blocklist, apply, InternalErrors(), wait=5)
    poller.start()
    assert done.wait(5)
    poller.stop()
    assert asked[:3] == [-1, 1, 2]
    assert seen[:2] == [True, False]  # the block, then its lifting


def test_a_collector_that_does_not_hold_the_poll_is_not_hammered() -> None:
    blocklist = Blocklist(TrustedProxies(None))
    blocklist.apply(_set(4))
    calls: list[float] = []

    def poll(version: int, wait: float) -> Reply:
        calls.append(time.monotonic())
        return Reply("ok", actions=_set(4))  # at once, nothing new: an older collector

    poller = ActionPoller(
        poll, blocklist, lambda actions, held: blocklist.apply(actions), InternalErrors(), wait=0.3
    )
    poller.start()
    time.sleep(1.0)
    poller.stop()
    assert 2 <= len(calls) <= 5  # about one a wait, not thousands


def _poll_until_version_5(
    answer: Callable[[int], Reply], held: int = 0, **options: Any
) -> tuple[list[float], list[float], list[float]]:
    """Run an :class:`ActionPoller` on this thread, on a clock moved only by its own waits
    (no real time passes), until it holds version 5; ``answer(n)`` is the reply to the n-th
    poll. Return when each poll was made, the wait each asked for, and when the collector's
    answer after failures was said."""
    blocklist = Blocklist(TrustedProxies(None))
    if held:
        blocklist.apply(_set(held))
    now = [0.0]
    calls: list[float] = []
    waits: list[float] = []
    answered: list[float] = []

    class Stop:
        """The poller's stop event: each wait moves the clock."""

        def wait(self, timeout: float) -> bool:
            now[0] += timeout
            return False

        def is_set(self) -> bool:
            return blocklist.version == 5

    def poll(version: int, wait: float) -> Reply:
        calls.append(now[0])
        waits.append(wait)
        return answer(len(calls))

    poller = ActionPoller(
        poll,
        blocklist,
        lambda actions, held: blocklist.apply(actions),
        InternalErrors(),
        clock=lambda: now[0],
        cpu=lambda: 0.0,
        on_answer=lambda: answered.append(now[0]),
        **options,
    )
    poller._stop = Stop()  # type: ignore[assignment]
    poller._run()
    assert blocklist.version == 5
    return calls, waits, answered


def test_a_collector_answering_at_once_is_asked_again_within_seconds() -> None:
    """A stopping collector answers the polls it holds at once, unchanged; one that then
    comes back with playbooks (a new version) is heard within seconds, not a heartbeat's 30
    s: asked again after 1 s, then 2, 4, ... while it keeps answering at once."""

    def answer(n: int) -> Reply:
        if n < 4:
            return Reply("ok", actions={"version": 4, "unchanged": True})  # at once
        return Reply("ok", actions={**_set(5), "watch": ["auth.login.failure"]})

    calls, _, answered = _poll_until_version_5(answer, held=4, wait=30)
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(calls)]
    assert gaps[:3] == pytest.approx([1, 2, 4], abs=0.3)  # then the new version
    assert answered == []  # it never failed


def test_a_collector_back_from_an_outage_is_found_within_seconds_and_said() -> None:
    """Polls that fail wait at most 8 s apart (30 before), are asked to answer at once, and
    the first answer after them is said (the delivery then sends what waited, at once)."""

    def answer(n: int) -> Reply:
        if n <= 8:
            return Reply("retry", detail="connection refused")
        return Reply("ok", actions=_set(5))

    calls, waits, answered = _poll_until_version_5(answer)
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert max(gaps) <= 8.0 and gaps[-1] >= 2.0  # jittered, 0.5 to 1 of 8 s
    assert answered == [calls[-1]]  # once, at the first answer
    # Asked to answer at once after a failure: held, the answer says the collector is back
    # only at the end of its wait (30 s), or when the set changes.
    assert waits == [30.0] + [0.0] * 8


def test_the_client_polls_through_a_transport_that_can(caplog: pytest.LogCaptureFixture) -> None:
    polls = threading.Semaphore(0)
    transport = ScriptedTransport(
        lambda call: (
            Reply("ok", actions=_set(7, "198.51.100.0/24"))
            if call.kind == "actions" and call.payload["version"] != 7
            else polls.release() or Reply("ok", actions={"version": 7, "unchanged": True})
        )
    )
    client = sqreen.init(transport=transport, heartbeat_interval=3600)
    client.start()
    deadline = time.monotonic() + 5
    while not sqreen.is_blocked(ip="198.51.100.20") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sqreen.is_blocked(ip="198.51.100.20")
    assert sqreen.is_blocked(ip="::ffff:198.51.100.20") and sqreen.is_blocked(
        ip="198.51.100.20:443"
    )
    assert polls.acquire(timeout=5)  # an "unchanged" reply keeps the set, quietly
    assert sqreen.is_blocked(ip="198.51.100.20")
    assert not [r for r in caplog.records if r.name.startswith("sqreen")]


def test_a_refused_key_ends_the_first_request_s_wait_and_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The collector refuses the token: the first request waits no longer for a set that
    will not come (it waited ``block_on_start_timeout``), and the log says why no block
    arrives, once (it said nothing until an event was tracked)."""
    asked = _first_request_ends_at_the_poll(
        'HTTP 401 from /v1/actions: {"error": "no key"}', token="wrong"
    )
    assert asked.acquire(timeout=10)  # asked again (backoff), said no more
    said = [r.getMessage() for r in caplog.records if "refuses this token" in r.getMessage()]
    assert len(said) == 1 and "HTTP 401" in said[0] and "SQREEN_TOKEN" in said[0]
    assert "'token' in Django's settings.SQREEN" in said[0]  # the Django app's own setting


def test_a_token_set_on_the_transport_is_a_token(caplog: pytest.LogCaptureFixture) -> None:
    """``init(transport=HTTPTransport(url, token=...))``: its refusal is of that token."""
    asked = _first_request_ends_at_the_poll("HTTP 401 from /v1/actions: {}", transport_token="x")
    assert asked.acquire(timeout=10)
    said = [r.getMessage() for r in caplog.records if "token" in r.getMessage()]
    assert len(said) == 1 and "refuses this token" in said[0]


def test_a_refusal_when_no_token_is_set_says_none_is(caplog: pytest.LogCaptureFixture) -> None:
    """An endpoint set, and no token: the log blamed "this token", which there was none of."""
    asked = _first_request_ends_at_the_poll('HTTP 401 from /v1/actions: {"error": "missing"}')
    assert asked.acquire(timeout=10)
    said = [r.getMessage() for r in caplog.records if "token" in r.getMessage()]
    assert len(said) == 1 and "without a token" in said[0] and "none is set" in said[0]
    assert "this token" not in said[0] and "sqreen keys create" in said[0]


@pytest.mark.parametrize("status", [500, 502, 504, 404])
def test_a_failing_collector_ends_the_first_request_s_wait(status: int) -> None:
    """A collector erring (500), or down behind its proxy (nginx's 502 or 504), or a wrong
    path: the set will not come soon, and the first request goes on at once (it waited the
    whole ``block_on_start_timeout``)."""
    _first_request_ends_at_the_poll(f"HTTP {status} from /v1/actions: <html>bad gateway</html>")


def _first_request_ends_at_the_poll(
    detail: str, token: str | None = None, transport_token: str | None = None
) -> threading.Semaphore:
    """A client whose every call fails with ``detail``: its first request (``start()``,
    waiting up to 60 s for the set) ends once the long-poll failed so; the polls, counted."""
    asked = threading.Semaphore(0)

    def answer(call: Any) -> Reply:
        if call.kind == "actions":
            asked.release()
        return Reply("retry", detail=detail)

    transport = ScriptedTransport(answer)
    if transport_token is not None:
        transport.token = transport_token  # type: ignore[attr-defined]  # as HTTPTransport's
    client = sqreen.init(
        transport=transport,
        token=token,
        heartbeat_interval=3600,
        block_on_start_timeout=60,
    )
    done = threading.Event()
    threading.Thread(target=lambda: (client.start(), done.set()), daemon=True).start()
    assert asked.acquire(timeout=10)
    assert done.wait(10), f"the first request waited on after {detail[:20]!r}"
    return asked


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_collector_does_not_end_the_first_request_s_wait(status: int) -> None:
    """A collector that is up but cannot take the poll now (429 once a key holds its polls'
    bound, 503 while it restarts): the first request waits on, and the set comes with the
    heartbeat's reply. (Ending the wait there let a blocked user's first request through.)"""
    block = _set(3, "198.51.100.0/24")
    polled = threading.Event()

    def answer(call: Any) -> Reply:
        if call.kind == "actions":
            polled.set()
            return Reply("retry", detail=f"HTTP {status} from /v1/actions: busy")
        if call.kind == "heartbeat":
            assert polled.wait(10)  # after the poll's answer
            return Reply("ok", actions=block)
        return Reply("ok")

    client = sqreen.init(
        transport=ScriptedTransport(answer), heartbeat_interval=3600, block_on_start_timeout=60
    )
    client.start()  # returns once the set is there
    assert sqreen.is_blocked(ip="198.51.100.7")


def test_refusals_are_counted_and_sampled() -> None:
    now = [0.0]
    refusals = Refusals(lambda: now[0])
    assert refusals.count("7") == 1  # the first refusal is reported at once
    assert [refusals.count("7") for _ in range(5)] == [0] * 5
    now[0] += SAMPLE_EVERY
    assert refusals.count("7") == 6  # the next event stands for the five in between too
    assert refusals.report() == {"7": 7}


def test_a_refused_request_is_reported_in_an_event_and_the_heartbeat(
    sqreen_events: CapturedEvents,
) -> None:
    sqreen_events.block([{"id": "42", "type": "block_ip", "ip": "203.0.113.0/24"}])

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = SqreenWSGIMiddleware(app)
    for _ in range(30):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "REMOTE_ADDR": "203.0.113.8"}
        list(wrapped(environ, lambda *a: None))
    (event,) = sqreen_events
    assert event["name"] == "security.blocked"
    assert event["properties"] == {"block_id": "42", "kind": "ip", "count": 1}
    assert event["request"]["ip"] == "203.0.113.8" and event["request"]["path"] == "/x"
    assert sqreen_events.client.stats()["refused"] == {"42": 30}
    assert isinstance(Blocked(ip="x"), BaseException)


def test_an_answer_dear_to_read_that_changes_nothing_is_not_asked_again_at_once() -> None:
    """An answer saying nothing changed after a full wait is asked again at once, unless it
    cost the thread noticeable CPU (8 MiB of padding to parse): then the next poll waits
    for PACE times that, as after a change."""
    blocklist = Blocklist(TrustedProxies(None))
    blocklist.apply(_set(4))
    calls: list[float] = []
    cpu = [0.0]
    clock = [0.0]
    second = threading.Event()

    def poll(version: int, wait: float) -> Reply:
        calls.append(time.monotonic())
        if len(calls) == 2:
            second.set()
        clock[0] += 5.0  # held the full wait, as a collector holds a poll
        cpu[0] += 0.2  # and cost 0.2 s of CPU to read: the next poll waits 0.8 s
        return Reply("ok", actions={"version": 4, "unchanged": True})

    poller = ActionPoller(
        poll,
        blocklist,
        lambda actions, held: None,
        InternalErrors(),
        wait=5,
        clock=lambda: clock[0],
        cpu=lambda: cpu[0],
    )
    poller.start()
    assert second.wait(10)  # the next poll, once its pause is over
    poller.stop()
    assert calls[1] - calls[0] >= 0.75  # without the pause: as fast as the answers came
