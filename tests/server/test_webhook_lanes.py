"""Webhooks under an alert flood: a playbook's alerts wait in their own queue, posted in
turn with the others', so that a scan's thousand alerts never hold back (or drop) the one
account takeover that follows; when too many wait, the oldest of the longest queue goes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sqreen.server.playbooks import Notifier


class GatedReceiver:
    """A webhook that holds its first post until released, then records every alert's
    playbook in the order received."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.holding = threading.Event()
        self.received: list[str] = []
        self.ids: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.holding.set()
                receiver.gate.wait(30)
                alert = json.loads(body)["alert"]
                receiver.received.append(alert["playbook"])
                receiver.ids.append(alert["id"])
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


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
    assert len(receiver.received) == 41
    assert receiver.received.index("account-takeover") <= 2  # its turn, not the 41st
    assert notifier.dropped == 0


def test_past_the_bound_the_longest_queue_keeps_its_oldest(receiver: GatedReceiver) -> None:
    notifier = Notifier("s", backoff=0.01, max_pending=5)
    flood(receiver, notifier, 11)
    assert "account-takeover" in receiver.received  # the one that matters was kept
    assert len(receiver.received) == 1 + 5  # the one in flight, then the five kept
    assert notifier.dropped == 12 - 5
    # The scan's first alerts, not its last: a flood cannot push out an earlier alert.
    assert sorted(receiver.ids) == [0, 1, 2, 3, 4, 12]
