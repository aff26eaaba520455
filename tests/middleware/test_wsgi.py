"""The generic WSGI middleware, around plain WSGI apps."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

import sqreen
from sqreen._context import current
from sqreen.middleware._common import ResponseAborted
from sqreen.middleware.wsgi import SqreenWSGIMiddleware
from sqreen.testing import CapturedEvents

App = Callable[[dict[str, Any], Any], Iterable[bytes]]


class Server:
    """Calls a WSGI app the way a server does: headers go out with the first non-empty chunk."""

    def __init__(self, app: App) -> None:
        self.app = app

    def __call__(self, path: str = "/", **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        kwargs.setdefault("environ_base", {"REMOTE_ADDR": "127.0.0.1"})
        environ = EnvironBuilder(path=path, **kwargs).get_environ()
        state: dict[str, Any] = {"sent": False}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if exc_info is not None and state["sent"]:
                raise exc_info[1].with_traceback(exc_info[2])
            if exc_info is None and "status" in state:
                raise AssertionError("start_response called twice without exc_info")
            state["status"], state["headers"] = status, headers
            return lambda data: None

        result = self.app(environ, start_response)
        body = b""
        try:
            for chunk in result:
                if chunk:
                    state["sent"] = True
                body += chunk
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        self.environ = environ
        return int(state["status"].split()[0]), dict(state["headers"]), body


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    environ["sqreen.context"].track("hello", properties={"n": 1})
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_binds_the_request_and_exposes_the_handle(sqreen_events: CapturedEvents) -> None:
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append((environ["sqreen.context"], current()))
        sqreen.track("module.level")
        return hello(environ, start_response)

    server = Server(SqreenWSGIMiddleware(app))
    status, _, body = server("/a/b", query_string="q=1", headers={"User-Agent": "UA/1"})
    assert (status, body) == (200, b"hello")
    handle, bound = seen[0]
    assert handle is bound and handle is not None
    assert current() is None  # released once the response is done
    assert "sqreen.context" not in server.environ  # no environ <-> handle cycle left behind
    assert sqreen_events.names() == ["module.level", "hello"]
    request = sqreen_events[1]["request"]
    assert request["path"] == "/a/b" and request["method"] == "GET"
    assert request["user_agent"] == "UA/1" and request["params"] == {"q": "1"}
    assert request["ip"] == "127.0.0.1"


def test_the_context_stays_bound_while_the_body_streams(sqreen_events: CapturedEvents) -> None:
    during: list[Any] = []

    class Body:
        closed = False

        def __iter__(self) -> Iterator[bytes]:
            during.append(current())
            sqreen.track("streaming")
            yield b"a"
            yield b"b"

        def close(self) -> None:
            Body.closed = True
            during.append(current())

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    status, _, body = Server(SqreenWSGIMiddleware(app))()
    assert (status, body) == (200, b"ab")
    assert during[0] is not None  # bound while the body is produced
    assert during[1] is None  # released once the last chunk is out
    assert Body.closed and current() is None
    assert sqreen_events[0]["request"]["path"] == "/"


def test_a_client_that_never_closes_leaves_nothing_bound(sqreen_events: CapturedEvents) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"body"

    environ = EnvironBuilder().get_environ()
    result = SqreenWSGIMiddleware(app)(environ, lambda *a: None)
    assert current() is None  # unbound as soon as the app returns, body unread
    assert list(result) == [b"body"]  # werkzeug's test client reads, and leaves close() to you
    assert current() is None and "sqreen.context" not in environ


def test_the_file_wrapper_is_handed_back_untouched(sqreen_events: CapturedEvents) -> None:
    class FileWrapper:
        def __init__(self, f: Any, size: int = 8192) -> None:
            self.f = f

        def __iter__(self) -> Iterator[bytes]:
            yield b"file"

    returned: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        wrapped = environ["wsgi.file_wrapper"](None)
        returned.append(wrapped)
        return wrapped

    environ = EnvironBuilder().get_environ()
    environ["wsgi.file_wrapper"] = FileWrapper
    result = SqreenWSGIMiddleware(app)(environ, lambda *a: None)
    assert result is returned[0]  # so the server can still sendfile()
    assert current() is None


def test_the_app_reads_its_body_through_the_tee(sqreen_events: CapturedEvents) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["sqreen.context"].track("before")  # nothing read yet
        data = environ["wsgi.input"].read()
        environ["sqreen.context"].track("after", collect_body=True)
        start_response("200 OK", [])
        return [data]

    payload = json.dumps({"password": "hunter2", "name": "bob"}).encode()
    _, _, body = Server(SqreenWSGIMiddleware(app))(
        method="POST", data=payload, content_type="application/json"
    )
    assert body == payload
    before, after = sqreen_events
    assert before["request"]["params"] == {} and before["request"]["body"] is None
    assert after["request"]["params"] == {"password": "[redacted]", "name": "bob"}
    assert "hunter2" not in json.dumps(after)
    assert after["request"]["body"]["truncated"] is False


def test_a_request_without_wsgi_input(sqreen_events: CapturedEvents) -> None:
    environ = EnvironBuilder(method="POST", data=b"x").get_environ()
    del environ["wsgi.input"]
    result = SqreenWSGIMiddleware(hello)(environ, lambda *a: None)
    assert list(result) == [b"hello"]
    assert sqreen_events.names() == ["hello"]


def blocked_user_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    try:
        environ["sqreen.context"].identify({"uid": "mallory"})
    except Exception:  # the app's own catch-all cannot swallow it
        pass
    start_response("200 OK", [])
    return [b"served"]


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),  # curl, httpx, requests
        ("text/html,application/xhtml+xml,*/*;q=0.8", "text/html; charset=utf-8"),  # a browser
        ("application/xhtml+xml", "text/html; charset=utf-8"),
        ("TEXT/HTML;q=0.9, application/json;q=0.5", "text/html; charset=utf-8"),
        ("application/json", "application/json"),
        ("application/problem+json, text/html;q=0.5", "application/json"),
        ("text/html;q=0.4, application/json;q=0.9", "application/json"),
        ("text/html, application/json", "application/json"),  # a tie: what an API parses
        ("text/html;q=bad", "application/json"),
        ("text/html;q=0", "application/json"),
        ("," * 5000 + "text/html", "application/json"),  # past the 32 items read
    ],
)
def test_a_blocked_user_gets_a_403(
    sqreen_events: CapturedEvents, accept: str | None, content_type: str
) -> None:
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])
    headers = {"Accept": accept} if accept else {}
    status, response_headers, body = Server(SqreenWSGIMiddleware(blocked_user_app))(headers=headers)
    assert status == 403
    assert response_headers["Content-Type"] == content_type
    assert response_headers["Cache-Control"] == "no-store"
    assert int(response_headers["Content-Length"]) == len(body)
    if content_type == "application/json":
        assert json.loads(body)["error"] == "forbidden"
    else:
        assert b"403 Forbidden" in body
    assert current() is None


def test_blocked_inside_an_exception_group(sqreen_events: CapturedEvents) -> None:
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            environ["sqreen.context"].identify({"uid": "mallory"})
        except BaseException as exc:
            raise BaseExceptionGroup("task group", [ValueError("x"), exc]) from None
        return []

    assert Server(SqreenWSGIMiddleware(app))()[0] == 403


def test_blocked_after_start_response_but_before_the_body(sqreen_events: CapturedEvents) -> None:
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        environ["sqreen.context"].identify({"uid": "mallory"})
        yield b"secret"

    status, _, body = Server(SqreenWSGIMiddleware(app))()
    assert status == 403 and b"secret" not in body


def test_an_empty_first_chunk_sends_the_headers_and_a_later_block_aborts(
    sqreen_events: CapturedEvents,
) -> None:
    """An empty first chunk goes to the server with the app's headers (a stream sends them
    so at once: server-sent events); a block found after it aborts the response, as once
    the body started. (The headers were held until the first non-empty chunk, so that this
    block was a 403, but a stream's headers waited for its first event.)"""
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        yield b""
        environ["sqreen.context"].identify({"uid": "mallory"})
        yield b"secret"

    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    environ = EnvironBuilder(path="/", environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()
    result = SqreenWSGIMiddleware(app)(environ, start_response)
    chunks: list[bytes] = []
    with pytest.raises(ResponseAborted):
        for chunk in result:  # the server's loop: the headers went with the empty chunk
            chunks.append(chunk)
    assert statuses == ["200 OK"] and chunks == [b""]


@pytest.mark.parametrize("first", [b"", b"first "])
def test_a_block_caught_once_the_headers_went_sends_nothing_more(
    sqreen_events: CapturedEvents, first: bytes
) -> None:
    """A stream that catches the ``Blocked`` raised for it, after its headers went (an empty
    first chunk, or some body): none of the rest of its body goes, and the connection is
    dropped. (The headers were the only point checked: the rest of the body went out.)"""
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        yield first
        try:
            environ["sqreen.context"].identify({"uid": "mallory"})
        except BaseException:
            pass
        yield b"data: secret\n\n"

    environ = EnvironBuilder(path="/", environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()
    result = SqreenWSGIMiddleware(app)(environ, lambda *a: lambda data: None)
    chunks: list[bytes] = []
    with pytest.raises(ResponseAborted):
        for chunk in result:
            chunks.append(chunk)
    assert chunks == [first]
    assert [e["name"] for e in sqreen_events] == ["security.blocked"]


def test_blocked_once_the_body_started_aborts_the_response(sqreen_events: CapturedEvents) -> None:
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first"
        environ["sqreen.context"].identify({"uid": "mallory"})
        yield b"secret"

    with pytest.raises(ResponseAborted) as info:
        Server(SqreenWSGIMiddleware(app))()
    assert isinstance(info.value.__cause__, sqreen.Blocked)
    assert current() is None


def test_a_blocked_ip_is_refused_before_the_app_runs(sqreen_events: CapturedEvents) -> None:
    calls: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ["REMOTE_ADDR"])
        start_response("200 OK", [])
        return [b"ok"]

    sqreen_events.block([{"id": "i1", "type": "block_ip", "ip": "203.0.113.0/24"}])
    server = Server(SqreenWSGIMiddleware(app))
    # The loopback peer is a trusted proxy: the client is the address it forwarded.
    assert server(headers={"X-Forwarded-For": "203.0.113.9"})[0] == 403
    assert calls == []
    assert server(headers={"X-Forwarded-For": "198.51.100.7"})[0] == 200
    assert calls == ["127.0.0.1"]


def test_the_apps_own_errors_go_through_unchanged(sqreen_events: CapturedEvents) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise KeyError("the app's bug")

    with pytest.raises(KeyError, match="the app's bug"):
        Server(SqreenWSGIMiddleware(app))()
    assert current() is None


def test_an_internal_error_is_logged_not_served(
    sqreen_events: CapturedEvents, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sqreen.middleware.wsgi as wsgi

    def broken(*args: Any) -> Any:
        raise RuntimeError("bug in sqreen")

    monkeypatch.setattr(wsgi, "WSGIInputTee", broken)
    caplog.set_level(logging.ERROR, logger="sqreen")
    status, _, body = Server(SqreenWSGIMiddleware(hello_without_handle))(method="POST", data=b"x")
    assert (status, body) == (200, b"plain")
    assert "bug in sqreen" in caplog.text
    client = sqreen_events.client
    assert client.stats()["internal_errors"] == 1
    client.errors.count = 0  # expected here: do not fail the test for it


def hello_without_handle(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"plain"]


def test_a_new_init_is_used_by_an_existing_middleware(sqreen_events: CapturedEvents) -> None:
    app = SqreenWSGIMiddleware(hello)
    Server(app)()
    assert sqreen_events.names() == ["hello"]
    other = sqreen.init(transport="memory:")
    Server(app)()
    assert other.flush(5.0)
    assert [e["name"] for e in other.transport.events] == ["hello"]  # type: ignore[attr-defined]


def test_a_wrong_setting_stops_the_set_up_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a framework integration's set-up does: not a logged error at every request."""
    monkeypatch.setenv("SQREEN_BATCH_SIZE", "lots")
    with pytest.raises(sqreen.ConfigError, match="SQREEN_BATCH_SIZE"):
        SqreenWSGIMiddleware(hello)


def test_a_client_that_cannot_be_made_at_a_request_is_said_once_and_passed_through(
    monkeypatch: pytest.MonkeyPatch, sqreen_log: pytest.LogCaptureFixture
) -> None:
    """A configuration broken after the set-up (``sqreen.ini`` edited, the environment of a
    test): the requests are served, with a handle that does nothing, one error is logged
    (it logged an internal error with its traceback at every request, after reading the
    configuration again), and the configuration is read again only once ``RETRY_AFTER`` has
    passed; fixed, the next request after that is tracked."""
    from sqreen import _hub

    monkeypatch.setenv("SQREEN_TRANSPORT", "memory:")
    server = Server(SqreenWSGIMiddleware(hello))
    monkeypatch.setenv("SQREEN_BATCH_SIZE", "lots")
    now = [50.0]
    monkeypatch.setattr(_hub, "_clock", lambda: now[0])
    resolved = []
    resolve = _hub.Config.resolve
    monkeypatch.setattr(_hub.Config, "resolve", lambda *a: resolved.append(1) or resolve(*a))
    for _ in range(30):
        assert server() == (200, {"Content-Type": "text/plain"}, b"hello")
        assert server.environ["sqreen.context"].track("more") is False
    assert _hub.active is None and len(resolved) == 1
    said = [r.getMessage() for r in sqreen_log.records if r.levelno >= logging.ERROR]
    assert len(said) == 1 and "SQREEN_BATCH_SIZE" in said[0], said
    monkeypatch.setenv("SQREEN_BATCH_SIZE", "10")
    now[0] += _hub.RETRY_AFTER
    assert server()[0] == 200
    assert _hub.active is not None and sqreen.flush(5)
    assert [e["name"] for e in _hub.active.transport.events] == ["hello"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("caught", [False, True], ids=["raised", "caught-by-the-app"])
def test_a_refused_request_is_counted_once(sqreen_events: CapturedEvents, caught: bool) -> None:
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            environ["sqreen.context"].identify({"uid": "mallory"})
        except BaseException:
            if not caught:
                raise
        return [b"secret"]

    status, headers, body = Server(SqreenWSGIMiddleware(app))()
    assert status == 403 and b"secret" not in body
    assert int(headers["Content-Length"]) == len(body)
    assert sqreen_events.client.refusals.totals == {"b1": 1}
