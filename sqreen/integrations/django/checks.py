"""The system checks: ``settings.SQREEN`` holds valid options, and the middleware is the first
in ``settings.MIDDLEWARE``; Django REST framework's views check blocked users
(``sqreen.W003``, :mod:`._drf_check`).

A middleware above it runs outside the request's context (its ``sqreen.track()`` carries no
request), and it would see :class:`sqreen.Blocked` go through it as an exception, where
Django's own handling only catches :class:`Exception`: the 403 is answered by the middleware,
so it must be the outermost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from ... import _instrument
from ..._config import Config, ConfigError
from ._drf_check import check_rest_framework

__all__ = ["MIDDLEWARE_PATH", "check_middleware", "check_rest_framework", "is_ours"]

MIDDLEWARE_PATH = "sqreen.integrations.django.SqreenMiddleware"
#: ``sqreen.E002`` errors listed at most; the rest are counted in one more.
MAX_PROBLEMS = 20


def is_ours(path: str) -> bool:
    """Whether a ``MIDDLEWARE`` entry is sqreen's middleware (or a subclass of it)."""
    if path == MIDDLEWARE_PATH:
        return True
    from ._middleware import SqreenMiddleware

    try:
        cls = import_string(path)
    except ImportError:
        return False
    return isinstance(cls, type) and issubclass(cls, SqreenMiddleware)


def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``sqreen.E001``: ``SQREEN`` is not a dict; ``sqreen.E002`` (one for each): an option (or a
    ``SQREEN_*`` variable) has a wrong value; ``sqreen.W001``: the middleware is not first;
    ``sqreen.W002``: it is missing."""
    messages: list[Any] = []
    config = getattr(settings, "SQREEN", None)
    if config is not None and not isinstance(config, Mapping):
        messages.append(
            checks.Error(
                f"settings.SQREEN must be a dict of sqreen.init() options, "
                f"not {type(config).__name__}",
                id="sqreen.E001",
            )
        )
    else:
        try:  # the values too, as the middleware will read them, with the environment (the
            # only source of a project configured by SQREEN_* variables alone)
            problems = Config.problems({}, config or {})
        except ConfigError as exc:  # sqreen.ini or a SQREEN_* variable that cannot be read
            problems = [str(exc)]
        shown = problems[:MAX_PROBLEMS]
        if len(problems) > MAX_PROBLEMS:  # (a dict of thousands of wrong keys)
            shown.append(f"and {len(problems) - MAX_PROBLEMS} more wrong options")
        where = "settings.SQREEN" if config is not None else "sqreen's configuration"
        messages.extend(checks.Error(f"{where}: {p}", id="sqreen.E002") for p in shown)
    middleware = [str(m) for m in getattr(settings, "MIDDLEWARE", None) or ()]
    ours = [i for i, path in enumerate(middleware) if is_ours(path)]
    if not ours:
        if _instrument.installed():  # sqreen.start() puts it first when a handler loads them
            return messages
        messages.append(
            checks.Warning(
                f"{MIDDLEWARE_PATH} is not in settings.MIDDLEWARE: nothing is tracked with "
                "its request and no block is enforced",
                hint=f'Add "{MIDDLEWARE_PATH}" at the top of settings.MIDDLEWARE.',
                id="sqreen.W002",
            )
        )
    elif ours[0] != 0:
        messages.append(
            checks.Warning(
                f"{MIDDLEWARE_PATH} should be the first in settings.MIDDLEWARE",
                hint=(
                    f"{middleware[0]} runs outside the request's sqreen context, and a 403 for "
                    "a blocked user or IP must be answered by the outermost middleware: move "
                    f"{MIDDLEWARE_PATH} to the top."
                ),
                id="sqreen.W001",
            )
        )
    return messages


checks.register(check_middleware, "sqreen")
checks.register(check_rest_framework, "sqreen")
