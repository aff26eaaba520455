"""The WSGI middleware: binds each request to sqreen and enforces blocks.

::

    from sqreen.middleware.wsgi import SqreenWSGIMiddleware

    app = SqreenWSGIMiddleware(app)
    # in a handler:
    environ["sqreen.context"].track("my.event", properties={"foo": "bar"})

For each request it binds a :class:`sqreen._context.RequestContext` (also
``environ["sqreen.context"]``, the per-request handle), wraps ``wsgi.input`` in a passive tee
capped at ``max_body_size`` when the request has a body, refuses a blocked client IP with a 403
before the app runs, and turns :class:`sqreen.Blocked` raised by the app (``identify()`` of a
blocked user) into a 403.

The request is bound while the app is called and again around each ``next()`` of the app's
response iterator, each time set and reset in the same frame. It is never left bound between
two calls: a client that never reads or closes a response (werkzeug's test client leaves that
to the test) cannot leak one request's context into the next, and no ``ContextVar.reset`` ever
runs from ``close()``, a finalizer or another frame (CPython 3.11 crashed when a reset ran from
a finalizer inside a garbage collection). A response that is a list or the server's
``wsgi.file_wrapper`` runs no more app code: it is handed back untouched (``sendfile`` still
works).

Errors of ours are logged on the ``sqreen`` logger and counted, never turned into a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from .._blocking import Blocked
from .._context import RequestContext, current_request
from .._hub import check_config, client_or_inert, exit_hooks
from ._common import (
    ResponseAborted,
    blocked_ip,
    find_blocked,
    forbidden,
    guard,
    refused,
)
from ._tee import WSGIInputTee

__all__ = ["ENVIRON_KEY", "RouteOf", "SqreenWSGIMiddleware"]

_GUARD = guard("the WSGI middleware")
logger = logging.getLogger("sqreen")

#: Where the per-request handle lives in the environ (a dotted key: PEP 3333 keeps undotted
#: names for CGI variables, which are strings).
ENVIRON_KEY = "sqreen.context"

#: Called with the environ when an event is tracked: ``(route template, path parameters)``.
RouteOf = Callable[[WSGIEnvironment], tuple[str | None, Mapping[str, Any] | None]]


class SqreenWSGIMiddleware:
    """Wrap a WSGI app; ``route(environ)`` returns the matched route template and path
    parameters (frameworks know them; a bare WSGI app has none)."""

    def __init__(self, app: WSGIApplication, route: RouteOf | None = None) -> None:
        self.app = app
        self.route = route
        with _GUARD:
            exit_hooks()  # now, on the main thread: see sqreen._exit_hooks.exit_hooks
        # A wrong SQREEN_* variable or sqreen.ini stops the app's set-up, as a framework
        # integration's does, rather than each request logging it (the client is made at the
        # first request).
        check_config()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        client = ctx = None
        with _GUARD:
            # INERT while a client cannot be made (logged once; tried again now and then)
            client = client_or_inert()
            if client.disabled:  # SQREEN_DISABLE: a pass-through with a handle that does nothing
                environ[ENVIRON_KEY] = client.disabled_context
            else:
                client.start()  # with the first request: see Client.start
                tee = None
                length = environ.get("CONTENT_LENGTH")
                if (length and length != "0") or "HTTP_TRANSFER_ENCODING" in environ:
                    stream = environ.get("wsgi.input")  # a body to tee; else nothing to capture
                    if stream is not None:
                        tee = WSGIInputTee(stream, client.config.max_body_size)
                        environ["wsgi.input"] = tee
                route = None if self.route is None else partial(self.route, environ)
                ctx = environ[ENVIRON_KEY] = RequestContext(client, "wsgi", environ, tee, route)
        if ctx is None or client is None:  # disabled, or an error of ours (logged)
            return self.app(environ, start_response)

        token = current_request.set(ctx)
        try:
            if client.blocklist.has_ips:
                blocked = blocked_ip(client, ctx)
                if blocked is not None:
                    refused(client, ctx, blocked)
                    environ.pop(ENVIRON_KEY, None)
                    return _refuse(environ, start_response)
            start = _Holding(start_response, ctx)
            try:
                result = self.app(environ, start)
            except BaseException as exc:
                environ.pop(ENVIRON_KEY, None)
                blocked = find_blocked(exc) or ctx.refused
                if blocked is None:
                    raise
                refused(client, ctx, blocked)
                return _refuse_held(environ, start, blocked)
            blocked = ctx.refused
            if blocked is not None:  # raised, then caught on its way: refused all the same
                environ.pop(ENVIRON_KEY, None)
                _close(result)
                refused(client, ctx, blocked)
                return _refuse_held(environ, start, blocked)
        finally:
            current_request.reset(token)

        wrapper = environ.get("wsgi.file_wrapper")
        if type(result) is list or (isinstance(wrapper, type) and isinstance(result, wrapper)):
            # No app code left to run while it is sent. environ -> handle -> environ: break
            # the cycle so that reference counting frees the request.
            environ.pop(ENVIRON_KEY, None)
            start.forward()
            return result
        return _Response(result, ctx, environ, start)  # forwarded with its first chunk


class _Holding:
    """The app's ``start_response``, held until the response's first chunk goes to the
    server (or the app returns): only then is the server given it, unless a block
    raised for the request was kept meanwhile (:attr:`RequestContext.refused`, when the app
    caught it on its way), in which case the 403 is the server's first call. Replacing the
    app's headers instead (``exc_info``), as PEP 3333 allows, made gunicorn send both sets
    of headers: both ``Content-Length``s, the body cut at the app's. An app that writes
    (the ``write`` callable) is given the server's once it writes."""

    __slots__ = ("_ctx", "_held", "_write", "forwarded", "server")

    def __init__(self, start: StartResponse, ctx: RequestContext) -> None:
        self.server = start  # the server's start_response
        self._ctx = ctx
        self._held: tuple[Any, ...] | None = None
        self._write: Callable[[bytes], object] | None = None
        self.forwarded = False

    def __call__(self, status: str, headers: Any, exc_info: Any = None) -> Any:
        if self.forwarded:  # the server's rules for a second call (exc_info) apply
            return self.server(status, headers, exc_info)
        self._held = (status, headers, exc_info)
        return self._written

    @property
    def called(self) -> bool:
        """Whether the app called ``start_response`` (held, or forwarded already)."""
        return self._held is not None

    def forward(self) -> bool:
        """Give the server the app's call now (once); False, and nothing given, when a block
        was kept for the request."""
        if self.forwarded:
            return True
        if self._ctx.refused is not None:
            return False
        held = self._held
        if held is not None:
            self.forwarded = True
            self._write = self.server(*held)
        return True

    def _written(self, data: bytes) -> None:
        if self.forward() and self._write is not None:
            blocked = self._ctx.refused
            if blocked is not None:  # caught once the headers went: none of the body goes
                raise ResponseAborted(str(blocked)) from blocked
            self._write(data)


def _refuse_held(environ: WSGIEnvironment, start: _Holding, blocked: Blocked) -> list[bytes]:
    """The 403 in place of the app's response, as the server's first call; when the app's
    headers went to the server already (it wrote), the connection is dropped instead."""
    if start.forwarded:
        raise ResponseAborted(str(blocked)) from blocked
    return _refuse(environ, start.server)


def _close(result: Any) -> None:
    """Close a response replaced by a 403 (an error doing so is the app's: logged)."""
    close = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            logger.warning("sqreen: closing the response a 403 replaced failed", exc_info=True)


def _refuse(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    body, content_type = forbidden(environ.get("HTTP_ACCEPT"))
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    start_response("403 Forbidden", headers)
    return [body]


class _Response:
    """The app's response iterable, bound to its request around each chunk it produces.

    It is its own iterator: each ``next()`` binds the request, asks the app's iterator for a
    chunk and unbinds it, in one frame. Until the first chunk, the app's ``start_response``
    is held (:class:`_Holding`): ``Blocked`` from the app, or a block kept for the request,
    becomes a 403 then; after it, the response is aborted. Empty chunks before the app called
    ``start_response`` are not passed on (a server sends the headers with one, and has none);
    an empty first chunk after it goes, with the headers: a stream (server-sent events, a long
    poll) yields one to send its headers at once, and they waited for its first event.
    Exhausting or closing it only drops references.
    """

    __slots__ = ("_ctx", "_environ", "_iterator", "_refusal", "_result", "_start")

    def __init__(
        self,
        result: Iterable[bytes],
        ctx: RequestContext,
        environ: WSGIEnvironment,
        start: _Holding,
    ) -> None:
        self._result: Iterable[bytes] | None = result
        self._ctx: RequestContext | None = ctx
        self._environ: WSGIEnvironment | None = environ
        self._start: _Holding | None = start
        self._iterator: Iterator[bytes] | None = None
        self._refusal: list[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._refusal is not None:
            if self._refusal:
                return self._refusal.pop()
            raise StopIteration
        ctx, start = self._ctx, self._start
        if ctx is None or start is None:  # exhausted or closed
            raise StopIteration
        token = current_request.set(ctx)
        try:
            iterator = self._iterator
            if iterator is None:
                iterator = self._iterator = iter(self._result)  # type: ignore[arg-type]
            chunk = next(iterator)
            while not chunk and not start.called:
                chunk = next(iterator)
        except StopIteration:
            if not start.forward():
                return self._refuse_late(ctx.refused)  # type: ignore[arg-type]
            self._drop()
            raise
        except BaseException as exc:
            blocked = find_blocked(exc) or ctx.refused
            if blocked is None:
                self._drop()
                raise
            return self._refuse_late(blocked)
        finally:
            current_request.reset(token)
        if not start.forward() or ctx.refused is not None:
            # A block kept for the request: a 403 while the headers are held; once they went
            # (a stream's empty first chunk, or chunks before the app caught it), none of
            # the rest of the body goes, and the connection is dropped.
            return self._refuse_late(ctx.refused)  # type: ignore[arg-type]
        return chunk

    def _refuse_late(self, blocked: Blocked) -> bytes:
        environ, start, ctx = self._environ, self._start, self._ctx
        if ctx is not None:
            refused(ctx.client, ctx, blocked)
        self._drop()
        if environ is None or start is None:
            raise ResponseAborted(str(blocked)) from blocked
        self._refusal = _refuse_held(environ, start, blocked)
        return self._refusal.pop()

    def _drop(self) -> None:
        """Forget the request: no reset here, the binding never outlives a call."""
        environ = self._environ
        if environ is not None:
            environ.pop(ENVIRON_KEY, None)  # environ -> handle -> environ
        self._ctx = self._environ = self._start = None
        self._iterator = None

    def close(self) -> None:
        result = self._result
        self._result = None
        self._drop()
        if result is None:
            return
        close = getattr(result, "close", None)
        if close is None:
            return
        try:
            close()
        except BaseException as exc:
            blocked = find_blocked(exc)
            if blocked is None:
                raise
            raise ResponseAborted(str(blocked)) from blocked
