"""The explorer's front door: response headers, the session cookie, and the login check.

Three pure ASGI middlewares, outermost first:

- :class:`SecurityHeaders`: a Content-Security-Policy that allows only the explorer's own
  script and stylesheet (no inline script or style, so an escaping mistake cannot run code),
  no framing, no MIME sniffing, no referrer to other sites, and ``no-store`` on pages (they
  show personal data).
- :class:`Sessions`: Starlette's signed-cookie ``SessionMiddleware``, scoped to the explorer's
  path, ``HttpOnly``, ``SameSite``, and ``Secure`` when ``https_only`` (by default: when the
  request came over HTTPS, so that a collector behind a TLS proxy that sets
  ``X-Forwarded-Proto`` gets Secure cookies without configuration).
- :class:`RequireLogin`: every path but the login page and the static files needs a logged-in
  session, else pages redirect to the login and the JSON API answers 401. A session is valid
  while the storage holds it (:mod:`._secrets`: logging out or a new admin password ends it,
  copies of its cookie included) and for ``max_age`` at most.
"""

from __future__ import annotations

import time
from typing import Any, Final, Literal
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..storage import ControlStore
from ._secrets import session_hash

__all__ = ["RequireLogin", "SecurityHeaders", "Sessions", "route_path"]

COOKIE: Final = "sqreen_explorer"
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS: Final = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)
PUBLIC_PATHS: Final = ("/login",)
STATIC_PREFIX: Final = "/static/"


def route_path(scope: Scope) -> str:
    """The path inside the explorer (``/events``), wherever it is mounted."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = route_path(scope).startswith(STATIC_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS:
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "max-age=3600" if static else "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Sessions:
    """Starlette's session middleware; ``Secure`` per request unless ``https_only`` says."""

    def __init__(
        self,
        app: ASGIApp,
        secret_key: str,
        *,
        path: str,
        max_age: int,
        same_site: Literal["lax", "strict"] = "lax",
        https_only: bool | None = None,
    ) -> None:
        options: dict[str, Any] = {
            "secret_key": secret_key,
            "session_cookie": COOKIE,
            "max_age": max_age,
            "path": path or "/",
            "same_site": same_site,
        }
        self._plain = SessionMiddleware(app, https_only=False, **options)
        self._secure = SessionMiddleware(app, https_only=True, **options)
        self.https_only = https_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        secure = self.https_only
        if secure is None:
            secure = scope.get("scheme") in ("https", "wss")
        await (self._secure if secure else self._plain)(scope, receive, send)


class RequireLogin:
    """Lets through only logged-in sessions (and the public paths)."""

    def __init__(self, app: ASGIApp, storage: ControlStore, max_age: int) -> None:
        self.app = app
        self.storage = storage
        self.max_age = max_age

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        if path in PUBLIC_PATHS or path.startswith(STATIC_PREFIX):
            await self.app(scope, receive, send)
            return
        session: dict[str, Any] = scope["session"]
        if await self.logged_in(session):
            await self.app(scope, receive, send)
            return
        if session.get("user"):
            session.clear()  # expired, logged out, or opened with an old password
        root = scope.get("root_path", "")
        if path.startswith("/api/"):
            response: JSONResponse | RedirectResponse = JSONResponse(
                {"error": "login required: log in at " + root + "/login"}, status_code=401
            )
        else:
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + ("?" + query if query else "")
            suffix = "" if target in ("/", "") else "?next=" + quote(target, safe="")
            response = RedirectResponse(root + "/login" + suffix, status_code=303)
        await response(scope, receive, send)

    async def logged_in(self, session: dict[str, Any]) -> bool:
        if session.get("user") != "admin":
            return False
        login_at = session.get("login_at")
        if not isinstance(login_at, int | float) or not 0 <= time.time() - login_at < self.max_age:
            return False
        token = session.get("sid")
        if not isinstance(token, str) or not token:
            return False
        return await run_in_threadpool(self.storage.session_active, session_hash(token))
