"""Whether a collector is serving a SQLite database: ``<db>-serve.lock``.

``sqreen serve`` holds a shared ``flock`` on it for as long as it runs (the supervisor of
``--workers N`` for all its workers), so that ``sqreen restore --force`` can refuse to copy a
backup under a running collector: the collector keeps in memory what the old database held
(the export forwarder's position, the action set's version, the playbooks' windows), and would
go on from there in a database that no longer matches it. The restore holds the lock
exclusively while it copies, so a collector starting meanwhile waits for it to end.
The writers' ``-writer.lock`` cannot say this: it is held only for each write.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no such check
    fcntl = None  # type: ignore[assignment]

__all__ = ["CollectorRunning", "lock_name", "serving", "unserved"]


def lock_name(path: str, suffix: str) -> str:
    """The lock file ``suffix`` of the database at ``path``, named after the file itself, so
    that every spelling of its path (a symbolic link, ``./``, relative or absolute) takes
    the same lock."""
    return os.path.realpath(path) + suffix


class CollectorRunning(Exception):
    """A collector (``sqreen serve``) holds the database."""


def _lock_file(path: str) -> int | None:
    if fcntl is None or path in ("", ":memory:") or path.startswith("file:") or "://" in path:
        return None
    return os.open(lock_name(path, "-serve.lock"), os.O_RDWR | os.O_CREAT, 0o600)


@contextlib.contextmanager
def serving(path: str) -> Iterator[None]:
    """Say, for as long as the block runs, that a collector serves the database at ``path``
    (waiting for a restore of it to end first)."""
    fd = _lock_file(path)
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def unserved(path: str) -> Iterator[None]:
    """Hold the database at ``path`` so that no collector serves it while the block runs;
    raise :class:`CollectorRunning` at once if one does."""
    fd = _lock_file(path)
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CollectorRunning(path) from None
        yield
    finally:
        os.close(fd)
