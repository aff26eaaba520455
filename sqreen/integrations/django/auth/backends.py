"""An authentication backend that refuses a blocked user before any password is checked.

::

    AUTHENTICATION_BACKENDS = [
        "sqreen.integrations.django.auth.backends.BlockedUsersBackend",  # first
        "django.contrib.auth.backends.ModelBackend",
    ]

The name a login was given is checked, and the account it names as the site looks it up
(:mod:`._accounts`: its e-mail, a spelling the database's collation takes for it), so
that no other spelling of a blocked account answers a password's verdict.

Where ``authenticate()`` succeeds and the login is then refused without a signal (the
admin's form for a user who is not staff, an inactive user, a view of the app's that checks
a password without logging in), a blocked user's right password would be answered as that
code answers it, and a wrong one 403: telling an attacker which guess was right. Listed
first, this backend raises :class:`sqreen.Blocked` (answered 403 by the middleware) for a
blocked user whatever the password; it never authenticates anyone itself.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from ...._context import RequestContext
from ._accounts import aaccount_username, account_username
from .receivers import handle_of

__all__ = ["BlockedUsersBackend"]


class BlockedUsersBackend:
    """Refuses (:class:`sqreen.Blocked`) the logins of users the collector blocks.

    It has only ``authenticate`` and ``aauthenticate``: Django asks a backend for a
    permission or a session's user only when it has the method, so the others' answers stand.
    Without ``get_user``, the test client's ``force_login()`` takes the next backend, as it
    takes the first that has one (with ``BaseBackend``'s, it took this one, whose sessions
    load no user: every ``force_login`` test ran logged out)."""

    async def aauthenticate(self, request: Any, username: Any = None, **credentials: Any) -> None:
        """For ``aauthenticate()`` (Django 5.0+): the same check, the account looked up on a
        worker thread."""
        handle, typed = _typed(request, username, credentials)
        if handle is not None and typed is not None:
            _refuse(handle, typed)
            if handle.client.blocklist.has_users:
                account = None
                with handle.client.guard("the account's lookup"):
                    account = await aaccount_username(typed)
                _refuse(handle, account)
        return None

    def authenticate(self, request: Any, username: Any = None, **credentials: Any) -> None:
        handle, typed = _typed(request, username, credentials)
        if handle is not None and typed is not None:
            _refuse(handle, typed)
            if handle.client.blocklist.has_users:  # (no query while no user is blocked)
                # Another spelling of a blocked account (its e-mail, accents a collation
                # ignores) is that account: refused too, right password or wrong. (A user
                # model the lookup does not fit is an error of ours, counted: the login
                # goes on.)
                account = None
                with handle.client.guard("the account's lookup"):
                    account = account_username(typed)
                _refuse(handle, account)
        return None


def _typed(
    request: Any, username: Any, credentials: dict[str, Any]
) -> tuple[RequestContext | None, str | None]:
    """The request's handle (None: a request the middleware did not serve) and the name the
    login was given (None: none)."""
    handle = handle_of(request)
    if handle is None:
        return None, None
    if username is None:
        username = credentials.get(get_user_model().USERNAME_FIELD, credentials.get("email"))
    return handle, None if username in (None, "") else str(username)


def _refuse(handle: RequestContext, username: str | None) -> None:
    """Raise :class:`sqreen.Blocked` when ``username`` is blocked."""
    if username is not None:
        handle.client.refuse_if_blocked({"username": username}, handle)
