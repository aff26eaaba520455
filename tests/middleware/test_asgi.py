"""The generic ASGI middleware, around plain ASGI apps."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import sqreen
from sqreen._context import current, current_request
from sqreen.middleware._common import ResponseAborted
from sqreen.middleware.asgi import SqreenASGIMiddleware
from sqreen.testing import CapturedEvents
from sqreen.transports import Reply, ScriptedTransport
from sqreen.transports.scripted import Call

Message = dict[str, Any]
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def http_scope(
    path: str = "/", headers: list[tuple[bytes, bytes]] | None = None, **extra: Any
) -> dict[str, Any]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers or [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    scope.update(extra)
    return scope


async def call(
    app: App, scope: dict[str, Any], body: list[bytes] | None = None
) -> tuple[int | None, dict[bytes, bytes], bytes]:
    incoming: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(body or [b""]) - 1}
        for i, chunk in enumerate(body or [b""])
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return (
        start["status"] if start else None,
        dict(start["headers"]) if start else {},
        body_out,
    )


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_binds_the_request_and_stores_the_handle_in_its_own_state(
    sqreen_events: CapturedEvents,
) -> None:
    """Two requests at once, each with its copy of the lifespan state (as servers give it):
    each gets its own handle, in its own state; the lifespan's dict is never written to."""
    lifespan_state = {"db": "pool"}
    seen: list[Any] = []
    barrier = asyncio.Barrier(2) if hasattr(asyncio, "Barrier") else None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        handle = scope["state"]["sqreen"]
        assert scope["state"]["db"] == "pool"
        assert barrier is not None
        await barrier.wait()  # both requests in flight at once
        seen.append((handle, current(), scope["path"]))
        handle.track("hello")
        await ok(scope, receive, send)

    async def main() -> None:
        mw = SqreenASGIMiddleware(app)
        await asyncio.gather(
            call(mw, http_scope("/one", state=lifespan_state.copy())),
            call(mw, http_scope("/two", state=lifespan_state.copy())),
        )

    asyncio.run(main())
    assert lifespan_state == {"db": "pool"}
    assert len({id(h) for h, _, _ in seen}) == 2
    assert all(h is c for h, c, _ in seen)
    assert sorted(e["request"]["path"] for e in sqreen_events) == ["/one", "/two"]
    assert current() is None


def test_the_receive_tee_feeds_the_parameters(sqreen_events: CapturedEvents) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"]["sqreen"].track("before")
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        scope["state"]["sqreen"].track("after", collect_body=True)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    payload = json.dumps({"token": "abc", "page": 2}).encode()
    scope = http_scope("/p", headers=[(b"content-type", b"application/json")])
    status, _, body = asyncio.run(
        call(SqreenASGIMiddleware(app), scope, [payload[:5], payload[5:]])
    )
    assert (status, body) == (200, payload)
    before, after = sqreen_events
    assert before["request"]["params"] == {}
    assert after["request"]["params"] == {"token": "[redacted]", "page": 2}


def test_lifespan_passes_through_and_flushes_on_shutdown(sqreen_events: CapturedEvents) -> None:
    client = sqreen.init(transport="memory:", flush_interval=3600)
    transport: Any = client.transport
    delivered_at_shutdown: list[int] = []
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            with anyio.fail_after(5):
                # An event queued while serving, not yet due (flush_interval is an hour).
                async def request_app(scope: Any, receive: Any, send: Any) -> None:
                    sqreen.track("served")
                    await ok(scope, receive, send)

                await call(SqreenASGIMiddleware(request_app), http_scope())
        if message["type"] == "lifespan.shutdown.complete":
            delivered_at_shutdown.append(len(transport.events))

    asyncio.run(SqreenASGIMiddleware(app)({"type": "lifespan", "asgi": {}}, receive, send))
    assert delivered_at_shutdown == [1]


def test_lifespan_shutdown_keeps_in_the_spool_what_it_could_not_deliver(
    sqreen_events: CapturedEvents, tmp_path: Path, sqreen_log: pytest.LogCaptureFixture
) -> None:
    """The server may kill the process at once after (uvicorn does, with SIGTERM): what the
    collector did not take within shutdown_timeout is on disk by then, and said. The client
    stays open: a process that goes on (a test client's) still sends it, and removes it."""
    answer = threading.Event()

    def handler(call: Call) -> Reply:
        if call.kind == "events":
            answer.wait(30)  # a collector that does not answer, until told to
        return Reply("ok")

    client = sqreen.init(
        transport=ScriptedTransport(handler),
        spool=str(tmp_path),
        flush_interval=3600,
        shutdown_timeout=0.2,
    )
    spooled_at_shutdown: list[int] = []
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            kind = message["type"].rpartition(".")[2]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":

            async def request_app(scope: Any, receive: Any, send: Any) -> None:
                for i in range(3):
                    sqreen.track("served", properties={"i": i})
                await ok(scope, receive, send)

            await call(SqreenASGIMiddleware(request_app), http_scope())
        if message["type"] == "lifespan.shutdown.complete":
            files = tmp_path.glob("*/*.batch")
            spooled_at_shutdown.append(sum(f.read_bytes().count(b"\n") for f in files))

    asyncio.run(SqreenASGIMiddleware(app)({"type": "lifespan", "asgi": {}}, receive, send))
    assert spooled_at_shutdown == [3]
    said = [r.getMessage() for r in sqreen_log.records if "lifespan shutdown" in r.getMessage()]
    assert said == [
        f"sqreen: 3 events not delivered within 0.2s of the lifespan shutdown; 3 kept in "
        f"{client.spool.directory if client.spool else None} for the next process should this "
        "one end"
    ]
    assert not client.closed
    answer.set()
    assert client.flush(10)
    assert not list(tmp_path.glob("*/*.batch"))


def blocked_user_app(status_first: bool) -> App:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if status_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            scope["state"]["sqreen"].identify({"uid": "mallory"})
        except Exception:
            pass
        await ok(scope, receive, send)

    return app


def test_a_blocked_user_gets_a_403_before_the_response_starts(
    sqreen_events: CapturedEvents,
) -> None:
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])
    scope = http_scope(headers=[(b"accept", b"application/json")])
    status, headers, body = asyncio.run(call(SqreenASGIMiddleware(blocked_user_app(False)), scope))
    assert status == 403
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body) == {"error": "forbidden", "detail": "This request was refused."}
    assert current() is None


def test_blocked_after_the_response_started_aborts_it(sqreen_events: CapturedEvents) -> None:
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])
    with pytest.raises(ResponseAborted) as info:
        asyncio.run(call(SqreenASGIMiddleware(blocked_user_app(True)), http_scope()))
    assert isinstance(info.value.__cause__, sqreen.Blocked)


def test_blocked_after_the_response_ended_is_quiet(
    sqreen_events: CapturedEvents, caplog: pytest.LogCaptureFixture
) -> None:
    """A block raised once the response is whole (a background task's ``auth_track()``, as
    Starlette runs it after the last body): the task stops there, the refusal is counted,
    and the server gets no exception (it logged two tracebacks for a response served)."""
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await ok(scope, receive, send)
        sqreen.auth_track(True, uid="mallory")  # the background task
        raise AssertionError("not reached")

    status, _, body = asyncio.run(call(SqreenASGIMiddleware(app), http_scope()))
    assert status == 200 and body
    assert [e["name"] for e in sqreen_events] == ["auth.login.success", "security.blocked"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_block_caught_once_the_stream_started_sends_nothing_more(
    sqreen_events: CapturedEvents,
) -> None:
    """A stream that catches the ``Blocked`` raised for it once its headers went: the rest
    of its body is not sent (its send raises), and the response is aborted. (Only the
    response's start was checked: a server-sent events stream went on to the blocked user.)"""
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])
    sent: list[Message] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: hello\n\n", "more_body": True})
        try:
            scope["state"]["sqreen"].identify({"uid": "mallory"})
        except BaseException:
            pass
        try:
            await send({"type": "http.response.body", "body": b"data: secret\n\n"})
        except Exception:
            pass  # an app that swallows the send's error: the response is cut all the same

    async def server_send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    with pytest.raises(ResponseAborted):
        asyncio.run(SqreenASGIMiddleware(app)(http_scope(), receive, server_send))
    assert [m.get("body") for m in sent] == [None, b"data: hello\n\n"]
    assert [e["name"] for e in sqreen_events] == ["security.blocked"]


def test_the_app_s_own_errors_beside_a_block_after_the_response_are_raised(
    sqreen_events: CapturedEvents,
) -> None:
    """A background task's group holding a block and the app's own error: the error reaches
    the server (it vanished with the block)."""
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await ok(scope, receive, send)

        async def bug() -> None:
            raise ValueError("a real bug")

        async def login() -> None:
            sqreen.auth_track(True, uid="mallory")

        async with anyio.create_task_group() as tg:
            tg.start_soon(bug)
            tg.start_soon(login)

    with pytest.raises(BaseExceptionGroup) as info:
        asyncio.run(call(SqreenASGIMiddleware(app), http_scope()))
    assert [type(e) for e in info.value.exceptions] == [ValueError]


def test_blocked_inside_a_task_group(sqreen_events: CapturedEvents) -> None:
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def child() -> None:
            scope["state"]["sqreen"].identify({"uid": "mallory"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
        await ok(scope, receive, send)

    status, headers, _ = asyncio.run(call(SqreenASGIMiddleware(app), http_scope()))
    assert status == 403 and headers[b"content-type"] == b"application/json"


def test_a_blocked_ip_is_refused_before_the_app_runs(sqreen_events: CapturedEvents) -> None:
    calls: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await ok(scope, receive, send)

    sqreen_events.block([{"id": "i1", "type": "block_ip", "ip": "203.0.113.0/24"}])
    mw = SqreenASGIMiddleware(app)
    blocked = http_scope("/b", headers=[(b"x-forwarded-for", b"203.0.113.9")])
    allowed = http_scope("/a", headers=[(b"x-forwarded-for", b"198.51.100.1")])
    assert asyncio.run(call(mw, blocked))[0] == 403
    assert asyncio.run(call(mw, allowed))[0] == 200
    assert calls == ["/a"]


def test_a_websocket_is_bound_while_the_app_runs_and_unbound_after(
    sqreen_events: CapturedEvents,
) -> None:
    seen: list[Any] = []
    scope: dict[str, Any] = {"type": "websocket"}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        handle = current()
        seen.append((scope["type"], scope["state"]["sqreen"] is handle, handle is not None))

    asyncio.run(SqreenASGIMiddleware(app)(scope, None, None))
    assert seen == [("websocket", True, True)]
    assert current() is None and "sqreen" not in scope["state"]


def test_an_internal_error_is_logged_not_served(
    sqreen_events: CapturedEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqreen.middleware.asgi as asgi

    def broken(*args: Any) -> Any:
        raise RuntimeError("bug in sqreen")

    monkeypatch.setattr(asgi, "ASGIReceiveTee", broken)
    assert asyncio.run(call(SqreenASGIMiddleware(ok), http_scope()))[0] == 200
    assert sqreen_events.client.stats()["internal_errors"] == 1
    sqreen_events.client.errors.count = 0  # expected here


@pytest.mark.parametrize("call_made", ["failure", "success", "signup"])
def test_an_ip_blocked_while_its_request_runs_gets_403_at_its_login(
    sqreen_events: CapturedEvents, call_made: str
) -> None:
    """Admitted before the block existed (an attacker's concurrent guesses, the block made
    by the crossing of another): the login's verdict is not answered."""
    answered: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        handle = scope["state"]["sqreen"]
        # The block arrives while the password is checked.
        sqreen_events.block([{"id": "i1", "type": "block_ip", "ip": "203.0.113.0/24"}])
        if call_made == "signup":
            handle.signup_track(username="mallory")
        else:
            handle.auth_track(call_made == "success", username="mallory")
        answered.append(scope["path"])
        await ok(scope, receive, send)

    mw = SqreenASGIMiddleware(app)
    guess = http_scope("/login", headers=[(b"x-forwarded-for", b"203.0.113.9")])
    assert asyncio.run(call(mw, guess))[0] == 403
    other = http_scope("/login", headers=[(b"x-forwarded-for", b"198.51.100.1")])
    assert asyncio.run(call(mw, other))[0] == 200
    assert answered == ["/login"]  # the other client's
    # The attempt itself is tracked, then its refusal, as any other.
    name = {"failure": "auth.login.failure", "success": "auth.login.success"}.get(
        call_made, "auth.signup"
    )
    assert [(e["name"], e["request"]["ip"]) for e in sqreen_events] == [
        (name, "203.0.113.9"),
        ("security.blocked", "203.0.113.9"),
        (name, "198.51.100.1"),
    ]


def test_lifespan_shutdown_stops_waiting_at_a_failed_send(
    sqreen_events: CapturedEvents, tmp_path: Path, sqreen_log: pytest.LogCaptureFixture
) -> None:
    """A collector that is down answers at once: the retries that would follow (0.4 s, 0.8 s...)
    held every lifespan shutdown for its whole shutdown_timeout (a test suite's TestClient
    apps, 16 s -> 127 s). The first failed send ends the wait; the spool keeps the events."""
    sends: list[int] = []

    def handler(call: Call) -> Reply:
        if call.kind == "events":
            sends.append(len(call.events))
            return Reply("retry", detail="ConnectError: [Errno 111] Connection refused")
        return Reply("ok")

    client = sqreen.init(
        transport=ScriptedTransport(handler),
        spool=str(tmp_path),
        flush_interval=3600,
        shutdown_timeout=60,
    )
    for i in range(3):
        sqreen.track("served", properties={"i": i})
    assert client.flush_or_spool(60) is False
    assert sends == [3]  # one send, no retry waited for (within 60 s it would have retried)
    said = [r.getMessage() for r in sqreen_log.records if "lifespan shutdown" in r.getMessage()]
    assert said == [
        "sqreen: 3 events not delivered at the lifespan shutdown (a send failed: the collector "
        f"is down or refusing); 3 kept in {client.spool.directory if client.spool else None} "
        "for the next process should this one end"
    ]


def test_a_client_that_cannot_be_made_at_a_request_is_said_once_and_passed_through(
    monkeypatch: pytest.MonkeyPatch, sqreen_log: pytest.LogCaptureFixture
) -> None:
    """A wrong ``SQREEN_*`` variable found at a request (no lifespan, or the client made
    again after a shutdown): the requests are served with a handle that does nothing, one
    error is logged (an internal error with its traceback was logged at every request), and
    until ``RETRY_AFTER`` has passed no request reads the configuration or goes to a worker
    thread; fixed, the first request after that is tracked."""
    import logging

    from sqreen import _hub
    from sqreen.middleware import asgi

    monkeypatch.setenv("SQREEN_TRANSPORT", "memory:")
    monkeypatch.setenv("SQREEN_BATCH_SIZE", "lots")
    now = [50.0]
    monkeypatch.setattr(_hub, "_clock", lambda: now[0])
    hops = []
    hop = asgi.started_off_the_loop
    monkeypatch.setattr(asgi, "started_off_the_loop", lambda *a: hops.append(1) or hop(*a))
    handles = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        handles.append(scope["state"]["sqreen"])
        await ok(scope, receive, send)

    wrapped = SqreenASGIMiddleware(app)
    for _ in range(20):
        assert anyio.run(call, wrapped, http_scope())[0] == 200
    assert all(h.track("more") is False for h in handles)
    assert _hub.active is None and len(hops) == 1
    said = [r.getMessage() for r in sqreen_log.records if r.levelno >= logging.ERROR]
    assert len(said) == 1 and "SQREEN_BATCH_SIZE" in said[0], said
    monkeypatch.setenv("SQREEN_BATCH_SIZE", "10")
    now[0] += _hub.RETRY_AFTER
    assert anyio.run(call, wrapped, http_scope())[0] == 200
    assert _hub.active is not None and len(hops) == 2
    assert handles[-1].track("now") is True


def test_a_request_leaves_no_reference_cycle_behind(sqreen_events: CapturedEvents) -> None:
    """The handle in the request's state held the scope, and the scope the handle: each
    request left a cycle for the garbage collector, with all a framework had put in the
    scope (FastAPI: 15 objects a request, a young collection every 50 requests). A handle
    kept by the app (a task it started) still tracks."""
    import gc

    kept: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["framework's"] = {"exit stack": []}  # what a framework hangs on the scope
        if scope["path"] == "/keep":
            kept.append(scope["state"]["sqreen"])
        await ok(scope, receive, send)

    wrapped = SqreenASGIMiddleware(app)

    async def many() -> None:
        for _ in range(20):
            await call(wrapped, http_scope())

    anyio.run(many)  # (the event loop's own objects collected first)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        anyio.run(many)
        gc.collect()
        ours = [o for o in gc.garbage if type(o).__module__.startswith("sqreen")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert ours == []
    anyio.run(call, wrapped, http_scope("/keep"))
    assert kept[-1].track("after the request") is True


def test_the_server_sends_and_receives_with_no_request_bound(
    sqreen_events: CapturedEvents,
) -> None:
    """What a server schedules while it sends or receives copies the task's context:
    uvicorn arms its keep-alive timer in the send of a response's last message (a cancelled
    timer stays in the loop's queue), and re-arms its socket's reader as the app reads a
    body that had paused it, each with the request's handle, its scope and all a framework
    hung on it. The server's sends (answers, 403s to a blocked address or user) and
    receives now run with no request bound; the app's own code around them, and a
    background task after the response, still track with the request."""
    sqreen_events.block(
        [
            {"id": "i1", "type": "block_ip", "ip": "203.0.113.0/24"},
            {"id": "b1", "type": "block_user", "user": {"uid": "mallory"}},
        ]
    )
    bound_in_send: list[object] = []
    bound_in_receive: list[object] = []
    timers: list[asyncio.TimerHandle] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/mallory":
            sqreen.identify({"uid": "mallory"})
        assert (await receive())["body"] == b"pw=1"
        assert current() is scope["state"]["sqreen"]
        await ok(scope, receive, send)
        assert current() is scope["state"]["sqreen"]  # bound again after the last message
        sqreen.track("background.task")

    async def serve(scope: dict[str, Any]) -> int | None:
        loop = asyncio.get_running_loop()
        sent: list[Message] = []

        async def receive() -> Message:
            bound_in_receive.append(current())
            return {"type": "http.request", "body": b"pw=1", "more_body": False}

        async def send(message: Message) -> None:
            bound_in_send.append(current())
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                timer = loop.call_later(3600, lambda: None)  # as uvicorn's keep-alive
                timer.cancel()
                timers.append(timer)

        await SqreenASGIMiddleware(app)(scope, receive, send)
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    async def requests() -> list[int | None]:
        return [
            await serve(http_scope("/a")),
            await serve(http_scope("/b", headers=[(b"x-forwarded-for", b"203.0.113.9")])),
            await serve(http_scope("/mallory")),
        ]

    assert asyncio.run(requests()) == [200, 403, 403]
    assert len(bound_in_send) == 6 and set(bound_in_send) == {None}
    assert bound_in_receive == [None]  # /a's (the blocked address and user never read)
    assert len(timers) == 3
    for timer in timers:  # what each timer's context holds: no request
        assert timer._context.get(current_request) is None  # type: ignore[attr-defined]
    tracked = [e for e in sqreen_events if e["name"] == "background.task"]
    assert [e["request"]["path"] for e in tracked] == ["/a"]
    assert sorted(e["name"] for e in sqreen_events if e not in tracked) == ["security.blocked"] * 2


@pytest.mark.parametrize("caught", [False, True], ids=["raised", "caught-by-the-app"])
def test_a_refused_request_is_counted_once(sqreen_events: CapturedEvents, caught: bool) -> None:
    """Raised through the middleware, or caught by the app (kept on the request): one 403,
    its body alone, one refusal counted."""
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            scope["state"]["sqreen"].identify({"uid": "mallory"})
        except BaseException:
            if not caught:
                raise
        await ok(scope, receive, send)

    status, _, body = asyncio.run(call(SqreenASGIMiddleware(app), http_scope()))
    assert status == 403 and b"refused" in body and b"ok" not in body
    assert sqreen_events.client.refusals.totals == {"b1": 1}
