"""``jsonl+tcp://`` against real receivers that close connections: one closing each after
a batch (as receivers close idle ones), one restarted on its port. Every record arrives
(at least once): a batch written on a connection the peer had closed went into the
kernel's buffer, seemed sent, and was lost."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from sqreen._wire import parse_event
from sqreen.server.export import Forwarder, export_lag, parse_destination, sinks
from sqreen.server.storage import Storage

from .conftest import wait_for, wire_event


class LineReceiver:
    """A TCP receiver of JSON lines on 127.0.0.1: ``close_after`` lines, it closes the
    connection (as after an idle timeout); :meth:`restart` closes everything and listens
    again on the same port."""

    def __init__(self, close_after: int | None = None) -> None:
        self.close_after = close_after
        self.ids: list[str] = []
        self.accepted = 0
        self.closed = 0  # connections it closed
        self.open: dict[socket.socket, threading.Event] = {}
        self._lock = threading.Lock()
        self.port = 0
        self._listen()

    def _listen(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.open[conn] = threading.Event()
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        count = 0
        buffer = b""
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                with self._lock:
                    self.ids += [json.loads(line)["id"] for line in lines]
                count += len(lines)
                if self.close_after is not None and count >= self.close_after and not buffer:
                    return
        except OSError:
            return
        finally:
            conn.close()
            self.closed += 1
            self.open[conn].set()

    def stop(self) -> None:
        """Close the listener and every connection (as a process exiting), and wait."""
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes its accept, which holds it open
        self.listener.close()
        for conn, done in list(self.open.items()):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed already
                pass
            assert done.wait(30)
        self.open = {}

    def restart(self) -> None:
        self.stop()
        self._listen()


@pytest.fixture
def receivers() -> Iterator[list[LineReceiver]]:
    made: list[LineReceiver] = []
    yield made
    for receiver in made:
        receiver.stop()


def store(storage: Storage, count: int) -> list[str]:
    events = [wire_event() for _ in range(count)]
    storage.insert_events([parse_event(e) for e in events], app="shop", host="web1", key_id=1)
    return [e["id"] for e in events]


def forward(storage: Storage, receiver: LineReceiver) -> Forwarder:
    destination = parse_destination(f"jsonl+tcp://127.0.0.1:{receiver.port}", "jsonl")
    forwarder = Forwarder(storage, destination, batch=50, interval=0.02, max_backoff=0.2)
    forwarder.start()
    return forwarder


def test_a_receiver_closing_each_connection_gets_every_record(
    sqlite_storage: Storage, receivers: list[LineReceiver]
) -> None:
    receiver = LineReceiver(close_after=50)
    receivers.append(receiver)
    forwarder = forward(sqlite_storage, receiver)
    sent: list[str] = []
    try:
        for round in range(1, 5):
            sent += store(sqlite_storage, 50)
            wait_for(lambda: set(sent) <= set(receiver.ids))  # noqa: B023
            wait_for(lambda: receiver.closed == round)  # noqa: B023 (the FIN is on its way)
    finally:
        forwarder.close()
    assert set(receiver.ids) == set(sent)


def test_a_restarted_receiver_gets_every_record(
    sqlite_storage: Storage, receivers: list[LineReceiver]
) -> None:
    receiver = LineReceiver()
    receivers.append(receiver)
    forwarder = forward(sqlite_storage, receiver)
    sent: list[str] = []
    try:
        for _ in range(3):
            sent += store(sqlite_storage, 50)
            wait_for(lambda: set(sent) <= set(receiver.ids))  # noqa: B023
            receiver.restart()
        sent += store(sqlite_storage, 50)
        wait_for(lambda: set(sent) <= set(receiver.ids))
        wait_for(lambda: export_lag(sqlite_storage, forwarder.destination.key).events == 0)
    finally:
        forwarder.close()
    assert set(receiver.ids) == set(sent)


@pytest.mark.skipif(sys.platform != "linux", reason="counts the bytes not acknowledged")
def test_a_close_the_check_before_the_send_missed_fails_the_send(
    sqlite_storage: Storage, receivers: list[LineReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer's FIN arriving between the check and the send (a race): the batch goes
    into the kernel's buffer, the peer answers with a reset, and the send, waiting for the
    peer to acknowledge its bytes, fails: the batch is sent again on a new connection."""
    checked = sinks.peer_closed

    def missed(sock: socket.socket) -> bool:
        if sys._getframe(1).f_code.co_name == "send":  # the check before the send
            return False
        return checked(sock)

    monkeypatch.setattr(sinks, "peer_closed", missed)
    receiver = LineReceiver(close_after=50)
    receivers.append(receiver)
    forwarder = forward(sqlite_storage, receiver)
    sent: list[str] = []
    try:
        for round in range(1, 4):
            sent += store(sqlite_storage, 50)
            wait_for(lambda: set(sent) <= set(receiver.ids))  # noqa: B023
            wait_for(lambda: receiver.closed == round)  # noqa: B023
    finally:
        forwarder.close()
    assert set(receiver.ids) == set(sent) and forwarder.failures >= 2


def test_an_open_connection_is_kept(receivers: list[LineReceiver]) -> None:
    """A peer that keeps the connection open: one connection for every batch."""
    receiver = LineReceiver()
    receivers.append(receiver)
    sink = sinks.open_sink(parse_destination(f"jsonl+tcp://127.0.0.1:{receiver.port}"))
    try:
        for _ in range(3):
            sink.send([])
    finally:
        sink.close()
    wait_for(lambda: receiver.closed == 1)
    assert receiver.accepted == 1
