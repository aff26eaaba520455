"""What the WSGI and ASGI middlewares and the framework integrations share.

The 403 page (HTML or JSON by ``Accept``), finding :class:`sqreen.Blocked` inside exception
groups, the exception that aborts a response already under way, the IP check, and the guard
that turns an internal error into a log line and a count instead of a 500
(:mod:`sqreen._errors`). ``framework_init`` is :func:`sqreen._hub.framework_init`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _hub
from .._blocking import Blocked
from .._errors import Guard, InternalErrors
from .._hub import declare, framework_init, kept

if TYPE_CHECKING:
    from .._client import Client
    from .._context import RequestContext

__all__ = [
    "ResponseAborted",
    "blocked_ip",
    "declare",
    "find_blocked",
    "forbidden",
    "framework_init",
    "guard",
    "kept",
    "ready_client",
    "refused",
    "start_with_the_server",
    "started_client",
]

# The page says nothing of why: the reason of a block is for the operator, not the client.
_HTML = (
    b"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>403 Forbidden</title>"
    b"</head>\n<body><h1>403 Forbidden</h1><p>This request was refused.</p></body></html>\n"
)
_JSON = b'{"error":"forbidden","detail":"This request was refused."}'
_HTML_TYPES = ("text/html", "application/xhtml+xml")


class ResponseAborted(Exception):
    """A blocked user was identified after the response had started.

    The status line is gone, so the middleware can no longer answer 403: it raises this to the
    server instead, which drops the connection, and the client never sees a complete response.
    """


def find_blocked(exc: BaseException) -> Blocked | None:
    """``exc`` itself, or the first :class:`Blocked` inside (nested) exception groups."""
    if isinstance(exc, Blocked):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_blocked(inner)
            if found is not None:
                return found
    return None


def _quality(accept: str, wanted: tuple[str, ...]) -> float:
    best = 0.0
    for item in accept.split(",")[:32]:
        media, _, params = item.partition(";")
        media = media.strip().lower()
        if media not in wanted and not (wanted is _JSON_TYPES and media.endswith("+json")):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best = max(best, q)
    return best


_JSON_TYPES = ("application/json",)


def forbidden(accept: str | bytes | None) -> tuple[bytes, str]:
    """The body and content type of the 403: a page when ``Accept`` prefers HTML to JSON (a
    browser's navigation: ``text/html,...,*/*;q=0.8``), else JSON (an API client, ``curl`` and
    ``httpx``'s ``*/*``, no ``Accept`` at all: what FastAPI and REST clients parse)."""
    if accept:
        if isinstance(accept, bytes):
            accept = accept.decode("latin-1")
        if _quality(accept, _HTML_TYPES) > _quality(accept, _JSON_TYPES):
            return _HTML, "text/html; charset=utf-8"
    return _JSON, "application/json"


def blocked_ip(client: Client, ctx: RequestContext) -> Blocked | None:
    """The :class:`Blocked` for the request's client IP; None (and a count) on an error of ours."""
    with client.guard("the IP check"):
        return client.check_ip(ctx)
    return None


def refused(client: Client, ctx: RequestContext | None, blocked: Blocked) -> None:
    """Count a refusal (see :meth:`sqreen.Client.refused`); never fails the 403."""
    with client.guard("counting a refusal"):
        client.refused(blocked, ctx)


def _active_errors() -> InternalErrors | None:
    client = _hub.active
    return None if client is None else client.errors


def guard(where: str) -> Guard:
    """A guard for a middleware: errors are counted on the client in use, and only logged when
    no client could be made (a wrong ``SQREEN_*`` setting). Make it once, use it per request."""
    return Guard(_active_errors, where)


def ready_client() -> Client | None:
    """The client in use when it is started (:attr:`Client.started`: nothing of
    :meth:`Client.start` left that could wait), else None: the async middlewares then start
    it on a worker thread. While no client can be made, the inert one until its next try
    (see :func:`sqreen._hub.client_or_inert`)."""
    client = _hub.active
    if client is not None:
        return client if client.started else None
    return _hub.inert_for_now()


def started_client(wait: bool = True) -> Client:
    """The client in use, started (:meth:`Client.start`: with ``wait``, the first request
    waits for the action set); the async middlewares run it on a worker thread. The inert
    one when none can be made (logged once; a request is served with a handle that does
    nothing)."""
    client = _hub.client_or_inert()
    client.start(wait)
    return client


def start_with_the_server(where: Guard) -> None:
    """Start the client as the server starts a worker, not at its first request: its long-poll
    then brings a block to a worker with no traffic yet (before, a block made while a worker
    was idle let its first requests through). It does not wait for the set
    (``block_on_start_timeout`` is the first request's wait: hypercorn bounds a lifespan's
    startup). Errors are ``where``'s."""
    with where:
        started_client(wait=False)
