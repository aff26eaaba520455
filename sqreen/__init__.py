"""Self-hostable security event tracking for Python web apps.

Track the security events of your app (logins, sign-ups, password resets, anything) with the
request's client IP, user agent, path and scrubbed parameters; ship them in batches to a
self-hosted collector; and let the collector block users and IPs in every worker::

    import sqreen

    sqreen.init(token="sqk_...", endpoint="http://127.0.0.1:8000")
    sqreen.track("my.event", properties={"foo": "bar"})

The exception tree::

    ValueError
     └── InvalidEvent      bad input to track() (raised only in strict mode)
    BaseException
     └── Blocked           the user or client IP is blocked (a 403 from the middleware)
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ._blocking import Blocked
from ._client import Client, UserScope
from ._config import Config
from ._config import ConfigError as ConfigError
from ._event import InvalidEvent
from ._version import __version__ as __version__

__all__ = [
    "Blocked",
    "InvalidEvent",
    "auth_track",
    "flush",
    "for_user",
    "identify",
    "init",
    "is_blocked",
    "shutdown",
    "signup_track",
    "track",
]

_active: Client | None = None
_explicit = False
_lock = threading.Lock()
_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def init(**options: Any) -> Client:
    """Configure the SDK; every option is also read from ``SQREEN_<NAME>``.

    Options: ``token``, ``endpoint``, ``app_name``, ``strict``, ``flush_interval`` (5 s),
    ``batch_size`` (500), ``max_batch_bytes`` (1 MiB), ``heartbeat_interval`` (60 s),
    ``max_queue_size`` (10 000), ``max_queue_bytes`` (16 MiB), ``max_retry_age`` (1 h),
    ``shutdown_timeout`` (2 s), ``trusted_proxies`` (loopback), ``client_ip_header``
    (``X-Forwarded-For``), ``scrub_keys``, ``scrub_values``, ``max_body_size`` (64 KiB) and
    ``transport`` (an object, ``http(s)://...``, ``file:///path.jsonl`` or ``memory:``).
    With no endpoint and no transport, events go to ``./sqreen-events.jsonl``.

    Raises :class:`ConfigError` (a :class:`ValueError`) naming a wrong option. Calling it again
    replaces the client; the previous one delivers what it had queued.
    """
    global _explicit
    client = _install(Config.resolve(options))
    _explicit = True
    return client


def _install(config: Config) -> Client:
    global _active
    client = Client(config)
    with _lock:
        previous, _active = _active, client
        _clients.add(client)
    if previous is not None:
        previous.shutdown(timeout=min(1.0, previous.config.shutdown_timeout))
    return client


def _framework_init(settings: Mapping[str, Any], framework: str) -> Client:
    """For integrations: init from the framework's config unless ``init()`` was called."""
    client = _active
    if client is None or not _explicit:
        client = _install(Config.resolve({}, settings))
    if client.framework is None:
        client.framework = framework
    return client


def get_client() -> Client:
    """The client in use, configured from the environment on first use."""
    client = _active
    if client is None:
        with _lock:
            client = _active
        if client is None:
            client = _install(Config.resolve({}))
    return client


def track(
    event_name: str,
    properties: Mapping[str, Any] | None = None,
    user_identifiers: Mapping[str, Any] | None = None,
    timestamp: datetime | None = None,
    collect_body: bool = False,
    request: Any = None,
    target: Mapping[str, Any] | None = None,
) -> bool:
    """Track a security event; return whether it was queued.

    ``properties``: at most 16 custom dimensions (str, int, float, bool, None, and lists or
    dicts of those nested at most 3 deep). ``user_identifiers``: who did it, overriding the
    user bound by :func:`identify` for this event only. ``timestamp``: when it happened, to
    import past events (a naive datetime is UTC). ``collect_body``: attach the request body
    the app read (capped, scrubbed). ``request``: the request, when no middleware bound one.
    ``target``: what was acted upon, ``{"id", "type", "name"}``.

    Never blocks and never raises, except :class:`InvalidEvent` in strict mode.
    """
    client = _active or get_client()
    if request is None:
        return client.track(
            event_name, properties, user_identifiers, timestamp, collect_body, target=target
        )
    return client.track(
        event_name, properties, user_identifiers, timestamp, collect_body, request, target
    )


def identify(user_identifiers: Mapping[str, Any], traits: Mapping[str, Any] | None = None) -> None:
    """Bind a user to the current request: later events carry them, blocks apply to them.

    Raises :class:`Blocked` when the user is blocked, only inside a request a middleware has
    bound (the middleware answers 403). Outside a request it does nothing; see :func:`is_blocked`.
    """
    (_active or get_client()).identify(user_identifiers, traits)


def auth_track(success: bool, **user_identifiers: Any) -> bool:
    """Track a login: ``auth.login.success`` (and identify, may raise :class:`Blocked`) or
    ``auth.login.failure`` (never identifies, never raises)."""
    return (_active or get_client()).auth_track(success, user_identifiers)


def signup_track(**user_identifiers: Any) -> bool:
    """Track a sign-up (``auth.signup``) and identify the new user."""
    return (_active or get_client()).signup_track(user_identifiers)


def for_user(user_identifiers: Mapping[str, Any]) -> UserScope:
    """Track events for a user without binding them: ``sqreen.for_user(u).track("x")``."""
    return (_active or get_client()).for_user(user_identifiers)


def is_blocked(user_identifiers: Mapping[str, Any] | None = None, ip: str | None = None) -> bool:
    """Whether the collector currently blocks this user (or IP)."""
    return (_active or get_client()).is_blocked(user_identifiers, ip)


def flush(timeout: float = 5.0) -> bool:
    """Deliver everything queued so far; return False if ``timeout`` passed first."""
    return (_active or get_client()).flush(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """Deliver what is left (within ``shutdown_timeout``) and stop. Runs at exit by itself."""
    global _active, _explicit
    with _lock:
        client, _active = _active, None
        _explicit = False
    return client.shutdown(timeout) if client is not None else True


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client.after_fork_in_child()


def _at_exit() -> None:
    for client in list(_clients):
        if not client.queue._closing:
            client.shutdown()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
