"""A pytest plugin for Starlette's and FastAPI's own test suites: sqreen's middleware in every
app, a ``track()`` in every HTTP request that reaches an app's router, and a check that the
request bound at that moment is the request being served.

Every middleware stack an app builds (``build_middleware_stack``, which Starlette calls on an
app's first call and FastAPI overrides without calling Starlette's) gets, for that build only:

- ``SqreenMiddleware`` (FastAPI's for a FastAPI app) as the outermost of the app's own
  middlewares, where ``app.add_middleware(SqreenMiddleware)`` puts it when called last: inside
  the framework's ``ServerErrorMiddleware``, outside every middleware the test added;
- a pure ASGI probe in front of the router, under every middleware: it checks that the request
  bound (``current_request``) is the handle sqreen stored in this request's ``scope["state"]``,
  for this request's path, and tracks an event with a sequence number, whose recorded path is
  checked once delivered. A test that serves two requests with one scope dict (no server
  does) shares one ``state`` between them: the handle there is the last request's, while each
  request's bound context is its own, made from that scope; those are counted apart
  (``shared_scope``), not as a wrong context.

The SDK's internal errors are counted from its log too (``internal_errors_logged``): those of
a middleware while no client could be made are logged, and counted on no client.

``app.user_middleware`` and ``app.router`` are left as the test made them. Loaded by
``scripts/peers/run.py`` with ``-p _inject_starlette`` (``-p _inject_fastapi`` for FastAPI's
suite); it writes what it saw to the JSON file named by ``SQREEN_PEER_REPORT`` when the
session ends.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from _peer_report import write_report
from starlette.applications import Starlette
from starlette.middleware import Middleware

import sqreen
from sqreen._context import current_request
from sqreen._wire import CLIP
from sqreen.integrations import starlette as ours

try:
    from fastapi import FastAPI

    from sqreen.integrations import fastapi as ours_fastapi
except ImportError:  # Starlette's suite: FastAPI is not installed
    FastAPI = None  # type: ignore[assignment,misc]

_seen = {
    "requests": 0,
    "wrong_context": [],
    "shared_scope": [],
    "tracked": 0,
    "unbound_after": 0,
    "internal_errors_logged": 0,
}
_expected: dict[int, str] = {}
Build = Callable[[Starlette], Any]


class _Probe:
    """In front of the router: check the bound request and track an event, for HTTP."""

    def __init__(self, app: Any) -> None:
        self.app = app  # (what walks a stack, FastAPI's _legacy_otel, follows .app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            _check_and_track(scope)
        await self.app(scope, receive, send)


def _check_and_track(scope: Any) -> None:
    _seen["requests"] += 1
    seq = _seen["requests"]
    ctx = current_request.get()
    handle = (scope.get("state") or {}).get("sqreen")
    path = scope.get("path", "")
    # (a context's own source: the scope sqreen's middleware was given)
    source = None if ctx is None else ctx._source
    if source is None or source.get("path") != path:
        wrong = "wrong_context"
    elif ctx is handle:
        wrong = None
    else:  # this request's own context, another request's handle in a shared scope["state"]
        shared = source is scope and getattr(handle, "_source", None) is scope
        wrong = "shared_scope" if shared else "wrong_context"
    if wrong is not None:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
        _seen[wrong].append(f"{test} {path}")  # type: ignore[attr-defined]
    elif path.isascii():  # (no route matched yet: no path parameter to scrub from it)
        _expected[seq] = path[:CLIP]  # (as the event carries it)
    if sqreen.track("peer.request", properties={"seq": seq}):
        _seen["tracked"] += 1  # type: ignore[operator]


def _with_sqreen(build: Build) -> Build:
    def build_middleware_stack(self: Starlette) -> Any:
        if isinstance(self.router, _Probe):  # a subclass's build calling its base's
            return build(self)
        fastapi = FastAPI is not None and isinstance(self, FastAPI)
        middleware = (ours_fastapi if fastapi else ours).SqreenMiddleware
        router, user_middleware = self.router, self.user_middleware
        self.router = _Probe(router)  # type: ignore[assignment]
        self.user_middleware = [Middleware(middleware), *user_middleware]
        try:
            return build(self)
        finally:
            self.router, self.user_middleware = router, user_middleware

    return build_middleware_stack


class _InternalErrors(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR and "internal error" in record.getMessage():
            _seen["internal_errors_logged"] += 1  # type: ignore[operator]


def pytest_configure(config: Any) -> None:
    logging.getLogger("sqreen").addHandler(_InternalErrors())
    for cls in (Starlette, FastAPI):
        if cls is not None and "build_middleware_stack" in vars(cls):
            cls.build_middleware_stack = _with_sqreen(cls.build_middleware_stack)  # type: ignore[method-assign]


def pytest_runtest_teardown(item: Any) -> None:
    if current_request.get() is not None:
        _seen["unbound_after"] += 1  # type: ignore[operator]


def pytest_sessionfinish(session: Any) -> None:
    write_report(_seen, _expected)
