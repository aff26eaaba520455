"""The Django middleware, sync and async capable.

For each request it binds a :class:`sqreen._context.RequestContext` (also ``request.sqreen``),
refuses a blocked client IP with a 403 before the view runs, and turns :class:`sqreen.Blocked`
into a 403: Django's own exception handling (``process_exception``, the 500 page) only catches
:class:`Exception`, so this is done in ``__call__``, which is why the middleware goes first.

What it reads of the request: ``request.META``, under WSGI and ASGI alike, except the path:
Django rewrites ``PATH_INFO`` there to the decoded path, where the snapshot expects the
environ's latin-1 form, so that one is given from ``request.path_info``. The body is what
Django itself read: its ``_stream`` is wrapped in the same passive, capped tee as
``wsgi.input`` (Django parses multipart bodies from that stream without keeping them, so this
is the only way to see their field names), and ``request._body`` is used when something read
the body before the middleware. The route is ``resolver_match.route`` with a leading ``/``,
read when an event is tracked, and the path parameters its ``kwargs``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from contextvars import Token
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse

from ... import _hub
from ..._blocking import Blocked
from ..._client import Client
from ..._context import RequestContext, current_request
from ..._hub import client_or_inert
from ...middleware._common import (
    blocked_ip,
    find_blocked,
    forbidden,
    framework_init,
    guard,
    ready_client,
    refused,
    start_with_the_server,
)
from ...middleware.asgi import started_off_the_loop
from ._request import DjangoRequest
from ._streaming import bind_streaming
from ._users import UNREAD, Unread, aread_user, given_user, late_user, read_user
from .checks import check_middleware

__all__ = ["SqreenMiddleware", "apply_settings"]

_GUARD = guard("the Django middleware")

logger = logging.getLogger("sqreen")

_checked = False
Entered = tuple[Client, RequestContext, Token[RequestContext | None]]


def _start_with_the_server() -> None:
    """Under ASGI, each worker process loads the middleware as the server starts it: start
    the client then, not at the first request (as the ASGI middleware does at the lifespan,
    which Django does not handle). Its long-poll brings a block to a worker with no traffic
    yet; before, a block made while the worker was idle let its first requests through.
    Only where an event loop runs: a ``gunicorn --preload`` master loads the app with none,
    then forks, and a thread started there would serve no worker (the master would heartbeat
    for nothing). uvicorn 0.55's ``run()`` and gunicorn's ``UvicornWorker`` also import the
    app before their loop runs (a server that loads it inside its loop starts the client
    here). Elsewhere, and under WSGI, the client starts with the first request, and
    ``block_on_start_timeout`` makes that request wait for the collector's set."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    start_with_the_server(_GUARD)


class SqreenMiddleware:
    """Put it first in ``settings.MIDDLEWARE``; options come from ``settings.SQREEN``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)
        apply_settings()
        _warn_once()
        if self._is_async:
            _start_with_the_server()
        #: Whether sessions are checked for a blocked user (see _process_view).
        self._checks_users = apps.is_installed(AUTH_APP)
        if self._checks_users:
            # Django calls it after every middleware's request phase (the session and
            # request.user are there), just before the view; only with the auth app, so that
            # the others pay nothing (a sync method under ASGI would cost a thread hop).
            self.process_view = self._aprocess_view if self._is_async else self._process_view

    def __call__(self, request: Any) -> Any:
        if self._is_async:
            return self.__acall__(request)
        if _hooked_pid != os.getpid() and _hub.hooks_pending():
            _exit_hooks_from(request)
        entered = _enter(request)
        if entered is None:
            return self.get_response(request)
        client, ctx, token = entered
        try:
            refusal = _check_ip(client, ctx, request)
            if refusal is not None:
                return refusal
            response = self.get_response(request)
            if ctx.refused is not None:  # raised, then caught on its way: refused all the same
                return _refuse(client, ctx, request, ctx.refused)
            with _GUARD:
                late = self._answered_before_view(request)
                if late is not None:
                    refusal = _refuse_user(*late, request, late_user(request))
                    if refusal is not None:
                        return refusal  # (the response dropped, as Django drops one replaced)
                bind_streaming(response, ctx)
            return response
        except BaseException as exc:
            blocked = find_blocked(exc) or ctx.refused
            if blocked is None:
                raise
            return _refuse(client, ctx, request, blocked)
        finally:
            current_request.reset(token)

    async def __acall__(self, request: Any) -> Any:
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        client = ready_client()
        if client is None:  # the first request: started off the event loop
            with _GUARD:
                client = await started_off_the_loop()
            if client is None:  # an error of ours (logged): served unbound
                return await get_response(request)
        entered = _enter(request, client)
        if entered is None:
            return await get_response(request)
        client, ctx, token = entered
        try:
            refusal = _check_ip(client, ctx, request)
            if refusal is not None:
                return refusal
            response = await get_response(request)
            if ctx.refused is not None:
                return _refuse(client, ctx, request, ctx.refused)
            with _GUARD:
                late = self._answered_before_view(request)
                if late is not None:
                    user = await sync_to_async(late_user)(request)
                    refusal = _refuse_user(*late, request, user)
                    if refusal is not None:
                        return refusal
                bind_streaming(response, ctx)
            return response
        except BaseException as exc:
            blocked = find_blocked(exc) or ctx.refused
            if blocked is None:
                raise
            return _refuse(client, ctx, request, blocked)
        finally:
            current_request.reset(token)

    def _answered_before_view(self, request: Any) -> tuple[Client, RequestContext] | None:
        """The client and handle of a request whose response came back without its
        ``process_view`` (:data:`_VIEW_PHASE`) while the collector blocks some user: its
        user is checked then (:func:`~._users.late_user`)."""
        if not self._checks_users or _VIEW_PHASE in request.__dict__:
            return None
        return _for_check(request, "user", "session")

    def _process_view(self, request: Any, *view: Any) -> HttpResponse | None:
        """A blocked user's open session: each request refused while the block lasts."""
        request.__dict__[_VIEW_PHASE] = True
        with _GUARD:
            found = _for_check(request, "user")
            if found is not None:
                user = given_user(request)
                if user is UNREAD:
                    saved = Unread(request)
                    user = read_user(request)  # the session, then the user
                    saved.put_back(user)
                return _refuse_user(*found, request, user)
        return None

    async def _aprocess_view(self, request: Any, *view: Any) -> HttpResponse | None:
        request.__dict__[_VIEW_PHASE] = True
        with _GUARD:
            found = _for_check(request, "user")
            if found is not None:
                user = given_user(request)
                if user is UNREAD:
                    saved = Unread(request)
                    user = await aread_user(request)
                    saved.put_back(user)
                return _refuse_user(*found, request, user)
        return None


#: The app that tracks ``django.contrib.auth``'s logins; with it, sessions are checked too.
AUTH_APP = "sqreen.integrations.django.auth"
#: Set on a request when its ``process_view`` runs. A response answered before it (a page
#: ``FetchFromCacheMiddleware`` served from the cache, any middleware's early answer) has
#: its user checked once it is back in ``__call__`` (:func:`~._users.late_user`), else a
#: blocked user's cached pages were served to them until they expired.
_VIEW_PHASE = "_sqreen_view_phase"


def _for_check(request: Any, *attrs: str) -> tuple[Client, RequestContext] | None:
    """The client and handle of a request whose user is to be checked: only while the
    collector blocks some user (else a request's session and user would be read for
    nothing), and only when the request has one of ``attrs``: ``user``, given by
    ``AuthenticationMiddleware``, or ``session`` (``SessionMiddleware``'s)."""
    handle = request.__dict__.get("sqreen")
    if not isinstance(handle, RequestContext) or not handle.bound:
        return None
    client = handle.client
    if not client.blocklist.has_users or not any(hasattr(request, a) for a in attrs):
        return None
    return client, handle


def _refuse_user(
    client: Client, ctx: RequestContext, request: Any, user: Any
) -> HttpResponse | None:
    """403 when the user the session holds is blocked (identified as the auth app's events
    identify them: ``{"username": ...}``)."""
    if user is None or not user.is_authenticated:
        return None
    blocked = client.blocklist.user_block({"username": str(user.get_username())})
    return None if blocked is None else _refuse(client, ctx, request, blocked)


_hooked_pid = 0  # the process whose sync chain has set the exit hooks (see below)


async def _exit_hooks() -> None:
    _hub.exit_hooks()


def _exit_hooks_from(request: Any) -> None:
    """Set the exit hooks on the main thread, from the sync chain under ASGI (a sync-only
    middleware after ours makes Django run ours on a thread of asgiref's): through the
    event loop, which runs on the main thread. Else a worker of ``gunicorn --preload`` with
    ``UvicornWorker``, whose client the master made, set none, and died of SIGTERM with its
    queue. Once a process; under WSGI the server's thread is left alone (as before)."""
    global _hooked_pid
    _hooked_pid = os.getpid()  # tried once (a loop off the main thread sets no handler)
    if isinstance(request, ASGIRequest):
        with _GUARD:
            async_to_sync(_exit_hooks)()


def _enter(request: Any, started: Client | None = None) -> Entered | None:
    """Bind ``request``, to the client ``started`` (under ASGI: started off the loop), or
    to the client in use, started here (the first request waits: see Client.start)."""
    entered = None
    with _GUARD:
        # INERT while a client cannot be made (logged once; tried again now and then)
        client = client_or_inert() if started is None else started
        if client.disabled:  # SQREEN_DISABLE: a pass-through with a handle that does nothing
            request.sqreen = client.disabled_context
        else:
            if started is None:
                client.start()
            source = DjangoRequest(request, client.config.max_body_size)
            ctx = RequestContext(client, "wsgi", source, source, source.route)
            request.sqreen = ctx
            entered = client, ctx, current_request.set(ctx)
    return entered


def _check_ip(client: Client, ctx: RequestContext, request: Any) -> HttpResponse | None:
    blocked = blocked_ip(client, ctx)
    return None if blocked is None else _refuse(client, ctx, request, blocked)


def _refuse(client: Client, ctx: RequestContext, request: Any, blocked: Blocked) -> HttpResponse:
    """The 403 for a request refused by ``blocked`` (said and counted)."""
    refused(client, ctx, blocked)
    return _forbidden(request)


def _forbidden(request: Any) -> HttpResponse:
    body, content_type = forbidden(request.META.get("HTTP_ACCEPT"))
    response = HttpResponse(body, status=403, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


def apply_settings() -> Client:
    """The client for ``settings.SQREEN`` (merged with ``init()``'s keywords and the
    environment): made, or kept when it is so already (:func:`sqreen._hub.framework_init`).

    The middleware runs this when Django builds it, and the app
    (:class:`~sqreen.integrations.django.apps.SqreenConfig`) when Django is set up, so that
    the processes that build no middleware (management commands, ``manage.py shell``,
    Celery workers) track with the same settings; whichever runs second finds them applied.
    Raises :class:`ImproperlyConfigured` when ``SQREEN`` is not a dict, and
    :class:`sqreen.ConfigError` for a wrong option.
    """
    config = getattr(settings, "SQREEN", None) or {}
    if not isinstance(config, Mapping):
        raise ImproperlyConfigured(
            f"settings.SQREEN must be a dict of sqreen.init() options, not {type(config).__name__}"
        )
    return framework_init(config, "django")


def _warn_once() -> None:
    """The system check's findings, also in the log: ``manage.py check`` only runs it when
    the app is in ``INSTALLED_APPS``."""
    global _checked
    if _checked:
        return
    _checked = True
    for message in check_middleware():
        logger.warning("sqreen: %s (%s). %s", message.msg, message.id, message.hint or "")
