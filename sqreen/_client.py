"""The client: configuration, queue, transport and blocklist; the module functions delegate here.

``track()`` on the caller's thread validates and copies its arguments, freezes a snapshot of
the bound request, and appends to the queue: no I/O, no parsing, no id formatting. Bad input
raises :class:`~sqreen.InvalidEvent` in strict mode and is otherwise logged once per (event
name, rule), dropped and counted. Nothing else ever escapes ``track()``.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ._blocking import Blocked, Blocklist
from ._client_ip import resolve_client_ip
from ._config import Config
from ._context import RequestContext, current_request
from ._errors import Guard, InternalErrors
from ._event import (
    InvalidEvent,
    QueuedEvent,
    validate_name,
    validate_properties,
    validate_target,
    validate_timestamp,
    validate_user,
)
from ._json import dumps_utf8
from ._queue import Queue, new_id_prefix
from ._request import snapshot_asgi, snapshot_wsgi
from ._version import __version__
from ._wire import encode_event
from .transports import from_config

__all__ = ["Client", "UserScope"]

logger = logging.getLogger("sqreen")

_SENTINEL_CTX: Any = object()
_current_request = current_request.get
_now = time.time


class Client:
    """Configuration, queue, transport and blocklist: what :func:`sqreen.init` returns.

    .. versionadded:: 0.1
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.errors = InternalErrors()
        self.transport = from_config(config.transport, config.endpoint, config.token)
        self.blocklist = Blocklist(config.trusted)
        self.queue = Queue(
            config, self.transport, self.blocklist, self._encode, self._envelope, self.errors
        )
        self.framework = config.framework
        self._logged: set[tuple[str, str]] = set()
        self._track_guard = self.errors.guard("track", reraise=config.strict)
        self._new_ids()

    def _new_ids(self) -> None:
        self._prefix = new_id_prefix()
        self._seq = itertools.count(1)
        self._pid = os.getpid()

    def after_fork_in_child(self) -> None:
        self._new_ids()
        self.queue.after_fork_in_child()

    # -- tracking ------------------------------------------------------------------------

    def track(
        self,
        event_name: str,
        properties: Mapping[str, Any] | None = None,
        user_identifiers: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        collect_body: bool = False,
        request: Any = _SENTINEL_CTX,
        target: Mapping[str, Any] | None = None,
    ) -> bool:
        """Queue an event; return whether it was accepted (see :func:`sqreen.track`)."""
        invalid: InvalidEvent | None = None
        with self._track_guard:
            try:
                name = validate_name(event_name)
                props, size = validate_properties(properties)
                user = validate_user(user_identifiers) if user_identifiers is not None else None
                ts = validate_timestamp(timestamp) if timestamp is not None else _now()
                tgt = validate_target(target) if target is not None else None
                if collect_body is not False and collect_body is not True:
                    raise InvalidEvent("collect_body", "type", "must be a bool")
                if request is _SENTINEL_CTX:
                    ctx = _current_request()
                elif type(request) is RequestContext:
                    ctx = request  # the per-request handle: its user too, not only its snapshot
                else:
                    ctx = None
                if ctx is not None:
                    snapshot = ctx.snapshot()
                    if user is None:
                        user = ctx.user
                elif request is not _SENTINEL_CTX and request is not None:
                    snapshot = self._snapshot_of(request)
                else:
                    snapshot = None
            except InvalidEvent as exc:
                invalid = exc
            else:
                event = QueuedEvent(
                    next(self._seq), name, ts, props, user, tgt, snapshot, collect_body, size + 256
                )
                return self.queue.put(event, ctx is not None)
        if invalid is not None:  # outside the guard: in strict mode it raises, as it should
            return self._invalid(event_name, invalid)
        return False

    def _snapshot_of(self, request: Any) -> Any:
        """Snapshot an explicit ``request=``: a context, a request, an environ, a scope."""
        if isinstance(request, RequestContext):
            return request.snapshot()
        cfg = self.config
        if isinstance(request, Mapping):
            if request.get("type") in ("http", "websocket"):
                return snapshot_asgi(request, cfg.forwarded_header_name, None, None)
            if "REQUEST_METHOD" in request:
                return snapshot_wsgi(request, cfg.forwarded_environ_key, None, None)
        for attr, kind in (("environ", "wsgi"), ("META", "wsgi"), ("scope", "asgi")):
            source = getattr(request, attr, None)
            if isinstance(source, Mapping):
                if kind == "wsgi":
                    return snapshot_wsgi(source, cfg.forwarded_environ_key, None, None)
                return snapshot_asgi(source, cfg.forwarded_header_name, None, None)
        raise InvalidEvent(
            "request",
            "type",
            "must be a WSGI environ, an ASGI scope, or a Flask, Django or Starlette request, "
            f"not {type(request).__name__}",
        )

    def _invalid(self, event_name: object, exc: InvalidEvent) -> bool:
        if self.config.strict:
            raise exc
        self.queue.count_invalid()
        key = (str(event_name)[:128], exc.rule)
        if key not in self._logged and len(self._logged) < 10_000:
            self._logged.add(key)
            logger.warning("sqreen: event %r dropped: %s", str(event_name)[:128], exc)
        return False

    # -- users -----------------------------------------------------------------------------

    def identify(
        self,
        user_identifiers: Mapping[str, Any],
        traits: Mapping[str, Any] | None = None,
        ctx: Any = _SENTINEL_CTX,
    ) -> None:
        if ctx is _SENTINEL_CTX:
            ctx = _current_request()
        try:
            user = validate_user(user_identifiers)
            if user is None:
                raise InvalidEvent(
                    "user_identifiers", "empty", "identify() needs at least one identifier"
                )
            trait_copy = validate_properties(traits)[0] if traits is not None else None
        except InvalidEvent as exc:
            self._invalid("identify", exc)
            return
        if ctx is None:
            return
        ctx.user = user
        ctx.traits = trait_copy
        blocked = self.blocklist.user_block(user)
        if blocked is not None:
            raise blocked

    def auth_track(
        self, success: bool, user_identifiers: Mapping[str, Any], ctx: Any = _SENTINEL_CTX
    ) -> bool:
        if not isinstance(success, bool):
            return self._invalid("auth_track", InvalidEvent("success", "type", "must be a bool"))  # type: ignore[unreachable]
        name = "auth.login.success" if success else "auth.login.failure"
        accepted = self.track(name, None, user_identifiers, request=ctx)
        if success and accepted:
            self.identify(user_identifiers, None, ctx)
        return accepted

    def signup_track(self, user_identifiers: Mapping[str, Any], ctx: Any = _SENTINEL_CTX) -> bool:
        accepted = self.track("auth.signup", None, user_identifiers, request=ctx)
        if accepted:
            self.identify(user_identifiers, None, ctx)
        return accepted

    def for_user(self, user_identifiers: Mapping[str, Any], ctx: Any = _SENTINEL_CTX) -> UserScope:
        return UserScope(self, user_identifiers, ctx)

    def is_blocked(
        self, user_identifiers: Mapping[str, Any] | None = None, ip: str | None = None
    ) -> bool:
        user = validate_user(user_identifiers) if user_identifiers else None
        return (
            self.blocklist.user_block(user) is not None or self.blocklist.ip_block(ip) is not None
        )

    def check_ip(self, ctx: RequestContext) -> Blocked | None:
        """For middlewares: the :class:`Blocked` for this request's client IP, if any."""
        if not self.blocklist.has_ips:
            return None
        return self.blocklist.ip_block(ctx.client_ip())

    def resolve_ip(self, peer_and_header: tuple[str | None, str | None]) -> str | None:
        peer, header = peer_and_header
        return resolve_client_ip(peer, header, self.config.trusted, self.config.client_ip_header)

    # -- delivery --------------------------------------------------------------------------

    def _encode(self, event: QueuedEvent) -> bytes:
        """One event's wire form as UTF-8 JSON (on the flusher thread)."""
        wire = encode_event(event, f"{self._prefix}-{event.seq:x}", self.config)
        # A lone surrogate (from a client's JSON) is encoded as "?".
        return dumps_utf8(wire).encode("utf-8", "replace")

    def _envelope(self) -> dict[str, Any]:
        return {
            "sdk": {"name": "sqreen-sdk-python", "version": __version__},
            "app": {
                "name": self.config.app_name or _default_app_name(),
                "host": _HOST,
                "pid": os.getpid(),
                "framework": self.framework,
            },
        }

    def start(self) -> None:
        """Start the flusher thread now, if it is not running (the middlewares call this with
        every request; it costs an attribute check once the thread runs).

        The thread otherwise starts with the first ``track()``, but it also fetches the action
        set (heartbeats): a worker whose app only calls ``identify()`` would never learn of a
        block. A preload master serves no request, so it still starts no thread.
        """
        self.queue.start()

    def guard(self, where: str) -> Guard:
        """``with client.guard("where"):`` logs and counts an error of ours instead of raising
        it (see :mod:`sqreen._errors`)."""
        return self.errors.guard(where)

    @property
    def internal_errors(self) -> int:
        return self.errors.count

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self.queue.closing

    def flush(self, timeout: float = 5.0) -> bool:
        return self.queue.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        return self.queue.shutdown(self.config.shutdown_timeout if timeout is None else timeout)

    def stats(self) -> dict[str, Any]:
        return self.queue.stats()


class UserScope:
    """Events tracked for one user, without binding them (Go's ``ForUser()``)."""

    __slots__ = ("_client", "_ctx", "_user")

    def __init__(self, client: Client, user_identifiers: Mapping[str, Any], ctx: Any) -> None:
        self._client = client
        self._user = user_identifiers
        self._ctx = ctx

    def track(
        self,
        event_name: str,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        collect_body: bool = False,
        target: Mapping[str, Any] | None = None,
    ) -> bool:
        return self._client.track(
            event_name, properties, self._user, timestamp, collect_body, self._ctx, target
        )


_HOST = socket.gethostname()


def _default_app_name() -> str:
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv else "") or "python"
    return os.path.splitext(os.path.basename(path))[0] or "python"
