"""``sqreen.W003`` and ``sqreen.W004``: the Django REST framework views that do not check
blocked users, or that choose their permissions in code.

DRF authenticates inside the view, so only :class:`sqreen.integrations.drf.NotBlocked` among
a view's permissions identifies its user and refuses a blocked one (see
:mod:`sqreen.integrations.drf`). The check walks the URLconf, as Django's own URL checks do,
and reads each DRF route's permissions as DRF will: the ``permission_classes`` given to
``as_view()`` (a router gives an ``@action``'s there), else the class's; compositions are
read through ``&`` only (``|`` and ``~`` could pass a blocked user on the other side).

- W003 names the routes whose permissions leave it out.
- W004 names those whose class overrides ``get_permissions()``: what it returns cannot be
  read here. An app that checked them can silence W004 alone (``SILENCED_SYSTEM_CHECKS``).

Left out: views without authentication classes (no user to check: JWT packages' token
views) and DRF's own views (``ObtainAuthToken``: a password goes through ``authenticate()``,
where ``BlockedUsersBackend`` refuses a blocked user). A view wrapped by a decorator that
drops DRF's attributes (no ``functools.wraps``) cannot be seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.core import checks

__all__ = ["check_rest_framework"]

#: Routes named at most in a message; the rest are counted.
MAX_NAMED = 10
_PATH = "sqreen.integrations.drf.NotBlocked"
#: The packages whose views read ``permission_classes`` as DRF does: DRF's, adrf's (async).
_FRAMEWORKS = ("rest_framework.", "adrf.")


def check_rest_framework(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``sqreen.W003`` and ``sqreen.W004`` (see the module), each once, when there are
    routes to name."""
    try:
        from django.urls import get_resolver
        from rest_framework.views import APIView
    except ImportError:  # no DRF: nothing to check
        return []
    try:
        routes = list(_drf_routes(get_resolver().url_patterns, "", APIView))
    except Exception:  # a URLconf that does not import: Django's own checks say why
        return []
    missing, chosen = [], []
    for route, cls, permissions in routes:
        if _chooses(cls):
            chosen.append(f"{route} ({_name(cls)})")
        elif not _checks(permissions):
            missing.append(f"{route} ({_name(cls)})")
    found = []
    if missing:
        found.append(
            checks.Warning(
                f"{_count(missing)} of Django REST framework neither identify their user nor "
                f"refuse a blocked one: {_named(missing)}",
                hint=(
                    f'List "{_PATH}" first in REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"], '
                    "and in the permission_classes of views (and @action) that set their own."
                ),
                id="sqreen.W003",
            )
        )
    if chosen:
        found.append(
            checks.Warning(
                f"{_count(chosen)} of Django REST framework choose their permissions in "
                f"get_permissions(), which cannot be checked for {_PATH}: {_named(chosen)}",
                hint=(
                    "Make each list get_permissions() returns hold NotBlocked(), then "
                    'silence this check: SILENCED_SYSTEM_CHECKS = ["sqreen.W004"].'
                ),
                id="sqreen.W004",
            )
        )
    return found


def _drf_routes(
    patterns: Iterable[Any], prefix: str, api_view: type, seen: set[int] | None = None
) -> Iterator[tuple[str, Any, Any]]:
    """``(route, view class, permission classes)`` of the DRF routes under ``patterns``, each
    view once (a router's format-suffix routes repeat its views)."""
    seen = set() if seen is None else seen
    for pattern in patterns:
        route = prefix + str(getattr(pattern, "pattern", "")).removeprefix("^").removesuffix("$")
        nested = getattr(pattern, "url_patterns", None)
        if nested is not None:  # include()
            yield from _drf_routes(nested, route, api_view, seen)
            continue
        callback = getattr(pattern, "callback", None)
        if id(callback) in seen:
            continue
        seen.add(id(callback))
        found = getattr(callback, "cls", None)
        if not isinstance(found, type) or not issubclass(found, api_view):
            continue
        cls: Any = found
        initkwargs = getattr(callback, "initkwargs", None) or {}
        if not initkwargs.get("authentication_classes", cls.authentication_classes):
            continue  # no user is authenticated there
        if cls.__module__.startswith(_FRAMEWORKS):
            continue
        yield route, cls, initkwargs.get("permission_classes", cls.permission_classes)


def _chooses(cls: Any) -> bool:
    """Whether ``cls`` picks its permissions in its own ``get_permissions()`` (DRF's and
    adrf's, which read ``permission_classes``, are not that)."""
    for klass in cls.__mro__:
        if "get_permissions" in vars(klass):
            return not klass.__module__.startswith(_FRAMEWORKS)
    return False


def _checks(permissions: Any) -> bool:
    from ...integrations.drf import NotBlocked

    return any(_holds(item, NotBlocked) for item in permissions or ())


def _holds(item: Any, wanted: type) -> bool:
    """Whether a ``permission_classes`` item is ``wanted`` (or a subclass), or composes it
    with ``&`` (``|`` and ``~`` would let a blocked user through the other side)."""
    if isinstance(item, type):
        return issubclass(item, wanted)
    op1, op2 = getattr(item, "op1_class", None), getattr(item, "op2_class", None)
    from rest_framework.permissions import AND  # adrf's async AAND derives from it

    operator = getattr(item, "operator_class", None)
    if isinstance(operator, type) and issubclass(operator, AND) and op1 and op2:
        return _holds(op1, wanted) or _holds(op2, wanted)
    return False


def _name(view: Any) -> str:
    """``module.Class``; for ``@api_view``, the function's name (DRF sets ``__name__``)."""
    return f"{view.__module__}.{view.__name__}"


def _count(routes: list[str]) -> str:
    return "1 route" if len(routes) == 1 else f"{len(routes)} routes"


def _named(routes: list[str]) -> str:
    shown = ", ".join(routes[:MAX_NAMED])
    return shown + (f" and {len(routes) - MAX_NAMED} more" if len(routes) > MAX_NAMED else "")
