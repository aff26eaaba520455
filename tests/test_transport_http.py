"""The HTTP transport against collectors that misbehave on the wire: replies that trickle in,
error bodies that inflate, 2xx pages that are not the collector's, indexes out of the batch,
words that would forge log lines. Each runs against a real server on 127.0.0.1
(``tests/receiver.py``)."""

from __future__ import annotations

import json
import socket
import threading
import tracemalloc
import zlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import sqreen
from sqreen.transports.http import HTTPTransport
from tests.receiver import RawServer, Receiver, http_reply

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
