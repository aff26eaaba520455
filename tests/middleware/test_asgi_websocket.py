"""Websockets behind the ASGI middleware: a blocked client IP is refused before the app runs,
the handshake is bound as the connection's request, and a user found blocked while the app
runs is refused (the handshake, or a close with 1008 once accepted).

A real Starlette app with a websocket route, driven by Starlette's ``TestClient``, which
offers the websocket denial response extension (the refusal is then a 403); a server without
it gets a close with code 1008 in answer to ``websocket.connect``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip(
    "starlette", reason="Starlette is an extra: pip install 'sqreen-sdk[starlette]'"
)

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

import sqreen
from sqreen._context import current
from sqreen.middleware.asgi import SqreenASGIMiddleware
from sqreen.testing import CapturedEvents

BLOCKED = {"x-forwarded-for": "203.0.113.9"}
ALLOWED = {"x-forwarded-for": "198.51.100.7"}


def loopback_client(app: Any) -> TestClient:
    """Connections from a loopback peer: a trusted proxy, so X-Forwarded-For names the client."""
    return TestClient(app, client=("127.0.0.1", 50000))


def make_app(runs: list[str]) -> Starlette:
    async def echo(websocket: WebSocket) -> None:
        runs.append("echo")
        handle = current()  # the handshake, bound as the connection's request
        assert handle is not None and websocket.scope["state"]["sqreen"] is handle
        await websocket.accept()
        text = await websocket.receive_text()
        sqreen.track("ws.message", properties={"text": text})
        await websocket.send_text(text.upper())
        await websocket.close()

    return Starlette(routes=[WebSocketRoute("/ws", echo)])


def without_denial_response(app: Any) -> Any:
    """The app as a server without the denial response extension would call it."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "extensions": {}}
        await app(scope, receive, send)

    return wrapped


@pytest.fixture
def runs() -> list[str]:
    return []


def test_a_websocket_from_an_allowed_ip_works_as_before(
    sqreen_events: CapturedEvents, runs: list[str]
) -> None:
    sqreen_events.block([{"id": "i1", "type": "block_ip", "ip": "203.0.113.0/24"}])
    client = loopback_client(SqreenASGIMiddleware(make_app(runs)))
    with client.websocket_connect("/ws", headers=ALLOWED) as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "HELLO"
    assert runs == ["echo"]
    (event,) = sqreen_events
    assert event["name"] == "ws.message"
    assert (event["request"]["ip"], event["request"]["path"]) == ("198.51.100.7", "/ws")


def test_a_websocket_works_when_nothing_is_blocked(
    sqreen_events: CapturedEvents, runs: list[str]
) -> None:
    client = loopback_client(SqreenASGIMiddleware(make_app(runs)))
    with client.websocket_connect("/ws", headers=BLOCKED) as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "HI"
    assert runs == ["echo"]


def test_a_blocked_ip_gets_a_403_before_the_app_runs(
    sqreen_events: CapturedEvents, runs: list[str]
) -> None:
    sqreen_events.block([{"id": "i1", "type": "block_ip", "ip": "203.0.113.0/24"}])
    client = loopback_client(SqreenASGIMiddleware(make_app(runs)))
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect("/ws", headers={**BLOCKED, "accept": "application/json"}):
            pass  # pragma: no cover
    assert denied.value.status_code == 403
    assert denied.value.headers["cache-control"] == "no-store"
    assert denied.value.json() == {"error": "forbidden", "detail": "This request was refused."}
    assert runs == []


def test_without_the_extension_a_blocked_ip_is_closed_with_1008(
    sqreen_events: CapturedEvents, runs: list[str]
) -> None:
    sqreen_events.block([{"id": "i1", "type": "block_ip", "ip": "203.0.113.0/24"}])
    client = loopback_client(without_denial_response(SqreenASGIMiddleware(make_app(runs))))
    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/ws", headers=BLOCKED):
            pass  # pragma: no cover
    assert closed.value.code == 1008
    assert runs == []
    with client.websocket_connect("/ws", headers=ALLOWED) as ws:
        ws.send_text("ok")
        assert ws.receive_text() == "OK"
    assert runs == ["echo"]


def test_without_the_extension_a_user_blocked_before_accept_is_closed_with_1008(
    sqreen_events: CapturedEvents,
) -> None:
    """A blocked user's ``auth_track()`` before the app accepts, on a server without the
    denial response: the handshake is answered with a close 1008, the app's error quiet."""

    async def login(websocket: WebSocket) -> None:
        sqreen.auth_track(True, username=websocket.query_params["user"])
        await websocket.accept()
        await websocket.send_text("welcome")
        await websocket.close()

    sqreen_events.block([{"id": "u", "type": "block_user", "user": {"username": "mallory"}}])
    app = Starlette(routes=[WebSocketRoute("/login", login)])
    client = loopback_client(without_denial_response(SqreenASGIMiddleware(app)))
    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/login?user=mallory", headers=ALLOWED):
            pass  # pragma: no cover
    assert closed.value.code == 1008
    with client.websocket_connect("/login?user=alice", headers=ALLOWED) as ws:
        assert ws.receive_text() == "welcome"


def test_a_client_gone_before_connect_gets_nothing(sqreen_events: CapturedEvents) -> None:
    sqreen_events.block([{"id": "i1", "type": "block_ip", "ip": "203.0.113.0/24"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.disconnect", "code": 1001}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app ran")  # pragma: no cover

    scope = {
        "type": "websocket",
        "path": "/ws",
        "headers": [(b"x-forwarded-for", b"203.0.113.9")],
        "client": ("127.0.0.1", 50000),
    }
    asyncio.run(SqreenASGIMiddleware(app)(scope, receive, send))
    assert sent == []
