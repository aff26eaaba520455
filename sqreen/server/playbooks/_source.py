"""The playbooks in force in a collector process: a file's, re-read as it changes and on
SIGHUP, off the ingest path (see :class:`PlaybookSource`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from ._config import PlaybookError, PlaybookSet, parse_playbooks, read_playbooks
from ._engine import Engine

__all__ = ["CHECK_EVERY", "PlaybookSource"]

logger = logging.getLogger("sqreen.server")

#: How often a watched file is looked at (seconds).
CHECK_EVERY: Final = 1.0


#: Said of a file that holds no playbook: every protection it gave is off.
NONE_IN_FORCE: Final = (
    "no playbook in force, nothing blocked nor alerted on (an empty file, or one cut short "
    "while it was saved?)"
)


class PlaybookSource:
    """The playbooks in force, from a file (or none).

    In the collector, :meth:`watch` (a task of the app's lifespan) re-reads the file in a
    thread when it changes (looked at every :data:`CHECK_EVERY` s) and at once on
    :meth:`request_reload` (SIGHUP): ingest only ever takes the engine in force, and a bad
    file is said as it is saved, not at the next event. Without a watcher (the library, a
    test), :meth:`current` looks at the file itself, at most once a second. A ``supervised``
    source is a worker of ``--workers N``: the supervisor watches the file, says what it
    found, and passes SIGHUP on when it holds; the worker re-reads on SIGHUP only, and logs
    only a failure (one line from the supervisor, not one a worker).
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, supervised: bool = False
    ) -> None:
        self.path = None if path is None else Path(path)
        self.supervised = supervised
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp: tuple[int, int] | None = None
        #: Set by hand: the next :meth:`current` re-reads the file, watched or not.
        self.reload_requested = False
        self._wanted = False  # a reload asked of the watcher
        self._wake: Callable[[], None] | None = None  # the watcher's, while it runs
        self.playbooks = PlaybookSet()
        self.engine = Engine(self.playbooks)
        #: The file's text :attr:`playbooks` were read from ("" before any).
        self.text = ""
        self._watched: frozenset[str] = frozenset()  # of self.playbooks (every reply asks)
        #: What a reload says too, of the set it loaded: the playbooks that can never fire
        #: with the collector's enrichment (``sqreen serve`` sets it; see ``_reach.py``).
        self.unreachable: Callable[[PlaybookSet], list[str]] | None = None
        if self.path is not None:
            self._load(first=True)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _load(self, first: bool = False) -> bool:
        assert self.path is not None
        stamp = self._file_stamp()
        try:
            text = read_playbooks(self.path)
            playbooks = parse_playbooks(text, str(self.path))
        except PlaybookError as exc:
            if first:
                raise
            # The operator's mistake, said as at start (file, line, reason): no traceback.
            logger.error(
                "sqreen: playbooks not reloaded: %s; the %d in force stay",
                exc,
                len(self.playbooks.playbooks),
            )
            self._stamp = stamp  # not again until it changes again
            return False
        except Exception:
            if first:
                raise
            # An error of ours reading this content: its traceback once, not every second.
            logger.exception(
                "sqreen: reading the playbooks failed; the %d in force stay",
                len(self.playbooks.playbooks),
            )
            self._stamp = stamp
            return False
        self.playbooks, self.engine, self._stamp = playbooks, Engine(playbooks), stamp
        self.text = text
        self._watched = playbooks.watched()
        if not first:
            n = len(playbooks.playbooks)
            logger.log(
                logging.DEBUG if self.supervised else logging.INFO if n else logging.WARNING,
                "sqreen: %d playbook%s loaded from %s%s",
                n,
                "" if n == 1 else "s",
                self.path,
                "" if n else f": {NONE_IN_FORCE}",
            )
            if self.unreachable is not None and not self.supervised:
                for line in self.unreachable(playbooks):
                    logger.warning("sqreen: %s", line)
        return True

    def check(self, force: bool = False) -> bool:
        """Re-read the file if it changed since last read, or if asked (``force``, or
        :meth:`request_reload`); True when a new set is in force. Blocking (a thread)."""
        if self.path is None:
            return False
        with self._lock:
            self._checked = time.monotonic()
            force, self._wanted = force or self._wanted, False
            if force or self._file_stamp() != self._stamp:
                return self._load()
        return False

    def current(self) -> Engine:
        """The engine of the playbooks in force."""
        if self.path is None:
            return self.engine
        if self.reload_requested:
            self.reload_requested = False
            self.check(force=True)
        elif self._wake is None and time.monotonic() - self._checked >= CHECK_EVERY:
            self.check()  # no watcher: look here, at most once a second
        return self.engine

    def request_reload(self) -> None:
        """Re-read the file at once (its watcher does, in a thread), changed or not. Safe
        from a signal handler; with no watcher, the next :meth:`current` does."""
        self._wanted = True
        wake = self._wake
        if wake is None:
            self.reload_requested = True
            return
        try:
            wake()
        except RuntimeError:  # its loop has closed
            self.reload_requested = True

    async def watch(self) -> None:
        """Re-read the file as it changes and when asked, until cancelled (see the class)."""
        if self.path is None:
            return
        loop = asyncio.get_running_loop()
        asked = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(asked.set)

        self._wake = wake
        every = None if self.supervised else CHECK_EVERY
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asked.wait(), every)
                asked.clear()
                try:
                    await asyncio.to_thread(self.check)
                except Exception:  # never the end of the watch
                    logger.exception("sqreen: reading the playbooks failed")
        finally:
            self._wake = None

    def watched(self) -> frozenset[str]:
        """The event names SDKs should send at once: what enforcing playbooks read (see
        :meth:`~._config.PlaybookSet.watched`), worked out once a set."""
        self.current()  # (re-reads the file if due)
        return self._watched
