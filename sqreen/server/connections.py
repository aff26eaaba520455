"""Connections to ``sqreen serve``: bounded in number and in time, whoever opens them.

uvicorn closes a keep-alive connection that stays idle after a response
(``--timeout-keep-alive``), but not one that never sends a request, nor one that sends its
headers or its body a byte at a time, and it accepts connections until the process runs out
of file descriptors, after which every accept failed with a traceback (asyncio logs one per
attempt, thousands a second) while real batches waited behind. ``sqreen serve`` therefore
runs uvicorn's h11 protocol with a guard (``h11_guarded.GuardedH11Protocol``, which
holds the per-connection half; the per-process half is here):

- **time**: a request's headers must be complete within ``header_timeout`` seconds of the
  connection being ready for one (accepted, or done with its previous response), and its body
  within ``body_timeout`` seconds of its headers; else the connection is closed. A request
  that has fully arrived is not timed: the action long-poll is held up to a minute (bounded
  per API key instead, see :mod:`.actions`), and ingest is as long as it takes.
- **number**: at most ``max_connections`` open at once per process. A connection past it
  closes the one that has waited longest for a request (an idle keep-alive, a half-sent
  header), or, when every connection is in a request, itself. The default is lowered to fit
  the process's open-file limit, less :data:`RESERVE` for the database and the rest.
- **exhaustion**: an accept that fails for lack of descriptors (EMFILE, ENFILE, ENOBUFS,
  ENOMEM) is logged once per :data:`LOG_EVERY` seconds with a count, and closes the oldest
  waiting connections at once; connections closed by the guard are summed up on the same
  rhythm.

The settings travel in the environment (:data:`ENV`), so that every ``--workers`` process
(which uvicorn starts afresh) finds them.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import resource
import time
from dataclasses import asdict, dataclass
from typing import Any, Final, Protocol

__all__ = [
    "ENV",
    "PROTOCOL",
    "RESERVE",
    "ConnectionGuard",
    "ConnectionLimits",
    "fit_to_open_files",
    "guard_of",
    "on_loop_error",
]

logger = logging.getLogger("sqreen.server")

#: Where ``sqreen serve`` leaves the settings for its processes.
ENV: Final = "SQREEN_SERVE_CONNECTIONS"
#: uvicorn's ``http`` setting for the guarded protocol (imported by uvicorn, not here: the
#: other ``sqreen`` commands need no uvicorn).
PROTOCOL: Final = "sqreen.server.h11_guarded:GuardedH11Protocol"
#: File descriptors kept for the rest of the process (database files, logs, webhooks).
RESERVE: Final = 64
#: Summaries and exhaustion are logged at most this often (seconds).
LOG_EVERY: Final = 60.0
_EXHAUSTED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 2048
    header_timeout: float = 10.0
    body_timeout: float = 60.0

    def export(self) -> None:
        os.environ[ENV] = json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ConnectionLimits:
        raw = os.environ.get(ENV)
        return cls(**json.loads(raw)) if raw else cls()


def fit_to_open_files(wanted: int) -> int:
    """``wanted`` connections, or fewer when the open-file limit (raised to its hard limit
    if need be) does not leave :data:`RESERVE` descriptors beside them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVE))


class Guarded(Protocol):
    """A connection under a :class:`ConnectionGuard`."""

    def cut(self, why: str) -> None:
        """Close the connection now."""


class ConnectionGuard:
    """The connections of one process (one event loop): how many are open, those waiting
    for a request (oldest first), and what was closed since the last summary."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open = 0
        self.waiting: dict[Guarded, None] = {}  # insertion order: oldest first
        self.closed = {"timed out": 0, "over the limit": 0, "refused": 0}
        self.summed = -LOG_EVERY  # the first at once, then once a minute at most
        self.exhausted = 0
        self.exhausted_logged = -LOG_EVERY
        self.shed_at = -1.0

    def shed(self, count: int, why: str) -> int:
        """Close up to ``count`` of the connections waiting longest for a request."""
        done = 0
        while done < count and self.waiting:
            oldest = next(iter(self.waiting))
            oldest.cut(why)
            done += 1
        return done

    def note(self, why: str) -> None:
        self.closed[why] += 1
        now = time.monotonic()
        if now - self.summed >= LOG_EVERY:
            self.summed = now
            what = ", ".join(f"{n} {w}" for w, n in self.closed.items() if n)
            logger.warning(
                "sqreen: connections closed by the guard since the last such line: %s "
                "(limits: %d connections, headers within %g s, bodies within %g s)",
                what,
                self.limits.max_connections,
                self.limits.header_timeout,
                self.limits.body_timeout,
            )
            self.closed = dict.fromkeys(self.closed, 0)

    def exhaustion(self, exc: OSError) -> None:
        """An accept failed for lack of resources: free some, and say so once in a while.
        (asyncio tries again a second later, and meanwhile reports each of up to 2048
        more attempts of the same burst.)"""
        self.exhausted += 1
        now = time.monotonic()
        if now - self.shed_at >= 1.0:
            self.shed_at = now
            self.shed(max(1, len(self.waiting) // 10), "over the limit")
        if now - self.exhausted_logged >= LOG_EVERY:
            self.exhausted_logged = now
            logger.error(
                "sqreen: cannot accept connections: %s (%d failed accepts since the last such "
                "line); lower --max-connections or raise the open-file limit (ulimit -n)",
                exc.strerror or exc,
                self.exhausted,
            )
            self.exhausted = 0


class _Throttle(logging.Filter):
    """Lets each of uvicorn's per-request warnings through once per :data:`LOG_EVERY`
    seconds: a client can send as many invalid requests as it likes."""

    MESSAGES: Final = (
        "Invalid HTTP request received.",
        "Unsupported upgrade request.",
        "No supported WebSocket library detected",
    )

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        which = next((m for m in self.MESSAGES if message.startswith(m)), None)
        if which is None:
            return True
        now = time.monotonic()
        if now - self.last.get(which, -LOG_EVERY) < LOG_EVERY:
            return False
        self.last[which] = now
        return True


_guards: dict[asyncio.AbstractEventLoop, ConnectionGuard] = {}


def guard_of(loop: asyncio.AbstractEventLoop) -> ConnectionGuard:
    """The guard of the connections of ``loop`` (made with the first one, with the settings
    of :data:`ENV`, and the loop's handler of accept errors)."""
    guard = _guards.get(loop)
    if guard is None:
        for old in [old for old in _guards if old.is_closed()]:
            del _guards[old]
        guard = _guards[loop] = ConnectionGuard(ConnectionLimits.from_env())
        uvicorn_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _Throttle) for f in uvicorn_log.filters):
            uvicorn_log.addFilter(_Throttle())
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if not on_loop_error(loop, context):
                if previous is not None:
                    previous(loop, context)
                else:
                    loop.default_exception_handler(context)

        loop.set_exception_handler(handler)
    return guard


def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> bool:
    """Handle an event loop's error report if it is an accept out of resources (True)."""
    exc = context.get("exception")
    if not isinstance(exc, OSError) or exc.errno not in _EXHAUSTED or "socket" not in context:
        return False
    guard_of(loop).exhaustion(exc)
    return True
