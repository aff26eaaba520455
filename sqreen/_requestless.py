"""``request.sqreen`` where no middleware bound a request: a view unit-tested on its own
(Django's ``RequestFactory``, Flask's ``test_request_context()``), a websocket (the ASGI
middleware binds no request to one).

It is the module's functions as a handle: :meth:`track` is :func:`sqreen.track` (events carry
the request a middleware bound, if any: none in those cases), :meth:`identify` is
:func:`sqreen.identify` (outside a request it binds nothing and raises nothing), and the client
is the one in use when it is called (the pytest fixture's, in a test). One object for the
process, immutable. The integrations give it from their ``request.sqreen`` attribute
(:class:`HandleAttribute`) and FastAPI's dependency, so that a view written with
``request.sqreen`` runs, and is testable, without the middleware.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from . import _hub
from ._client import Client
from ._context import RequestContext, UserScope

__all__ = ["REQUESTLESS", "HandleAttribute", "RequestlessContext"]


class RequestlessContext(RequestContext):
    """The handle without a request: see the module."""

    __slots__ = ()

    bound = False  # Client.track(request=this) tracks as sqreen.track() does
    user = None  # identify() binds nothing to it (and it cannot be assigned)
    traits = None
    refused = None

    def __init__(self) -> None:  # no request, and no client of its own
        pass

    @property
    def client(self) -> Client:
        return _hub.client_or_inert()

    def client_ip(self) -> str | None:
        return None

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
        """:func:`sqreen.track`."""
        return self.client.track(
            event,
            options,
            properties,
            user_identifiers,
            timestamp,
            collect_body,
            target=target,
        )

    def identify(
        self, user_identifiers: Mapping[str, Any], traits: Mapping[str, Any] | None = None
    ) -> None:
        """:func:`sqreen.identify`: binds nothing, raises nothing, outside a request."""
        self.client.identify(user_identifiers, traits)

    def auth_track(self, success: object, **user_identifiers: Any) -> bool:
        """:func:`sqreen.auth_track`."""
        return self.client.auth_track(success, user_identifiers)

    def signup_track(self, **user_identifiers: Any) -> bool:
        """:func:`sqreen.signup_track`."""
        return self.client.signup_track(user_identifiers)

    def for_user(self, user_identifiers: Mapping[str, Any]) -> UserScope:
        """:func:`sqreen.for_user`."""
        return self.client.for_user(user_identifiers)

    def is_blocked(self, user_identifiers: Mapping[str, Any] | None = None) -> bool:
        """Whether the given user is blocked (there is no client IP, and no bound user)."""
        return self.client.is_blocked(user_identifiers)

    def __repr__(self) -> str:
        return "<sqreen.RequestContext without a request>"


#: The one handle without a request.
REQUESTLESS = RequestlessContext()


class HandleAttribute:
    """``request.sqreen`` on a framework's request class: what ``lookup(request)`` finds (the
    handle the middleware bound), else :data:`REQUESTLESS`.

    A non-data descriptor: nothing runs per request until a view reads it, and an assignment
    to the instance (``request.sqreen = ...``, as Django's middleware does) wins over it.
    """

    def __init__(self, lookup: Callable[[Any], RequestContext | None] | None = None) -> None:
        self._lookup = lookup

    def __get__(self, request: Any, owner: Any = None) -> Any:
        if request is None:
            return self
        handle = None if self._lookup is None else self._lookup(request)
        return REQUESTLESS if handle is None else handle
