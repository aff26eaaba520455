"""Errors of ours: logged, counted, never turned into a failure of the host app.

Every place where a bug of the SDK could reach the app (the middlewares, ``track()``, the
flusher thread) runs inside one :class:`Guard`, like sentry's
``capture_internal_exceptions()``::

    with client.guard("the WSGI middleware"):
        ...                                  # an Exception here is logged and counted
    # ...and execution goes on after the block

The count travels in every heartbeat, so the collector's agents page shows an SDK in
trouble; the test suites (the project's and the ``sqreen_events`` fixture) fail a test that
caused one. ``BaseException`` (``Blocked``, ``KeyboardInterrupt``, ``SystemExit``) always goes
through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

__all__ = ["Guard", "InternalErrors"]

logger = logging.getLogger("sqreen")


class InternalErrors:
    """The internal errors of one client."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def record(self, where: str, exc: BaseException | None = None) -> None:
        """Log (with the traceback) and count one error; from an ``except`` block, or with
        the exception."""
        self.count += 1
        exc_info = True if exc is None else (type(exc), exc, exc.__traceback__)
        logger.error("sqreen: internal error in %s", where, exc_info=exc_info)

    def guard(self, where: str, *, reraise: bool = False) -> Guard:
        return Guard(self, where, reraise)


class Guard:
    """A context manager that records an :class:`Exception` instead of raising it.

    ``reraise=True`` (``track()`` in strict mode) records it and raises it anyway. A guard
    keeps no state between uses, so one instance may serve every call of a hot path.
    """

    __slots__ = ("_errors", "_reraise", "_where")

    def __init__(
        self,
        errors: InternalErrors | Callable[[], InternalErrors | None] | None,
        where: str,
        reraise: bool = False,
    ) -> None:
        #: Where errors are counted, or how to find that when one happens (the middlewares
        #: guard the making of the client itself).
        self._errors = errors
        self._where = where
        self._reraise = reraise

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        errors = self._errors
        if errors is not None and not isinstance(errors, InternalErrors):
            errors = errors()
        if errors is None:  # no client (its configuration failed): log only
            logger.error("sqreen: internal error in %s", self._where, exc_info=exc)
        else:
            errors.record(self._where, exc)
        return not self._reraise
