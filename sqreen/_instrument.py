"""What :func:`sqreen.start` sets up besides the client: the frameworks, as Sqreen's agent did.

Code written for Sqreen's agent calls ``sqreen.start()`` first and then ``sqreen.track()``,
``identify()`` and ``auth_track()`` in its views, with no middleware of its own: the agent
instrumented Flask and Django by itself. So does :func:`sqreen.start` here, unless
``SQREEN_AUTO_INSTRUMENT=0``: every Flask app gets the Flask integration before its first
request, and Django the middleware, first in ``MIDDLEWARE``, when a handler loads its
middleware (:mod:`sqreen.integrations._auto`, loaded by name: the core never imports an
integration, nor a framework). Without ``start()`` nothing is instrumented; the integrations'
explicit set-up stays the documented way, and an app that has both gets each once.

:func:`note_unbound` is the other half: a ``track()`` or ``identify()`` that finds no request
bound while a Flask request is being served by an app without the integration (and nothing
will instrument it) says so once, on the ``sqreen`` logger, naming the integration to add:
its events carry no request, its ``identify()`` binds no user and no block is enforced.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ._config_values import boolean

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["ENV_VARIABLE", "auto_instrument", "enabled", "note_unbound", "reloader_parent", "undo"]

logger = logging.getLogger("sqreen")

#: The opt-out: ``SQREEN_AUTO_INSTRUMENT=0`` (or ``false``, ``no``, ``off``).
ENV_VARIABLE = "SQREEN_AUTO_INSTRUMENT"
#: The module that patches the frameworks; by name, so that imports still run one way.
_HOOKS = "sqreen.integrations._auto"

#: Whether ``start()`` instrumented the frameworks (then nothing is left to warn about).
_installed = False
#: Whether the warning of :func:`note_unbound` was given (once per process).
_warned = False


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``start()`` instruments the frameworks: ``SQREEN_AUTO_INSTRUMENT``, on by
    default (an empty variable is unset). A wrong value raises :class:`ConfigError`."""
    raw = (os.environ if environ is None else environ).get(ENV_VARIABLE)
    if not raw:
        return True
    return boolean(f"{ENV_VARIABLE} in the environment", raw)


def auto_instrument(client: Client) -> None:
    """``start()``'s part: instrument Flask and Django (now if they are imported, else when
    they are), unless the client is disabled or the variable says not to. Idempotent."""
    global _installed
    if client.disabled or not enabled():
        return
    importlib.import_module(_HOOKS).install()
    _installed = True


def reloader_parent(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> bool:
    """Whether this process is a development server's reloader: ``manage.py runserver``
    (without ``--noreload``) or ``flask run`` with its reloader (``--reload`` or
    ``FLASK_RUN_RELOAD``, else ``--debug`` or ``FLASK_DEBUG``), before it starts the child that
    serves (the child has ``RUN_MAIN`` or ``WERKZEUG_RUN_MAIN`` set to ``true``). It loads
    the settings, or the app, and serves nothing: ``start()`` starts no thread there (its
    heartbeats made a second, idle process of the app on the agents page); what it tracks
    still starts them."""
    args = list(sys.argv if argv is None else argv)
    env = os.environ if environ is None else environ
    if not args:
        return False
    rest = args[1:]
    if "runserver" in rest:
        return "--noreload" not in rest and env.get("RUN_MAIN") != "true"
    program = os.path.basename(args[0])
    flask_cli = program in ("flask", "flask.exe") or args[0].endswith(
        os.path.join("flask", "__main__.py")
    )
    if not flask_cli or "run" not in rest or env.get("WERKZEUG_RUN_MAIN") == "true":
        return False
    if "--reload" in rest or "--no-reload" in rest:  # the last one given wins, as in click
        return _last(rest, "--reload") > _last(rest, "--no-reload")
    reload = env.get("FLASK_RUN_RELOAD", "").strip().lower()
    if reload:  # click reads the option from there (auto_envvar_prefix="FLASK")
        return reload in ("1", "true", "t", "yes", "y", "on")
    if "--debug" in rest or "--no-debug" in rest:
        return _last(rest, "--debug") > _last(rest, "--no-debug")
    return env.get("FLASK_DEBUG", "").strip().lower() in ("1", "true", "t", "yes", "y", "on")


def _last(args: Sequence[str], flag: str) -> int:
    """The index of the last ``flag`` in ``args`` (-1: none)."""
    return max((i for i, a in enumerate(args) if a == flag), default=-1)


def undo() -> None:
    """Remove what :func:`auto_instrument` installed (for tests: an app already set up keeps
    its integration)."""
    global _installed, _warned
    hooks = sys.modules.get(_HOOKS)
    if hooks is not None:
        hooks.uninstall()
    _installed = _warned = False


def note_unbound(what: str) -> None:
    """``what`` (``track``, ``identify``) ran with no request bound: warn once if a Flask
    request is being served by an app that the integration does not serve."""
    global _warned
    if _warned or _installed:
        return
    flask = sys.modules.get("flask")
    if flask is None:  # not a Flask app: nothing imported, nothing to check
        return
    try:
        if not flask.has_request_context():
            return
        app = flask.current_app
        if "sqreen" in app.extensions:  # set up: a view tested in test_request_context()
            return
    except Exception:  # a Flask we do not know: no warning rather than an error
        return
    _warned = True
    logger.warning(
        "sqreen: %s() ran in a request of the Flask app %r, which sqreen does not serve: its "
        "events carry no request (client IP, path, parameters), identify() binds no user and "
        "no block is enforced. Set the integration up: `from sqreen.integrations.flask import "
        "Sqreen; Sqreen(app)` (or call sqreen.start() without %s=0).",
        what,
        getattr(app, "name", app),
        ENV_VARIABLE,
    )
