"""Nothing of ours waits in the event loop, and a client that cannot be made breaks no app.

BlockBuster, which Starlette's and FastAPI's own suites run, raises on a blocking call made in
a thread that runs an asyncio loop (a file read, an ``os.stat``...). Starlette builds its
middlewares at its first call, inside the loop: making the client there read ``sqreen.ini``
and the spool in the loop, and the first request's wait for the action set
(``block_on_start_timeout``) held the whole loop.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from blockbuster import blockbuster_ctx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import sqreen
from sqreen import _hub
from sqreen.integrations.starlette import SqreenMiddleware
from sqreen.middleware.asgi import SqreenASGIMiddleware, in_event_loop
from tests.integrations._ticks import Ticks
from tests.receiver import Receiver, SilentServer

ATTACKER = "203.0.113.5"


def _app(handles: list[Any]) -> Starlette:
    async def index(request: Request) -> PlainTextResponse:
        handles.append(request.state.sqreen)
        request.state.sqreen.track("loop.handle", properties={"n": len(handles)})
        sqreen.track("loop.module")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", index)])
    app.add_middleware(SqreenMiddleware, app_name="loop")
    return app


@pytest.mark.parametrize("lifespan", [True, False], ids=["lifespan", "no-lifespan"])
def test_under_blockbuster_the_first_request_is_bound_checked_and_tracked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver, lifespan: bool
) -> None:
    """The client is made (``sqreen.ini`` read, the spool opened) and started, and the
    first request waits for the collector's blocks, all off the loop: under BlockBuster the
    first request from a blocked IP is refused, the next one bound and tracked."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sqreen.ini").write_text(
        f"[sqreen]\nendpoint = {receiver.url}\nblock_on_start_timeout = 10\n"
        f"flush_interval = 0.1\nspool = {tmp_path / 'spool'}\n"
    )
    receiver.block([{"id": "1", "type": "block_ip", "ip": ATTACKER, "expires_in": 600}])
    handles: list[Any] = []
    app = _app(handles)
    with blockbuster_ctx():
        if lifespan:
            with TestClient(app, client=(ATTACKER, 5000)) as attacker:
                assert attacker.get("/").status_code == 403
        else:
            assert TestClient(app, client=(ATTACKER, 5000)).get("/").status_code == 403
        reply = TestClient(app, client=("192.0.2.1", 5000)).get("/")
    assert (reply.status_code, reply.text) == (200, "ok")
    assert len(handles) == 1 and handles[0].bound
    assert sqreen.flush(10.0)
    seen = sorted((e["name"], e["request"]["ip"]) for e in receiver.events)
    assert seen == [
        ("loop.handle", "192.0.2.1"),
        ("loop.module", "192.0.2.1"),
        ("security.blocked", ATTACKER),
    ]
    assert receiver.batches[0]["app"]["name"] == "loop"  # the middleware's keyword
    assert _hub.active is not None and _hub.active.internal_errors == 0


def _scope(path: str = "/") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("192.0.2.1", 5000),
        "server": ("testserver", 80),
    }


async def _call(app: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(_scope(), receive, send)
    return sent


async def _hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def test_the_first_request_s_wait_for_the_action_set_leaves_the_loop_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A collector that never answers: the first request waits ``block_on_start_timeout``
    for the blocks, and meanwhile the loop runs other tasks (it ran none: the wait was a
    ``threading.Event.wait`` in the loop's thread)."""
    silent = SilentServer()
    monkeypatch.setenv("SQREEN_ENDPOINT", silent.url)
    monkeypatch.setenv("SQREEN_BLOCK_ON_START_TIMEOUT", "1")
    app = SqreenASGIMiddleware(_hello)

    async def main(ticks: Ticks) -> list[dict[str, Any]]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ticks.run)
            sent = await _call(app)
            tasks.cancel_scope.cancel()
        return sent

    try:
        for backend in ("asyncio", "trio"):
            ticks = Ticks()
            sqreen.shutdown(timeout=0.5)  # a new client: the first request waits again
            sent = anyio.run(main, ticks, backend=backend)
            assert sent[0]["status"] == 200
            assert ticks.count >= 5, f"{backend}: {ticks.count} ticks in the first request"
    finally:
        sqreen.shutdown(timeout=0.5)
        silent.close()


def test_in_event_loop_tells_asyncio_and_trio_from_none() -> None:
    async def inside() -> bool:
        return in_event_loop()

    assert not in_event_loop()
    assert anyio.run(inside, backend="asyncio")
    assert anyio.run(inside, backend="trio")


def test_a_client_that_cannot_be_made_makes_the_module_functions_do_nothing(
    monkeypatch: pytest.MonkeyPatch, sqreen_log: pytest.LogCaptureFixture
) -> None:
    """A wrong ``SQREEN_*`` variable, found at the first ``track()`` of a view: logged once,
    and every module function does nothing (they raised ``ConfigError`` into the view),
    without reading the configuration again until ``RETRY_AFTER`` has passed.
    ``sqreen.start()``, the explicit set-up, still raises; fixed, the first call after the
    retry time tracks."""
    monkeypatch.setenv("SQREEN_FLUSH_INTERVAL", "soon")
    monkeypatch.setenv("SQREEN_TRANSPORT", "memory:")
    _hub._said.clear()
    now = [1000.0]
    monkeypatch.setattr(_hub, "_clock", lambda: now[0])
    resolved = []
    resolve = _hub.Config.resolve
    monkeypatch.setattr(
        _hub.Config,
        "resolve",
        lambda *a: resolved.append(1) or resolve(*a),  # type: ignore[func-returns-value]
    )
    for _ in range(3):
        assert sqreen.track("view.event", properties={"a": 1}) is False
        assert sqreen.auth_track(False, username="alice") is False
        assert sqreen.signup_track(username="bob") is False
        assert sqreen.identify({"username": "alice"}) is None
        assert sqreen.is_blocked({"username": "alice"}, ip="192.0.2.1") is False
        assert sqreen.for_user({"username": "alice"}).track("scoped") is False
        assert sqreen.flush(0.1) is False  # nothing was sent
    assert _hub.active is None
    assert len(resolved) == 1  # tried once: the 20 calls after were INERT's, no read
    said = [r for r in sqreen_log.records if r.levelno >= logging.ERROR]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert "SQREEN_FLUSH_INTERVAL" in said[0].getMessage()
    with pytest.raises(sqreen.ConfigError, match="SQREEN_FLUSH_INTERVAL"):
        sqreen.start()
    monkeypatch.setenv("SQREEN_FLUSH_INTERVAL", "0.1")
    now[0] += _hub.RETRY_AFTER - 1
    assert sqreen.track("view.event") is False  # not tried yet
    now[0] += 1
    assert sqreen.track("view.event") is True
    assert _hub.active is not None and _hub.active.queue.tracked == 1


def test_an_error_of_ours_making_the_client_goes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the configuration's and the environment's errors are stood in for: a bug, or a
    blocking-call detector's error, is raised where it happened, loudly."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(_hub.Config, "resolve", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        sqreen.track("view.event")


def test_an_environment_error_making_the_client_is_logged_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, sqreen_log: pytest.LogCaptureFixture
) -> None:
    def gone(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError(2, "No such file or directory")  # os.getcwd() of a removed dir

    monkeypatch.setattr(_hub.Config, "resolve", gone)
    _hub._said.clear()
    assert sqreen.track("view.event") is False
    (said,) = [r for r in sqreen_log.records if r.levelno >= logging.ERROR]
    assert "FileNotFoundError" in said.getMessage() and said.exc_info is not None


def test_a_middleware_built_in_the_loop_applies_options_at_once_only_when_they_keep_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another app of the process (a test's) bringing no options, or the same, keeps the
    client in use: applied where it is built, no thread. New options wait for the first
    call, which makes their client off the loop."""
    monkeypatch.setenv("SQREEN_TRANSPORT", "memory:")

    async def build(**options: Any) -> SqreenMiddleware:
        return SqreenMiddleware(_hello, **options)

    first = anyio.run(partial(build, app_name="first"))
    assert not first._applied and _hub.active is None
    anyio.run(_call, first)
    made = _hub.active
    assert first._applied and made is not None
    assert made.config.app_name == "first"
    for options in ({}, {"app_name": "first"}):
        assert anyio.run(partial(build, **options))._applied
    other = anyio.run(partial(build, app_name="other"))
    assert not other._applied and _hub.active is made
    anyio.run(_call, other)
    assert _hub.active is not made and _hub.active.config.app_name == "other"
    assert anyio.run(partial(build, app_name="other"))._applied


def test_what_is_made_before_a_deferred_middleware_s_first_call_has_its_options(
    receiver: Receiver,
) -> None:
    """Built in the loop, the middleware's options wait for its first call to be applied,
    but they are taken at once: an outer middleware's ``track()`` before that call (no
    lifespan) goes to the middleware's endpoint, not to the default file."""

    class Outer:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                sqreen.track("outer.seen")
            await self.app(scope, receive, send)

    async def index(request: Request) -> PlainTextResponse:
        sqreen.track("inner.seen")
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/", index)],
        middleware=[
            Middleware(Outer),
            Middleware(SqreenMiddleware, endpoint=receiver.url, app_name="configured"),
        ],
    )
    assert TestClient(app).get("/").status_code == 200
    assert sqreen.flush(5.0)
    assert sorted(e["name"] for e in receiver.events) == ["inner.seen", "outer.seen"]
    assert {b["app"]["name"] for b in receiver.batches} == {"configured"}


def test_init_after_a_middleware_built_in_the_loop_keeps_its_client() -> None:
    """``sqreen.init()`` after the middleware was built (in a coroutine): init's client
    has the middleware's options too, and the middleware's first call keeps it."""

    async def main() -> None:
        app = SqreenMiddleware(_hello, app_name="from-middleware")
        made = sqreen.init(transport="memory:")
        assert made.config.app_name == "from-middleware"
        await _call(app)
        assert _hub.active is made and not made.closed

    anyio.run(main)
