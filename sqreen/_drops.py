"""Saying on the ``sqreen`` logger the events a queue dropped for want of room or time.

The heartbeat counts every drop too, but a collector that is down never receives it: the
flusher says them, one line per reason at most every :data:`DROP_NOTE_INTERVAL`, with the
count since the last line (``invalid`` and ``rejected`` have lines of their own). The
``queue_full`` line also says how many of its events the collector's playbooks watch: those
had the queue's reserve (:mod:`sqreen._reserve`), and found it full too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["AFTER_SHUTDOWN", "DROP_NOTE_INTERVAL", "DropNotes"]

logger = logging.getLogger("sqreen")

DROP_NOTE_INTERVAL: Final = 60.0
#: Events tracked once the delivery at exit has begun that could not be kept in the spool.
AFTER_SHUTDOWN: Final = "after_shutdown"

#: The drops said, and how.
_NOTES: Final[dict[str, str]] = {
    "queue_full": "sqreen: %d events dropped%s: the queue was full (max_queue_size=%d, "
    "max_queue_bytes=%d); the collector is down, or slower than the app tracks%s",
    "retry_expired": "sqreen: %d events dropped%s: not delivered within max_retry_age (%gs)",
    AFTER_SHUTDOWN: "sqreen: %d events dropped%s: tracked after the delivery at shutdown, "
    "with no spool to keep them in; track() returned False",
}


class DropNotes:
    """What the lines said so far counted, and when, per reason."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._noted = dict.fromkeys(_NOTES, 0)
        self._noted_at = dict.fromkeys(_NOTES, -math.inf)
        self._noted_watched = 0

    def say(
        self, dropped: Mapping[str, int], now: float, final: bool = False, watched: int = 0
    ) -> None:
        """A line for each reason whose count grew since its last line, unless that line is
        younger than :data:`DROP_NOTE_INTERVAL`; ``final`` says the rest. ``watched``: how
        many of the ``queue_full`` drops were of watched events (counted apart)."""
        for reason, text in _NOTES.items():
            count = dropped.get(reason, 0)
            new = count - self._noted[reason]
            if new <= 0:
                continue
            last = self._noted_at[reason]
            if not final and now < last + DROP_NOTE_INTERVAL:
                continue
            self._noted[reason], self._noted_at[reason] = count, now
            since = f" in the last {now - last:.0f} s" if last != -math.inf else ""
            logger.warning(text, new, since, *self._args(reason, watched))

    def _args(self, reason: str, watched: int) -> tuple[object, ...]:
        cfg = self.config
        if reason == "queue_full":
            new, self._noted_watched = watched - self._noted_watched, watched
            of_them = f"; {new} of them watched by the collector's playbooks" if new else ""
            return cfg.max_queue_size, cfg.max_queue_bytes, of_them
        if reason == "retry_expired":
            return (cfg.max_retry_age,)
        return ()
