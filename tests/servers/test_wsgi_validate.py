"""PEP 3333 on both sides of the WSGI middleware: ``validator(middleware(validator(app)))``.

``wsgiref.validate`` checks what the server hands the middleware and what the middleware hands
the server (outside), and what the middleware hands the app and what the app hands it back
(inside). Each scenario runs through ``wsgiref``'s own server and through a direct call whose
``start_response`` also enforces the rule the validator does not check: a second call without
``exc_info`` is a fatal error.
"""

from __future__ import annotations

import io
import os
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

import sqreen
from sqreen.middleware._common import ResponseAborted
from sqreen.middleware.wsgi import SqreenWSGIMiddleware
from sqreen.testing import CapturedEvents
from tests.integrations._servers import Gunicorn, http_request, wait_until
from tests.receiver import Receiver

pytestmark = pytest.mark.slow

BLOCKS = [
    {"id": "ip", "type": "block_ip", "ip": "203.0.113.0/24"},
    {"id": "user", "type": "block_user", "user": {"uid": "mallory"}},
]


def app(environ: dict[str, Any], start_response: Any) -> Any:
    handle = environ["sqreen.context"]
    path = environ["PATH_INFO"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = b""
    while len(body) < length:  # in pieces, as a streaming parser reads
        body += environ["wsgi.input"].read(min(3, length - len(body)))
    handle.track("validated", properties={"path": path, "length": len(body)})
    if path == "/identify-before-start":
        handle.identify({"uid": "mallory"})
    if path == "/caught-in-generator":  # start_response called lazily, as PEP 3333 allows

        def caught() -> Iterator[bytes]:
            try:
                handle.identify({"uid": "mallory"})
            except BaseException:
                pass
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"secret"

        return caught()
    start_response("200 OK", [("Content-Type", "text/plain")])
    if path == "/identify-after-start":
        handle.identify({"uid": "mallory"})
    if path == "/caught-after-start":
        try:
            handle.identify({"uid": "mallory"})
        except BaseException:
            pass
        return [b"secret"]
    if path == "/stream":
        return iter([b"<", body, b">"])
    if path == "/file":
        return environ["wsgi.file_wrapper"](io.BytesIO(b"from a file"), 4)
    if path.startswith("/late"):

        def chunks() -> Iterator[bytes]:
            if path == "/late-after-a-chunk":
                yield b"first "
            handle.identify({"uid": "mallory"})  # a blocked user, found while streaming
            yield b"secret"

        return chunks()
    return [body]


WRAPPED = validator(SqreenWSGIMiddleware(validator(app)))

#: name -> path, body, headers; the status and the body the client gets
SCENARIOS = {
    "body": ("/", b"hello=world", {}, 200, b"hello=world"),
    "streamed": ("/stream", b"streamed", {}, 200, b"<streamed>"),
    "file-wrapper": ("/file", b"", {}, 200, b"from a file"),
    "blocked-ip": ("/", b"x", {"X-Forwarded-For": "203.0.113.9"}, 403, None),  # via a proxy
    "identify-before-start": ("/identify-before-start", b"", {}, 403, None),
    "identify-after-start": ("/identify-after-start", b"", {}, 403, None),
    "identify-before-any-chunk": ("/late-before-any-chunk", b"", {}, 403, None),
    # The app caught the Blocked identify() raised: refused all the same.
    "caught-after-start": ("/caught-after-start", b"", {}, 403, None),
    "caught-in-generator": ("/caught-in-generator", b"", {}, 403, None),
}
DIRECT = [name for name in SCENARIOS if name != "file-wrapper"]  # the server's wrapper


class _Handler(WSGIRequestHandler):
    errors = io.StringIO()

    def get_stderr(self) -> Any:
        return self.errors  # the tracebacks wsgiref logs: a validator's AssertionError too

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def wsgiref_server() -> Iterator[int]:
    server: WSGIServer = make_server("127.0.0.1", 0, WRAPPED, handler_class=_Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    thread.join(5)
    server.server_close()


@pytest.fixture
def events(sqreen_events: CapturedEvents) -> CapturedEvents:
    sqreen_events.block(BLOCKS)
    _Handler.errors = io.StringIO()
    return sqreen_events


@pytest.mark.parametrize("name", SCENARIOS)
def test_through_wsgiref_server(wsgiref_server: int, events: CapturedEvents, name: str) -> None:
    path, body, headers, _, _ = SCENARIOS[name]
    response = http_request(wsgiref_server, "POST" if body else "GET", path, body, headers)
    assert _Handler.errors.getvalue() == ""
    _check(events, name, response.status, response.body)


@pytest.mark.parametrize("name", DIRECT)
def test_a_direct_call(events: CapturedEvents, name: str) -> None:
    path, body, headers, _, _ = SCENARIOS[name]
    _check(events, name, *StrictServer().run(_environ(path, body, headers)))


def _check(events: CapturedEvents, name: str, status: int, content: bytes) -> None:
    path, body, _, expected_status, expected_content = SCENARIOS[name]
    assert status == expected_status
    if expected_content is not None:
        assert content == expected_content
    if status == 200:
        assert events.named("validated")[-1]["properties"] == {"path": path, "length": len(body)}


def test_a_blocked_user_found_after_a_chunk_aborts_the_response(
    wsgiref_server: int, events: CapturedEvents
) -> None:
    response = http_request(wsgiref_server, "GET", "/late-after-a-chunk")
    assert b"secret" not in response.body
    logged = _Handler.errors.getvalue()
    assert "ResponseAborted" in logged  # what the server is told: drop the connection
    assert "AssertionError" not in logged and "Warning" not in logged


def _environ(path: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST" if body else "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    return environ


class StrictServer:
    """A ``start_response`` that holds the middleware to PEP 3333's rules on the call."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.sent = False
        self.violations: list[str] = []  # a middleware may catch what is raised: kept here

    def start_response(self, status: str, headers: list[Any], exc_info: Any = None) -> Any:
        if exc_info is not None:
            if self.sent:
                raise exc_info[1].with_traceback(exc_info[2])
        elif self.status is not None:
            self.violations.append(f"start_response({status!r}) again without exc_info")
            raise AssertionError(self.violations[-1])
        self.status = status
        return self.write

    def write(self, data: bytes) -> None:
        self.sent = True

    def run(self, environ: dict[str, Any]) -> tuple[int, bytes]:
        result = WRAPPED(environ, self.start_response)
        out = b""
        try:
            for chunk in result:
                self.sent = self.sent or bool(chunk)
                out += chunk
        finally:
            result.close()
        assert self.status is not None
        assert self.violations == []
        return int(self.status.split()[0]), out


def test_a_direct_call_aborted_after_a_chunk(events: CapturedEvents) -> None:
    with pytest.raises(ResponseAborted):
        StrictServer().run(_environ("/late-after-a-chunk", b"", {}))
    assert sqreen.is_blocked({"uid": "mallory"})


def test_a_caught_block_is_one_clean_403_on_gunicorn(tmp_path: Any) -> None:
    """gunicorn appends the headers of a second ``start_response`` (``exc_info``) to the
    first's: the 403 must be its first call, on a connection that stays usable."""
    receiver = Receiver()
    receiver.block(BLOCKS)
    env = {"SQREEN_ENDPOINT": receiver.url, "SQREEN_FLUSH_INTERVAL": "0.2"}
    server = Gunicorn("tests.servers.test_wsgi_validate:WRAPPED", env, "gthread")  # keep-alive
    try:
        assert wait_until(
            lambda: http_request(server.port, "GET", "/identify-before-start").status == 403, 15
        )
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            for path in ("/caught-after-start", "/caught-in-generator", "/stream"):
                conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n".encode())
                head, body = _read_response(conn)
                names = [line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:]]
                assert names.count(b"content-type") == 1, head  # one set of headers
                assert names.count(b"content-length") <= 1, head
                if path == "/stream":  # the same connection serves the next request
                    assert head.startswith(b"HTTP/1.1 200") and body == b"<>"
                else:
                    assert head.startswith(b"HTTP/1.1 403"), head
                    assert b"secret" not in body and b"refused" in body
    finally:
        server.stop()
        receiver.stop()


def _read_response(conn: socket.socket) -> tuple[bytes, bytes]:
    """One response with a Content-Length (or chunked, for the app's stream) off ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    lengths = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
    if lengths:
        length = int(lengths[0].split(b":")[1])
        while len(rest) < length:
            rest += conn.recv(65536)
        return head, rest[:length]
    while not rest.endswith(b"0\r\n\r\n"):
        rest += conn.recv(65536)
    body, pieces = b"", rest
    while True:
        size_line, _, pieces = pieces.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return head, body
        body, pieces = body + pieces[:size], pieces[size + 2 :]


def test_a_stream_s_empty_first_chunk_sends_its_headers_at_once(tmp_path: Any) -> None:
    """Server-sent events: the app yields an empty chunk so that gunicorn sends the headers
    before its first event, which may come minutes later (proxies and browsers time out
    meanwhile). The middleware held them until the first non-empty chunk."""
    flag = tmp_path / "go"
    os.mkfifo(flag)
    server = Gunicorn("tests.servers.apps:wsgi_stream_app", {"SQREEN_TRANSPORT": "memory:"})
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            conn.sendall(f"GET /stream?flag={flag} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:  # the event waits for the flag, made below
                head += conn.recv(65536)
            assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
            flag.write_bytes(b"1")  # the first event may go
            rest = head.partition(b"\r\n\r\n")[2]
            while b"data: hi" not in rest:
                rest += conn.recv(65536)
    finally:
        server.stop()
