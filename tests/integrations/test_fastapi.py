"""What is particular to FastAPI and Starlette (the shared scenarios are in test_scenarios.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2 as httpx
import pytest

pytest.importorskip("fastapi")

import fastapi
from fastapi import Depends, FastAPI, WebSocket
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import sqreen
from sqreen.integrations.fastapi import Sqreen, SqreenMiddleware
from sqreen.integrations.starlette import SqreenMiddleware as StarletteMiddleware
from sqreen.testing import CapturedEvents
from tests.integrations._servers import ROOT, UvicornThread, free_port, wait_for_port
from tests.integrations.apps.fastapi_app import create_app
from tests.receiver import Receiver


def client(app: Any) -> TestClient:
    return TestClient(app, client=("127.0.0.1", 50000))


def test_the_dependency_sync_endpoints_and_background_tasks(sqreen_events: CapturedEvents) -> None:
    with client(create_app()) as c:
        assert c.get("/dependency/5").json() == {"item": 5}
        assert c.get("/explicit").json() == {"ok": True}
    background, explicit = sqreen_events
    # identify() ran in the thread pool; the task ran after the response: same user.
    assert background["name"] == "background.task"
    assert background["user"] == {"uid": "dep-5"}
    assert background["request"]["route"] == "/dependency/{item}"
    assert explicit["name"] == "explicit.dependency"


def test_the_dependency_without_the_middleware_says_what_to_do() -> None:
    app = FastAPI()

    @app.get("/")
    def index(sq: Sqreen) -> str:
        return "unreachable"

    with pytest.raises(RuntimeError, match="add_middleware"):
        client(app).get("/")


def test_middleware_keywords_configure_the_sdk(receiver: Receiver) -> None:
    app = FastAPI()
    app.add_middleware(SqreenMiddleware, endpoint=receiver.url, app_name="fastapi-kw")

    @app.get("/items/{item_id}")
    async def item(item_id: int, request: Request) -> Any:
        request.state.sqreen.track("kw", properties={"item": item_id})
        return {}

    client(app).get("/items/3")
    assert sqreen.flush(5.0)
    (event,) = receiver.events
    assert event["request"]["route"] == "/items/{item_id}"
    assert receiver.batches[0]["app"]["framework"] == "fastapi"
    assert receiver.batches[0]["app"]["name"] == "fastapi-kw"


def test_routers_included_with_prefixes_nested_and_mounted_give_the_whole_template(
    sqreen_events: CapturedEvents,
) -> None:
    """FastAPI 0.165 stopped copying included routes with their prefix: ``scope["route"]``
    is ``/users/{uid}`` for ``/api/v1/users/5``, and an ``APIRouter`` in a mounted app had no
    route at all. A playbook reading ``request.route`` (a login route's brute force) never
    fired, and two endpoints of one router were one route."""
    app = FastAPI()
    users = fastapi.APIRouter()

    @users.post("/login")
    async def login(sq: Sqreen) -> Any:
        sq.track("login")
        return {}

    @users.get("/users/{uid}")
    async def user(uid: str, sq: Sqreen) -> Any:
        sq.track("user")
        return {}

    outer, inner = fastapi.APIRouter(prefix="/outer"), fastapi.APIRouter(prefix="/r")

    @inner.get("/{z}")
    async def nested(z: str, sq: Sqreen) -> Any:
        sq.track("nested")
        return {}

    outer.include_router(inner)
    app.include_router(users, prefix="/api/v1")
    app.include_router(users, prefix="/admin")
    app.include_router(outer)
    sub, deep = FastAPI(), fastapi.APIRouter(prefix="/deep")

    @deep.get("/x/{a}/{b}")
    async def mounted(a: str, b: str, sq: Sqreen) -> Any:
        sq.track("mounted")
        return {}

    @sub.get("/things/{thing}")
    async def thing(thing: str, sq: Sqreen) -> Any:
        sq.track("thing")
        return {}

    sub.include_router(deep)
    app.mount("/v2", sub)
    app.add_middleware(SqreenMiddleware)
    with client(app) as c:
        for method, path in (
            ("POST", "/api/v1/login"),
            ("POST", "/admin/login"),
            ("GET", "/api/v1/users/5"),
            ("GET", "/outer/r/9"),
            ("GET", "/v2/deep/x/1/2"),
            ("GET", "/v2/things/3"),
        ):
            assert c.request(method, path).status_code == 200, path
    assert [(e["request"]["path"], e["request"]["route"]) for e in sqreen_events] == [
        ("/api/v1/login", "/api/v1/login"),
        ("/admin/login", "/admin/login"),
        ("/api/v1/users/5", "/api/v1/users/{uid}"),
        ("/outer/r/9", "/outer/r/{z}"),
        ("/v2/deep/x/1/2", "/v2/deep/x/{a}/{b}"),
        ("/v2/things/3", "/v2/things/{thing}"),
    ]


def test_plain_starlette_finds_the_route_template_through_mounts(
    sqreen_events: CapturedEvents,
) -> None:
    async def view(request: Request) -> PlainTextResponse:
        request.state.sqreen.track("starlette.view")
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/top/{a}", view),
            Mount("/api", routes=[Mount("/v1", routes=[Route("/users/{uid:int}", view)])]),
        ]
    )
    app.add_middleware(StarletteMiddleware)
    with client(app) as c:
        assert c.get("/top/x").text == "ok"
        assert c.get("/api/v1/users/42").text == "ok"
    top, nested = sqreen_events
    assert top["request"]["route"] == "/top/{a}"
    assert nested["request"]["route"] == "/api/v1/users/{uid:int}"
    assert nested["request"]["path"] == "/api/v1/users/42"


def test_lifespan_still_reaches_the_app(sqreen_events: CapturedEvents) -> None:
    started: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        started.append(True)
        yield
        started.append(False)

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(SqreenMiddleware)
    with client(app):
        pass
    assert started == [True, False]


def test_init_keywords_and_middleware_keywords_merge_option_by_option(receiver: Receiver) -> None:
    """Starlette builds its middleware at the first request (or lifespan), after init()."""
    sqreen.init(app_name="from-init", flush_interval=0.2)
    app = FastAPI()
    app.add_middleware(SqreenMiddleware, endpoint=receiver.url, app_name="from-middleware")

    @app.get("/")
    async def index(request: Request) -> Any:
        request.state.sqreen.track("merged")
        return {}

    client(app).get("/")
    assert sqreen.flush(5.0)
    assert [e["name"] for e in receiver.events] == ["merged"]
    assert receiver.batches[0]["app"]["name"] == "from-init"
    assert receiver.batches[0]["app"]["framework"] == "fastapi"


def test_middleware_keywords_then_init_merge_option_by_option(receiver: Receiver) -> None:
    StarletteMiddleware(Starlette(), endpoint=receiver.url, app_name="from-middleware")
    made = sqreen.init(app_name="from-init")
    assert (made.config.endpoint, made.config.app_name) == (receiver.url, "from-init")
    assert made.framework == "starlette"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"disable": "maybe"}, "disable"),
        ({"strict": b"1"}, "strict"),
        ({"transport": "ftp://x"}, "transport"),
        ({"flush_interval": "soon"}, "flush_interval"),
    ],
)
def test_bad_middleware_keywords_are_named(options: dict[str, Any], named: str) -> None:
    app = Starlette()
    app.add_middleware(StarletteMiddleware, **options)
    with pytest.raises(sqreen.ConfigError, match=named):
        TestClient(app).get("/")  # a request: the error itself
    with pytest.raises(sqreen.ConfigError, match=named), TestClient(app):
        pass  # the lifespan: its startup fails (uvicorn then exits with the message)
    # Without a lifespan (--lifespan off, a mounted app), each request raises it anew: the
    # one error raised again gathered every request's frames, its log growing each time.
    errors = []
    for _ in range(3):
        with pytest.raises(sqreen.ConfigError) as info:
            TestClient(app).get("/")
        errors.append(len(traceback.extract_tb(info.value.__traceback__)))
    assert errors[0] == errors[1] == errors[2]


def test_string_booleans_and_the_agents_ip_header_as_middleware_keywords() -> None:
    StarletteMiddleware(
        Starlette(), disable="false", strict="0", ip_header="X-Real-IP", transport="memory:"
    )
    config = sqreen._hub.active.config  # type: ignore[union-attr]
    assert (config.disable, config.strict, config.client_ip_header) == (False, False, "X-Real-IP")


def test_a_block_set_before_the_middleware_replaces_the_client(
    sqreen_events: CapturedEvents,
) -> None:
    """The reported bug: the middleware, built at the first request with options that make a
    new client, dropped the blocks the fixture had applied."""
    sqreen_events.block([{"id": "ip", "type": "block_ip", "ip": "203.0.113.0/24"}])
    first = sqreen_events.client
    app = FastAPI()
    app.add_middleware(SqreenMiddleware, app_name="replaced", trusted_proxies=[])

    @app.get("/")
    def index() -> str:
        return "served"

    assert TestClient(app, client=("203.0.113.9", 50000)).get("/").status_code == 403
    assert sqreen_events.client is not first
    assert TestClient(app, client=("198.51.100.7", 50000)).get("/").status_code == 200


def test_a_websocket_is_bound_as_its_handshake_and_a_blocked_user_refused(
    sqreen_events: CapturedEvents,
) -> None:
    """``sqreen: Sqreen`` in a websocket endpoint is the handshake's handle: its events carry
    the client's address and path and the user ``identify()`` bound (they had no request,
    and no user). A blocked user's ``auth_track()`` is refused: before the app accepts, the
    handshake (a 403); after, the connection closed with 1008 (a blocked user went on,
    ``auth_track()`` returning True)."""
    from starlette.testclient import WebSocketDenialResponse
    from starlette.websockets import WebSocketDisconnect

    from sqreen import _hub

    app = FastAPI()
    app.add_middleware(SqreenMiddleware)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, sqreen: Sqreen) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        sqreen.identify({"uid": "ws-1"})
        sqreen.track("ws.message", properties={"text": text})
        await websocket.send_text(text.upper())
        await websocket.close()

    @app.websocket("/login")
    async def login(websocket: WebSocket, sqreen: Sqreen) -> None:
        sqreen.auth_track(True, username=websocket.query_params["user"])
        await websocket.accept()
        await websocket.send_text("welcome")
        await websocket.close()

    @app.websocket("/later")
    async def later(websocket: WebSocket, sqreen: Sqreen) -> None:
        await websocket.accept()
        sqreen.auth_track(True, username=await websocket.receive_text())
        await websocket.send_text("welcome")
        await websocket.close()

    with client(app) as c:
        with c.websocket_connect("/ws", headers={"User-Agent": "ws-test"}) as connection:
            connection.send_text("hi")
            assert connection.receive_text() == "HI"
        active = _hub.active
        assert active is not None
        active.blocklist.apply(
            {
                "version": 1,
                "items": [{"id": "u", "type": "block_user", "user": {"username": "mallory"}}],
            }
        )
        with c.websocket_connect("/login?user=alice") as connection:
            assert connection.receive_text() == "welcome"
        with pytest.raises(WebSocketDenialResponse) as denied:
            with c.websocket_connect("/login?user=mallory"):
                pass
        assert denied.value.status_code == 403
        with c.websocket_connect("/later") as connection:
            connection.send_text("mallory")
            with pytest.raises(WebSocketDisconnect) as closed:
                connection.receive_text()
            assert closed.value.code == 1008
    message = next(e for e in sqreen_events if e["name"] == "ws.message")
    assert message["properties"] == {"text": "hi"} and message["user"] == {"uid": "ws-1"}
    request = message["request"]
    assert (request["ip"], request["path"], request["route"]) == ("127.0.0.1", "/ws", "/ws")
    assert request["user_agent"] == "ws-test"
    logins = [
        (e["user"], e["properties"]) for e in sqreen_events if e["name"] == "auth.login.success"
    ]
    assert logins == [
        ({"username": "alice"}, {}),
        ({"username": "mallory"}, {"blocked": True}),
        ({"username": "mallory"}, {"blocked": True}),
    ]


BAD_OPTION_APP = """
from fastapi import FastAPI
from sqreen.integrations.fastapi import SqreenMiddleware

app = FastAPI()
app.add_middleware(SqreenMiddleware, endpont="http://127.0.0.1:9")
"""


@pytest.mark.parametrize(
    ("app", "env", "said"),
    [
        (BAD_OPTION_APP, {}, "sqreen: unknown option 'endpont' (from 'endpont' in the "),
        (
            BAD_OPTION_APP.replace('endpont="http://127.0.0.1:9"', ""),
            {"SQREEN_FLUSH_INTERVAL": "fast"},
            "sqreen: flush_interval must be",
        ),
    ],
    ids=["keyword", "environment"],
)
def test_a_wrong_option_stops_uvicorn_at_startup(
    tmp_path: Any, app: str, env: dict[str, str], said: str
) -> None:
    """Starlette builds its middleware at the lifespan's first call: an error raised there
    read as "lifespan unsupported", the server started and answered every request 500."""
    (tmp_path / "bad_app.py").write_text(app)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "uvicorn", "bad_app:app", "--port", str(port)],
        cwd=tmp_path,
        env={**clean, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0, proc.stderr
    assert said in proc.stderr
    assert "Application startup failed. Exiting." in proc.stderr


def test_sqreen_called_as_flask_sets_up_says_how_fastapi_does() -> None:
    with pytest.raises(TypeError, match=r"app.add_middleware\(SqreenMiddleware\)"):
        Sqreen(FastAPI())  # type: ignore[operator]


def test_an_ip_block_through_the_test_client_as_the_readme_says(
    sqreen_events: CapturedEvents,
) -> None:
    sqreen_events.block([{"type": "block_ip", "ip": "203.0.113.0/24"}])
    app = create_app()
    forwarded = {"X-Forwarded-For": "203.0.113.5"}
    # The default peer, "testclient", is no address, and it is no trusted proxy either.
    assert TestClient(app).get("/count", headers=forwarded).status_code == 200
    assert TestClient(app, client=("203.0.113.5", 50000)).get("/count").status_code == 403
    assert TestClient(app, client=("198.51.100.5", 50000)).get("/count").status_code == 200


def test_an_error_of_the_environment_at_set_up_is_logged_and_requests_go_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette builds its middleware at the first call: an error there left the stack
    unbuilt, and every request failed again (the working directory of a replaced deploy
    gone: FileNotFoundError from the search for sqreen.ini)."""
    import sqreen.integrations.starlette as integration

    def gone(*args: Any) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(integration, "framework_init", gone)
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    app.add_middleware(StarletteMiddleware)
    with TestClient(app) as client:
        assert [client.get("/").status_code for _ in range(2)] == [200, 200]
    logged = [r for r in caplog.records if "setting the Starlette middleware up" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


def _state_app(with_lifespan: bool) -> FastAPI:
    """An access log outside the middleware (added after it: outermost), which touches
    ``request.state`` before ``call_next`` and reads after it what a dependency set."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"pool": "db"}

    app = FastAPI(lifespan=lifespan if with_lifespan else None)

    def current_user(request: Request) -> str:
        request.state.user = "alice"
        return "alice"

    @app.get("/me")
    def me(user: str = Depends(current_user)) -> dict[str, str]:
        return {"user": user}

    app.add_middleware(SqreenMiddleware)

    @app.middleware("http")
    async def access_log(request: Request, call_next: Any) -> Any:
        request.state.request_id = "req-1"
        response = await call_next(request)
        response.headers["x-logged-user"] = getattr(request.state, "user", "<missing>")
        response.headers["x-handle"] = type(getattr(request.state, "sqreen", None)).__name__
        return response

    return app


@pytest.mark.parametrize("with_lifespan", [False, True], ids=["no-lifespan", "lifespan-state"])
def test_what_the_app_puts_on_request_state_reaches_the_middlewares_outside(
    sqreen_events: CapturedEvents, with_lifespan: bool
) -> None:
    """One state dict for every layer of a request, as Starlette documents it: the
    middleware wrote its handle into a copy of the state, and an access log outside it lost
    the user a dependency set (on uvicorn as with the test client)."""
    server = UvicornThread(_state_app(with_lifespan), lifespan="on")
    try:
        reply = httpx.get(f"{server.url}/me")
    finally:
        server.stop()
    assert reply.json() == {"user": "alice"}
    assert reply.headers["x-logged-user"] == "alice"
    assert reply.headers["x-handle"] == "RequestContext"
    with client(_state_app(with_lifespan)) as c:
        assert c.get("/me").headers["x-logged-user"] == "alice"


class _HypercornThread:
    """hypercorn serving ``app`` from a thread, on its own event loop."""

    def __init__(self, app: Any) -> None:
        import asyncio
        import threading

        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        port = free_port()
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = config.errorlog = None
        self.url = f"http://127.0.0.1:{port}"
        self.loop = asyncio.new_event_loop()
        self.done = asyncio.Event()
        serving = serve(app, config, shutdown_trigger=self.done.wait)  # type: ignore[arg-type]
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(serving,), daemon=True
        )
        self.thread.start()
        assert wait_for_port(port, 20), "hypercorn did not start"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.done.set)
        self.thread.join(10)
        assert not self.thread.is_alive(), "hypercorn did not stop within 10 s"
        self.loop.close()


@pytest.mark.parametrize("upload", [False, True], ids=["get", "upload"])
@pytest.mark.parametrize("server_name", ["uvicorn", "hypercorn"])
def test_the_server_keeps_no_finished_request_alive(
    sqreen_events: CapturedEvents, server_name: str, upload: bool
) -> None:
    """What a server schedules while it sends or receives copies the task's context: uvicorn
    arms a keep-alive timer as it sends a response's last message (a timer cancelled stays in
    the event loop's queue until it reaches its front), and re-arms the socket's reader,
    for the connection's life, as the app reads a body that had paused it (over 64 KiB);
    hypercorn starts a task as it sends. With the request bound there, finished requests
    stayed alive with their scope, FastAPI's exit stacks and the body kept, and the garbage
    collector ran every few dozen requests on a busy server (never without the middleware).
    The server's ``send`` and ``receive`` now run with no request bound."""
    import gc

    from sqreen._context import RequestContext

    app = FastAPI()
    app.add_middleware(SqreenMiddleware)

    @app.api_route("/alive/{n}", methods=["GET", "POST"])
    async def alive(n: int, request: Request) -> dict[str, int]:
        size = len(await request.body())
        gc.collect()  # what is left is held, not garbage waiting for a collection
        held = [
            o
            for o in gc.get_objects()
            if type(o) is RequestContext and str(o._source.get("path", "")).startswith("/alive/")
        ]
        sqreen.track("alive.checked", properties={"n": n, "size": size})
        return {"held": len(held)}

    server = UvicornThread(app) if server_name == "uvicorn" else _HypercornThread(app)
    body = b"x" * 200_000 if upload else b""
    try:
        with httpx.Client(base_url=server.url) as http:  # one connection, kept alive
            counts = [
                http.request("POST" if upload else "GET", f"/alive/{n}", content=body).json()[
                    "held"
                ]
                for n in range(12)
            ]
    finally:
        server.stop()
    assert counts == [1] * 12  # this request's own handle only
    checked = [e for e in sqreen_events if e["name"] == "alive.checked"]
    assert [e["properties"]["size"] for e in checked] == [len(body)] * 12


@pytest.mark.parametrize("endpoint", ["sync", "async"])
def test_a_block_under_an_error_middleware_is_a_whole_403(
    sqreen_events: CapturedEvents, endpoint: str
) -> None:
    """``@app.middleware("http")`` turning exceptions into a 500 (Starlette's
    ``BaseHTTPMiddleware``): the 403 that replaces its answer has its body. Its task group,
    which the block crossed, left the request's task cancelled, and the body's send was
    cancelled: the client got the 403's status and Content-Length with an empty body."""
    from fastapi.responses import JSONResponse

    sqreen_events.block([{"id": "1", "type": "block_user", "user": {"username": "mal"}}])
    app = FastAPI()

    @app.middleware("http")
    async def errors(request: Request, call_next: Any) -> Any:
        try:
            return await call_next(request)
        except Exception:
            return JSONResponse({"error": "internal"}, status_code=500)

    app.add_middleware(SqreenMiddleware)

    if endpoint == "sync":

        @app.get("/login")
        def login(u: str) -> dict[str, str]:
            sqreen.auth_track(True, username=u)
            return {"welcome": u}

    else:

        @app.get("/login")
        async def login(u: str) -> dict[str, str]:
            sqreen.auth_track(True, username=u)
            return {"welcome": u}

    with TestClient(app) as client:
        refused = client.get("/login", params={"u": "mal"}, headers={"Accept": "*/*"})
        assert refused.status_code == 403
        assert refused.json() == {"error": "forbidden", "detail": "This request was refused."}
        assert client.get("/login", params={"u": "bob"}).json() == {"welcome": "bob"}
