"""When a SQLite checkpoint must start the WAL again itself.

SQLite starts the WAL again from its first frame (and cuts the file back to
``journal_size_limit``) when a writer begins a transaction after a checkpoint copied every
frame and while no reader uses it. In one process that happens by itself after most
checkpoints. With several writing processes (``sqreen serve --workers N``) one process's
checkpoint runs while another writes, so it never does: under steady ingest the WAL grew
without end (3 GB in 35 s of two workers), every commit appending to it and every read
searching its index (7 700 events/s against 17 200 with it bounded, in one run).

:class:`WalRestarts` decides from what each PASSIVE checkpoint reports, ``(busy, frames,
copied)``, where ``frames`` counts the frames written since the WAL last started again:
past the limit, the WAL is started again by force (a RESTART checkpoint with every writer
held off, which the storage runs). A try that a reader kept from ending (a backup's read
transaction, which also keeps the PASSIVE checkpoints from copying past it) makes the next
one wait until the frames have doubled, so a long reader costs a few tries, not one every
checkpoint; once a checkpoint copied every frame, the reader has gone and the next try is
made at once. A try that met another process's checkpoint running (SQLite answers at once,
``(1, -1, -1)``) is made again at the next one.

The forced checkpoint copies the frames the PASSIVE one left (those written meanwhile) and
syncs the database with every writer waiting, and waits at most ``RESTART_WAIT`` (50 ms) for
readers. The next writer then overwrites the file from its start and cuts it back to
``journal_size_limit``: a file a reader let grow stays that large until then."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Final


class WalRestarts:
    """See the module. Not thread-safe: one checkpoint at a time calls it."""

    def __init__(self) -> None:
        self._frames = 0  # the frames at the last try
        self._after = 0  # the frames the next try waits for, past the limit (after failures)

    def due(self, passive: Sequence[int], frame_bytes: int, limit: int) -> bool:
        """After a PASSIVE checkpoint that reported ``passive`` (busy, frames, copied):
        whether the WAL is to be started again by force now."""
        _, frames, copied = passive
        if frames < 0:  # (1, -1, -1): another process's checkpoint was running: says nothing
            return False
        if copied >= frames:  # nothing pins the frames: a reader in the way has gone
            self._after = 0
        if frames * frame_bytes <= limit or frames <= self._after:
            return False
        self._frames = frames
        return True

    def tried(self, outcome: tuple[int, int, int] | None) -> None:
        """What the forced checkpoint returned (busy, frames, copied), None when it could
        not run (the database locked past its wait)."""
        if outcome is None or (outcome[0] and outcome[1] != -1):
            self._after = 2 * self._frames  # a reader (or a writer) kept it from ending
        elif not outcome[0]:
            self._after = 0
        # (1, -1, -1): another process's checkpoint held SQLite's checkpoint lock: again at
        # the next checkpoint, which that one may make needless.


class FileGuard:
    """Refuses a transaction, as SQLite refuses a file it cannot open or write, once the
    database file is not the one the storage opened, or its WAL index can be written no more.

    **The file.** A database file removed or replaced while the collector runs (``rm``, a
    file moved over it, a volume mounted over its directory) is still open: SQLite went on
    writing into the removed file, and every batch was answered 200, then lost with it, while
    ``/readyz`` said ready. (A file copied *into* it, ``cp backup.db sqreen.db``, keeps its
    inode: that rewrites the database under SQLite, which then finds it malformed; the way
    back to a backup is ``sqreen restore``, which refuses a database being served.) Its
    device and inode are compared with the path's at each transaction (one
    ``stat()``, about a microsecond): it is then refused, a 503 with ``/readyz`` saying why,
    until the collector is restarted on the database it should use.

    **The WAL index** (``PATH-shm``). SQLite maps that file into memory and writes to it as
    each transaction starts, a read's too. On a file that can no longer be written (a disk
    remounted read-only after errors, an immutable file), the kernel answers the write to a
    mapped page with SIGBUS, and the process died without a word, where a batch should be
    answered 503 and ``/readyz`` say why. One ``access()`` a transaction. A database opened
    on read-only media, whose index SQLite keeps in its own memory, is left alone."""

    __slots__ = ("_db", "_file", "_path", "_watch")

    def __init__(self, path: str) -> None:
        file = file_path(path)
        self._db = path if file is None else file  # (as the connections open it)
        #: The database file's (device, inode) when opened; None for one in memory.
        self._file = None if file is None else _id(file)
        self._path = path + "-shm"
        #: Whether to look: the index could be written when first seen (None: not yet made,
        #: as in a database whose first transaction has not begun).
        self._watch: bool | None = None

    def check(self) -> None:
        if self._file is not None and _id(self._db) != self._file:
            raise sqlite3.OperationalError(
                f"{REPLACED} ({self._db!r} is not the file the collector opened: restart it on "
                "the database it should use; nothing is acknowledged meanwhile)"
            )
        watch = self._watch
        if watch is None:
            if not os.path.exists(self._path):
                return
            watch = self._watch = os.access(self._path, os.W_OK)
        if watch and not os.access(self._path, os.W_OK) and os.path.exists(self._path):
            raise sqlite3.OperationalError(
                "attempt to write a readonly database (its -shm file can no longer be "
                "written: SQLite would crash on its shared memory)"
            )


#: What :class:`FileGuard` says of a database file removed or replaced (read as "the
#: database is away" by :mod:`sqreen.server.unavailable`).
REPLACED: Final = "database file removed or replaced"


def file_path(path: str) -> str | None:
    """The absolute path of the file a SQLite ``path`` names; None for a database in memory
    or a ``file:`` URI (whose file SQLite reads from the URI)."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    return os.path.abspath(path)


def _id(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino
