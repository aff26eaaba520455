"""The event names SDKs send at once, as the action set's replies carry them.

The names travel with the action set, which an SDK holding the current version is not sent:
so a new list (playbooks loaded at start, reloaded, removed) takes a version of its own
(:meth:`~.storage.ControlStore.note_watched`, which keeps the list in the database and takes
a version only when it differs from the one kept there).

Two rules make that hold with several processes (``--workers N``, collectors sharing one
PostgreSQL, a rolling restart):

- every reply carries the list **kept in the database**, not its own process's: the version
  it sends was taken for that list. A process that has not reloaded yet (or a collector of
  another file) would otherwise hand out the new version with its old list, and its SDKs,
  holding that version, would be answered ``unchanged`` for good;
- a process records its own list when it changes, in a thread of its own: a locked database
  (a backup, a long write of another process) must not hold every reply behind that write.
  Replies go on with the version and list they find meanwhile; once recorded, the new version
  wakes the long-polls (``on_change``). A failed write is said once a minute at most and
  tried again :data:`RETRY_AFTER` seconds later.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from .storage import ControlStore
from .unavailable import unavailable

__all__ = ["RETRY_AFTER", "WatchedNames"]

logger = logging.getLogger("sqreen.server")

#: Seconds before a list whose recording failed is tried again.
RETRY_AFTER: Final = 5.0
#: A failed recording is logged at most this often (seconds).
LOG_EVERY: Final = 60.0


class WatchedNames:
    """This process's list (``watched``: the enforcing playbooks' names), recorded in
    ``store`` when it changes; and the recorded list as a reply's JSON, by version."""

    def __init__(
        self,
        store: ControlStore,
        watched: Callable[[], frozenset[str]],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self._watched = watched
        self._on_change = on_change
        self._lock = threading.Lock()
        self._recorded: frozenset[str] | None = None  # this process's list, once recorded
        self._busy = False  # a thread is recording
        self._retry_at = 0.0
        self._logged_at = -LOG_EVERY
        self._json: tuple[int | None, bytes] = (None, b"[]")  # (version read at, the JSON)

    def check(self) -> None:
        """Record this process's list if it changed (in a thread; returns at once)."""
        names = self._watched()
        if names == self._recorded or self._busy:
            return
        with self._lock:
            if names == self._recorded or self._busy or time.monotonic() < self._retry_at:
                return
            self._busy = True
        thread = threading.Thread(
            target=self._record, args=(names,), name="sqreen-watched", daemon=True
        )
        thread.start()

    def record_now(self) -> None:
        """Record this process's list here and now (the collector's start, before it
        serves: its first replies carry its list); a failure is left to :meth:`check`."""
        names = self._watched()
        with self._lock:
            if names == self._recorded or self._busy:
                return
            self._busy = True
        self._record(names)

    def pending(self) -> bool:
        """Whether a recording runs now (started by :meth:`check`)."""
        return self._busy

    def _record(self, names: frozenset[str]) -> None:
        try:
            taken = self.store.note_watched(names)
        except Exception as exc:  # (a locked or read-only database): replies go on as they were
            now = time.monotonic()
            self._retry_at = now + RETRY_AFTER
            if now - self._logged_at >= LOG_EVERY:
                self._logged_at = now
                if unavailable(exc):  # the database away: said, not a bug's traceback
                    said = str(exc).strip()
                    logger.warning(
                        "sqreen: recording the watched event names failed (the database is "
                        "unavailable: %s); tried again in %d s",
                        said.splitlines()[0] if said else type(exc).__name__,
                        RETRY_AFTER,
                    )
                else:
                    logger.exception("sqreen: recording the watched event names failed")
        else:
            self._recorded = names
            if taken is not None and self._on_change is not None:
                self._on_change()
        finally:
            self._busy = False

    def json(self, version: int) -> bytes:
        """The recorded list (JSON), read again when ``version`` moved since the last read
        (a new list always comes with a new version)."""
        read_at, found = self._json
        if read_at != version:
            names = sorted(self.store.recorded_watched())
            found = json.dumps(names, ensure_ascii=False, separators=(",", ":")).encode()
            self._json = (version, found)
        return found
