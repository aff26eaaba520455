"""The process-wide client: which one is in use, how it is made, and its fork and exit hooks.

:mod:`sqreen` (the public functions), the middlewares and the framework integrations all
reach the client through here; nothing else keeps one. A client is made on first use from
the environment (``SQREEN_*``), by :func:`sqreen.init` with explicit options, or by a
framework integration from the framework's own configuration.

``init()``'s keywords and the framework's configuration are both kept (until
:func:`sqreen.shutdown`), and each client is made from the two, merged option by option
(:meth:`Config.resolve`), whichever came first: ``init()`` at the top of a module and the
Flask extension below it, or Starlette's middleware built at the first request, long after.
A configuration is fixed for the life of a client (its queue, transport, spool and
blocklist are made from it), so a change is a new client, as a second ``init()`` has always
made one: the previous one delivers what it had queued and stops, and a new client for the
same destination starts from the blocks it held (:meth:`Client.carry_blocks`). A framework's
configuration that changes nothing the client uses keeps it (an app's endpoint, when
``init()`` gave a transport: the pytest fixture's, or ``"memory:"`` in a test).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from . import _exit_hooks
from ._client import Client
from ._config import Config, ConfigError
from ._exit_hooks import exit_hooks, hooks_pending

__all__ = [
    "INERT",
    "RETRY_AFTER",
    "active",
    "check_config",
    "client_or_inert",
    "declare",
    "exit_hooks",
    "forget",
    "framework_init",
    "get_client",
    "hooks_pending",
    "inert_for_now",
    "init",
    "kept",
    "shutdown",
]

logger = logging.getLogger("sqreen")

#: The client in use, or None before the first one is made (read it, never assign it).
active: Client | None = None
#: ``init()``'s keywords, None when it was not called (since the last shutdown).
_explicit: dict[str, Any] | None = None
#: The framework whose configuration was applied last, and that configuration.
_framework: tuple[str, dict[str, Any]] | None = None
_lock = threading.Lock()
#: Taken before _lock, never after. Reentrant: a client is made under it, and what that logs
#: may reach a handler of the app's that tracks an event, which asks for the client again.
_framework_lock = threading.RLock()
_clients = _exit_hooks.CLIENTS  # every client made: each delivers at exit
_last_framework_init: tuple[Client, dict[str, Any]] | None = None


def init(options: Mapping[str, Any]) -> Client:
    """:func:`sqreen.init`: a new client from ``options`` > the framework's configuration >
    ``SQREEN_*`` > defaults."""
    global _explicit
    options = dict(options)
    with _framework_lock:
        framework, settings = _framework or (None, {})
        client = _install(Config.resolve(options, settings), framework)
        _explicit = options
    return client


def _install(config: Config, framework: str | None) -> Client:
    global active
    client = Client(config)
    client.framework = framework
    exit_hooks()
    with _lock:
        previous = active
        if previous is not None:  # before it is in use: no request sees it without them
            client.carry_blocks(previous)
        active = client
        _clients.add(client)
    if previous is not None:
        previous.shutdown(timeout=min(1.0, previous.config.shutdown_timeout))
    return client


def get_client() -> Client:
    """The client in use; on first use (or after :func:`shutdown`), made from the framework's
    configuration when an app brought one, and the environment."""
    client = active
    if client is None:
        with _framework_lock:
            client = active
            if client is None:
                framework, settings = _framework or (None, {})
                client = _install(_config(settings), framework)
    return client


def _config(settings: Mapping[str, Any]) -> Config:
    """The configuration :func:`get_client` makes a client from: the environment,
    ``sqreen.ini`` and a framework's ``settings``."""
    return Config.resolve({}, settings)


#: What :func:`client_or_inert` gives while no client can be made: it tracks nothing.
INERT: Final = Client(Config(disable=True))
#: The failures to make a client said already (each is logged once, not at every call).
_said: set[str] = set()
#: After a failure to make the client, the seconds before the next try: until then the
#: module functions and the middlewares get :data:`INERT` at no cost, not a read of the
#: environment and ``sqreen.ini`` (and the spool's directory) a call.
RETRY_AFTER: Final = 10.0
#: When (``_clock()``) the next try may come; 0: at once.
_retry_at = 0.0
_clock = time.monotonic


def client_or_inert() -> Client:
    """The client in use (made on first use, as :func:`get_client`), for the module functions
    (``sqreen.track()``...) and the middlewares' requests, which never raise for a
    configuration: when making one fails with :class:`ConfigError` (a wrong ``SQREEN_*``
    variable, a ``sqreen.ini`` broken since the app started) or :class:`OSError` (a working
    directory gone), the error is logged on the ``sqreen`` logger (once for each message)
    and :data:`INERT` stands in, tracking nothing and blocking no one, as with
    ``SQREEN_DISABLE`` (but ``flush()`` says False), for :data:`RETRY_AFTER` seconds; the
    first call after tries again. :func:`sqreen.start` and :func:`sqreen.init`, the explicit
    set-up, and the framework integrations as an app is set up, raise :class:`ConfigError`
    as they did."""
    global _retry_at
    client = active
    if client is not None:
        return client
    if _waiting():
        return INERT
    try:
        client = get_client()
    except (ConfigError, OSError) as exc:  # the configuration's, the environment's (others
        # are bugs, or a blocking-call detector's error: they go through, loudly)
        _retry_at = _clock() + RETRY_AFTER
        said = f"{type(exc).__name__}: {exc}"[:500]
        if said not in _said and len(_said) < 100:
            _said.add(said)
            logger.error(
                "sqreen: no client could be made, nothing is tracked until one can be "
                "(said once; tried again every %g s): %s",
                RETRY_AFTER,
                said,
                exc_info=not isinstance(exc, ConfigError),
            )
        return INERT
    _retry_at = 0.0
    return client


def inert_for_now() -> Client | None:
    """:data:`INERT` while a failure to make the client waits for its next try (see
    :func:`client_or_inert`), else None: the async middlewares serve a request with it
    without a trip to a worker thread."""
    return INERT if active is None and _waiting() else None


def _waiting() -> bool:
    """Whether a failure to make the client waits for its next try."""
    return bool(_retry_at) and _clock() < _retry_at


def check_config() -> None:
    """Raise :class:`ConfigError` now if the client in use would be made from a wrong
    configuration (the environment, ``sqreen.ini``, what a framework or ``init()`` gave):
    for a middleware set up without a framework's integration, which makes the client at
    its first request. Nothing to check once a client is in use."""
    if active is None:
        _, settings = _framework or (None, {})
        try:
            _config(settings)
        except OSError:  # the environment's (a working directory gone): said at a request
            pass


def framework_init(settings: Mapping[str, Any], framework: str) -> Client:
    """For integrations: the client for an app's settings, merged with ``init()``'s keywords.

    Integrations run this when an app is set up, which a test suite does many times (Django's
    test ``Client`` loads the middleware anew each time, app factories build an app per
    test): the client in use is kept, with its queue and the blocks it holds, while the
    merged configuration changes nothing it uses (:meth:`Config.changed`) or the new app
    brings no settings (a second app, a
    helper app built in a request: replacing the client would drop what requests in flight
    track). Otherwise a new client replaces it, and the log says which options changed.
    A wrong setting raises :class:`ConfigError` and leaves the client in use as it was.
    """
    global _framework, _last_framework_init
    settings = dict(settings)
    with _framework_lock:
        last = _last_framework_init
        if last is not None and kept(settings):
            return last[0]
        # A second app bringing no settings (a helper app, one built in a request) goes
        # with the first's: they are the process's.
        known = settings or (_framework[1] if _framework is not None else {})
        config = Config.resolve(_explicit or {}, known)
        client = active
        if client is None or client.config.changed(config):
            previous = client
            client = _install(config, framework)
            if previous is not None:
                _replaced(previous, config, framework)
        elif client.framework is None:
            client.framework = framework
        if settings or _framework is None:  # a second app bringing none keeps the first's
            _framework = (framework, settings)
        _last_framework_init = (client, settings)
        return client


def declare(settings: Mapping[str, Any], framework: str) -> None:
    """Take an app's settings for the clients made from now on, without making one (no file
    read): what a middleware built inside an event loop does until its first call applies
    them (:func:`framework_init`, off the loop). A client made meanwhile (an outer
    middleware's ``track()``, ``init()`` called after the app was built) is made from them
    too. Settings of none change nothing, as for :func:`framework_init`."""
    global _framework
    if settings:
        with _framework_lock:
            _framework = (framework, dict(settings))


def kept(settings: Mapping[str, Any]) -> bool:
    """Whether :func:`framework_init` keeps the client in use for ``settings`` without
    resolving a configuration (no file read): the settings of its last call, or none."""
    last = _last_framework_init
    return last is not None and last[0] is active and (not settings or last[1] == settings)


def _replaced(previous: Client, config: Config, framework: str) -> None:
    """Say that a framework's configuration replaced a client: a warning when that one had
    tracked events (the app was running already), else a note (set-up in the usual order)."""
    level = logging.WARNING if previous.queue.tracked else logging.INFO
    logger.log(
        level,
        "sqreen: %s's configuration (%s) replaces the client in use%s; the previous one "
        "delivers what it had queued",
        framework,
        ", ".join(config.changed(previous.config)),
        " made by init(), whose keywords still win where both set an option"
        if _explicit is not None
        else "",
    )


def shutdown(timeout: float | None) -> bool:
    """:func:`sqreen.shutdown`: stop the client in use and forget ``init()``'s keywords; the
    next use makes a new one. The framework's configuration stays, as its app does: after
    the ``sqreen_events`` fixture (which ends with this), a test's events go where the app's
    settings say, scrubbed as they say, not to the default file."""
    global active, _explicit, _last_framework_init
    with _framework_lock, _lock:
        client, active = active, None
        _explicit = _last_framework_init = None
    return client.shutdown(timeout) if client is not None else True


def forget() -> None:
    """Forget the framework's configuration too (a test suite's isolation between tests
    that build apps of their own); call after :func:`shutdown`."""
    global _framework, _retry_at
    with _framework_lock:
        _framework = None
        _retry_at = 0.0
        _said.clear()


_forking: list[Client] = []


def _before_fork() -> None:
    """Take every lock of the SDK, in their order, so that none is held half-way by another
    thread when the child is made (the child releases them; see :mod:`sqreen._queue`). A
    client whose locks cannot be taken is left out of both sides (Python reports a fork
    hook's error and forks all the same: a failed client stopped the loop that releases the
    SDK's own locks, and the next sqreen.shutdown() of the process waited for ever)."""
    _framework_lock.acquire()
    _lock.acquire()
    _forking.clear()
    for client in list(_clients):
        try:
            client.before_fork()
        except Exception:  # (not logged: a handler that tracks would need _lock, held here)
            continue
        _forking.append(client)


def _after_fork_in_parent() -> None:
    _after_fork(Client.after_fork_in_parent)


def _after_fork_in_child() -> None:
    _after_fork(Client.after_fork_in_child, _exit_hooks.after_fork_in_child)


def _after_fork(each: Callable[[Client], None], first: Callable[[], None] | None = None) -> None:
    """``each`` for every client held across the fork, then the SDK's locks released,
    whatever fails on the way."""
    try:
        if first is not None:
            first()
        for client in reversed(_forking):
            with contextlib.suppress(Exception):
                each(client)
    finally:
        _forking.clear()
        _lock.release()
        _framework_lock.release()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
