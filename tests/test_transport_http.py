"""The HTTP transport against collectors that misbehave on the wire: replies that trickle in,
error bodies that inflate, 2xx pages that are not the collector's, indexes out of the batch,
words that would forge log lines, action sets too large or changing too fast. Each runs
against a real server on 127.0.0.1 (``tests/receiver.py``)."""

from __future__ import annotations

import json
import socket
import threading
import tracemalloc
import zlib
from itertools import count
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import sqreen
from sqreen import _blocking, _delivery
from sqreen._actions import ActionPoller
from sqreen._blocking import MAX_BLOCKS, Blocklist
from sqreen._client_ip import TrustedProxies
from sqreen._config import Config
from sqreen._errors import InternalErrors
from sqreen._queue import Queue
from sqreen.transports.http import HTTPTransport
from tests._ports import free_port
from tests.receiver import RawServer, Receiver, http_reply
from tests.test_queue import Clock, encode, put

UNCHANGED = json.dumps({"actions": {"version": 0, "unchanged": True}}).encode()


def _answer_quickly_but(slow_path: str, trickle: str, closed: threading.Event) -> Any:
    """Answer every request at once but those to ``slow_path``, whose reply trickles in a
    byte at a time (its ``body`` after whole headers, or its ``headers`` themselves), never
    ending, each byte well within any read timeout."""

    def answer(conn: socket.socket, method: str, target: str, body: bytes) -> None:
        if not target.startswith(slow_path):
            conn.sendall(http_reply("200 OK", UNCHANGED, (("Content-Type", "application/json"),)))
            return
        if trickle == "body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while not closed.wait(0.02):
            conn.sendall(b" " if trickle == "body" else b"X-Slow: y\r\n")

    return answer


@pytest.fixture
def raw() -> Any:
    servers: list[RawServer] = []

    def make(answer: Any, closed: threading.Event | None = None) -> RawServer:
        servers.append(RawServer(answer, closed))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.mark.parametrize("trickle", ["body", "headers"])
def test_a_reply_that_trickles_in_is_cut_at_its_deadline_logged_and_retried(
    raw: Any, trickle: str, sqreen_log: pytest.LogCaptureFixture
) -> None:
    closed = threading.Event()
    server = raw(_answer_quickly_but("/v1/events", trickle, closed), closed)
    transport = HTTPTransport(server.url, None, timeout=0.5)
    client = sqreen.init(transport=transport, flush_interval=0.05, heartbeat_interval=3600)
    sqreen.track("slow.reply")
    # Per read, each byte is in time: only a deadline on the whole exchange ends the first.
    assert server.wait_for(2, "/v1/events"), "the first request never ended"
    warnings = [r.getMessage() for r in sqreen_log.records if "delivery failed" in r.getMessage()]
    assert warnings and "no complete reply from /v1/events within 0.5 s" in warnings[0]
    assert client.stats()["sent"] == 0


def test_shutdown_keeps_to_shutdown_timeout_with_a_trickling_collector_and_spools(
    raw: Any, sqreen_log: pytest.LogCaptureFixture
) -> None:
    closed = threading.Event()
    server = raw(_answer_quickly_but("/v1/events", "body", closed), closed)
    client = sqreen.init(
        transport=HTTPTransport(server.url, None),  # 10 s a request: more than the exit has
        flush_interval=3600,
        heartbeat_interval=3600,
        shutdown_timeout=0.5,
    )
    for i in range(3):
        sqreen.track("at.exit", properties={"i": i})
    assert server.wait_for(1, "/v1/heartbeat")  # the flusher's first round is done
    done = threading.Event()
    threading.Thread(target=lambda: (client.shutdown(), done.set()), daemon=True).start()
    assert done.wait(30), "shutdown() still delivering to a collector that never finishes"
    assert server.requests.count(("POST", "/v1/events")) >= 1
    assert any("3 kept in" in r.getMessage() for r in sqreen_log.records)


def test_the_long_poll_ends_at_its_wait_plus_a_margin(raw: Any) -> None:
    closed = threading.Event()
    server = raw(_answer_quickly_but("/v1/actions", "body", closed), closed)
    transport = HTTPTransport(server.url, None, timeout=0.5)
    replies: list[Any] = []
    thread = threading.Thread(target=lambda: replies.append(transport.poll_actions(3, 0.2)))
    thread.daemon = True
    thread.start()
    thread.join(30)
    transport.close()
    assert replies and replies[0].outcome == "retry"
    assert "within 0.7 s" in replies[0].detail


def test_a_long_poll_held_for_its_wait_is_not_cut(raw: Any) -> None:
    closed = threading.Event()

    def answer(conn: socket.socket, method: str, target: str, body: bytes) -> None:
        closed.wait(float(parse_qs(urlsplit(target).query)["wait"][0]))  # held, then answered
        conn.sendall(
            http_reply("200 OK", json.dumps({"actions": {"version": 4, "items": []}}).encode())
        )

    server = raw(answer, closed)
    transport = HTTPTransport(server.url, None, timeout=2.0)
    try:
        reply = transport.poll_actions(3, 1.0)
    finally:
        transport.close()
    assert reply.outcome == "ok" and reply.actions == {"version": 4, "items": []}


def _bomb(mib: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1024 * 1024)
    return b"".join([compressor.compress(zeros) for _ in range(mib)] + [compressor.flush()])


def test_an_error_body_is_read_bounded_even_when_it_inflates(receiver: Receiver) -> None:
    bomb = _bomb(128)  # 130 KB on the wire, 128 MiB inflated
    receiver.respond(503, path="/v1/events", body=bomb, headers={"Content-Encoding": "gzip"})
    transport = HTTPTransport(receiver.url, None)
    tracemalloc.start()
    try:
        reply = transport.send({"sdk": {}}, [b'{"n":1}'])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        transport.close()
    assert reply.outcome == "retry" and reply.detail.startswith("HTTP 503 from /v1/events: ")
    assert len(reply.detail) < 300
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.0f} MiB to read an error's body"


def test_a_2xx_that_is_not_the_collectors_json_is_a_failed_delivery(
    receiver: Receiver, sqreen_log: pytest.LogCaptureFixture
) -> None:
    portal = b"<html>captive portal</html>"
    receiver.respond(200, path="/v1/events", body=portal, headers={"Content-Type": "text/html"})
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.05, heartbeat_interval=3600)
    sqreen.track("kept")
    assert sqreen.flush(timeout=10)
    assert len(receiver.batches) == 2  # sent again after the portal's page
    assert client.stats()["sent"] == 1 and client.stats()["dropped"]["rejected"] == 0
    (warning,) = [r.getMessage() for r in sqreen_log.records if "delivery failed" in r.getMessage()]
    assert "not the collector's reply" in warning and "captive portal" in warning
    # Where it failed, said (a typo in the port was read from nowhere): no credentials.
    assert warning.endswith(f"(attempt 1; collector {receiver.url})"), warning


def test_a_failed_delivery_names_the_collector_without_its_credentials(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    sqreen.init(
        endpoint=f"http://user:SECRET@127.0.0.1:{port}/prefix?token=SECRET",
        token="t",
        flush_interval=0.05,
        heartbeat_interval=3600,
    )
    sqreen.track("kept")

    def said() -> list[str]:
        return [r.getMessage() for r in sqreen_log.records if "delivery failed" in r.getMessage()]

    assert _wait_for(said)
    assert said()[0].endswith(f"(attempt 1; collector http://127.0.0.1:{port}/prefix)")
    assert "SECRET" not in said()[0]


def test_what_a_wrong_endpoint_most_likely_means_is_said(receiver: Receiver) -> None:
    """A 404 (an endpoint with a wrong path prefix, or the app's own address) and an
    https:// endpoint on a plain-HTTP server say what to check, not only what failed."""
    receiver.respond(404, path="/v1/events", body=b"Not Found")
    transport = HTTPTransport(receiver.url, None)
    try:
        reply = transport.send({"sdk": {}}, [b'{"n":1}'])
    finally:
        transport.close()
    assert reply.outcome == "retry"
    assert reply.detail.endswith("is the endpoint the collector's address?)"), reply.detail
    transport = HTTPTransport(receiver.url.replace("http://", "https://"), None)
    try:
        reply = transport.send({"sdk": {}}, [b'{"n":1}'])
    finally:
        transport.close()
    assert reply.outcome == "retry" and "WRONG_VERSION_NUMBER" in reply.detail
    assert reply.detail.endswith("answered in plain HTTP: use http://)"), reply.detail


@pytest.mark.parametrize("body", [b"", b"[1, 2]", b"[" * 100_000 + b"]" * 100_000, b"null"])
def test_a_2xx_whose_body_is_not_a_json_object_is_retried(receiver: Receiver, body: bytes) -> None:
    receiver.respond(200, path="/v1/events", body=body)
    transport = HTTPTransport(receiver.url, None)
    try:
        assert transport.send({"sdk": {}}, [b'{"n":1}']).outcome == "retry"
        assert transport.send({"sdk": {}}, [b'{"n":2}']).outcome == "ok"
    finally:
        transport.close()


def test_rejected_indexes_outside_the_batch_are_ignored(receiver: Receiver) -> None:
    rejected = [{"index": i, "error": "name: bad"} for i in (0, 1, 2, 999, -1, 0)]
    receiver.respond(200, path="/v1/events", body=json.dumps({"rejected": rejected}).encode())
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.05, heartbeat_interval=3600)
    sqreen.track("one")
    assert sqreen.flush(timeout=10)
    stats = client.stats()
    assert stats["sent"] == 0 and stats["dropped"]["rejected"] == 1
    assert stats["tracked"] == stats["sent"] + sum(stats["dropped"].values()) + stats["queue_depth"]


def test_the_collectors_words_are_written_out_in_the_log(
    receiver: Receiver, sqreen_log: pytest.LogCaptureFixture
) -> None:
    forged = "\n2026-12-03 11:00:00,000 root CRITICAL forged\x1b[2K"
    receiver.respond(503, path="/v1/events", body=b"busy" + forged.encode())
    rejected = [{"index": 0, "error": "name: bad" + forged}]
    receiver.respond(200, path="/v1/events", body=json.dumps({"rejected": rejected}).encode())
    sqreen.init(endpoint=receiver.url, flush_interval=0.05, heartbeat_interval=3600)
    sqreen.track("x")
    assert sqreen.flush(timeout=10)
    said = [r.getMessage() for r in sqreen_log.records if r.name == "sqreen"]
    assert len([m for m in said if "forged" in m]) == 2  # the 503's body, the rejection
    assert not [m for m in said if "\n" in m or "\x1b" in m]
    assert any("busy\\n2026-12-03" in m and "forged\\x1b[2K" in m for m in said)


def test_the_sdk_enforces_as_many_blocks_as_the_collector_allows_by_default() -> None:
    from sqreen.server.blocks import MAX_ACTIVE_BLOCKS

    assert MAX_BLOCKS == MAX_ACTIVE_BLOCKS


def test_an_action_set_past_the_cap_is_enforced_up_to_it_and_the_rest_refused(
    receiver: Receiver, sqreen_log: pytest.LogCaptureFixture
) -> None:
    total = 2 * MAX_BLOCKS + 5
    items = [{"id": str(i), "type": "block_user", "user": {"uid": str(i)}} for i in range(total)]
    receiver.block(items)
    client = sqreen.init(endpoint=receiver.url, heartbeat_interval=3600)
    client.start()
    assert client.queue.first_actions.wait(10)
    # The first word may be a try that gave up (a 20 005-item set read on a loaded machine
    # past the wait): the set comes with the next.
    assert _wait_for(lambda: client.blocklist.version == receiver.actions["version"], 30)
    assert sqreen.is_blocked({"uid": "0"}) and sqreen.is_blocked({"uid": str(MAX_BLOCKS - 1)})
    assert not sqreen.is_blocked({"uid": str(MAX_BLOCKS)})
    # Refused and kept in order, as many again, to be enforced when blocks are lifted.
    assert list(client.blocklist.refused) == [str(i) for i in range(MAX_BLOCKS, 2 * MAX_BLOCKS)]
    assert "10000 blocks" in client.blocklist.refused[str(MAX_BLOCKS)]
    said = [r.getMessage() for r in sqreen_log.records if "blocks" in r.getMessage()]
    assert len(said) == 1 and "20005" in said[0]  # one line for the set, not one per block
    spool = client.spool
    assert spool is not None
    # Saved by whichever thread applied it (the long-poll or the flusher), maybe a moment
    # after the other one found it applied.
    assert _wait_for(lambda: spool.load_actions() is not None)
    saved = spool.load_actions()["actions"]  # as kept: not the whole 20 005
    assert saved["version"] == client.blocklist.version and len(saved["items"]) == 2 * MAX_BLOCKS


def test_a_diff_past_the_cap_refuses_what_it_adds_past_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_blocking, "MAX_BLOCKS", 3)
    blocklist = Blocklist(TrustedProxies(None))
    user = [{"id": str(i), "type": "block_user", "user": {"uid": str(i)}} for i in range(6)]
    blocklist.apply({"version": 1, "items": user[:2]})
    blocklist.apply({"version": 2, "since": 1, "add": user[2:5], "remove": []})
    assert blocklist.refused == {
        "3": "past the 3 blocks this SDK enforces",
        "4": "past the 3 blocks this SDK enforces",
    }
    assert blocklist.user_block({"uid": "2"}) and not blocklist.user_block({"uid": "3"})
    blocklist.apply({"version": 3, "since": 2, "add": [user[0], user[5]], "remove": ["1"]})
    # A block lifted makes room for the first waiting, in the set's order: a new one comes last.
    assert blocklist.user_block({"uid": "3"}) and not blocklist.user_block({"uid": "1"})
    assert set(blocklist.refused) == {"4", "5"} and not blocklist.user_block({"uid": "5"})
    assert [i["id"] for i in blocklist.snapshot()["items"]] == ["0", "2", "3", "4", "5"]
    blocklist.apply({"version": 4, "since": 3, "add": [], "remove": ["0", "2", "3"]})
    assert blocklist.refused == {} and blocklist.user_block({"uid": "5"})


class _Pauses(threading.Event):
    """The poller's stop event, recording the pauses it asks for (without waiting them)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.asked.append(timeout)
        if len(self.asked) >= 3:
            self.set()
        return self.is_set()


def _poller_against(transport: HTTPTransport, cpu: Any) -> tuple[ActionPoller, _Pauses]:
    blocklist = Blocklist(TrustedProxies(None))
    poller = ActionPoller(
        transport.poll_actions,
        blocklist,
        lambda actions, held: blocklist.apply(actions),
        InternalErrors(),
        clock=lambda: 100.0,
        cpu=cpu,
    )
    pauses = poller._stop = _Pauses()
    return poller, pauses


def _pauses_of_a_poller(server: Any, cpu: Any) -> list[float]:
    """Run an action poller against ``server`` until it has paused twice; its pauses."""
    transport = HTTPTransport(server.url, None)
    poller, pauses = _poller_against(transport, cpu=cpu)
    poller.start()
    assert _wait_for(lambda: len(pauses.asked) >= 2), "the poller asked again at once, always"
    poller.stop()
    assert poller._thread is not None
    poller._thread.join(10)
    transport.close()
    return list(pauses.asked)


def test_whole_action_sets_that_keep_changing_are_applied_at_most_once_a_second(
    raw: Any,
) -> None:
    versions = count(1)

    def answer(conn: socket.socket, method: str, target: str, body: bytes) -> None:
        actions = {"version": next(versions), "items": []}  # a new whole set, at once, always
        conn.sendall(http_reply("200 OK", json.dumps({"actions": actions}).encode()))

    asked = _pauses_of_a_poller(raw(answer), cpu=lambda: 0.0)
    assert asked[:2] == [1.0, 1.0]  # the first set at once; each next a second later


def test_changes_are_paced_by_what_applying_them_costs(raw: Any) -> None:
    def answer(conn: socket.socket, method: str, target: str, body: bytes) -> None:
        held = int(parse_qs(urlsplit(target).query)["version"][0])
        actions = {"version": held + 1, "since": held, "add": [], "remove": []}  # a diff
        if held < 0:
            actions = {"version": 1, "items": []}
        conn.sendall(http_reply("200 OK", json.dumps({"actions": actions}).encode()))

    spent = count(0.0, 0.25)  # every look at the thread's CPU time: 0.25 s more
    asked = _pauses_of_a_poller(raw(answer), cpu=lambda: next(spent))
    assert asked[:2] == [1.0, 1.0]  # four times the 0.25 s of CPU each change took


def test_a_batch_whose_reply_changes_the_set_at_a_cost_paces_the_next(
    raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = count(1)

    def answer(conn: socket.socket, method: str, target: str, body: bytes) -> None:
        reply = UNCHANGED
        if target == "/v1/events":  # a new whole set with every batch's reply
            reply = json.dumps({"actions": {"version": next(versions), "items": []}}).encode()
        conn.sendall(http_reply("200 OK", reply))

    server = raw(answer)
    spent = count(0.0, 0.25)  # every look at the flusher's CPU time: 0.25 s more
    monkeypatch.setattr(_delivery, "thread_time", lambda: next(spent))
    config = Config.resolve({"heartbeat_interval": 3600, "batch_size": 1}, environ={})
    clock = Clock()
    transport = HTTPTransport(server.url, None)
    blocklist = Blocklist(config.trusted, clock)
    queue = Queue(config, transport, blocklist, encode, lambda: {"sdk": {}}, clock=clock)
    queue.start = lambda: None  # type: ignore[method-assign]  # the test is the flusher
    try:
        put(queue, 2)
        queue.step()  # two batches due at once (batch_size 1)
        assert server.requests.count(("POST", "/v1/events")) == 1 and blocklist.version == 1
        clock.advance(0.9)
        queue.step()
        assert server.requests.count(("POST", "/v1/events")) == 1
        clock.advance(0.1)  # four times the 0.25 s that the first reply's set took
        queue.step()
        assert server.requests.count(("POST", "/v1/events")) == 2
        assert queue.stats()["sent"] == 2
    finally:
        transport.close()


def _wait_for(condition: Any, timeout: float = 10.0) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return True
        done.wait(0.01)
    return bool(condition())


def test_a_collector_url_without_a_host_is_not_said() -> None:
    """``http:user:pass@host/x`` (no ``//``: a hand-made HTTPTransport takes it) has no
    host to say, only what may be secret."""
    from types import SimpleNamespace

    assert _delivery._to(SimpleNamespace(endpoint="http:user:pass@host/x")) == ""
    assert (
        _delivery._to(SimpleNamespace(endpoint="http://u:p@h:1/x?t=1"))
        == "; collector http://h:1/x"
    )
