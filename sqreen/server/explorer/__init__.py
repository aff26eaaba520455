"""The Event Explorer: the collector's web pages for watching events and managing blocks.

Mounted by :func:`sqreen.server.app.create_app` at ``/explorer``::

    /explorer/events          newest first, filters in the URL, histogram, group counts
    /explorer/events/{id}     one event: request, user and their traits, properties, raw JSON
    /explorer/alerts          what playbooks raised, newest first (?playbook=, ?before=)
    /explorer/alerts/{id}     one alert and the events behind it
    /explorer/playbooks       the playbooks in force, with their alert counts
    /explorer/blocks          blocks, who made them and their hits; block a user or an IP
    /explorer/agents          SDK processes: heartbeats, queue depth, drops
    /explorer/api/events      the same filters as JSON (``after=<seq>`` for live updates)
    /explorer/login, /explorer/logout, /explorer/static/...

Server-rendered (Jinja2, autoescaped), usable without JavaScript; one small script polls
the API to add new events to the list. Every page and the API need a login with the admin
password (``sqreen admin-password``, or ``SQREEN_ADMIN_PASSWORD`` when ``sqreen serve``
starts): with none set nobody can log in. Sessions are signed cookies (``HttpOnly``,
``SameSite``, ``Secure`` over HTTPS) naming a session the storage holds until logout, a new
password, or :data:`SESSION_HOURS`; every form carries a CSRF token. Failed logins are
throttled per client address in the storage, across collector processes, and passwords are
hashed a few at a time per process (:mod:`._login`). The ingest API (``/v1/*``) keeps its own
bearer-token auth.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Literal

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from ..._client_ip import TrustedProxies
from ..blocks import BlockService
from ..intel import IpIntel
from ..playbooks import PlaybookSource
from ..storage import Storage
from ._admin import agents_page, block_create, block_lift, blocks_page
from ._alerts import alert_page, alerts_page, playbooks_page
from ._events import event_api, event_page, events_page
from ._forms import CsrfError, FormTooLarge
from ._guard import RequireLogin, SecurityHeaders, Sessions, route_path
from ._login import HASHER, LoginThrottle, login, login_page, logout, trusted_proxies
from ._render import render
from ._secrets import apply_env_password, session_secret, set_admin_password

__all__ = [
    "SESSION_HOURS",
    "apply_env_password",
    "cookie_options",
    "create_explorer",
    "explorer_routes",
    "proxy_options",
    "set_admin_password",
]

logger = logging.getLogger("sqreen.server")

PREFIX: Final = "/explorer"
SESSION_HOURS: Final = 12.0
#: An SDK process is stale after three missed heartbeats (they come every 60 s by default).
STALE_AFTER: Final = 180.0
STATIC: Final = Path(__file__).parent / "static"


async def _home(request: Request) -> Response:
    return RedirectResponse(str(request.scope.get("root_path", "")) + "/events", status_code=303)


ROUTES: Final[list[BaseRoute]] = [
    Route("/", _home, methods=["GET"]),
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/events", events_page, methods=["GET"]),
    Route("/events/{event_id:path}", event_page, methods=["GET"]),
    Route("/alerts", alerts_page, methods=["GET"]),
    Route("/alerts/{alert_id}", alert_page, methods=["GET"]),
    Route("/playbooks", playbooks_page, methods=["GET"]),
    Route("/blocks", blocks_page, methods=["GET"]),
    Route("/blocks", block_create, methods=["POST"]),
    Route("/blocks/{block_id}/unblock", block_lift, methods=["POST"]),
    Route("/agents", agents_page, methods=["GET"]),
    Route("/api/events", event_api, methods=["GET"]),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]


def _error_page(request: Request, status: int, message: str) -> Response:
    if route_path(request.scope).startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    return render(request, "error.html", {"status": status, "message": message}, status)


async def _csrf_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CsrfError)
    return _error_page(request, 403, f"Refused: {exc.reason}.")


async def _too_large(request: Request, exc: Exception) -> Response:
    return _error_page(request, 413, "Refused: the form is too large.")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_page(request, exc.status_code, str(exc.detail))


async def _gone(request: Request, exc: Exception) -> Response:
    # The client hung up mid-form (or sqreen serve's body timeout cut it): nobody to answer,
    # nothing to log.
    return Response(status_code=400)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("sqreen: explorer error on %s", request.url.path, exc_info=exc)
    return _error_page(request, 500, "Internal error: the collector logged it.")


def create_explorer(
    storage: Storage,
    *,
    path: str = PREFIX,
    https_only: bool | None = None,
    same_site: Literal["lax", "strict"] = "lax",
    session_hours: float = SESSION_HOURS,
    stale_after: float = STALE_AFTER,
    trusted_proxies: Iterable[str] = (),
    blocks: BlockService | None = None,
    playbooks: PlaybookSource | None = None,
    ip_intel: IpIntel | None = None,
) -> ASGIApp:
    """The explorer as an ASGI app to mount at ``path`` (for its cookie's path).

    ``https_only``: mark the session cookie ``Secure`` always (True), never (False), or when
    the request came over HTTPS (None). Reads (or creates) the session key in ``storage``.
    ``trusted_proxies``: the proxies (CIDRs, ``unix``) whose ``X-Forwarded-For`` names the
    client the login throttle counts against; by default none, and the client is the
    connection's address (:func:`._login.client_key`). The throttle counts in ``storage``, so
    it holds across every process serving the explorer.
    ``blocks``: the block service of the collector (by default, one over ``storage``).
    ``playbooks``: the collector's playbook file (by default, none: the playbooks page says
    how to load one). ``ip_intel``: the collector's IP intelligence (its data sources are
    listed on the agents page).
    """
    secret = session_secret(storage)
    proxies = _trusted(trusted_proxies)
    max_age = int(session_hours * 3600)
    app = Starlette(
        routes=ROUTES,
        exception_handlers={
            ClientDisconnect: _gone,
            CsrfError: _csrf_error,
            FormTooLarge: _too_large,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.storage = storage
    app.state.blocks = blocks or BlockService(storage)
    app.state.playbooks = playbooks or PlaybookSource()
    app.state.throttle = LoginThrottle(storage)
    app.state.hasher = HASHER
    app.state.trusted_proxies = proxies
    app.state.max_age = max_age
    app.state.ip_intel = ip_intel
    app.state.stale_after = stale_after
    guarded = RequireLogin(app, storage, max_age)
    sessions = Sessions(
        guarded,
        secret,
        path=path,
        max_age=max_age,
        same_site=same_site,
        https_only=https_only,
    )
    return SecurityHeaders(sessions)


def cookie_options() -> dict[str, object]:
    """:func:`create_explorer`'s cookie options from the environment:
    ``SQREEN_SECURE_COOKIE`` (``1``: always ``Secure``; ``0``: never; unset: over HTTPS) and
    ``SQREEN_COOKIE_SAMESITE`` (``lax``, the default, or ``strict``). ValueError if invalid."""
    secure = os.environ.get("SQREEN_SECURE_COOKIE", "").strip().lower()
    same_site = os.environ.get("SQREEN_COOKIE_SAMESITE", "lax").strip().lower()
    if secure not in ("", "1", "0", "true", "false"):
        raise ValueError("SQREEN_SECURE_COOKIE must be 1 or 0 (unset: Secure over HTTPS)")
    if same_site not in ("lax", "strict"):
        raise ValueError("SQREEN_COOKIE_SAMESITE must be lax or strict")
    return {
        "https_only": None if not secure else secure in ("1", "true"),
        "same_site": same_site,
    }


PROXIES_ENV: Final = "SQREEN_EXPLORER_TRUSTED_PROXIES"


def _trusted(entries: Iterable[str]) -> TrustedProxies:
    try:
        return trusted_proxies(entries)
    except ValueError as exc:
        raise ValueError(f"{PROXIES_ENV}: {exc}") from None


def proxy_options() -> dict[str, object]:
    """:func:`create_explorer`'s ``trusted_proxies`` from ``SQREEN_EXPLORER_TRUSTED_PROXIES``
    (comma-separated CIDRs, ``unix`` for a Unix socket; unset: none). ValueError if invalid."""
    raw = os.environ.get(PROXIES_ENV, "")
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    _trusted(entries)
    return {"trusted_proxies": entries}


def explorer_routes(storage: Storage, **options: object) -> list[BaseRoute]:
    """The routes to add to the collector: the explorer at ``/explorer`` and ``/`` leading
    there. ``options`` are :func:`create_explorer`'s (by default, :func:`cookie_options` and
    :func:`proxy_options`)."""
    options = {**cookie_options(), **proxy_options(), **options}
    app = create_explorer(storage, path=PREFIX, **options)  # type: ignore[arg-type]

    async def root(request: Request) -> Response:
        return RedirectResponse(PREFIX + "/", status_code=303)

    return [Route("/", root, methods=["GET"]), Mount(PREFIX, app=app)]
