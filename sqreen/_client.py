"""The client: configuration, queue, transport and blocklist; the module functions delegate here.

``track()`` on the caller's thread validates and copies its arguments, freezes a snapshot of
the bound request, and appends to the queue: no I/O, no parsing, no id formatting. Bad input
raises :class:`~sqreen.InvalidEvent` in strict mode and is otherwise logged once per (event
name, argument, rule), dropped and counted. Nothing else ever escapes ``track()``.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from ._actions import ActionPoller
from ._app import envelope, say_if_named_after_the_server, spool_of
from ._blocking import Blocked, Blocklist
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
from ._input_problems import InputProblems
from ._instrument import note_unbound
from ._json import wire_bytes
from ._options import OPTION_KEYS, merge_options
from ._queue import Queue, new_id_prefix
from ._refusals import MAX_REPORTED, REFUSAL_EVENT, Refusals
from ._request import snapshot_of
from ._spool import restored_actions
from ._traits import SentTraits
from ._users import SENTINEL_CTX, Users, other_user
from ._wire import encode_event
from .transports import NullTransport, from_config

__all__ = ["Client"]

_current_request = current_request.get
_now = time.time
#: The defaults of track()'s keyword arguments, by option name (see :mod:`sqreen._options`).
_DEFAULTS: dict[str, Any] = dict.fromkeys(OPTION_KEYS)
_DEFAULTS["collect_body"] = False
_DEFAULTS["request"] = SENTINEL_CTX


class Client(Users):
    """Configuration, queue, transport and blocklist: what :func:`sqreen.init` returns.

    .. versionadded:: 0.1
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.errors = InternalErrors()
        #: ``disable=True`` (``SQREEN_DISABLE=1``): no thread, no file, nothing sent;
        #: ``track()`` returns False and the middlewares pass requests through.
        self.disabled = config.disable
        self.transport = (
            NullTransport()
            if config.disable
            else from_config(config.transport, config.endpoint, config.token, config.ca_bundle)
        )
        self.blocklist = Blocklist(config.trusted)
        self._new_ids()
        self.spool = None if config.disable else spool_of(config, self.transport, self._prefix)
        if getattr(self.transport, "poll_actions", None) is not None:  # a collector's
            say_if_named_after_the_server(config)
        self.queue = Queue(
            config,
            self.transport,
            self.blocklist,
            self._encode,
            self._envelope,
            self.errors,
            on_start=self._started,
            report=self.stats,
            spool=self.spool,
        )
        if self.spool is not None:
            self._restore_actions(self.spool.load_actions())
        poll = getattr(self.transport, "poll_actions", None)
        self.poller = (
            None
            if poll is None or config.disable
            else ActionPoller(
                poll,
                self.blocklist,
                self.queue.apply_actions,
                self.errors,
                on_answer=self.queue.collector_answered,
                on_failure=self._first_ask_failed,
                tokenless=not (self.config.token or getattr(self.transport, "token", None)),
            )
        )
        self.refusals = Refusals()
        #: The framework whose integration the client serves (set by :mod:`sqreen._hub`),
        #: for the collector's agents page.
        self.framework: str | None = None
        #: The handle every request gets when disabled: its methods do nothing.
        self.disabled_context = RequestContext(self, "wsgi", {})
        # Bound once: track() looks up one attribute per bad event, as when they were methods.
        problems = InputProblems(config.strict, self.queue.count_invalid)
        self._noted, self._invalid = problems.noted, problems.invalid
        self._traits_sent = SentTraits()
        self._track_guard = self.errors.guard("track", reraise=config.strict)

    def _new_ids(self) -> None:
        self._prefix = new_id_prefix()
        self._seq = itertools.count(1)
        self._pid = os.getpid()

    def before_fork(self) -> None:
        self.queue.before_fork()

    def after_fork_in_parent(self) -> None:
        self.queue.after_fork_in_parent()

    def after_fork_in_child(self) -> None:
        self._new_ids()
        if self.spool is not None:
            self.spool.after_fork_in_child(self._prefix)
        self.blocklist.after_fork_in_child()
        self.refusals.after_fork_in_child()
        if self.poller is not None:
            self.poller.after_fork_in_child()
        self.queue.after_fork_in_child()

    # -- tracking ------------------------------------------------------------------------

    def track(
        self,
        event_name: str,
        options: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        properties: Mapping[str, Any] | None = None,
        user_identifiers: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        collect_body: object = False,
        request: Any = SENTINEL_CTX,
        target: Mapping[str, Any] | None = None,
        *,
        warn_other_user: bool = True,
        nobody: bool = False,
    ) -> bool:
        """Queue an event; return whether it was accepted (see :func:`sqreen.track`).

        ``warn_other_user=False``: ``user_identifiers`` other than the request's user (bound
        by :meth:`identify`) are meant, so no warning says they differ (``for_user()``,
        ``auth_track()``). ``nobody``: the event is of no user the SDK can name, not the
        request's (a failed login whose username could not be read)."""
        if self.disabled:
            return False
        notes: list[InvalidEvent] | None = None if self.config.strict else []
        invalid: InvalidEvent | None = None
        with self._track_guard:
            try:
                if options is not None:
                    merged = merge_options(
                        options,
                        {
                            "properties": properties,
                            "user_identifiers": user_identifiers,
                            "timestamp": timestamp,
                            "collect_body": collect_body,
                            "request": request,
                            "target": target,
                        },
                        _DEFAULTS,
                        notes,
                    )
                    properties, user_identifiers = merged["properties"], merged["user_identifiers"]
                    timestamp, collect_body = merged["timestamp"], merged["collect_body"]
                    request, target = merged["request"], merged["target"]
                name = validate_name(event_name, notes)
                props, size = validate_properties(properties, notes)
                user = (
                    None
                    if user_identifiers is None
                    else validate_user(user_identifiers, "user_identifiers", notes)
                )
                ts = None if timestamp is None else validate_timestamp(timestamp, notes)
                tgt = None if target is None else validate_target(target, notes)
                body = collect_body is True or (collect_body is not False and bool(collect_body))
                if (
                    request is not SENTINEL_CTX
                    and isinstance(request, RequestContext)
                    and not request.bound
                ):
                    request = SENTINEL_CTX  # the handle without a request: none given
                if request is SENTINEL_CTX:
                    ctx = _current_request()
                    if ctx is None:
                        note_unbound("track")
                elif isinstance(request, RequestContext):
                    ctx = request  # the per-request handle: its user too, not only its snapshot
                else:
                    ctx = None
                if ctx is not None:
                    snapshot = ctx.snapshot()
                    if (
                        user is None
                        and not nobody
                        and (
                            user_identifiers is None
                            or (isinstance(user_identifiers, Mapping) and not user_identifiers)
                        )
                    ):
                        # None or empty: the request's user. Identifiers given but none
                        # readable (``auth_track(False, username=None)``) are nobody's: not
                        # the user identify() bound, whose failures they are not.
                        user = ctx.user
                    elif warn_other_user and ctx.user is not None and user != ctx.user:
                        other_user(ctx)
                elif request is not SENTINEL_CTX and request is not None:
                    snapshot = snapshot_of(request, self.config, notes)
                else:
                    snapshot = None
            except InvalidEvent as exc:
                invalid = exc
            else:
                event = QueuedEvent(
                    next(self._seq),
                    name,
                    _now() if ts is None else ts,
                    props,
                    user,
                    tgt,
                    snapshot,
                    body,
                    size + 256 + (snapshot.weight if snapshot is not None else 0),
                )
                if notes:
                    self._noted(name, notes)
                return self.queue.put(event, adjusted=bool(notes))
        if invalid is not None:  # outside the guard: in strict mode it raises, as it should
            return self._invalid(event_name, invalid)
        return False

    def check_ip(self, ctx: RequestContext) -> Blocked | None:
        """For middlewares: the :class:`Blocked` for this request's client IP, if any."""
        if not self.blocklist.has_ips:
            return None
        return self.blocklist.ip_block(ctx.client_ip())

    def resolve_ip(self, peer_header_rewritten: tuple[str | None, str | None, bool]) -> str | None:
        peer, header, rewritten = peer_header_rewritten
        config = self.config
        return config.trusted.client_ip(peer, header, config.client_ip_header, rewritten)

    # -- delivery --------------------------------------------------------------------------

    def _encode(self, event: QueuedEvent) -> bytes:
        """One event's wire form as UTF-8 JSON (on the flusher thread)."""
        return wire_bytes(encode_event(event, f"{self._prefix}-{event.seq:x}", self.config))

    def _envelope(self) -> dict[str, Any]:
        return envelope(self.config, self.framework, self.blocklist.version)

    def refused(self, blocked: Blocked, ctx: RequestContext | None) -> None:
        """For middlewares: a request was refused (or aborted) because of ``blocked``: count
        it, and now and then record a ``security.blocked`` event standing for the refusals
        since the last one."""
        properties = self.refusals.sample(blocked)
        if properties is not None:
            # The blocked user is meant, whoever the request identified.
            user = blocked.user
            self.track(REFUSAL_EVENT, None, properties, user, request=ctx, warn_other_user=False)

    def _first_ask_failed(self) -> None:
        """The long-poll could not get the action set (the collector is down, refuses the
        key): the first request waits no longer for it, and goes on with the set held (the
        spool's, or none)."""
        self.queue.first_actions.set()

    def _started(self) -> None:
        if self.poller is not None:
            self.poller.start()

    def _restore_actions(self, saved: Any) -> None:
        with self.errors.guard("restoring the action set"):
            actions = restored_actions(saved, time.time())
            if actions is not None:
                self.queue.apply_actions(actions, restored=True)

    def carry_blocks(self, previous: Client) -> None:
        """Start from the action set ``previous`` holds when this client replaces it for the
        same destination (the same transport object, or the same collector and key): a
        change of configuration must not lift a block. The set goes the way a spool's does at
        start (:meth:`_restore_actions`), so it is checked against this configuration (a block
        that now covers a trusted proxy is refused); a newer set this one restored wins."""
        if self.disabled or previous.disabled:
            return
        if previous.blocklist.version <= self.blocklist.version:
            return
        if not _same_destination(previous.transport, self.transport):
            return
        actions = previous.blocklist.snapshot()
        actions["watch"] = sorted(previous.queue.watched)
        self._restore_actions({"saved_at": time.time(), "actions": actions})

    def start(self, wait: bool = True) -> None:
        """Start the flusher thread now, if it is not running (the middlewares call this with
        every request; it costs an attribute check once the thread runs).

        The thread otherwise starts with the first ``track()``, but it also fetches the action
        set (heartbeats): a worker whose app only calls ``identify()`` would never learn of a
        block. A preload master serves no request, so it still starts no thread. ``wait``:
        once per process, wait (``block_on_start_timeout``) for the collector's set; the
        server's start does not (hypercorn bounds a lifespan's startup, and the set usually
        arrives before the first request), the first request does.
        """
        if self.disabled:
            return
        self.queue.start()
        timeout = self.config.block_on_start_timeout
        if wait and timeout and self.poller is not None and not self.queue.first_actions.is_set():
            # Once per process: the first request waits (bounded) for the blocks in force.
            self.queue.first_actions.wait(timeout)
            self.queue.first_actions.set()

    @property
    def started(self) -> bool:
        """Whether :meth:`start` would return at once: disabled, closed, or the thread runs
        and the first request's wait is over (or none was asked for). The ASGI middleware
        calls :meth:`start` on a worker thread until then, so that the event loop never
        waits for the action set."""
        queue = self.queue
        return (
            self.disabled
            or queue.closing
            or (
                queue.running
                and (
                    queue.first_actions.is_set()
                    or not self.config.block_on_start_timeout
                    or self.poller is None  # no collector to wait for (a file, memory)
                )
            )
        )

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
        return True if self.disabled else self.queue.flush(timeout)

    def flush_or_spool(self, timeout: float) -> bool:
        """At an ASGI lifespan shutdown: deliver within ``timeout``, then keep what is left in
        the spool too (see :meth:`Queue.flush_or_spool`)."""
        return True if self.disabled else self.queue.flush_or_spool(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        if self.poller is not None:
            self.poller.stop()
        return self.queue.shutdown(self.config.shutdown_timeout if timeout is None else timeout)

    def stats(self) -> dict[str, Any]:
        stats = self.queue.stats()
        refused = self.refusals.report()
        if refused:
            stats["refused"] = refused
        if self.blocklist.refused:  # blocks this process does not enforce, and why
            stats["refused_blocks"] = dict(list(self.blocklist.refused.items())[:MAX_REPORTED])
        return stats


def _same_destination(a: object, b: object) -> bool:
    """Whether two transports send to one place: the same object (the pytest fixture's,
    one given to ``init()``), or a collector's, by its endpoint and key."""
    if a is b:
        return True
    endpoint = getattr(a, "endpoint", None)
    return (
        endpoint is not None
        and getattr(a, "poll_actions", None) is not None
        and getattr(b, "poll_actions", None) is not None
        and (endpoint, getattr(a, "token", None))
        == (getattr(b, "endpoint", None), getattr(b, "token", None))
    )
