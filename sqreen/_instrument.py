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
will instrument it), or in a Starlette or FastAPI app while no sqreen ASGI middleware was
made in the process (``start()`` does not instrument them), says so once, on the ``sqreen``
logger, naming the integration to add: its events carry no request, its ``identify()``
binds no user and no block is enforced.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Final

from ._config_values import boolean

if TYPE_CHECKING:
    from ._client import Client

__all__ = [
    "ENV_VARIABLE",
    "auto_instrument",
    "enabled",
    "installed",
    "note_unbound",
    "reloader_parent",
    "undo",
]

logger = logging.getLogger("sqreen")

#: The opt-out: ``SQREEN_AUTO_INSTRUMENT=0`` (or ``false``, ``no``, ``off``).
ENV_VARIABLE = "SQREEN_AUTO_INSTRUMENT"
#: The module that patches the frameworks; by name, so that imports still run one way.
_HOOKS = "sqreen.integrations._auto"

#: Whether ``start()`` instrumented the frameworks (then nothing is left to warn about).
_installed = False
#: Whether the warning of :func:`note_unbound` was given (once per process).
_warned = False
#: Set by the ASGI middleware when one is made: a ``track()`` with no request bound in a
#: Starlette app is then outside its requests (a task of its own), not in an app without it.
asgi_middleware = False
#: How many unbound calls :func:`_in_starlette_app` looks at, and how deep.
_CHECKS: Final = 1000
_FRAMES: Final = 64
_checks = _CHECKS


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``start()`` instruments the frameworks: ``SQREEN_AUTO_INSTRUMENT``, on by
    default (an empty variable is unset). A wrong value raises :class:`ConfigError`."""
    raw = (os.environ if environ is None else environ).get(ENV_VARIABLE)
    if not raw:
        return True
    return boolean(f"{ENV_VARIABLE} in the environment", raw)


def auto_instrument(client: Client) -> None:
    """``start()``'s part: instrument Flask and Django (now if they are imported, else when
    they are), unless the variable says not to. Idempotent. A disabled client
    (``SQREEN_DISABLE``) is instrumented too: its middlewares pass requests through with a
    handle that does nothing, so that a view reading ``request.sqreen`` still runs, as
    with ``Sqreen(app)`` by hand (it raised AttributeError, a 500)."""
    global _installed
    if not enabled():
        return
    importlib.import_module(_HOOKS).install()
    _installed = True


def installed() -> bool:
    """Whether :func:`sqreen.start` instrumented the frameworks in this process."""
    return _installed


def reloader_parent(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> bool:
    """Whether this process is a development server's reloader: ``manage.py runserver``
    (without ``--noreload``) or ``flask run`` with its reloader, before it starts the child
    that serves (the child has ``RUN_MAIN`` or ``WERKZEUG_RUN_MAIN`` set to ``true``). It
    loads the settings, or the app, and serves nothing: ``start()`` starts no thread there
    (its heartbeats made a second, idle process of the app on the agents page); what it
    tracks still starts them. Flask's options are read as its command line reads them
    (:func:`_flask_reloads`)."""
    args = list(sys.argv if argv is None else argv)
    env = os.environ if environ is None else environ
    if not args:
        return False
    rest = args[1:]
    if "runserver" in rest:  # (argparse takes --norel for --noreload too)
        no_reload = any(a.startswith("--nor") and "--noreload".startswith(a) for a in rest)
        return not no_reload and env.get("RUN_MAIN") != "true"
    program = os.path.basename(args[0])
    flask_cli = program in ("flask", "flask.exe") or args[0].endswith(
        os.path.join("flask", "__main__.py")
    )
    if not flask_cli or env.get("WERKZEUG_RUN_MAIN") == "true":
        return False
    return _flask_reloads(rest, env)


#: click's words for booleans (what it reads from ``FLASK_RUN_RELOAD`` and the like).
_TRUE: Final = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE: Final = frozenset({"0", "false", "f", "no", "n", "off"})
#: The ``flask`` group's options that take a value.
_FLASK_VALUED: Final = frozenset({"-A", "--app", "-e", "--env-file"})


def _flask_reloads(args: Sequence[str], env: Mapping[str, str]) -> bool:
    """Whether ``flask ARGS`` runs the reloader: its subcommand is ``run``, and reload is
    ``run``'s ``--reload``/``--no-reload`` (the last wins), else ``FLASK_RUN_RELOAD``, else
    debug: ``run``'s ``--debug``/``--no-debug``, else ``FLASK_RUN_DEBUG``, else the group's
    flags, else ``FLASK_DEBUG`` (Flask 3's order)."""
    skip, command = False, None
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg in _FLASK_VALUED:
            skip = True
        elif not arg.startswith("-"):
            command = i
            break
    if command is None or args[command] != "run":
        return False
    group, run = args[:command], args[command + 1 :]
    reload = _flag(run, "--reload", "--no-reload")
    if reload is None:
        reload = _word(env.get("FLASK_RUN_RELOAD"))
    if reload is not None:
        return reload
    debug = _flag(run, "--debug", "--no-debug")
    if debug is None:
        debug = _word(env.get("FLASK_RUN_DEBUG"))
    if debug is None:
        debug = _flag(group, "--debug", "--no-debug")
    if debug is None:
        debug = _word(env.get("FLASK_DEBUG"))
    return bool(debug)


def _flag(args: Sequence[str], yes: str, no: str) -> bool | None:
    """The last of ``yes`` and ``no`` in ``args`` (None: neither)."""
    for arg in reversed(args):
        if arg in (yes, no):
            return arg == yes
    return None


def _word(value: str | None) -> bool | None:
    """A boolean as click reads it from the environment (None: unset, empty, or no word)."""
    text = (value or "").strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def undo() -> None:
    """Remove what :func:`auto_instrument` installed (for tests: an app already set up keeps
    its integration)."""
    global _installed, _warned, _checks
    hooks = sys.modules.get(_HOOKS)
    if hooks is not None:
        hooks.uninstall()
    _installed = _warned = False
    _checks = _CHECKS


def note_unbound(what: str) -> None:
    """``what`` (``track``, ``identify``) ran with no request bound: warn once if a Flask
    request is being served by an app that the integration does not serve, or if this runs
    for a Starlette or FastAPI app (in its event loop or one of its worker threads) while
    no sqreen ASGI middleware was ever set up in this process."""
    global _warned
    if _warned:
        return
    if not _installed and _unserved_flask_app(what):
        _warned = True
    elif not asgi_middleware and _in_starlette_app():
        _warned = True
        logger.warning(
            "sqreen: %s() ran in a Starlette or FastAPI app that no sqreen middleware serves: "
            "its events carry no request (client IP, path, parameters), identify() binds no "
            "user and no block is enforced (sqreen.start() does not set these frameworks "
            "up). Add the middleware: `from sqreen.integrations.fastapi import "
            "SqreenMiddleware; app.add_middleware(SqreenMiddleware)` (Starlette: "
            "sqreen.integrations.starlette).",
            what,
        )


def _unserved_flask_app(what: str) -> bool:
    """Whether a Flask request is being served by an app the integration does not serve
    (said, then)."""
    flask = sys.modules.get("flask")
    if flask is None:  # not a Flask app: nothing imported, nothing to check
        return False
    try:
        if not flask.has_request_context():
            return False
        app = flask.current_app
        if "sqreen" in app.extensions:  # set up: a view tested in test_request_context()
            return False
    except Exception:  # a Flask we do not know: no warning rather than an error
        return False
    logger.warning(
        "sqreen: %s() ran in a request of the Flask app %r, which sqreen does not serve: its "
        "events carry no request (client IP, path, parameters), identify() binds no user and "
        "no block is enforced. Set the integration up: `from sqreen.integrations.flask import "
        "Sqreen; Sqreen(app)` (or call sqreen.start() without %s=0).",
        what,
        getattr(app, "name", app),
        ENV_VARIABLE,
    )
    return True


def _in_starlette_app() -> bool:
    """Whether this runs for a Starlette or FastAPI app: in one of the worker threads where
    they run sync endpoints and dependencies, or in an event loop under one of their frames
    (an endpoint's coroutine runs under the router's; an async script that imports FastAPI
    has none). Looked for in :data:`_CHECKS` calls at most, then never again (a process
    tracking outside requests for good must not pay the walk at each call)."""
    global _checks
    if "starlette" not in sys.modules or _checks <= 0:
        return False
    _checks -= 1
    if threading.current_thread().name == "AnyIO worker thread":
        return True
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    import inspect  # (imported here: with Starlette loaded, in an event loop, unwarned)

    frame: FrameType | None = inspect.currentframe()
    for _ in range(_FRAMES):
        if frame is None:
            return False
        if str(frame.f_globals.get("__name__", "")).startswith(("starlette.", "fastapi.")):
            return True
        frame = frame.f_back
    return False
