"""Self-hostable security event tracking for Python web apps.

Track the security events of your app (logins, sign-ups, password resets, anything) with the
request's client IP, user agent, path and scrubbed parameters; ship them in batches to a
self-hosted collector; and let the collector block users and IPs in every worker::

    import sqreen

    sqreen.init(token="sqk_...", endpoint="http://127.0.0.1:8000")
    sqreen.track("my.event", properties={"foo": "bar"})

The exception tree::

    ValueError
     ├── InvalidEvent      bad input to track() (raised only in strict mode)
     └── ConfigError       a wrong option of init() (or a SQREEN_* variable), named
    BaseException
     └── Blocked           the user or client IP is blocked (a 403 from the middleware)
"""

from __future__ import annotations

import typing

from . import _hub, _instrument
from ._blocking import Blocked
from ._client import Client
from ._config import ConfigError
from ._context import RequestContext, UserScope
from ._event import InvalidEvent
from ._version import __author__, __email__, __version__

if typing.TYPE_CHECKING:  # names for annotations only: the module's namespace is its API
    from collections.abc import Iterable, Mapping
    from datetime import datetime
    from typing import Any

__all__ = [
    "Blocked",
    "Client",
    "ConfigError",
    "InvalidEvent",
    "RequestContext",
    "UserScope",
    "__author__",
    "__email__",
    "__version__",
    "auth_track",
    "flush",
    "for_user",
    "identify",
    "init",
    "is_blocked",
    "shutdown",
    "signup_track",
    "start",
    "track",
]


def init(**options: Any) -> Client:
    """Configure the SDK; every option is also read from ``SQREEN_<NAME>``, and from the
    ``[sqreen]`` section of ``sqreen.ini`` (Sqreen's agent's file: the one
    ``SQREEN_CONFIG_FILE`` names, else the working directory's), below the environment.

    Options: ``token``, ``endpoint``, ``app_name``, ``strict``, ``flush_interval`` (5 s),
    ``batch_size`` (500), ``max_batch_bytes`` (1 MiB), ``heartbeat_interval`` (60 s),
    ``max_queue_size`` (10 000), ``max_queue_bytes`` (16 MiB), ``max_retry_age`` (1 h),
    ``shutdown_timeout`` (2 s), ``trusted_proxies``, ``client_ip_header``
    (``X-Forwarded-For``), ``scrub_keys``, ``scrub_values``, ``max_body_size`` (64 KiB) and
    ``transport`` (an object, ``http(s)://...``, ``file:///path.jsonl`` or ``memory:``) and
    ``ca_bundle`` (the CAs of an ``https://`` collector: a PEM file or directory; else
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``, else the system's).
    With no endpoint and no transport, events go to ``./sqreen-events.jsonl``.

    ``trusted_proxies``: the CIDRs of the proxies in front of the app, whose forwarded header
    (``client_ip_header``) is believed. It is a security issue to trust values that came from
    the client rather than from a proxy: a client on the internet could then choose the IP
    its failed logins are recorded under, and unblock itself. By default only loopback and
    Unix-socket peers are trusted (a proxy on the same machine); ``[]`` trusts none.

    ``init()``'s keywords win over a framework's configuration (``app.config["SQREEN_*"]``,
    ``settings.SQREEN``), option by option, whether the framework is set up before or after.

    Raises :class:`ConfigError` (a :class:`ValueError`) naming a wrong option. Calling it again
    replaces the client; the previous one delivers what it had queued. So does a framework's
    configuration set up afterwards that changes an option: the module functions then use the
    new client, and the log says so.
    """
    return _hub.init(options)


def track(
    event: str,
    options: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    *,
    properties: Mapping[str, Any] | None = None,
    user_identifiers: Mapping[str, Any] | None = None,
    timestamp: datetime | None = None,
    collect_body: bool = False,
    request: Any = None,
    target: Mapping[str, Any] | None = None,
) -> bool:
    """Track a security event; return whether it was queued.

    Two spellings, one meaning::

        sqreen.track("app.login", {"properties": {"foo": "bar"}, "user_identifiers": {"uid": 42}})
        sqreen.track("app.login", properties={"foo": "bar"}, user_identifiers={"uid": 42})

    The first is Sqreen's own, ``track(event, options=None)``: an options dict (or anything
    ``dict()`` takes, such as ``[("properties", {...})]``), as its agents took it; an unknown
    key is skipped with a warning; ``event=`` works as a keyword too. ``properties``: custom
    dimensions, at most 16 (more: the first 16 by sorted key are kept, as
    ``sorted(properties.items())`` orders them), JSON values, with ``datetime``, ``date``,
    ``UUID``, ``Decimal``, ``Enum`` and ``bytes`` converted. ``user_identifiers``: who did it,
    overriding the user bound by :func:`identify` for this event only (when they differ, a
    warning is logged, once a request, as Sqreen's agent did). ``timestamp``: when it
    happened, to import past events (a naive datetime is UTC). ``collect_body``: attach the
    request body the app read (capped, scrubbed). ``request``: the request, when no
    middleware bound one. ``target``: what was acted upon, ``{"id", "type", "name"}``.

    Never blocks and never raises: what it had to fix is logged once per (event name,
    argument, rule). In strict mode (``strict=True``, the pytest plugin) a fix that loses
    something raises :class:`InvalidEvent` naming the field and the rule.
    """
    client = _hub.client_or_inert()
    if request is None:
        return client.track(
            event,
            options,
            properties,
            user_identifiers,
            timestamp,
            collect_body,
            target=target,
        )
    return client.track(
        event, options, properties, user_identifiers, timestamp, collect_body, request, target
    )


def start() -> Client:
    """Start the SDK from the environment (``SQREEN_*``) and ``sqreen.ini``, as Sqreen's
    agent's first line did (``import sqreen; sqreen.start()``). Idempotent: the client in use
    is kept.

    As the agent did, it also instruments the frameworks: every Flask app gets the Flask
    integration before its first request, and Django the middleware, first in
    ``MIDDLEWARE``; each once, also where it is set up by hand. ``SQREEN_AUTO_INSTRUMENT=0``
    turns that off (see :mod:`sqreen._instrument`). In the reloader of ``manage.py
    runserver`` or ``flask run --debug``, which serves nothing, no thread is started."""
    client = _hub.get_client()
    _instrument.auto_instrument(client)
    if not _instrument.reloader_parent():  # (a dev server's reloader serves nothing)
        client.start()
    return client


def identify(user_identifiers: Mapping[str, Any], traits: Mapping[str, Any] | None = None) -> None:
    """Bind a user to the current request: later events carry them, blocks apply to them.

    Raises :class:`Blocked` when the user is blocked, only inside a request a middleware has
    bound (the middleware answers 403). Outside a request it does nothing; see :func:`is_blocked`.
    """
    _hub.client_or_inert().identify(user_identifiers, traits)


def auth_track(success: object, **user_identifiers: Any) -> bool:
    """Track a login: ``auth.login.success`` (and identify, may raise :class:`Blocked`) or
    ``auth.login.failure`` (never identifies; raises :class:`Blocked` for a blocked user too,
    so that a blocked account answers every password alike); ``success`` by its truth value."""
    return _hub.client_or_inert().auth_track(success, user_identifiers)


def signup_track(**user_identifiers: Any) -> bool:
    """Track a sign-up (``auth.signup``) and identify the new user."""
    return _hub.client_or_inert().signup_track(user_identifiers)


def for_user(user_identifiers: Mapping[str, Any]) -> UserScope:
    """Track events for a user without binding them: ``sqreen.for_user(u).track("x")``."""
    return _hub.client_or_inert().for_user(user_identifiers)


def is_blocked(user_identifiers: Mapping[str, Any] | None = None, ip: str | None = None) -> bool:
    """Whether the collector currently blocks this user (or IP)."""
    return _hub.client_or_inert().is_blocked(user_identifiers, ip)


def flush(timeout: float = 5.0) -> bool:
    """Deliver everything queued so far; return False if ``timeout`` passed first (or no
    client could be made: nothing was sent)."""
    client = _hub.client_or_inert()
    return client is not _hub.INERT and client.flush(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """Deliver what is left (within ``shutdown_timeout``) and stop. Runs at exit by itself."""
    return _hub.shutdown(timeout)


# Tracebacks and help() show the public path.
for _exported in (Blocked, Client, ConfigError, InvalidEvent, RequestContext, UserScope):
    _exported.__module__ = __name__
del _exported
