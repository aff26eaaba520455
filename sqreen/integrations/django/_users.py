"""Who a Django request's user is, for the middleware's check of blocked users, read so that
the check changes nothing the app sees.

- :func:`given_user`: ``request.user`` when it costs no read: a user a middleware set after
  ``AuthenticationMiddleware`` (``login()`` and ``logout()`` set one: ``RemoteUserMiddleware``
  and the like), or a lazy user read already. Only ``AuthenticationMiddleware``'s lazy user,
  unread, is read (:func:`read_user`, :func:`aread_user`). A later middleware's login or
  logout changes ``request.user`` alone, not what ``get_user()`` and ``request.auser()``
  cache: read through those, the check saw the user of before, and (put back as the view's
  user) the view ran as them, found by running Django's own suite with a user blocked.
- :class:`Unread`: the session and the user's attributes as they were before that read, put
  back after it, so that the read is not the app's.
- :func:`late_user`: the user of a response answered before any ``process_view`` (a page of
  the per-site cache), read after ``SessionMiddleware``'s response phase.

A failing session or user store (the app's) reads as nobody: the response stands, as it would
without sqreen, and the app's own read meets the same error.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Final

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils.functional import LazyObject, SimpleLazyObject, empty

__all__ = ["UNREAD", "Unread", "aread_user", "given_user", "late_user", "read_user"]

logger = logging.getLogger("sqreen")

#: :func:`given_user`'s answer for a lazy user not read yet.
UNREAD: Final[Any] = object()
#: What ``AuthenticationMiddleware`` and a read of the user leave on a request.
_USER_ATTRS: Final = ("user", "auser", "_cached_user", "_acached_user")


def given_user(request: Any) -> Any:
    """``request.user`` when reading it reads nothing, else :data:`UNREAD`."""
    user = request.user
    if isinstance(user, LazyObject):
        wrapped = user.__dict__.get("_wrapped", empty)
        return UNREAD if wrapped is empty else wrapped
    return user


def read_user(request: Any) -> Any:
    """``request.user``, read (the user itself, not its lazy stand-in), or None when the
    app's stores fail."""
    try:
        user = request.user
        user.is_authenticated  # noqa: B018 (a lazy user is loaded by its first attribute)
    except Exception:
        logger.debug("sqreen: the request's user could not be read", exc_info=True)
        return None
    return user._wrapped if isinstance(user, SimpleLazyObject) else user


async def aread_user(request: Any) -> Any:
    """:func:`read_user` in an async middleware: ``request.auser()`` (Django 5.0 and later),
    else the sync read in a thread."""
    auser = getattr(request, "auser", None)
    if auser is None:
        return await sync_to_async(read_user)(request)
    try:
        return await auser()
    except Exception:
        logger.debug("sqreen: the request's user could not be read", exc_info=True)
        return None


def late_user(request: Any) -> Any:
    """The user of a response answered before any ``process_view``: :func:`given_user`, or
    the one its session is logged in as, or None.

    Read after the response went through ``SessionMiddleware``, so without ``get_user()``,
    whose side effects need that middleware still to come: it re-keys a session signed with
    a ``SECRET_KEY_FALLBACKS`` key, whose new cookie would then never be sent (the user
    logged out). Nor is the session's hash checked: a blocked user is refused either way.
    Only the session is needed, not ``request.user``: the cache may answer before
    ``AuthenticationMiddleware``."""
    if hasattr(request, "user"):
        user = given_user(request)
        if user is not UNREAD:
            return user
    session = getattr(request, "session", None)
    if session is None:
        return None
    from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY, get_user_model, load_backend

    try:
        if SESSION_KEY not in session:
            return None
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend = session.get(BACKEND_SESSION_KEY)
        if backend not in settings.AUTHENTICATION_BACKENDS:
            return None
        return load_backend(backend).get_user(user_id)
    except Exception:
        logger.debug("sqreen: the session's user could not be read", exc_info=True)
        return None


class Unread:
    """The request's session and user as they were before the check read them, put back
    after it (:meth:`put_back`), so that the check's read is not the app's: else, while any
    user was blocked, ``SessionMiddleware`` added ``Vary: Cookie`` to every response (the
    session accessed), and deleted a stale session cookie on pages that read nothing."""

    __slots__ = ("attrs", "request", "session", "session_state")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.session: Any = getattr(request, "session", None)
        self.session_state = None if self.session is None else dict(vars(self.session))
        attrs = request.__dict__
        self.attrs = {k: attrs[k] for k in _USER_ATTRS if k in attrs}

    def put_back(self, user: Any) -> None:
        """After a read that found ``user`` (None: the read failed)."""
        session, state = self.session, self.session_state
        if session is None or state is None:
            return
        request = self.request
        if user is not None and user.is_authenticated:
            # A valid session, loaded: only its flag tells; set again when the app reads
            # the user (answered from what was read here, no query again).
            session.accessed = state.get("accessed", False)
            request.user = SimpleLazyObject(partial(_seen, session, user))
            request.auser = partial(_aseen, session, user)
            return
        # No user: the session as it was (a stale one's key and cache too) and the user
        # unread, so that the app's own read does what it did without sqreen: the same
        # lazy object, which runs its own set-up again.
        vars(session).clear()
        vars(session).update(state)
        attrs = request.__dict__
        for name in _USER_ATTRS:
            attrs.pop(name, None)
        attrs.update(self.attrs)
        lazy = self.attrs.get("user")
        if isinstance(lazy, LazyObject):
            lazy._wrapped = empty


def _seen(session: Any, user: Any) -> Any:
    session.accessed = True
    return user


async def _aseen(session: Any, user: Any) -> Any:
    session.accessed = True
    return user
