"""The apps the real servers of these tests serve (``tests.servers.apps:wsgi_app`` / ``:asgi_app``).

Bare WSGI and ASGI apps behind sqreen's own middlewares, configured by ``SQREEN_*`` variables.
Each request tracks one event and answers, in JSON, the pid of the worker that served it and
the peer the server handed the app:

``/track?n=N``  tracks ``server.event`` with ``{"n": N}``
``/login?user=U``  a failed login of ``U`` (``auth.login.failure``)
``/ping``       tracks nothing

``wsgi_stream_app`` streams server-sent events (:func:`_wsgi_stream`).
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import parse_qs

from sqreen.middleware.asgi import SqreenASGIMiddleware
from sqreen.middleware.wsgi import SqreenWSGIMiddleware


def _handle(handle: Any, path: str, query: str) -> None:
    params = {k: v[0] for k, v in parse_qs(query).items()}
    if path == "/login":
        handle.auth_track(False, username=params.get("user", "nobody"))
    elif path != "/ping":
        handle.track("server.event", properties={"n": int(params.get("n", "0"))})


def _wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    _handle(environ["sqreen.context"], environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
    body = json.dumps({"pid": os.getpid(), "peer": environ.get("REMOTE_ADDR")}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


async def _asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rpartition(".")[2]  # "startup" or "shutdown"
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    query = scope.get("query_string", b"").decode("latin-1")
    _handle(scope["state"]["sqreen"], scope["path"], query)
    client = scope.get("client")
    body = json.dumps({"pid": os.getpid(), "peer": client[0] if client else None}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _wsgi_stream(environ: dict[str, Any], start_response: Any) -> Any:
    """``/stream?flag=PATH``: server-sent events whose first event waits for a byte from the
    FIFO ``PATH`` (written once the client had the headers); an empty chunk first, to send
    the headers at once."""
    flag = parse_qs(environ.get("QUERY_STRING", ""))["flag"][0]
    start_response("200 OK", [("Content-Type", "text/event-stream")])

    def events() -> Any:
        yield b""
        with open(flag, "rb") as fifo:  # blocks until the test writes
            fifo.read(1)
        yield b"data: hi\n\n"

    return events()


wsgi_app = SqreenWSGIMiddleware(_wsgi)
wsgi_stream_app = SqreenWSGIMiddleware(_wsgi_stream)
asgi_app = SqreenASGIMiddleware(_asgi)


async def _asgi_http_only(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Refuses the lifespan as Django's ``ASGIHandler`` does (the server goes on without)."""
    if scope["type"] != "http":
        raise ValueError(f"can only handle ASGI/HTTP connections, not {scope['type']}")
    await _asgi(scope, receive, send)


asgi_app_http_only = SqreenASGIMiddleware(_asgi_http_only)
