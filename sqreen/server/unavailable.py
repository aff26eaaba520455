"""The database gone for a while (PostgreSQL stopped or restarting, a SQLite file locked past
its wait, a full disk): what the collector answers and says then.

Every request that needs the database raised its driver's ``OperationalError``: a 500 and a
traceback each, and one more every quarter second for the action long-polls' version reader
(thousands an hour a worker, a log nobody can read when it matters). Such an error is
answered ``503`` with ``Retry-After`` (SDKs keep their events and retry, as on any 5xx) and
said on the ``sqreen.server`` logger once a minute at most, with how many requests it
answered so. Anything else (a bug's SQL included: SQLite says "no such column" with the
same class) is left to the usual 500 and its traceback.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from .._text import visible
from .errors import ApiError
from .storage._away import away, unavailable, what_failed

__all__ = [
    "UnavailableLog",
    "away",
    "recent_failure",
    "unavailable",
    "unavailable_handlers",
    "what_failed",
]

logger = logging.getLogger("sqreen.server")

#: Seconds an SDK is asked to wait before it tries again.
RETRY_AFTER: Final = 5
#: How long a request refused for the database keeps ``/readyz`` at 503 (seconds): a small
#: write may succeed in pages SQLite already holds while every batch fails (a full disk).
FAILED_RECENTLY: Final = 10.0


def recent_failure(state: Any) -> str | None:
    """What made the app of ``state`` (its ``app.state``) answer a request 503 in the last
    :data:`FAILED_RECENTLY` seconds, and how long ago; None if nothing did."""
    found: tuple[float, str] | None = getattr(state, "database_failure", None)
    if found is None:
        return None
    elapsed = time.monotonic() - found[0]
    if not 0 <= elapsed < FAILED_RECENTLY:
        return None
    return f"database: a request failed {elapsed:.0f} s ago ({found[1]})"


class UnavailableLog:
    """Says an unavailable database once every ``every`` seconds at most, with how many
    times it was met in between."""

    def __init__(self, what: str, every: float = 60.0) -> None:
        self.what = what
        self.every = every
        self._lock = threading.Lock()
        self._said_at: float | None = None
        self._since = 0

    def met(self, exc: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            self._since += 1
            if self._said_at is not None and now - self._said_at < self.every:
                return
            count, self._since, self._said_at = self._since, 0, now
        logger.warning(
            "sqreen: the database is unavailable (%s: %s): %s (%d time%s since the last "
            "such line; said once a minute at most)",
            type(exc).__name__,
            visible(str(exc).strip().splitlines()[0][:200]) if str(exc).strip() else "",
            self.what,
            count,
            "" if count == 1 else "s",
        )


_REQUESTS = UnavailableLog(f"requests answered 503, Retry-After {RETRY_AFTER} s")


async def _answer(request: Request, exc: Exception) -> Response:
    if not unavailable(exc):
        raise exc  # a bug: the usual 500, and its traceback
    # (what failed, never a path or a value: /readyz says it)
    request.app.state.database_failure = (time.monotonic(), what_failed(exc))
    _REQUESTS.met(exc)
    return ApiError(
        503,
        "the database is unavailable: retry later",
        headers={"Retry-After": str(RETRY_AFTER)},
    ).response()


def unavailable_handlers() -> dict[Any, Callable[[Request, Exception], Awaitable[Response]]]:
    """Exception handlers for the drivers' ``OperationalError`` (PostgreSQL's once its
    driver is imported: the storage opened it before the app is made)."""
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        sqlite3.OperationalError: _answer
    }
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        handlers[psycopg.OperationalError] = _answer
    return handlers
