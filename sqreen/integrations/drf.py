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
the user. A blocked user is denied (the permission is False, so that no composition, DRF's
``&`` or adrf's, can take the refusal for a pass) and the middleware answers its 403
(``This request was refused.``, a ``security.blocked`` event) in place of DRF's, since
``identify()`` kept the block on the request. An anonymous request passes: that is for
``IsAuthenticated`` to decide. Override :meth:`NotBlocked.user_identifiers` to identify users
otherwise (by id, by e-mail): it must give what the app's ``auth_track`` and blocks use.

``manage.py check`` names the DRF views of the URLconf whose permissions leave it out
(``sqreen.W003``) and those that choose them in ``get_permissions()`` (``sqreen.W004``).

.. versionadded:: 0.2
"""

from __future__ import annotations

import logging
from typing import Any

try:
    from rest_framework.permissions import BasePermission
except ImportError as exc:  # pragma: no cover - exercised without DRF installed
    raise ImportError(
        "sqreen.integrations.drf needs Django REST framework: pip install djangorestframework"
    ) from exc

from .. import identify
from .._blocking import Blocked

__all__ = ["NotBlocked"]

logger = logging.getLogger("sqreen")
#: What was said once: the user types that give no identifiers, a request not bound.
_said: set[object] = set()


class NotBlocked(BasePermission):  # type: ignore[misc]
    """Identify DRF's authenticated user; deny a blocked one (see the module)."""

    message = "This request was refused."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user  # DRF's: authenticated by then (perform_authentication)
        if user is None or not user.is_authenticated:
            return True
        try:
            identifiers = self.user_identifiers(request, user)
        except Exception as exc:  # the app's user model or override: its user passes
            _say_once(
                ("raised", type(user)),
                "sqreen: NotBlocked could not identify a %s (%s: %s): its requests are "
                "neither identified nor checked for blocks",
                type(user).__name__,
                type(exc).__name__,
                exc,
            )
            return True
        if not identifiers:
            _say_once(
                ("nameless", type(user)),
                "sqreen: NotBlocked: an authenticated %s gives no username (a stateless JWT "
                "without a username claim?): its requests are neither identified nor checked "
                "for blocks; put the username in its token, or override "
                "NotBlocked.user_identifiers",
                type(user).__name__,
            )
            return True
        # The request's handle (DRF's request gives Django's attributes; without the sqreen
        # app, sqreen.identify, which binds nothing outside a request).
        handle = getattr(request, "sqreen", None)
        if handle is None or not handle.bound:
            _say_once(
                "unbound",
                "sqreen: NotBlocked ran in a request no sqreen middleware serves: users are "
                "neither identified nor checked for blocks; put "
                "sqreen.integrations.django.SqreenMiddleware first in MIDDLEWARE",
            )
        try:
            (identify if handle is None else handle.identify)(identifiers)
        except Blocked:
            return False  # kept on the request: the middleware answers its own 403
        return True

    def user_identifiers(self, request: Any, user: Any) -> dict[str, Any]:
        """How ``user`` is known to the collector: ``{"username": <USERNAME_FIELD's value>}``
        (a user that is no Django model, as JWT packages give: its ``get_username()`` or
        ``username``); an empty dict identifies nobody (said once a user type)."""
        get_username = getattr(user, "get_username", None)
        name = get_username() if callable(get_username) else getattr(user, "username", None)
        return {} if name is None or name == "" else {"username": str(name)}


def _say_once(key: object, message: str, *args: object) -> None:
    if key not in _said and len(_said) < 64:
        _said.add(key)
        logger.warning(message, *args)
