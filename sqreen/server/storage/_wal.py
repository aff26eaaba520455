"""When a SQLite checkpoint must start the WAL again itself.

SQLite starts the WAL again from its first frame (and cuts the file back to
``journal_size_limit``) when a writer begins a transaction after a checkpoint copied every
frame and while no reader uses the WAL. In one process that happens by itself after most
checkpoints. With several writing processes (``sqreen serve --workers N``) one process's
checkpoint runs while another writes, so it never does: under steady ingest the WAL grew
without end (3 GB in 35 s of two workers), every commit appending to it and every read
searching its index, ingest at half its speed.

:class:`WalRestarts` decides, after each checkpoint, whether the WAL is to be started again
by force (by a RESTART checkpoint with every writer held off, which the storage runs): only
when nobody started it again since the last look (its header's checkpoint number and salts,
which change at every start, are the same) and it is past the limit. A try that a reader
kept from ending (a backup's read transaction) makes the next one wait until the WAL has
doubled, so a long reader costs a few tries, not one every checkpoint; a try that met
another process's checkpoint running is made again at the next one.

The forced checkpoint copies the frames the PASSIVE one left (those written meanwhile) and
syncs the database with every writer waiting, and waits at most ``RESTART_WAIT`` (50 ms) for
readers: under two workers' steady ingest writers waited 64 ms a restart (median; 90 at p90),
190-250 ms for the first after a long reader ended, measured. The next writer overwrites the
file from its start, cut back to ``journal_size_limit``; a file past four times the limit (a
reader held the WAL meanwhile) is cut at once (TRUNCATE), as ingest may stop before that
next writer comes.
"""

from __future__ import annotations

import os
from typing import Final

#: The bytes of the WAL's header that change whenever it is started again: the checkpoint
#: number, then the two salts (https://www.sqlite.org/fileformat.html#wal_file_format).
_HEADER_CHANGES: Final = slice(12, 24)


def wal_state(path: str) -> tuple[bytes, int]:
    """The WAL file's header bytes that change at every start, and its size (``b""``, 0 when
    there is no WAL)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b"", 0
    try:
        return os.pread(fd, 24, 0)[_HEADER_CHANGES], os.fstat(fd).st_size
    finally:
        os.close(fd)


class WalRestarts:
    """See the module. Not thread-safe: one checkpoint at a time calls it."""

    def __init__(self) -> None:
        self._header: bytes | None = None
        self._size = 0  # the WAL's size at the last try
        self._after = 0  # the size the next try waits for, past the limit (after failures)

    def due(self, path: str, limit: int) -> int | None:
        """After a checkpoint: the WAL's size when it is to be started again by force,
        else None."""
        header, size = wal_state(path)
        if header != self._header:  # started again since the last look (or first look)
            self._header, self._after = header, 0
            return None
        if size <= max(limit, self._after):
            return None
        self._size = size
        return size

    def tried(self, outcome: tuple[int, int, int] | None) -> None:
        """What the forced checkpoint returned (busy, frames, copied), None when it could
        not run (the database locked past its wait)."""
        if outcome is None or (outcome[0] and outcome[1] != -1):
            self._after = 2 * self._size  # a reader (or a writer) kept it from ending
        elif not outcome[0]:
            self._after = 0
        # (1, -1, -1): another process's checkpoint held SQLite's checkpoint lock: again at
        # the next checkpoint, which that one may make needless.
