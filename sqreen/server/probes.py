"""Probes for load balancers and orchestrators, no key needed: ``GET /livez`` (the process
answers) and ``GET /readyz`` (the database takes a write and gives it back in time, and no
request was refused for it in the last few seconds: on a full disk, the probe's one small
row still fits in pages SQLite holds while every batch fails).

A load balancer that checks ``/readyz`` stops sending batches to a collector whose database
is gone or stuck, where ``/livez`` (and ``/healthz``) would still say ok; SDKs then retry on
another collector, or keep their events queued and spooled until this one is back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Final

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from .storage import Storage
from .unavailable import recent_failure, what_failed

__all__ = ["PROBE_ROUTES", "READY_TIMEOUT"]

logger = logging.getLogger("sqreen.server")

#: How long ``/readyz`` waits for its round trip to the database (seconds).
READY_TIMEOUT: Final = 2.0
_READY_KEY: Final = "readyz"
_BUSY: Final = "database: the previous check has not returned"


class _Busy(Exception):
    """Another check holds the database's probe thread."""


async def live_endpoint(request: Request) -> JSONResponse:
    """The process answers (no key, no database): a liveness probe."""
    return JSONResponse({"status": "live"})


async def ready_endpoint(request: Request) -> JSONResponse:
    """A write and a read back of the database within :data:`READY_TIMEOUT` (no key): a
    readiness probe for load balancers. 503 names what failed (an exception's class, or the
    timeout), never a path or a value."""
    state = request.app.state
    storage: Storage = state.storage
    stamp = f"{time.time_ns()}:{os.getpid()}"
    busy = getattr(state, "probe_busy", None)
    if busy is None:
        busy = state.probe_busy = threading.Lock()
    said: _Said | None = getattr(state, "probe_said", None)
    if said is None:
        said = state.probe_said = _Said()

    def round_trip() -> bool:
        # The lock is taken in the thread, so that a check cancelled before its thread ran
        # holds nothing.
        if not busy.acquire(blocking=False):
            raise _Busy
        try:
            storage.set_setting(_READY_KEY, stamp)
            return storage.get_setting(_READY_KEY) is not None
        finally:
            busy.release()

    # One check at a time: a stuck database holds one thread (released when it returns),
    # not one a probe, and the API's thread pool stays free.
    if busy.locked():
        reason = _BUSY
    else:
        try:
            with anyio.fail_after(READY_TIMEOUT):
                ok = await anyio.to_thread.run_sync(round_trip, abandon_on_cancel=True)
        except TimeoutError:
            reason = f"database: no answer within {READY_TIMEOUT:g} s"
        except _Busy:
            reason = _BUSY
        except Exception as exc:  # whatever the driver raises: the probe says not ready
            reason = f"database: {what_failed(exc)}"
        else:
            failed = recent_failure(state)
            if ok and failed is None:
                said.ready()
                return JSONResponse({"status": "ready"})
            reason = failed or "database: a value written could not be read back"
    said.unready(reason)
    return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)


class _Said:
    """What ``/readyz`` says in the log: a failure when its reason changes, else once a
    minute with how many probes answered it (load balancers and Kubernetes probe every few
    seconds: a line each was most of an outage's log), and when it is ready again."""

    EVERY: Final = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._at = 0.0
        self._since = 0

    def unready(self, reason: str) -> None:
        # (a reason's count of seconds, "failed 3 s ago", is not a change)
        kind = reason.split(" s ago", 1)[-1] if " s ago" in reason else reason
        now = time.monotonic()
        with self._lock:
            self._since += 1
            if kind == self._reason and now - self._at < self.EVERY:
                return
            count, self._since, self._reason, self._at = self._since, 0, kind, now
        more = f" ({count} probes answered 503 since the last line)" if count > 1 else ""
        logger.warning("sqreen: /readyz: %s%s", reason, more)

    def ready(self) -> None:
        with self._lock:
            if self._reason is None:
                return
            self._reason, self._since = None, 0
        logger.info("sqreen: /readyz: ready again")


PROBE_ROUTES: Final[Sequence[BaseRoute]] = (
    Route("/livez", live_endpoint, methods=["GET"]),
    Route("/readyz", ready_endpoint, methods=["GET"]),
)
