"""The request context: one object per request, in one :class:`~contextvars.ContextVar`.

A middleware creates a :class:`RequestContext` from the WSGI environ or ASGI scope, binds it
in :data:`current_request` and resets it with the token in a ``finally`` of the same frame.
The context object is also the per-request handle users see as ``request.sqreen`` (Flask,
Django) or
``request.state.sqreen`` (Starlette, FastAPI): it holds the object itself, not a ContextVar
lookup, and :meth:`identify` mutates it in place, so copied contexts (Starlette's thread pool,
asyncio tasks, asgiref) all see the user.

Creating and binding one costs a few attribute stores: nothing is parsed until an event is
tracked, and then only a frozen snapshot is taken (:mod:`sqreen._request`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._request import (
    BodySource,
    RequestSnapshot,
    RouteGetter,
    asgi_peer,
    snapshot_asgi,
    snapshot_wsgi,
    wsgi_peer,
    wsgi_rewritten,
)

if TYPE_CHECKING:
    from ._blocking import Blocked
    from ._client import Client

__all__ = [
    "AUTH_BY_APP",
    "AUTH_BY_SIGNALS",
    "IN_SIGNAL",
    "RequestContext",
    "UserScope",
    "current",
    "current_request",
    "unbound",
]

logger = logging.getLogger("sqreen")

#: The request being served, bound by a middleware: ``token = current_request.set(ctx)``,
#: then ``current_request.reset(token)`` in a ``finally`` of the same frame.
current_request: ContextVar[RequestContext | None] = ContextVar("sqreen_request", default=None)

_T = TypeVar("_T")


async def unbound(call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
    """``await call(*args)`` with no request bound meanwhile, bound again after it: how the
    ASGI middleware calls the server's ``send``, and its tee the server's ``receive``.

    What a server schedules while it runs copies the task's context, and with it the
    request's handle, which holds the scope and all a framework hung on it. On asyncio's own
    loop, uvicorn arms its keep-alive timer in the send of a response's last message, and a
    timer it cancels stays in the loop's queue until it reaches its front; its ``receive``
    of a body that had paused the connection (over 64 KiB) re-arms the socket's reader, a
    handle that lives as long as the connection; hypercorn starts a task in its sends. Each
    kept a finished request alive, and on a busy server the garbage collector ran where the
    bare app never does (FastAPI on uvicorn: a young collection every 36 requests, a full
    one, 26 ms, every 5 000). The app's own code around these calls, and a background task
    after the response, still see the request; an outer middleware's ``send`` wrapper sees
    none, as its code around ``await app(...)`` never did."""
    token = current_request.set(None)
    try:
        return await call(*args)
    finally:
        current_request.reset(token)


#: :attr:`RequestContext.auth_sources`: a login tracked by the app (``auth_track``), by
#: ``sqreen.integrations.django.auth``'s receivers, and while one of those runs.
AUTH_BY_APP = 1
AUTH_BY_SIGNALS = 2
IN_SIGNAL = 4
_BOTH = AUTH_BY_APP | AUTH_BY_SIGNALS
_warned_twice: list[bool] = []


def _warn_counted_twice() -> None:
    """Say once a process that one request's logins are tracked both ways."""
    if _warned_twice:
        return
    _warned_twice.append(True)
    logger.warning(
        "sqreen: a request's login was tracked both by sqreen.integrations.django.auth "
        "(django.contrib.auth's signals) and by the view's auth_track(): each login counts "
        "twice, and playbooks fire at half their thresholds. Use one of them for the same "
        "logins (the README's Django section)."
    )


class RequestContext:
    """What sqreen knows of the request being served, and the handle to track within it:
    ``request.sqreen`` (Flask, Django), ``request.state.sqreen`` (Starlette, FastAPI).

    .. versionadded:: 0.1
    """

    #: False for the handle without a request (``request.sqreen`` outside the middleware).
    bound = True

    __slots__ = (
        "_client",
        "_ip",
        "_kind",
        "_peer",
        "_receive",
        "_source",
        "auth_sources",
        "body",
        "other_user_noted",
        "refused",
        "route",
        "traits",
        "user",
    )

    def __init__(
        self,
        client: Client,
        kind: Literal["wsgi", "asgi"],
        source: Mapping[str, Any],
        body: BodySource | None = None,
        route: RouteGetter | None = None,
        receive: object = None,
    ) -> None:
        self._client = client
        self._kind = kind
        self._source = source
        #: The server's own ASGI ``receive``: it may know the connection's address.
        self._receive = receive
        self._peer: tuple[str | None, bool] | None = None  # asgi_peer(), once a request
        self._ip: str | bool | None = False  # False: not resolved yet
        #: What the app has read of the body: the tee, or a framework's own cache.
        self.body = body
        #: Returns ``(route template, path parameters)``; integrations set it.
        self.route = route
        #: Identifiers bound by :meth:`identify`.
        self.user: dict[str, str] | None = None
        self.traits: dict[str, Any] | None = None
        #: Whether a track() of this request was given another user than identify()'s.
        self.other_user_noted = False
        #: The block raised for this request (``identify()``, ``auth_track()``), kept for
        #: the middlewares that refuse it even when it was caught on its way.
        self.refused: Blocked | None = None
        #: Who tracked this request's logins (:data:`AUTH_BY_APP`, :data:`AUTH_BY_SIGNALS`),
        #: and :data:`IN_SIGNAL` while Django's auth signals track one.
        self.auth_sources = 0

    def pin_route(self) -> None:
        """Read the route now, while the framework holds its request: a refusal's event is
        recorded once the app returned, when Flask has taken its request out of the environ
        (the route was then unknown)."""
        route = self.route
        if route is None:
            return
        with self._client.errors.guard("reading a refused request's route"):
            found = route()
            self.route = lambda: found

    # -- for middlewares ---------------------------------------------------------------

    @property
    def client(self) -> Client:
        return self._client

    def snapshot(self) -> RequestSnapshot:
        """Freeze what an event needs of the request; keeps no reference to it."""
        cfg = self._client.config
        if self._kind == "wsgi":
            return snapshot_wsgi(self._source, cfg.forwarded_environ_key, self.route, self.body)
        return snapshot_asgi(
            self._source, cfg.forwarded_header_name, self.route, self.body, self._asgi_peer()
        )

    def client_ip(self) -> str | None:
        """Resolve the client IP now (for IP blocking); cached for the request."""
        if self._ip is False:
            self._ip = self._client.resolve_ip(self.snapshot_for_ip())
        return self._ip  # type: ignore[return-value]

    def snapshot_for_ip(self) -> tuple[str | None, str | None, bool]:
        """``(peer, forwarded header, peer rewritten)``: what the client IP is resolved from."""
        cfg = self._client.config
        if self._kind == "wsgi":
            value = self._source.get(cfg.forwarded_environ_key)
            return wsgi_peer(self._source), value, wsgi_rewritten(self._source)
        forwarded: bytes | None = None
        for name, v in self._source.get("headers", ()):
            if name == cfg.forwarded_header_name:
                forwarded = v if forwarded is None else forwarded + b"," + v
        peer, rewritten = self._asgi_peer()
        return peer, forwarded.decode("latin-1") if forwarded is not None else None, rewritten

    def _asgi_peer(self) -> tuple[str | None, bool]:
        peer = self._peer
        if peer is None:
            peer = self._peer = asgi_peer(self._source, self._receive)
            self._receive = None
        return peer

    # -- the handle ----------------------------------------------------------------------

    def track(
        self,
        event: str,
        options: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        *,
        properties: Mapping[str, Any] | None = None,
        user_identifiers: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        collect_body: bool = False,
        target: Mapping[str, Any] | None = None,
    ) -> bool:
        """Track an event within this request; see :func:`sqreen.track`."""
        return self._client.track(
            event,
            options,
            properties,
            user_identifiers,
            timestamp,
            collect_body,
            self,
            target,
        )

    def identify(
        self, user_identifiers: Mapping[str, Any], traits: Mapping[str, Any] | None = None
    ) -> None:
        """Bind a user to this request; raise :class:`sqreen.Blocked` if they are blocked."""
        self._client.identify(user_identifiers, traits, self)

    def auth_track(self, success: object, **user_identifiers: Any) -> bool:
        """Track a login attempt; see :func:`sqreen.auth_track`."""
        sources = self.auth_sources
        by = AUTH_BY_SIGNALS if sources & IN_SIGNAL else AUTH_BY_APP
        if sources & _BOTH and not sources & by:
            _warn_counted_twice()
        self.auth_sources = sources | by
        return self._client.auth_track(success, user_identifiers, self)

    def signup_track(self, **user_identifiers: Any) -> bool:
        """Track a sign-up; see :func:`sqreen.signup_track`."""
        return self._client.signup_track(user_identifiers, self)

    def for_user(self, user_identifiers: Mapping[str, Any]) -> UserScope:
        """Track events for a given user without binding them; see :func:`sqreen.for_user`."""
        return self._client.for_user(user_identifiers, self)

    def is_blocked(self, user_identifiers: Mapping[str, Any] | None = None) -> bool:
        """Whether this request's client IP, or the given (or bound) user, is blocked."""
        return self._client.is_blocked(user_identifiers or self.user, self.client_ip())

    def __repr__(self) -> str:
        return f"<sqreen.RequestContext {self._kind} user={self.user!r}>"


def current() -> RequestContext | None:
    """The context bound to the running request, if any."""
    return current_request.get()


class UserScope:
    """Events tracked for one user, without binding them (Go's ``ForUser()``).

    .. versionadded:: 0.1
    """

    __slots__ = ("_client", "_ctx", "_user")

    def __init__(self, client: Client, user_identifiers: Mapping[str, Any], ctx: Any) -> None:
        self._client = client
        self._user = user_identifiers
        self._ctx = ctx

    def track(
        self,
        event: str,
        options: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        *,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        collect_body: bool = False,
        target: Mapping[str, Any] | None = None,
    ) -> bool:
        """Track an event for this user; see :func:`sqreen.track`."""
        return self._client.track(
            event,
            options,
            properties,
            self._user,
            timestamp,
            collect_body,
            self._ctx,
            target,
            warn_other_user=False,
        )
