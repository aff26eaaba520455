"""Django REST framework: its users identified, and refused while they are blocked.

DRF authenticates a request inside the view (token, basic, session, JWT: its authentication
classes run in ``APIView.initial()``), after every middleware. So the Django middleware never
sees a token's user: without this, events tracked in an API view carried no user, and a
blocked user went on calling the API with their token. :class:`NotBlocked` is a permission,
the place DRF gives for a check that needs the authenticated user::

    # settings.py (with sqreen.integrations.django.SqreenMiddleware first in MIDDLEWARE)
    REST_FRAMEWORK = {
        "DEFAULT_PERMISSION_CLASSES": [
            "sqreen.integrations.drf.NotBlocked",
            "rest_framework.permissions.IsAuthenticated",
        ],
    }

    # a view that sets its own permissions lists it too
    class Export(APIView):
        permission_classes = [NotBlocked, IsAdminUser]

For an authenticated user it calls ``request.sqreen.identify({"username": ...})`` (the user
model's ``USERNAME_FIELD``, as the Django auth app identifies users): the view's events carry
the user, and a blocked user gets the middleware's 403 (``This request was refused.``, a
``security.blocked`` event), before the view's handler runs. An anonymous request passes: that
is for ``IsAuthenticated`` to decide. Override :meth:`NotBlocked.user_identifiers` to identify
users otherwise (by id, by e-mail): it must give what the app's ``auth_track`` and blocks use.

``manage.py check`` warns (``sqreen.W003``) about every DRF view of the URLconf whose
``permission_classes`` leave it out, as a view setting its own list does.

.. versionadded:: 0.2
"""

from __future__ import annotations

from typing import Any

try:
    from rest_framework.permissions import BasePermission
except ImportError as exc:  # pragma: no cover - exercised without DRF installed
    raise ImportError(
        "sqreen.integrations.drf needs Django REST framework: pip install djangorestframework"
    ) from exc

from .. import identify
from ..middleware._common import guard

__all__ = ["NotBlocked"]

_GUARD = guard("NotBlocked")


class NotBlocked(BasePermission):  # type: ignore[misc]
    """Identify DRF's authenticated user; a blocked one is refused (see the module)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user  # DRF's: authenticated by then (perform_authentication)
        if user is None or not user.is_authenticated:
            return True
        identifiers = None
        with _GUARD:  # an identifier that cannot be read is the app's bug: logged, passed
            identifiers = self.user_identifiers(request, user)
        if identifiers:
            # The request's handle (DRF's request gives Django's attributes; without the
            # sqreen app or the middleware, sqreen.identify, which binds nothing outside a
            # request). sqreen.Blocked goes past DRF's exception handling (it is no
            # Exception) to the middleware, which answers 403.
            handle = getattr(request, "sqreen", None)
            (identify if handle is None else handle.identify)(identifiers)
        return True

    def user_identifiers(self, request: Any, user: Any) -> dict[str, Any]:
        """How ``user`` is known to the collector: ``{"username": <USERNAME_FIELD's value>}``
        (a user that is no Django model, as some JWT packages give: its ``username``); an
        empty dict identifies nobody."""
        get_username = getattr(user, "get_username", None)
        name = get_username() if callable(get_username) else getattr(user, "username", None)
        return {} if name is None or name == "" else {"username": str(name)}
