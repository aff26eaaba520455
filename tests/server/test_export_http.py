"""The live forwarder's HTTP sink against real endpoints: hostile or broken ones (a reply it
must not read whole, an error text it must not log whole), and one behind a private CA."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from sqreen.server.export import sinks
from sqreen.server.export.sinks import SinkError, open_sink, parse_destination

#: What the endpoint sends for any request, once it has read the request's head.
Reply = Callable[[socket.socket], None]


@pytest.fixture
def endpoint() -> Iterator[Callable[..., str]]:
    """``start(reply, tls=None)``: a local HTTP endpoint (HTTPS with a ``tls`` context)
    answering every request with ``reply``; its URL. Connections are held open until the
    test ends."""
    done = threading.Event()
    listeners: list[socket.socket] = []

    def start(reply: Reply, tls: ssl.SSLContext | None = None) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                try:
                    if tls is not None:
                        conn = tls.wrap_socket(conn, server_side=True)
                    head = b""
                    while b"\r\n\r\n" not in head:
                        head += conn.recv(65536)
                    if tls is not None:  # a plain 204, over TLS
                        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
                    reply(conn)
                    done.wait(30)
                except OSError:  # a handshake the client refused
                    pass
                finally:
                    conn.close()

        threading.Thread(target=serve, daemon=True).start()
        return f"jsonl+http://127.0.0.1:{listener.getsockname()[1]}/in"

    yield start
    done.set()
    for listener in listeners:
        listener.close()


def test_a_2xx_is_acknowledged_without_reading_an_endless_body(
    endpoint: Callable[..., str], monkeypatch: pytest.MonkeyPatch
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


def test_a_status_line_that_trickles_in_fails_the_send_at_its_deadline(
    endpoint: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers a line every 20 ms, for ever: each read is in time, so only a deadline on the
    whole exchange ends the send (the forwarder stayed on it for good)."""
    monkeypatch.setattr(sinks, "TIMEOUT", 0.5)
    stop = threading.Event()

    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while not stop.wait(0.02):
            conn.sendall(b"X-Slow: y\r\n")

    sink = open_sink(parse_destination(endpoint(trickle)))
    failed: list[BaseException] = []

    def send() -> None:
        try:
            sink.send([])
        except SinkError as exc:
            failed.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    sender.join(30)
    stop.set()
    sink.close()
    assert not sender.is_alive(), "the send never ended"
    assert failed and "Timeout" in str(failed[0])


def test_an_error_quoting_the_endpoint_is_logged_cut(endpoint: Callable[..., str]) -> None:
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


def test_an_https_endpoint_of_a_private_ca_named_by_ssl_cert_file(
    endpoint: Callable[..., str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``SSL_CERT_FILE`` names the CA of an ``otlp+https://`` or ``jsonl+https://`` endpoint,
    as it does for the SDK (the sink ignores the rest of the environment: no proxy)."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))

    def over_tls(conn: socket.socket) -> None:
        pass

    url = endpoint(over_tls, tls=server).replace("jsonl+http://", "jsonl+https://")
    sink = open_sink(parse_destination(url))
    try:
        sink.send([])  # the certificate checked against the CA: acknowledged
    finally:
        sink.close()


@pytest.mark.parametrize(
    "url",
    [
        "https://alice:s3cret@siem.example/in",  # a scheme left out
        "jsonl+tcp://alice:s3cret@siem.example",  # a port left out
        "jsonl+tcp://siem.example/?token=s3cret",
        "alice:s3cret@siem.example:9000",
    ],
)
def test_a_bad_export_url_is_refused_without_its_secrets(url: str) -> None:
    """The error ``sqreen serve`` prints for a mistyped ``--export`` (to a terminal, or a
    service's journal) does not carry the URL's password or query."""
    with pytest.raises(ValueError) as refused:
        parse_destination(url)
    assert "s3cret" not in str(refused.value)
    assert "siem.example" in str(refused.value)
