"""Posted forms: bounded reading and CSRF checks.

Every POST route of the explorer is declared through :func:`form_endpoint`, which reads the
form (URL-encoded, at most :data:`MAX_FORM_BYTES`, with the standard library: the explorer's
forms upload no files) and refuses it with 403 unless

- its ``csrf_token`` field equals the session's token (compared in constant time): another
  site can make a browser post a form here, but cannot read the token from our pages; and
- its ``Origin`` header, when the browser sends one (they all do on POST), or else its
  ``Referer``, names this very host: a second lock that does not depend on the token.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "CsrfError",
    "csrf_token",
    "form_endpoint",
    "safe_next",
]

MAX_FORM_BYTES: Final = 16 * 1024
MAX_FIELDS: Final = 64
CSRF_FIELD: Final = "csrf_token"

Form = dict[str, list[str]]


class CsrfError(Exception):
    """A posted form that cannot be trusted (403); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FormTooLarge(Exception):
    """A posted form over :data:`MAX_FORM_BYTES` (413)."""


def csrf_token(session: dict[str, Any]) -> str:
    """The session's CSRF token, created the first time it is needed."""
    token = session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


async def read_form(request: Request) -> Form:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_FORM_BYTES:
        raise FormTooLarge
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge
    form: Form = {}
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return form
    for key, value in pairs:
        form.setdefault(key, []).append(value)
    return form


def check_origin(request: Request) -> None:
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        if origin == "null" or urlsplit(origin).netloc != host:
            raise CsrfError("the form was posted from another site")
        return
    referer = request.headers.get("referer")
    if referer and urlsplit(referer).netloc != host:
        raise CsrfError("the form was posted from another site")


def check_csrf(request: Request, form: Form) -> None:
    check_origin(request)
    expected = request.session.get("csrf")
    sent = form.get(CSRF_FIELD, [""])[0]
    if not isinstance(expected, str) or not expected:
        raise CsrfError("the session has expired: reload the page and try again")
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfError("the form's security token is missing or stale: reload the page")


def form_endpoint(
    handler: Callable[[Request, Form], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """A POST endpoint that receives a checked form (or raises :class:`CsrfError`)."""

    async def endpoint(request: Request) -> Response:
        form = await read_form(request)
        check_csrf(request, form)
        return await handler(request, form)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def safe_next(value: str | None) -> str:
    """A post-login destination inside the explorer (a path like ``/events?...``), never an
    absolute or scheme-relative URL that would make the login page an open redirect."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(c < " " for c in value)
        or len(value) > 2048
        or value.startswith(("/login", "/logout"))
    ):
        return "/events"
    return value
