"""The account a login's typed name stands for, looked up as the site looks one up.

A site takes more spellings of one account than sqreen's folding of identifiers merges: a
login by username or e-mail (a ``ModelBackend`` subclass, django-allauth), a database whose
collation ignores accents or case (MySQL's and MariaDB's defaults: ``célia`` logs in as
``celia``). Tracked under the name as typed, an attacker spread one account's failures over
its spellings, under every per-account threshold, and the success that ended it raised no
takeover alert (tracked under the account's own name); a block of the account let its other
spellings through :class:`~.backends.BlockedUsersBackend`, answering a wrong password 401
and the right one 403. So the receivers and the backend ask for the account: by the user
model's natural key (``get_by_natural_key``, what ``ModelBackend`` asks: the database
decides what is equal), else by its e-mail field, case-insensitively, when one account only
has it. That is an indexed query (two for an address that is no natural key) for each
failed login, and for the backend's check only while some user is blocked.
"""

from __future__ import annotations

from typing import Any, Final

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import DatabaseError

__all__ = ["aaccount_username", "account_username"]

#: Longer names are no account's (Django's username holds 150 characters, an e-mail 254):
#: not looked up.
MAX_TYPED: Final = 320


def account_username(typed: str) -> str | None:
    """The ``USERNAME_FIELD`` value of the one account ``typed`` names (see the module), or
    None: no account, or a lookup that failed (it never fails the login)."""
    if not 0 < len(typed) <= MAX_TYPED:
        return None
    user_model = get_user_model()
    manager = user_model._default_manager
    try:
        try:
            return _username(manager.get_by_natural_key(typed))
        except user_model.DoesNotExist:
            pass
        field = _email_field(user_model, typed)
        if field is None:
            return None
        found = list(manager.filter(**{f"{field}__iexact": typed})[:2])
    except (DatabaseError, user_model.MultipleObjectsReturned, ValueError, TypeError):
        return None
    return _username(found[0]) if len(found) == 1 else None


#: :func:`account_username` for ``aauthenticate()``: on a worker thread (as the ORM's own
#: async calls run), no query waiting on the event loop.
aaccount_username = sync_to_async(account_username)


def _email_field(user_model: Any, typed: str) -> str | None:
    """The user model's e-mail field, when ``typed`` may be an address and the field is not
    the natural key (asked already)."""
    if "@" not in typed:
        return None
    field = getattr(user_model, "get_email_field_name", lambda: None)()
    if not isinstance(field, str) or field == user_model.USERNAME_FIELD:
        return None
    return field


def _username(user: Any) -> str | None:
    name = user.get_username()
    return str(name) if name not in (None, "") else None
