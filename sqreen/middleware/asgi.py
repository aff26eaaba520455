"""The ASGI middleware: binds each HTTP request to sqreen and enforces blocks.

::

    from sqreen.middleware.asgi import SqreenASGIMiddleware

    app = SqreenASGIMiddleware(app)
    # in a handler:
    scope["state"]["sqreen"].track("my.event", properties={"foo": "bar"})

Pure ASGI (Starlette's ``BaseHTTPMiddleware`` would run the app in another task and lose the
context). For ``http`` scopes it binds a :class:`sqreen._context.RequestContext`, stores it in
the request's own ``scope["state"]`` (each request's copy of the lifespan state, shared by
every layer of the request, as ``request.state`` is), wraps ``receive`` in a passive tee capped
at ``max_body_size``, and refuses a blocked client IP with a 403 before the app runs. The
server's own ``send`` and ``receive`` run with no request bound
(:func:`sqreen._context.unbound`: what a server schedules in them must not keep a finished
request alive). :class:`sqreen.Blocked` raised by the app, also inside a ``BaseExceptionGroup``
(anyio task groups), becomes a 403 while the response has not started, and aborts it after. The
``lifespan`` scope starts the client (the action set fetched, its changes long-polled: a worker
learns of blocks before its first request) and passes through; events still queued are
delivered (within ``shutdown_timeout``) before the app's ``lifespan.shutdown.complete`` reaches
the server, and what is left is written to the spool and said, as at exit (uvicorn may kill its
process with SIGTERM right after: see :func:`sqreen._exit_hooks.exit_hooks`). A ``websocket``
scope from a blocked client IP is refused before the app runs: a 403 when the server offers the
websocket denial response extension, else a close with code 1008 (policy violation) in answer
to ``websocket.connect``, which servers send as a 403 to the handshake. A websocket's
handshake is bound as a request: its events carry the client's address, user agent and path,
``identify()`` binds the user for the connection, and a user found blocked while it runs
(``auth_track()``, ``identify()``) is refused, the handshake if not accepted yet, else the
connection closed with 1008. Other scopes pass through. Nothing of it waits in the event loop:
the client is made and started, and the first request waits for the action set, on a worker
thread (``anyio.to_thread``), as the delivery at shutdown is.

Errors of ours are logged on the ``sqreen`` logger and counted, never turned into a 500.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from functools import partial
from typing import Any

import anyio
import anyio.to_thread

from .. import _hub, _instrument
from .._blocking import Blocked
from .._client import Client
from .._context import RequestContext, current_request, unbound
from ._common import (
    ResponseAborted,
    blocked_ip,
    find_blocked,
    forbidden,
    guard,
    ready_client,
    refused,
    started_client,
)
from ._tee import ASGIReceiveTee

logger = logging.getLogger("sqreen")

__all__ = ["RouteOf", "SqreenASGIMiddleware", "in_event_loop", "started_off_the_loop"]

_GUARD = guard("the ASGI middleware")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Called with the scope when an event is tracked: ``(route template, path parameters)``.
RouteOf = Callable[[Scope], tuple[str | None, Mapping[str, Any] | None]]

_SHUTDOWN_DONE = ("lifespan.shutdown.complete", "lifespan.shutdown.failed")


class SqreenASGIMiddleware:
    """Wrap an ASGI app; ``route(scope)`` returns the matched route template and path
    parameters (by default ``scope["route"].path``, which FastAPI sets, and
    ``scope["path_params"]``)."""

    def __init__(self, app: ASGIApp, route: RouteOf | None = None) -> None:
        self.app = app
        self.route = route
        _instrument.asgi_middleware = True  # (see sqreen._instrument.note_unbound)
        with _GUARD:
            _hub.exit_hooks()  # now, on the main thread: see sqreen._exit_hooks.exit_hooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            # Started as the server starts the worker (see start_with_the_server), off the
            # loop; Django's app, which handles no lifespan, too.
            with _GUARD:
                await started_off_the_loop(wait=False)
            await self.app(scope, receive, _FlushOnShutdown(send))
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A websocket: its handshake bound as a request (its events carry the client's
        address, user agent and path; ``identify()`` binds the user for the connection), a
        blocked IP refused before the app runs, and a user found blocked while it runs
        (``auth_track()``, ``identify()``) refused: the handshake if not accepted yet, else
        the connection closed with 1008 (policy violation)."""
        client = ctx = None
        blocked = None
        with _GUARD:
            # As for a request: the action set fetched.
            client = ready_client() or await started_off_the_loop()
            if not client.disabled:
                route = None if self.route is None else partial(self.route, scope)
                ctx = RequestContext(client, "asgi", scope, None, route, receive)
                if client.blocklist.has_ips:
                    blocked = blocked_ip(client, ctx)
        if blocked is not None:
            await _refuse_websocket(scope, receive, send)
            return
        if ctx is None or client is None:  # disabled, or an error of ours (logged)
            await self.app(scope, receive, send)
            return
        _store(scope, ctx)
        token = current_request.set(ctx)
        accepted = ended = False

        async def watched(message: Message) -> None:
            nonlocal accepted, ended
            kind = message["type"]
            if kind == "websocket.accept":
                accepted = True
            elif kind in ("websocket.close", "websocket.http.response.start"):
                ended = True
            await unbound(send, message)

        try:
            await self.app(scope, receive, watched)
            blocked = ctx.refused  # raised, then caught on its way: refused all the same
        except BaseException as exc:
            blocked = find_blocked(exc) or ctx.refused
            if blocked is None:
                raise
        finally:
            current_request.reset(token)
            _unstore(scope, ctx)
        if blocked is None or ended:
            return
        refused(client, ctx, blocked)
        if accepted:
            await send({"type": "websocket.close", "code": 1008})
        else:
            await _refuse_websocket(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = ctx = None
        with _GUARD:
            client = ready_client() or await started_off_the_loop()  # see Client.start
            if client.disabled:  # SQREEN_DISABLE: a pass-through with a handle that does nothing
                _store(scope, client.disabled_context)
            else:
                tee = ASGIReceiveTee(receive, client.config.max_body_size)
                route = None if self.route is None else partial(self.route, scope)
                ctx = RequestContext(client, "asgi", scope, tee, route, receive)
                _store(scope, ctx)
        if ctx is None or client is None:  # disabled, or an error of ours (logged)
            await self.app(scope, receive, send)
            return
        token = current_request.set(ctx)

        started = refusing = finished = aborted = False

        async def send_unbound(message: Message) -> None:
            """The server's ``send``, run with no request bound (see :func:`unbound`); the
            app's answer replaced by a 403 when a block raised for the request was caught
            on its way (:attr:`RequestContext.refused`), and once its headers went, none of
            the rest of its body sent: the response is aborted."""
            nonlocal started, refusing, finished, aborted
            if refusing:
                return
            kind = message["type"]
            if started and ctx.refused is not None:  # caught once the headers went
                if not aborted:
                    aborted = True
                    refused(client, ctx, ctx.refused)
                raise ResponseAborted(str(ctx.refused)) from ctx.refused
            if kind == "http.response.start":
                started = True
                if ctx.refused is not None:
                    refusing = True
                    refused(client, ctx, ctx.refused)
                    await _refuse_shielded(scope, send)
                    return
            elif kind == "http.response.body" and not message.get("more_body", False):
                finished = True
            await unbound(send, message)

        try:
            if client.blocklist.has_ips:
                blocked = blocked_ip(client, ctx)
                if blocked is not None:
                    refused(client, ctx, blocked)
                    await _refuse(scope, send_unbound)
                    return
            await self.app(scope, tee.receive, send_unbound)
            if aborted:  # the app went on after its send refused: the response is cut
                raise ResponseAborted(str(ctx.refused)) from ctx.refused
        except BaseException as exc:
            if aborted:
                raise
            blocked = find_blocked(exc)
            if refusing:  # its 403 went out already
                if blocked is None:
                    raise
                return
            if finished:  # raised after the response (a background task): nothing to refuse
                if blocked is not None:
                    refused(client, ctx, blocked)
                rest = _without_blocks(exc)
                if rest is exc:
                    raise
                if rest is not None:  # the app's own errors beside the block: said
                    raise rest from None
                logger.debug("sqreen: a block raised after the response ended: %s", blocked)
                return
            blocked = blocked or ctx.refused
            if blocked is None:
                raise
            refused(client, ctx, blocked)
            if started:
                raise ResponseAborted(str(blocked)) from blocked
            refusing = True  # counted: its 403 goes out as is
            await _refuse_shielded(scope, send)
        finally:
            current_request.reset(token)
            _unstore(scope, ctx)


async def _refuse_shielded(scope: Scope, send: Send) -> None:
    """The 403 in place of the app's answer, to the server's ``send`` with no request bound,
    shielded: the app may answer from inside a task group the block left cancelled on its way
    (BaseHTTPMiddleware's ``call_next``, under a middleware that turns errors into a 500),
    and the 403's body was cancelled at its first await: the client got an empty body."""
    with anyio.CancelScope(shield=True):
        await _refuse(scope, partial(unbound, send))


def _without_blocks(exc: BaseException) -> BaseException | None:
    """``exc`` without its :class:`Blocked`: None for a block alone, the rest of an
    exception group (its other errors), ``exc`` itself when it holds none."""
    if isinstance(exc, Blocked):
        return None
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(Blocked)[1]
    return exc


async def started_off_the_loop(wait: bool = True) -> Client:
    """The client in use, started (:meth:`Client.start`), for the async middlewares while it
    is not (once per process, and after a fork): on a worker thread, as making the client
    reads ``sqreen.ini`` and the spool, and the first request waits for the action set
    (``block_on_start_timeout``); the event loop goes on serving meanwhile.

    The exit hooks are set first, here on the loop's thread (the main one): set by a client
    made on the worker thread, they would leave SIGTERM alone (Python lets only the main
    thread set a handler), and a worker whose middleware was built in another process
    (``gunicorn --preload`` with ``UvicornWorker``, no lifespan or an app refusing it, as
    Django's does) died of it with its queue. ``wait``: see :func:`started_client` (the
    lifespan's start does not wait)."""
    _hub.exit_hooks()
    return await anyio.to_thread.run_sync(started_client, wait)


def in_event_loop() -> bool:
    """Whether this thread runs an event loop (asyncio's, or trio's)."""
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
        return True
    except RuntimeError:
        return False


def _unstore(scope: Scope, handle: RequestContext) -> None:
    """Take ``handle`` out of the request's state once the app has answered. It holds the
    scope, and the scope held it: a reference cycle that only the garbage collector freed,
    with all the framework had put in the scope (FastAPI's exit stacks): 15 objects a
    request, a young collection every 50 requests and an older one every 550 (FastAPI,
    5 000 requests, none without the middleware). A task the request started keeps the
    handle it was given."""
    state = scope.get("state")
    if isinstance(state, dict) and state.get("sqreen") is handle:
        del state["sqreen"]


def _store(scope: Scope, handle: RequestContext) -> None:
    """``scope["state"]["sqreen"]``, in the request's own state dict, as Starlette's
    ``request.state`` writes it: every layer of the request shares that dict (a server
    hands each request a copy of the lifespan state, as the ASGI spec says). A copy made
    here hid from the middlewares outside this one what the app put on ``request.state``
    (a user a dependency resolved, for an access log)."""
    state = scope.get("state")
    if isinstance(state, dict):
        state["sqreen"] = handle
    else:  # no state from the server (Daphne): the request's own, from here on
        scope["state"] = {"sqreen": handle}


async def _refuse(scope: Scope, send: Send, prefix: str = "http.") -> None:
    """Answer 403 (``prefix``: ``websocket.http.`` for a websocket's denial response)."""
    accept = None
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            accept = value
            break
    body, content_type = forbidden(accept)
    await send(
        {
            "type": f"{prefix}response.start",
            "status": 403,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode("latin-1")),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": f"{prefix}response.body", "body": body})


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """Refuse the handshake: the app never runs, so the refusal answers its first message."""
    message = await receive()
    if message["type"] != "websocket.connect":  # the client left already
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await _refuse(scope, send, "websocket.http.")
    else:
        await send({"type": "websocket.close", "code": 1008})


class _FlushOnShutdown:
    """The lifespan ``send``: deliver what is queued before the server is told it may exit,
    and keep in the spool what could not be (the client stays open: a process may go on
    after a lifespan, as a test client's does)."""

    __slots__ = ("_send",)

    def __init__(self, send: Send) -> None:
        self._send = send

    async def __call__(self, message: Message) -> None:
        if message.get("type") in _SHUTDOWN_DONE:
            client = _hub.active  # never create one just to flush nothing
            if client is not None:
                with client.guard("the delivery at lifespan shutdown"):
                    timeout = client.config.shutdown_timeout
                    await anyio.to_thread.run_sync(client.flush_or_spool, timeout)
        await self._send(message)
