"""Webhooks under an alert flood: a playbook's alerts wait in their own queue, posted in
turn with the others', so that a scan's thousand alerts never hold back (or drop) the one
account takeover that follows; when too many wait, the oldest of the longest queue goes."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sqreen.server.playbooks import Notifier
from tests.receiver import RawServer, http_reply

from .webhook_receiver import WebhookReceiver


class GatedReceiver(WebhookReceiver):
    """A webhook that holds its first post until released, then records every alert's
    playbook (and id) in the order received."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.holding = threading.Event()
        self.ids: list[int] = []
        self.playbooks: list[str] = []
        super().__init__()

    def handle(self, body: bytes, signature: str | None) -> None:
        self.holding.set()
        self.gate.wait(30)
        alert = json.loads(body)["alert"]
        self.playbooks.append(alert["playbook"])
        self.ids.append(alert["id"])

    def close(self) -> None:
        self.gate.set()
        super().close()


@pytest.fixture
def receiver() -> Iterator[GatedReceiver]:
    receiver = GatedReceiver()
    yield receiver
    receiver.close()


def alert(playbook: str, n: int) -> dict[str, Any]:
    return {"alert": {"id": n, "playbook": playbook}}


def flood(receiver: GatedReceiver, notifier: Notifier, scans: int) -> None:
    """One scan alert in flight (held by the receiver), ``scans`` more waiting, then an
    account takeover; all posted once the receiver lets go."""
    try:
        notifier.submit((receiver.url,), alert("brute-force-ip", 0))
        assert receiver.holding.wait(10)  # the first is being posted: the rest wait
        for n in range(1, scans + 1):
            notifier.submit((receiver.url,), alert("brute-force-ip", n))
        notifier.submit((receiver.url,), alert("account-takeover", scans + 1))
        receiver.gate.set()
        assert notifier.join(30)
    finally:
        notifier.close()


def test_a_flood_of_one_playbook_does_not_hold_back_another(receiver: GatedReceiver) -> None:
    notifier = Notifier("s", backoff=0.01)
    flood(receiver, notifier, 39)
    assert len(receiver.playbooks) == 41
    assert receiver.playbooks.index("account-takeover") <= 2  # its turn, not the 41st
    assert notifier.dropped == 0


def test_past_the_bound_the_longest_queue_keeps_its_oldest(receiver: GatedReceiver) -> None:
    notifier = Notifier("s", backoff=0.01, max_pending=5)
    flood(receiver, notifier, 11)
    assert "account-takeover" in receiver.playbooks  # the one that matters was kept
    assert len(receiver.playbooks) == 1 + 5  # the one in flight, then the five kept
    assert notifier.dropped == 12 - 5
    # The scan's first alerts, not its last: a flood cannot push out an earlier alert.
    assert sorted(receiver.ids) == [0, 1, 2, 3, 4, 12]


def test_a_receiver_trickling_its_reply_lets_the_lane_go_on_at_the_timeout() -> None:
    """Headers a line every 20 ms, for ever: each read is in time, so only a deadline on the
    whole post ends it; the lane then posts what waits (it stayed on the first for good)."""
    closed = threading.Event()

    def answer(conn: socket.socket, method: str, target: str, body: bytes) -> None:
        if target == "/slow":
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not closed.wait(0.02):
                conn.sendall(b"X-Slow: y\r\n")
        else:
            conn.sendall(http_reply("204 No Content", b""))

    server = RawServer(answer, closed)
    notifier = Notifier(timeout=0.5, tries=1)
    try:
        notifier.submit((server.url + "/slow",), alert("brute-force-ip", 1))
        notifier.submit((server.url + "/slow",), alert("account-takeover", 2))
        assert notifier.join(30), "a post never ended"
        assert (notifier.sent, notifier.failed) == (0, 2)
        notifier.submit((server.url + "/ok",), alert("account-takeover", 3))
        assert notifier.join(30)
        assert notifier.sent == 1
    finally:
        server.close()
