"""Connections to a real ``sqreen serve``: bounded in time and number, whoever opens them.

Each test starts the collector as operators do, on 127.0.0.1, and plays the client that
opens sockets and sends nothing, half a request line, or headers and a trickle of body;
real batches must keep flowing meanwhile, and the log must not fill up.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from sqreen.server.connections import LOG_EVERY, guard_of, on_loop_error
from sqreen.server.storage import open_storage

from .conftest import ServeProcess, action_version, add_key, envelope, wire_event

pytestmark = pytest.mark.slow

#: The open-file limit of the collector in the hostile test: fewer than the sockets opened.
FD_LIMIT = 256


def low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the collector closed ``sock`` within ``within`` seconds (EOF or reset)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass  # (a 408 or the like, then the close)
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def connect(port: int, sockets: list[socket.socket], first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if first:
        sock.sendall(first)
    sockets.append(sock)
    return sock


def send_batches(url: str, token: str, count: int) -> list[int]:
    statuses = []
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for _ in range(count):
            reply = client.post(url + "/v1/events", json=envelope([wire_event()]))
            statuses.append(reply.status_code)
    return statuses


def log_lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if line.strip()]


def test_idle_and_half_sent_connections_beyond_the_fd_limit_do_not_stop_batches(
    tmp_path: Path, serve: Callable[..., ServeProcess], sockets: list[socket.socket]
) -> None:
    """300 sockets that send nothing, against a collector allowed 256 open files, plus
    half a request line, and headers with a tenth of their body: every batch is stored, the
    hostile sockets are all closed within the timeouts, and the log holds a line or two (it
    held 84 MB of "Too many open files" tracebacks in 10 s, and no batch got through)."""
    db = str(tmp_path / "sqreen.db")
    token = add_key(db)
    log = tmp_path / "serve.log"
    collector = serve(
        db,
        None,
        "--header-timeout",
        "2",
        "--body-timeout",
        "2",
        log=log,
        preexec_fn=low_fd_limit,
    )
    for _ in range(300):
        connect(collector.port, sockets)
    half_line = connect(collector.port, sockets, b"POST /v1/eve")
    half_headers = connect(collector.port, sockets, b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
    half_body = connect(
        collector.port,
        sockets,
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 1000\r\n\r\n{",
    )

    assert send_batches(collector.url, token, 20) == [200] * 20

    for late in (half_line, half_headers, half_body):
        assert closed_by_server(late, 10)
    assert all(closed_by_server(s, 30) for s in sockets)
    storage = open_storage(db)
    try:
        assert storage.count_events() == 20
    finally:
        storage.close()
    lines = log_lines(log)
    assert not [line for line in lines if "Traceback" in line or "Error:" in line]
    assert len([line for line in lines if "open files" in line]) <= 1
    assert len(lines) <= 6, lines


def test_past_the_connection_limit_the_connection_idle_longest_is_closed(
    tmp_path: Path, serve: Callable[..., ServeProcess], sockets: list[socket.socket]
) -> None:
    db = str(tmp_path / "sqreen.db")
    token = add_key(db)
    collector = serve(db, None, "--max-connections", "4", "--header-timeout", "60")
    oldest = connect(collector.port, sockets)
    others = [connect(collector.port, sockets) for _ in range(3)]
    time.sleep(0.2)  # (accepted in this order)
    assert send_batches(collector.url, token, 3) == [200] * 3  # a fifth connection
    assert closed_by_server(oldest, 5)
    assert not any(closed_by_server(s, 0.2) for s in others[1:])


def test_a_keep_alive_connection_is_not_cut_while_its_request_runs(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """A long-poll outlasts the header and body timeouts: its request is all in (it is
    answered ``unchanged`` at the end of its wait, three times the timeouts, not cut)."""
    db = str(tmp_path / "sqreen.db")
    token = add_key(db)
    collector = serve(db, None, "--header-timeout", "1", "--body-timeout", "1")
    held = action_version(collector.url, token)
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        reply = client.get(collector.url + "/v1/actions", params={"version": held, "wait": 3})
        assert reply.json() == {"actions": {"version": held, "unchanged": True}}


def test_an_accept_out_of_file_descriptors_is_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio reports each failed accept of a burst (up to 2048 a second, each with a
    traceback): one line a minute, with the count, and other reports go on as before."""
    loop = asyncio.new_event_loop()
    seen: list[str] = []
    loop.set_exception_handler(lambda loop, context: seen.append(context["message"]))
    try:
        guard_of(loop)
        context = {
            "message": "socket.accept() out of system resource",
            "exception": OSError(errno.EMFILE, "Too many open files"),
            "socket": object(),
        }
        with caplog.at_level(logging.ERROR, "sqreen.server"):
            for _ in range(3000):
                loop.call_exception_handler(context)
        assert len(caplog.records) == 1
        assert "Too many open files" in caplog.records[0].getMessage()
        loop.call_exception_handler({"message": "something else"})
        assert seen == ["something else"]
        assert not on_loop_error(loop, {"message": "no exception"})
        assert LOG_EVERY >= 60
    finally:
        loop.close()
