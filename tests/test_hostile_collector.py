"""What a collector (or whatever answers in its place) sends back cannot break the SDK:
huge or deep replies, absurd Retry-After, redirects and 404s; padded requests still fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import sqreen
from sqreen._config import Config
from sqreen._event import QueuedEvent
from sqreen._json import dumps_utf8
from sqreen._request import snapshot_wsgi
from sqreen._wire import MAX_REQUEST_BYTES, encode_event, parse_event
from sqreen.transports import Reply
from tests.receiver import Receiver
from tests.test_queue import make, put

ROOT = Path(__file__).resolve().parent.parent


def test_retry_after_of_a_lifetime_holds_five_minutes_then_delivery_resumes() -> None:
    queue, transport, clock = make(Reply("ok"), Reply("retry", retry_after=1e10), flush_interval=1)
    queue.step()
    put(queue, 3)
    clock.advance(1)
    wake = queue.step()  # the collector asks for 300 years
    assert wake - clock.now <= 300
    clock.advance(299)
    queue.step()
    assert len(transport.batches()) == 1  # still waiting
    clock.advance(2)
    queue.step()
    assert [len(b) for b in transport.batches()] == [3, 3] and queue.stats()["sent"] == 3


def test_the_real_flusher_survives_a_retry_after_of_1e10(receiver: Receiver) -> None:
    receiver.respond(503, headers={"Retry-After": "1e10"}, path="/v1/events")
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.05, heartbeat_interval=3600)
    sqreen.track("first")
    deadline = time.monotonic() + 5
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    thread = client.queue._thread
    assert thread is not None and thread.is_alive()
    assert 0 < client.queue._retry_at - time.monotonic() <= 300


@pytest.mark.parametrize("status", [301, 302, 307, 401, 403, 404])
def test_a_misconfigured_endpoint_keeps_events_and_retries(receiver: Receiver, status: int) -> None:
    receiver.respond(status, path="/v1/events", headers={"Location": "http://example.com/"})
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.05, heartbeat_interval=3600)
    sqreen.track("kept")
    assert sqreen.flush(timeout=10)
    assert [e["name"] for e in receiver.events] == ["kept"]
    assert client.stats()["dropped"]["rejected"] == 0


def test_a_huge_or_deep_reply_is_not_read_whole(receiver: Receiver) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    huge = b'{"actions": {"version": 5, "items": [' + b'{"id": "1"},' * 900_000 + b"{}]}}"
    receiver.respond(200, path="/v1/events", body=deep)
    receiver.respond(200, path="/v1/events", body=huge)
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.05, heartbeat_interval=3600)
    for name in ("a", "b", "c"):
        sqreen.track(name)
        assert sqreen.flush(timeout=10)
    assert client.stats()["sent"] == 3 and client.internal_errors == 0
    assert client.blocklist.version != 5  # the 10 MB reply was not applied


def _padded_snapshot(body: bytes, content_type: str) -> object:
    class Body:
        def capture(self) -> tuple[tuple[bytes, ...], bool]:
            return (body,), False

    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/login",
        "REMOTE_ADDR": "198.51.100.4",
        "CONTENT_TYPE": content_type,
    }
    return snapshot_wsgi(environ, "HTTP_X_FORWARDED_FOR", None, Body())


@pytest.mark.parametrize("collect_body", [False, True])
def test_a_padded_login_still_fits_and_keeps_its_username(collect_body: bool) -> None:
    pad = "".join(f"&pad{i}=" + "\x01" * 4096 for i in range(15))
    body = f"username=alice&password=hunter2{pad}".encode()
    config = Config.resolve({"max_body_size": 1 << 20}, environ={})
    snapshot = _padded_snapshot(body, "application/x-www-form-urlencoded")
    event = QueuedEvent(1, "auth.login.failure", time.time(), {}, {"username": "alice"}, None,
                        snapshot, collect_body, 0)  # fmt: skip
    wire = json.loads(dumps_utf8(encode_event(event, "x-1", config)))
    parsed = parse_event(wire)  # the collector's own check: no longer refused
    request = parsed["request"]
    assert request is not None
    assert len(dumps_utf8(request)) <= MAX_REQUEST_BYTES
    assert request["params"]["username"] == "alice"
    assert request["params"]["password"] == "[redacted]"
    assert any(str(v).startswith("[truncated]") for v in request["params"].values())
    assert "hunter2" not in json.dumps(wire)


FLOOD = """
import os, resource, sqreen
from sqreen.middleware.wsgi import SqreenWSGIMiddleware
sqreen.init(endpoint="http://127.0.0.1:9", flush_interval=0.05, heartbeat_interval=3600)
def app(environ, start_response):
    environ["wsgi.input"].read()
    sqreen.track("upload")
    start_response("200 OK", [])
    return [b"ok"]
wrapped = SqreenWSGIMiddleware(app)
body = os.urandom(32 * 1024).hex().encode()  # 64 KB
import io
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def request():  # a new 64 KB body object each time, as a server reads it from its socket
    return {"REQUEST_METHOD": "POST", "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_LENGTH": str(len(body) + 1), "CONTENT_TYPE": "application/octet-stream",
            "wsgi.input": io.BytesIO(body + b" ")}
for i in range(1000):  # warm up
    list(wrapped(request(), lambda *a: None))
before = rss()
for i in range(11000):
    list(wrapped(request(), lambda *a: None))
stats = sqreen._hub.active.stats()
print(rss() - before, stats["queue_bytes"], stats["dropped"]["queue_full"])
os._exit(0)
"""


@pytest.mark.slow
def test_the_byte_bound_is_the_memory_bound_with_the_collector_down() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FLOOD)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    grown, queued, dropped = map(int, proc.stdout.split())
    assert queued <= 16 * 1024 * 1024 and dropped > 0
    assert grown < 16 * 1024 * 1024 + 48 * 1024 * 1024, f"RSS grew by {grown >> 20} MiB"


def test_blocks_the_sdk_cannot_use_never_hold_up_delivery(receiver: Receiver) -> None:
    """A refused block without an id and an expiry of 400 digits in a reply: the batch is
    delivered, the set's other blocks enforced (each stopped delivery for good: the batch
    was sent again and again while the queue filled)."""
    actions = {
        "version": 7,
        "items": [
            {"type": "block_user", "user": {}},
            {"id": "far", "type": "block_ip", "ip": "203.0.113.9", "expires_in": 10**400},
            {"id": "ok", "type": "block_ip", "ip": "198.51.100.7"},
        ],
    }
    body = json.dumps({"actions": actions}).encode()
    receiver.respond(200, times=3, path="/v1/events", body=body)
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.05, heartbeat_interval=3600)
    for name in ("a", "b", "c"):
        sqreen.track(name)
        assert sqreen.flush(timeout=10)
    assert client.stats()["sent"] == 3 and client.internal_errors == 0
    assert [e["name"] for e in receiver.events] == ["a", "b", "c"]
    assert client.blocklist.version == 7
    assert sqreen.is_blocked(ip="198.51.100.7") and not sqreen.is_blocked(ip="203.0.113.9")


def test_a_set_that_cannot_be_applied_is_counted_and_its_batch_delivered() -> None:
    queue, transport, clock = make(Reply("ok", actions={"version": 3, "items": []}))

    def broken(actions: object) -> None:
        raise RuntimeError("a bug of ours")

    queue.blocklist.apply = broken  # type: ignore[method-assign]
    put(queue, 2)
    clock.advance(10)
    queue.step()
    assert queue.stats()["sent"] == 2 and len(transport.batches()) == 1
    assert queue.errors.count >= 1


def test_a_reply_dear_to_read_paces_the_next_batch_even_when_nothing_changed() -> None:
    """A reply whose reading cost the flusher 0.5 s of CPU (8 MiB of padding around an
    unchanged set) holds the next batch PACE times that: such replies took the GIL as fast
    as batches went, three quarters of the app's requests lost."""
    dear = Reply("ok", actions={"unchanged": True}, cost=0.5)
    queue, transport, clock = make(dear, dear, flush_interval=0.01)
    put(queue, 1)
    clock.advance(1)
    queue.step()
    assert len(transport.batches()) == 1
    put(queue, 1)
    clock.advance(1)
    queue.step()
    assert len(transport.batches()) == 1  # still paced
    clock.advance(1.01)
    queue.step()
    assert len(transport.batches()) == 2


def test_a_reply_of_millions_of_arrays_is_not_parsed(receiver: Receiver) -> None:
    padded = b'{"actions": {"version": 9, "items": []}, "pad": [' + b"[]," * 300_000 + b"[]]}"
    receiver.respond(200, path="/v1/events", body=padded)
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.05, heartbeat_interval=3600)
    sqreen.track("a")
    assert sqreen.flush(timeout=10)
    assert client.stats()["sent"] == 1 and client.internal_errors == 0
    assert client.blocklist.version != 9  # delivered; its set not read


def test_events_refused_one_by_one_make_one_log_line_a_minute(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    """A proxy answering 413 to every request: batches split down to one event, each
    refused; the log says so once a minute with the count, not once an event, and what is
    left unsaid is said by the flusher's next round past the minute, with nothing new."""
    queue, _, clock = make(*[Reply("split")] * 40, flush_interval=0.01)

    def lines() -> list[str]:
        return [r.getMessage() for r in sqreen_log.records if "by the receiver" in r.getMessage()]

    for _ in range(4):
        put(queue, 4)
        clock.advance(1)
        queue.step()
    assert len(lines()) == 1 and queue.stats()["dropped"]["rejected"] == 16
    clock.advance(60)
    queue.step()  # nothing refused in this round: the rest is said all the same
    assert len(lines()) == 2 and "(since the last such line, " in lines()[1]
    said = sum(int(line.split()[1]) for line in lines())
    assert said == queue.stats()["dropped"]["rejected"] == 16
    clock.advance(1)
    put(queue, 2)
    queue.step()
    queue.shutdown(timeout=0)  # at exit: said at once
    assert len(lines()) == 3
    assert sum(int(line.split()[1]) for line in lines()) == queue.stats()["dropped"]["rejected"]


def test_an_honest_set_of_users_named_with_brackets_is_applied(receiver: Receiver) -> None:
    """Brackets inside strings open nothing: a set of 1 100 user blocks each named with 250
    ``[`` (an attacker signs up as such users for a playbook to block them) holds 275 000
    of them, and the set, the IP blocks in it too, is applied (it was not read at all)."""
    items = [
        {"id": str(n), "type": "block_user", "user": {"username": "[" * 250 + str(n)}}
        for n in range(1100)
    ]
    items.append({"id": "ip", "type": "block_ip", "ip": "203.0.113.7"})
    body = json.dumps({"actions": {"version": 5, "items": items}}).encode()
    receiver.respond(200, path="/v1/events", body=body)
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.05, heartbeat_interval=3600)
    sqreen.track("a")
    assert sqreen.flush(timeout=10)
    assert client.blocklist.version == 5 and client.internal_errors == 0
    assert sqreen.is_blocked(ip="203.0.113.7")
    assert sqreen.is_blocked({"username": "[" * 250 + "7"})


@pytest.mark.parametrize(
    ("body", "outside"),
    [
        (b'{"a": "[[", "b": [[]]}', 3),
        (b'{"a": "\\"[[\\"", "b": [{}]}', 3),  # escaped quotes stay inside the string
        (b'{"a": "\\\\", "b": [{}]}', 3),  # an escaped backslash before the closing quote
        (b'{"a": "\\u005b\\u007b", "b": []}', 2),
        (b'{"a": "\xff[", "b": []}', 2),  # not UTF-8 inside a string: still one
        (b'{"a": [], "b": "[[[', 2),  # a string left open runs to the end
        (b'["' + b'\\"' * 1000, 1),  # ... escapes and all
    ],
)
def test_brackets_in_strings_are_not_counted_when_the_count_is_high(
    body: bytes, outside: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqreen.transports import http

    monkeypatch.setattr(http, "MAX_REPLY_CONTAINERS", 0)  # the slow count, on every body
    assert http._containers(body) == outside


def test_a_reply_in_utf16_cannot_hide_its_arrays_in_what_looks_like_strings(
    receiver: Receiver,
) -> None:
    """JSON may come in UTF-16, whose bytes for U+2200 hold a quote: 300 000 arrays between
    two of them looked like one string to a count of bytes, and were parsed."""
    text = (
        '{"actions": {"version": 9, "items": []}, "pad": ["\u2200", '
        + "[], " * 300_000
        + '"\u2200"]}'
    )
    receiver.respond(200, path="/v1/events", body=text.encode("utf-16-le"))
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.05, heartbeat_interval=3600)
    sqreen.track("a")
    assert sqreen.flush(timeout=10)
    assert client.stats()["sent"] == 1 and client.blocklist.version != 9
