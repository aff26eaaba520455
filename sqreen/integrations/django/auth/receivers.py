"""The receivers of ``django.contrib.auth``'s signals (:mod:`sqreen.integrations.django.auth`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model

from ...._context import IN_SIGNAL, RequestContext, current_request
from ...._limits import LIMITS
from ....events import AUTH_LOGIN_FAILURE, AUTH_LOGOUT
from ._accounts import account_username

__all__ = ["failed", "handle_of", "logged_in", "logged_out"]


def handle_of(request: Any) -> RequestContext | None:
    """The handle the middleware bound to ``request``, or None (a request it did not serve:
    the test client's ``login()``, a request made up by the app). Without a request
    (``authenticate(username=..., password=...)``, a common call), the one the middleware
    is serving, if any."""
    handle = getattr(request, "sqreen", None) if request is not None else current_request.get()
    return handle if isinstance(handle, RequestContext) and handle.bound else None


def _identifiers(username: object) -> dict[str, str] | None:
    """The identifiers of a login's username, cut as ``track()`` cuts them outside strict
    mode: the name is the client's choice (a view or DRF's basic authentication takes any
    length), and strict mode raising for it answered the login 500."""
    if username in (None, ""):
        return None
    return {"username": str(username)[: LIMITS.identifier_max]}


def logged_in(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """``auth.login.success``, and the user identified (:class:`sqreen.Blocked`, answered 403
    by the middleware, when the collector blocks them)."""
    handle = handle_of(request)
    if handle is not None and user is not None:
        identifiers = _identifiers(user.get_username())
        if identifiers is not None:
            _auth_track(handle, True, identifiers)


def failed(
    sender: Any, credentials: Mapping[str, Any] | None = None, request: Any = None, **kwargs: Any
) -> None:
    """``auth.login.failure`` for the account the username ``authenticate()`` was given
    names (:mod:`._accounts`: ``jack@example.com`` is ``jack``'s), else for that username
    (Django passes the credentials with their secrets masked; only the username is read)."""
    handle = handle_of(request)
    if handle is None:
        return
    credentials = credentials if isinstance(credentials, Mapping) else {}
    username = credentials.get("username")
    if username is None:  # authenticate(email=...) where USERNAME_FIELD is "email"
        username = credentials.get(get_user_model().USERNAME_FIELD)
    if username is None:  # a backend of the app's, logging in by email (allauth's style)
        username = credentials.get("email", credentials.get("login"))
    if isinstance(username, str):
        # The account's own name, as its success is tracked: not one of its spellings. (A
        # user model the lookup does not fit is an error of ours, counted: the login goes on.)
        with handle.client.guard("the account's lookup"):
            username = account_username(username) or username
    identifiers = _identifiers(username)
    if identifiers is None:  # a failure of nobody named: not the user identify() bound
        handle.client.track(AUTH_LOGIN_FAILURE, request=handle, nobody=True)
    else:
        _auth_track(handle, False, identifiers)


def _auth_track(handle: RequestContext, success: bool, identifiers: dict[str, str]) -> None:
    """``handle.auth_track``, known as the signals' (the app tracking the same login too is
    then said once: it would count twice)."""
    handle.auth_sources |= IN_SIGNAL
    try:
        handle.auth_track(success, **identifiers)
    finally:
        handle.auth_sources &= ~IN_SIGNAL


def logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """``auth.logout``, with the user when one was logged in."""
    handle = handle_of(request)
    if handle is not None:
        username = user.get_username() if user is not None else None
        handle.track(AUTH_LOGOUT, user_identifiers=_identifiers(username))
