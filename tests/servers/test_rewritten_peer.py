"""Servers that replace the peer with a forwarded hop and keep no trace of the connection.

hypercorn's ``ProxyFixMiddleware`` and daphne's ``--proxy-headers`` hand the app
``(hop, 0)``; daphne takes the left-most hop, which the client writes, and hypercorn the one
``trusted_hops`` from the right. No connection has port 0: sqreen reads the header itself then,
as from a trusted proxy, and warns once. Here hypercorn's real middleware runs in front of
sqreen's, without a server (the client and headers are what a server would hand it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypercorn.middleware import ProxyFixMiddleware

import sqreen
from sqreen import _ip_warnings
from sqreen.middleware.asgi import SqreenASGIMiddleware
from sqreen.transports.memory import MemoryTransport
from tests.middleware.test_asgi import call, http_scope

pytestmark = pytest.mark.slow

FORGED_THEN_REAL = [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.7")]


@pytest.fixture
def transport() -> Iterator[MemoryTransport]:
    _ip_warnings._reset()
    transport = MemoryTransport()
    client = sqreen.init(transport=transport, flush_interval=0.05, strict=True)
    client.blocklist.apply(
        {"version": 1, "items": [{"id": "b", "type": "block_ip", "ip": "198.51.100.0/24"}]}
    )
    yield transport
    _ip_warnings._reset()


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["state"]["sqreen"].track("seen")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _serve(app: Any, client: Any, headers: list[tuple[bytes, bytes]]) -> int | None:
    scope = http_scope(headers=headers, client=client, method="GET")
    return asyncio.run(call(app, scope))[0]


def _ips(transport: MemoryTransport) -> list[str | None]:
    sqreen.flush(timeout=5)
    return [e["request"]["ip"] for e in transport.events if e["name"] == "seen"]


def test_hypercorn_proxy_fix_does_not_choose_the_client(
    transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    # trusted_hops=2 takes 6.6.6.6, the hop the client wrote itself.
    app = ProxyFixMiddleware(SqreenASGIMiddleware(_app), mode="legacy", trusted_hops=2)
    caplog.set_level(logging.WARNING, logger="sqreen")
    assert _serve(app, ("127.0.0.1", 41000), FORGED_THEN_REAL) == 200
    assert _serve(app, ("127.0.0.1", 41001), FORGED_THEN_REAL) == 200
    assert _ips(transport) == ["203.0.113.7", "203.0.113.7"]
    warnings = [r for r in caplog.records if "sqreen cannot see the connection" in r.message]
    assert len(warnings) == 1, caplog.text
    # A blocked client is refused, whatever it writes on the left.
    blocked = [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.9")]
    assert _serve(app, ("127.0.0.1", 41002), blocked) == 403


def test_daphne_proxy_headers_take_the_left_most_hop_sqreen_does_not(
    transport: MemoryTransport,
) -> None:
    app = SqreenASGIMiddleware(_app)
    # What daphne --proxy-headers hands the app: the left-most hop, port 0, as a list.
    assert _serve(app, ["6.6.6.6", 0], FORGED_THEN_REAL) == 200
    assert _ips(transport) == ["203.0.113.7"]
    assert _serve(app, ["6.6.6.6", 0], [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.9")]) == 403


def test_without_the_header_the_servers_word_is_all_there_is(transport: MemoryTransport) -> None:
    app = SqreenASGIMiddleware(_app)
    assert _serve(app, ("203.0.113.8", 0), []) == 200
    assert _ips(transport) == ["203.0.113.8"]


def test_a_real_connection_is_never_taken_for_a_rewritten_one(transport: MemoryTransport) -> None:
    """An untrusted client that puts its own address on the left of a forged list is the
    client, as before: only port 0 (which no connection has) marks a rewritten peer."""
    app = SqreenASGIMiddleware(_app)
    own_then_forged = [(b"x-forwarded-for", b"203.0.113.20, 6.6.6.6")]
    assert _serve(app, ("203.0.113.20", 50123), own_then_forged) == 200
    assert _ips(transport) == ["203.0.113.20"]


def test_with_no_proxy_trusted_a_rewritten_peer_is_no_address(
    transport: MemoryTransport,
) -> None:
    """trusted_proxies=[] says no proxy is in front: a forwarded header is never believed,
    and the server's pick is one (uvicorn with '*', exposed directly: the client's own
    left-most hop). No client IP, rather than the one the client chose."""
    client = sqreen.init(transport=transport, flush_interval=0.05, strict=True, trusted_proxies=[])
    client.blocklist.apply(
        {"version": 1, "items": [{"id": "b", "type": "block_ip", "ip": "6.6.6.0/24"}]}
    )
    app = SqreenASGIMiddleware(_app)
    assert _serve(app, ["9.9.9.9", 0], [(b"x-forwarded-for", b"9.9.9.9")]) == 200
    assert _serve(app, ["6.6.6.6", 0], [(b"x-forwarded-for", b"6.6.6.6")]) == 200  # not framed
    assert _ips(transport) == [None, None]


def test_behind_a_middleware_that_wraps_receive_uvicorn_s_connection_is_found(
    transport: MemoryTransport,
) -> None:
    """uvicorn with --forwarded-allow-ips='*' hands the app the client's own left-most hop
    (port 0); sqreen reads the connection from uvicorn's ``receive``, which a Starlette
    middleware outside sqreen's (BaseHTTPMiddleware, @app.middleware("http")) wraps: the
    connection is found behind the wrapper, and a client on it cannot choose its IP."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from sqreen.integrations.starlette import SqreenMiddleware
    from tests.integrations._servers import UvicornThread, http_request

    sqreen.init(transport=transport, flush_interval=0.05, strict=True, trusted_proxies=[])

    async def seen(request: Any) -> PlainTextResponse:
        request.state.sqreen.track("seen")
        return PlainTextResponse("ok")

    async def passing(request: Any, call_next: Any) -> Any:
        return await call_next(request)

    app = Starlette(
        routes=[Route("/", seen)],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=passing), Middleware(SqreenMiddleware)],
    )
    server = UvicornThread(app, proxy_headers=True, forwarded_allow_ips="*")
    try:
        reply = http_request(server.port, "GET", "/", headers={"X-Forwarded-For": "6.6.6.6"})
        assert reply.status == 200
    finally:
        server.stop()
    assert _ips(transport) == ["127.0.0.1"]  # the connection (trusting no proxy): not 6.6.6.6
