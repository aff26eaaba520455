"""The WSGI middleware: binds each request to sqreen and enforces blocks.

::

    from sqreen.middleware.wsgi import SqreenWSGIMiddleware

    app = SqreenWSGIMiddleware(app)
    # in a handler:
    environ["sqreen"].track("my.event", properties={"foo": "bar"})

For each request it binds a :class:`sqreen._context.RequestContext` (also ``environ["sqreen"]``,
the per-request handle), wraps ``wsgi.input`` in a passive tee capped at ``max_body_size`` when
the request has a body, refuses a blocked client IP with a 403 before the app runs, and turns
:class:`sqreen.Blocked` raised by the app (``identify()`` of a blocked user) into a 403.

The context stays bound while the response body is produced (code that runs while it streams
still sees it), until the last chunk is out, its iteration is dropped, or the server closes the
iterable. A response that is a list or the server's ``wsgi.file_wrapper`` runs no more app
code: the context is released at once and the object handed back untouched (``sendfile``
still works).

Errors of ours are logged on the ``sqreen`` logger and counted, never turned into a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from .. import get_client
from .._blocking import Blocked
from .._context import RequestContext, _current
from ._common import (
    ResponseAborted,
    blocked_ip,
    find_blocked,
    forbidden,
    internal_error,
)
from ._tee import WSGIInputTee

__all__ = ["RouteOf", "SqreenWSGIMiddleware"]

#: Called with the environ when an event is tracked: ``(route template, path parameters)``.
RouteOf = Callable[[WSGIEnvironment], tuple[str | None, Mapping[str, Any] | None]]


class SqreenWSGIMiddleware:
    """Wrap a WSGI app; ``route(environ)`` returns the matched route template and path
    parameters (frameworks know them; a bare WSGI app has none)."""

    def __init__(self, app: WSGIApplication, route: RouteOf | None = None) -> None:
        self.app = app
        self.route = route

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        client = None
        try:
            client = get_client()
            client.start()  # with the first request: see Client.start
            tee = None
            length = environ.get("CONTENT_LENGTH")
            if (length and length != "0") or "HTTP_TRANSFER_ENCODING" in environ:
                stream = environ.get("wsgi.input")  # a body to tee; else nothing to capture
                if stream is not None:
                    tee = WSGIInputTee(stream, client.config.max_body_size)
                    environ["wsgi.input"] = tee
            route = None if self.route is None else partial(self.route, environ)
            ctx = environ["sqreen"] = RequestContext(client, "wsgi", environ, tee, route)
            environ["sqreen.token"] = _current.set(ctx)
        except Exception:
            internal_error(client, "the WSGI middleware")
            return self.app(environ, start_response)

        if client.blocklist.has_ips:
            blocked = blocked_ip(client, ctx)
            if blocked is not None:
                _release(environ)
                return _refuse(environ, start_response, blocked)

        try:
            result = self.app(environ, start_response)
        except BaseException as exc:
            _release(environ)
            blocked = find_blocked(exc)
            if blocked is None:
                raise
            return _refuse(environ, start_response, blocked, exc)

        wrapper = environ.get("wsgi.file_wrapper")
        if type(result) is list or (isinstance(wrapper, type) and isinstance(result, wrapper)):
            _release(environ)  # no app code left to run while it is sent
            return result
        return _Response(result, environ, start_response)


def _release(environ: WSGIEnvironment) -> None:
    """Unbind the request now; later calls do nothing."""
    token = environ.pop("sqreen.token", None)
    # environ -> handle -> environ: break the cycle so that refcounting frees the request.
    environ.pop("sqreen", None)
    if token is not None:
        try:
            _current.reset(token)
        except ValueError:
            pass  # released from another context, where ours is not bound


def _refuse(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    blocked: Blocked,
    exc: BaseException | None = None,
) -> list[bytes]:
    body, content_type = forbidden(environ.get("HTTP_ACCEPT"))
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    try:
        start_response("403 Forbidden", headers)
    except Exception:
        # The app had called start_response already: a second call must carry exc_info, and
        # is allowed as long as no header was sent.
        if exc is None or exc.__traceback__ is None:
            raise ResponseAborted(str(blocked)) from blocked
        try:
            start_response("403 Forbidden", headers, (type(exc), exc, exc.__traceback__))
        except BaseException:
            raise ResponseAborted(str(blocked)) from blocked
    return [body]


class _Response:
    """The app's response iterable: releases the request once the body is out, its iteration
    is dropped, or the server closes it; a 403 or an abort for a late ``Blocked``."""

    __slots__ = ("_environ", "_result", "_start_response")

    def __init__(
        self,
        result: Iterable[bytes],
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> None:
        self._result = result
        self._environ = environ
        self._start_response = start_response

    def __iter__(self) -> Iterator[bytes]:
        sent = False
        try:
            for chunk in self._result:
                if chunk:
                    sent = True
                yield chunk
        except BaseException as exc:
            blocked = find_blocked(exc)
            if blocked is None:
                raise
            if sent:
                raise ResponseAborted(str(blocked)) from blocked
            # Nothing was sent yet: the headers can still be replaced by a 403.
            yield from _refuse(self._environ, self._start_response, blocked, exc)
        finally:
            # The body is out, or its iteration was dropped. A server calls close() next; a
            # test client may never do it (werkzeug's leaves that to the test, and reads the
            # body only if asked): this must not leave the request bound.
            _release(self._environ)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            blocked = find_blocked(exc)
            if blocked is None:
                raise
            raise ResponseAborted(str(blocked)) from blocked
        finally:
            _release(self._environ)
