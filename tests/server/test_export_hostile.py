"""The live forwarder against hostile or broken endpoints: a reply it must not read whole,
an error text it must not log whole."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from sqreen.server.export import sinks
from sqreen.server.export.sinks import SinkError, open_sink, parse_destination

#: What the endpoint sends for any request, once it has read the request's head.
Reply = Callable[[socket.socket], None]


@pytest.fixture
def endpoint() -> Iterator[Callable[[Reply], str]]:
    """``start(reply)``: a local HTTP endpoint answering every request with ``reply``; its
    URL. Connections are held open until the test ends."""
    done = threading.Event()
    listeners: list[socket.socket] = []

    def start(reply: Reply) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        head += conn.recv(65536)
                    reply(conn)
                    done.wait(30)

        threading.Thread(target=serve, daemon=True).start()
        return f"jsonl+http://127.0.0.1:{listener.getsockname()[1]}/in"

    yield start
    done.set()
    for listener in listeners:
        listener.close()


def test_a_2xx_is_acknowledged_without_reading_an_endless_body(
    endpoint: Callable[[Reply], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint that answers 200 and then a body without end: the batch is acknowledged
    by the status, and the body is not read (read whole, it filled the collector's memory;
    read until a timeout, the batch failed and was sent again)."""
    monkeypatch.setattr(sinks, "TIMEOUT", 1.0)

    def endless(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n" + b"x" * 65536)

    sink = open_sink(parse_destination(endpoint(endless)))
    try:
        sink.send([])  # acknowledged: no SinkError
    finally:
        sink.close()


def test_an_error_quoting_the_endpoint_is_logged_cut(endpoint: Callable[[Reply], str]) -> None:
    """A status line of garbage is an error whose text is cut, not kilobytes of the peer's
    bytes in the collector's log."""

    def garbage(conn: socket.socket) -> None:
        conn.sendall(b"\x1b[2J" + b"G" * 8000 + b"\r\n\r\n")

    sink = open_sink(parse_destination(endpoint(garbage)))
    try:
        with pytest.raises(SinkError) as raised:
            sink.send([])
    finally:
        sink.close()
    assert str(raised.value).startswith("RemoteProtocolError: ")
    assert len(str(raised.value)) < 300
