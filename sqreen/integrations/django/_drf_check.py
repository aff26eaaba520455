"""``sqreen.W003``: the Django REST framework views that do not check blocked users.

DRF authenticates inside the view, so only :class:`sqreen.integrations.drf.NotBlocked` among
a view's ``permission_classes`` identifies its user and refuses a blocked one (see
:mod:`sqreen.integrations.drf`). The check walks the URLconf, as Django's own URL checks do,
and names the DRF views (``APIView`` subclasses, ``@api_view`` functions, viewsets) whose
``permission_classes`` leave it out, composed ones (``NotBlocked & IsAdminUser``) read through.
A view that picks its permissions in ``get_permissions()`` is judged by its class attribute.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.apps import apps
from django.core import checks

__all__ = ["check_rest_framework"]

#: Views named at most; the rest are counted.
MAX_NAMED = 10
_PATH = "sqreen.integrations.drf.NotBlocked"


def check_rest_framework(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """One ``sqreen.W003`` naming the DRF views without ``NotBlocked``, if any."""
    if not apps.is_installed("rest_framework"):
        return []
    try:
        from django.urls import get_resolver

        views = sorted(set(_drf_views(get_resolver().url_patterns)), key=_name)
    except Exception:  # a URLconf that does not import: Django's own checks say why
        return []
    missing = [_name(view) for view in views if not _checks(view)]
    if not missing:
        return []
    named = ", ".join(missing[:MAX_NAMED])
    if len(missing) > MAX_NAMED:
        named += f" and {len(missing) - MAX_NAMED} more"
    return [
        checks.Warning(
            f"{len(missing)} Django REST framework view(s) do not identify their user nor "
            f"refuse a blocked one: {named}",
            hint=(
                f'List "{_PATH}" first in REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"], and '
                "in the permission_classes of views that set their own."
            ),
            id="sqreen.W003",
        )
    ]


def _drf_views(patterns: Iterable[Any]) -> Iterator[type]:
    """The view classes of DRF's ``as_view()`` reachable from ``patterns``."""
    from rest_framework.views import APIView

    for pattern in patterns:
        nested = getattr(pattern, "url_patterns", None)
        if nested is not None:  # include()
            yield from _drf_views(nested)
            continue
        cls = getattr(getattr(pattern, "callback", None), "cls", None)
        if isinstance(cls, type) and issubclass(cls, APIView):
            yield cls


def _checks(view: type) -> bool:
    from ...integrations.drf import NotBlocked

    return any(_holds(item, NotBlocked) for item in getattr(view, "permission_classes", ()) or ())


def _holds(item: Any, wanted: type) -> bool:
    """Whether a ``permission_classes`` item is ``wanted`` (or a subclass), or composes it
    with ``&`` (``|`` and ``~`` would let a blocked user through the other side)."""
    if isinstance(item, type):
        return issubclass(item, wanted)
    op1, op2 = getattr(item, "op1_class", None), getattr(item, "op2_class", None)
    operator = getattr(getattr(item, "operator_class", None), "__name__", "")
    if operator == "AND" and op1 is not None and op2 is not None:
        return _holds(op1, wanted) or _holds(op2, wanted)
    return False


def _name(view: type) -> str:
    return f"{view.__module__}.{view.__qualname__}"
