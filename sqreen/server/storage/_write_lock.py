"""The write lock of one SQLite file, across threads and processes, timed.

SQLite has one writer at a time. In a process, one connection writes, behind a
:class:`threading.Lock`; between processes (``sqreen serve --workers N``, the CLI while the
collector runs) ``BEGIN IMMEDIATE`` alone is correct, but a writer finding the database
locked polls it from SQLite's busy handler, sleeping 1, 2, 5, 10... ms in between: an
``flock`` on a side file (``<db>-writer.lock``) wakes the next writer as soon as the lock is
free instead. Every writer takes the two in that order (:meth:`WriteLock.held`).

Each hold tells :attr:`WriteLock.observer` how long it waited and held (``sqreen serve``:
``sqreen_storage_write_lock_seconds_total``): every writer of the file takes turns here, so
with ``--workers N`` held time near the wall clock's means more workers add no throughput.
A wait counts the time behind the thread lock alone too, which a few reads on the writer's
connection take (impossible travel's, a few ms a batch) without being counted as held.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]

from ._serve_lock import lock_name

__all__ = ["WriteLock"]

logger = logging.getLogger("sqreen.server")
#: Seconds between two logs of an observer's failures.
LOG_EVERY: Final = 60.0


class WriteLock:
    """See the module. ``thread`` alone (no ``flock``) serves the writer's connection for
    what must not run beside a write in this process but need not keep other processes
    out (a read transaction on that connection, its close)."""

    def __init__(self) -> None:
        self.thread = threading.Lock()
        self._fd: int | None = None
        #: Told ``(waited, held)`` in seconds after each hold.
        self.observer: Callable[[float, float], None] | None = None
        self._failed_at = -LOG_EVERY  # when an observer's failure was last logged

    def open(self, path: str) -> None:
        """Queue with other processes writing the database at ``path`` (a file: not
        ``""`` nor ``":memory:"``, which no other process can open)."""
        if fcntl is not None and path not in ("", ":memory:"):
            self._fd = os.open(lock_name(path, "-writer.lock"), os.O_RDWR | os.O_CREAT, 0o600)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock: the thread lock, then the ``flock``; then tell :attr:`observer`
        how long it waited and held. An observer that fails is logged (once a minute at
        most) and asked again at the next hold: what was written stays written, and the
        writer is not told otherwise."""
        asked = time.perf_counter()
        got = None
        try:
            with self.thread, self._between_processes():
                got = time.perf_counter()
                yield
        finally:
            observe = self.observer
            if observe is not None and got is not None:
                try:
                    observe(got - asked, time.perf_counter() - got)
                except Exception:
                    now = time.monotonic()
                    if now - self._failed_at >= LOG_EVERY:
                        self._failed_at = now
                        logger.warning(
                            "sqreen: the write lock's observer failed (said once a minute)",
                            exc_info=True,
                        )

    @contextmanager
    def _between_processes(self) -> Iterator[None]:
        if self._fd is None or fcntl is None:
            yield
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Stop queueing with other processes (under :attr:`thread`, by the caller)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
