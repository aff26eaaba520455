"""What the WSGI and ASGI middlewares and the framework integrations share.

The 403 page (HTML or JSON by ``Accept``), finding :class:`sqreen.Blocked` inside exception
groups, the exception that aborts a response already under way, and the guard that turns an
internal error into a log line and a count instead of a 500.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqreen

from .._blocking import Blocked

if TYPE_CHECKING:
    from .._client import Client
    from .._context import RequestContext

__all__ = [
    "ResponseAborted",
    "blocked_ip",
    "find_blocked",
    "forbidden",
    "framework_init",
    "internal_error",
]

logger = logging.getLogger("sqreen")

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
    """The body and content type of the 403: JSON when ``Accept`` prefers it to HTML."""
    if accept:
        if isinstance(accept, bytes):
            accept = accept.decode("latin-1")
        if _quality(accept, _JSON_TYPES) > _quality(accept, _HTML_TYPES):
            return _JSON, "application/json"
    return _HTML, "text/html; charset=utf-8"


def internal_error(client: Client | None, where: str) -> None:
    """Log (with the traceback) and count a bug of ours; call it from an ``except`` block."""
    if client is not None:
        client.queue.internal_error(where)
    else:
        logger.exception("sqreen: internal error in %s", where)


_last_init: tuple[Client, dict[str, Any]] | None = None
_init_lock = threading.Lock()


def framework_init(settings: Mapping[str, Any], framework: str) -> Client:
    """:func:`sqreen._framework_init`, once per distinct settings.

    Integrations run this when an app is set up, which a test suite does many times (Django's
    test ``Client`` loads the middleware anew each time, app factories build an app per
    test): the client in use is kept, with its queue and the blocks it holds, while the
    settings are the same or the new app brings none.
    """
    global _last_init
    settings = dict(settings)
    with _init_lock:
        last = _last_init
        # An app without settings of its own (a second app, a helper app built in a request)
        # keeps the client in use: replacing it would drop what requests in flight track.
        if last is not None and last[0] is sqreen._active and (not settings or last[1] == settings):
            return last[0]
        client = sqreen._framework_init(settings, framework)
        _last_init = (client, settings)
        return client


def blocked_ip(client: Client, ctx: RequestContext) -> Blocked | None:
    """The :class:`Blocked` for the request's client IP; None (and a count) on an error of ours."""
    try:
        return client.check_ip(ctx)
    except Exception:
        internal_error(client, "the IP check")
        return None
