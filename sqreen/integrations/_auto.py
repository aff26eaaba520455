"""The frameworks instrumented by :func:`sqreen.start` (see :mod:`sqreen._instrument`).

Class-level patches, each installed once, on a framework the app imported (never one it
did not: a framework not imported yet is patched right after its import, by a finder at the
head of ``sys.meta_path`` that watches its name and nothing else):

- **Flask**: ``Flask.__call__`` sets the app up the first time it is called, with what
  ``Sqreen(app)`` does (:class:`sqreen.integrations.flask.Sqreen`), before Flask's first
  request (so the app may still register its hooks), and then calls Flask's own. An app set
  up already (``"sqreen"`` in ``app.extensions``), or whose ``wsgi_app`` (or a server-side
  wrapper of the app) is already sqreen's WSGI middleware, is left as it is. Afterwards each
  call costs a dict lookup. ``Flask.wsgi_app`` does the same for an app reached without
  ``Flask.__call__`` (a subclass's own ``__call__``, a server calling ``app.wsgi_app``):
  set up at its first request, which goes on as it came.
- **Django**: ``BaseHandler.load_middleware`` (WSGI, ASGI and the test client's handlers)
  puts ``sqreen.integrations.django.SqreenMiddleware`` first in ``settings.MIDDLEWARE``
  unless it (or a subclass) is listed already, as the README asks it by hand. Handlers
  that loaded their middleware before ``start()`` are not changed: call it in
  ``settings.py``, or in ``wsgi.py``/``asgi.py`` before ``get_wsgi_application()``.

Errors are logged on the ``sqreen`` logger; the app is then served as it would be without.
"""

from __future__ import annotations

import functools
import importlib.abc
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from ..middleware.wsgi import ENVIRON_KEY, SqreenWSGIMiddleware

__all__ = ["install", "installed", "uninstall"]

logger = logging.getLogger("sqreen")

_lock = threading.RLock()
#: Module name -> what to do once it is imported (until then).
_pending: dict[str, Callable[[ModuleType], None]] = {}
#: (class, attribute) -> the original, for :func:`uninstall`.
_originals: dict[tuple[type, str], Any] = {}
#: Flask apps left alone: sqreen served them already, or setting them up failed.
_skipped: weakref.WeakSet[Any] = weakref.WeakSet()
_setup_lock = threading.Lock()


def install() -> None:
    """Patch Flask and Django now if they are imported, else right after their import."""
    with _lock:
        for name, patch in (("flask", _patch_flask), ("django.core.handlers.base", _patch_django)):
            module = sys.modules.get(name)
            if module is not None:
                _run(patch, module)
            elif not _patched(name):
                _pending[name] = patch
        if _pending and _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    """Put the frameworks' methods back and stop watching imports (for tests)."""
    with _lock:
        _pending.clear()
        while _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
        for (cls, name), original in _originals.items():
            setattr(cls, name, original)
        _originals.clear()


def installed() -> list[str]:
    """What is patched: ``["flask", "django"]`` or part of it."""
    with _lock:
        return sorted({_module_key(cls) for cls, _ in _originals})


def _module_key(cls: type) -> str:
    return cls.__module__.partition(".")[0]


def _patched(name: str) -> bool:
    return any(_module_key(cls) == name.partition(".")[0] for cls, _ in _originals)


def _run(patch: Callable[[ModuleType], None], module: ModuleType) -> None:
    try:
        patch(module)
    except Exception:
        logger.exception("sqreen: could not instrument %s; set its integration up by hand", module)


def _replace(cls: type, name: str, make: Callable[[Any], Any]) -> None:
    if (cls, name) in _originals:
        return
    original = cls.__dict__.get(name, getattr(cls, name))
    replacement = functools.wraps(original)(make(original))
    setattr(cls, name, replacement)
    _originals[cls, name] = original


# -- Flask ---------------------------------------------------------------------------------


def _patch_flask(module: ModuleType) -> None:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def __call__(self: Any, environ: Any, start_response: Any) -> Any:
            if "sqreen" not in self.extensions and self not in _skipped:
                _set_up_flask(self, environ)
            return original(self, environ, start_response)

        return __call__

    def make_wsgi(original: Callable[..., Any]) -> Callable[..., Any]:
        # Reached without Flask.__call__ (a subclass's own __call__, a server calling
        # app.wsgi_app): set up now, this request going on as it came, the next ones
        # through sqreen.
        def wsgi_app(self: Any, environ: Any, start_response: Any) -> Any:
            if "sqreen" not in self.extensions and self not in _skipped:
                _set_up_flask(self, environ)
            return original(self, environ, start_response)

        return wsgi_app

    _replace(module.Flask, "__call__", make)
    _replace(module.Flask, "wsgi_app", make_wsgi)


def _set_up_flask(app: Any, environ: Any) -> None:
    with _setup_lock:  # two first requests at once: one sets the app up
        if "sqreen" in app.extensions or app in _skipped:
            return
        if ENVIRON_KEY in environ or _served_by_sqreen(app.wsgi_app):
            _skipped.add(app)  # sqreen's WSGI middleware around the app, or inside it
            logger.debug("sqreen: %r is served by sqreen's WSGI middleware already", app)
            return
        try:
            from .flask import Sqreen

            Sqreen(app)
        except Exception:
            _skipped.add(app)
            logger.exception(
                "sqreen: could not set the Flask integration up on %r: its requests are served "
                "without sqreen (no request data, no blocks)",
                app,
            )
        else:
            logger.debug("sqreen: the Flask app %r is served by sqreen (sqreen.start())", app)


def _served_by_sqreen(wsgi_app: Any) -> bool:
    """Whether a chain of WSGI wrappers (the wrapped app kept as ``.app``, as werkzeug's and
    ours keep it, ``.application``, as WhiteNoise does, or ``.wsgi_app``) holds sqreen's
    middleware (``app.wsgi_app = SqreenWSGIMiddleware(app.wsgi_app)`` by hand)."""
    for _ in range(16):
        if isinstance(wsgi_app, SqreenWSGIMiddleware):
            return True
        inner = None
        for name in ("app", "application", "wsgi_app"):
            inner = getattr(wsgi_app, name, None)
            if inner is not None and inner is not wsgi_app:
                break
        if inner is None:
            return False
        wsgi_app = inner
    return False


# -- Django --------------------------------------------------------------------------------


def _patch_django(module: ModuleType) -> None:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def load_middleware(self: Any, is_async: bool = False) -> Any:
            _list_django_middleware()
            return original(self, is_async)

        return load_middleware

    _replace(module.BaseHandler, "load_middleware", make)


def _list_django_middleware() -> None:
    try:
        from django.conf import settings

        from .django.checks import MIDDLEWARE_PATH, is_ours

        listed: Sequence[Any] = settings.MIDDLEWARE or ()
        if any(is_ours(str(path)) for path in listed):
            return
        kind = tuple if isinstance(listed, tuple) else list
        settings.MIDDLEWARE = kind([MIDDLEWARE_PATH, *listed])
        logger.debug("sqreen: %s put first in settings.MIDDLEWARE", MIDDLEWARE_PATH)
    except Exception:
        logger.exception(
            "sqreen: could not add the Django middleware: requests are served without sqreen "
            "(no request data, no blocks); add it to settings.MIDDLEWARE by hand"
        )


# -- the import hook -------------------------------------------------------------------------


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a watched name, it asks the other finders and wraps the
    loader of what they found, to patch the module once it has run."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _pending:
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader)
        return spec


class _Loader(importlib.abc.Loader):
    """The framework's own loader, then the patch. The module's ``__loader__`` and
    ``__spec__.loader`` are the framework's own again before it runs."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        with _lock:
            patch = _pending.pop(module.__name__, None)
            if not _pending:
                while _FINDER in sys.meta_path:
                    sys.meta_path.remove(_FINDER)
            if patch is not None:
                _run(patch, module)


_FINDER = _Finder()
