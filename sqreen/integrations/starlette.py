"""Starlette integration: ``app.add_middleware(SqreenMiddleware)``, then ``request.state.sqreen``.

::

    from starlette.applications import Starlette
    from sqreen.integrations.starlette import SqreenMiddleware

    app = Starlette(routes=[...])
    app.add_middleware(SqreenMiddleware)        # options as keywords, else SQREEN_* env

    async def login(request):
        request.state.sqreen.auth_track(True, username="alice")

:class:`SqreenMiddleware` is :class:`~sqreen.middleware.asgi.SqreenASGIMiddleware` configured
from its keyword arguments (:func:`sqreen.init`'s win where both set an option) and told how
to find the route template: ``scope["route"]`` is the route that matched, whose path is whole
unless it sits inside a ``Mount``; then, when an event is tracked, the template is found again
by matching the app's routes from the top, mount prefixes included. See
:mod:`sqreen.integrations.fastapi` for FastAPI's dependency.

.. versionadded:: 0.1
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import anyio.to_thread
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Match, Mount

from .._config_values import ConfigError
from .._context import RequestContext
from .._requestless import REQUESTLESS
from ..middleware._common import declare, framework_init, guard, kept
from ..middleware.asgi import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    SqreenASGIMiddleware,
    in_event_loop,
)

__all__ = ["SqreenHandle", "SqreenMiddleware", "sqreen_handle"]

_SET_UP = guard("setting the Starlette middleware up")

#: The per-request handle: ``track``, ``identify``, ``auth_track``, ``signup_track``,
#: ``for_user``, ``is_blocked``.
SqreenHandle = RequestContext


class SqreenMiddleware(SqreenASGIMiddleware):
    """The ASGI middleware for Starlette and FastAPI; keywords are :func:`sqreen.init` options."""

    framework = "starlette"

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        super().__init__(app, route=_route)
        self.options = options
        #: A wrong option (a typo, an environment variable's bad value), raised again where
        #: the server hears it: a server reads an exception at the lifespan's first message
        #: as "lifespan unsupported", starts, and answers every request 500. The lifespan's
        #: startup fails instead, so the server stops with the message (without a lifespan,
        #: each request raises it).
        self.config_error: ConfigError | None = None
        self._applied = False
        if kept(options) or not in_event_loop():
            self._apply()
        else:  # at the first call, off the loop; what is made meanwhile is made from them
            declare(options, self.framework)

    def _apply(self) -> None:
        """Apply the options (:func:`sqreen._hub.framework_init`): now when the middleware is
        made outside an event loop or they keep the client in use (another app of the
        process, a test's), else at its first call, on a worker thread. Starlette builds its
        middlewares at its own first call, inside the loop, and making a client reads
        ``sqreen.ini`` and the spool."""
        try:
            framework_init(self.options, self.framework)
        except ConfigError as exc:
            self.config_error = exc
        except Exception:  # the environment's (the working directory gone...): recorded, and
            with _SET_UP:  # requests go on with the client in use, as any error of ours
                raise
        self._applied = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._applied:  # (two first calls at once both apply: the same client)
            await anyio.to_thread.run_sync(self._apply)
        if self.config_error is None:
            await super().__call__(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":
                failed = f"sqreen: {self.config_error}"
                await send({"type": "lifespan.startup.failed", "message": failed})
        # A copy each time: raised again, the one object would gather every request's
        # frames in its traceback (and share it between requests at once).
        raise copy.copy(self.config_error) from None


def sqreen_handle(request: HTTPConnection) -> SqreenHandle:
    """The request's handle (``request.state.sqreen``); a FastAPI dependency too.

    A websocket's handshake is bound as a request (see :mod:`sqreen.middleware.asgi`); one
    the middleware did not see (disabled, or an error of ours) gets the handle without a
    request, which tracks as :func:`sqreen.track` does."""
    handle = (request.scope.get("state") or {}).get("sqreen")
    if handle is None and request.scope.get("type") == "websocket":
        return REQUESTLESS
    if handle is None:
        raise RuntimeError(
            "no sqreen handle on this request: add the middleware first, "
            "app.add_middleware(SqreenMiddleware)"
        )
    return handle  # type: ignore[no-any-return]


def _route(scope: Scope) -> tuple[str | None, Mapping[str, Any] | None]:
    path_params = scope.get("path_params")
    route = scope.get("route")  # the innermost route that matched
    router = scope.get("router")  # the outermost router
    whole = _included_path(scope, route)
    if "app_root_path" not in scope or router is None:  # no Mount entered: the path is whole
        if whole is not None:
            return whole, path_params
        return (getattr(route, "path", None) if route is not None else None), path_params
    # Inside mounts the route's path is relative: match from the top again (the mounts have
    # moved root_path along, to the concrete prefix, where the template is wanted).
    top = {**scope, "root_path": scope["app_root_path"]}
    return _template(getattr(router, "routes", ()), top, "", 0, whole), path_params


def _included_path(scope: Scope, route: object) -> str | None:
    """The whole path of ``route`` within its app, include prefixes and nested routers' ones
    too, where FastAPI (0.165 and later) keeps it apart: an included route is no longer
    copied with its prefix, so ``scope["route"].path`` is ``/users/{uid}`` for
    ``/api/v1/users/{uid}``. None before those versions (their ``route.path`` is whole)."""
    fastapi_scope = scope.get("fastapi")
    if not isinstance(fastapi_scope, dict):
        return None
    context = fastapi_scope.get("effective_route_context")
    if context is None or getattr(context, "original_route", None) is not route:
        return None
    path = getattr(context, "path_format", None)
    return path if isinstance(path, str) else None


def _template(
    routes: Iterable[BaseRoute], scope: Scope, prefix: str, depth: int, whole: str | None
) -> str | None:
    """The template of the route ``scope`` matches among ``routes``, after ``prefix``;
    ``whole``: the matched route's path within its app (:func:`_included_path`), for a
    router FastAPI included, which has no path of its own."""
    for route in routes:
        match, child = route.matches(scope)
        if match is not Match.FULL:
            continue
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            return None if whole is None else prefix + whole
        if isinstance(route, Mount):
            if depth >= 8:
                return None
            return _template(route.routes, {**scope, **child}, prefix + path, depth + 1, whole)
        return prefix + (path if whole is None else whole)
    return None
