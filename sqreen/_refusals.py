"""Refusals: how often each block refused a request, so that an operator sees it working.

Counted per action id (the heartbeat reports the totals, at most :data:`MAX_REPORTED` blocks,
the busiest), and sampled into ``security.blocked`` events (LiteSOC's name): at most one per
block every :data:`SAMPLE_EVERY` seconds, carrying how many refusals it stands for. Only the
refusal path pays for this, never a request that goes through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._blocking import Blocked

__all__ = ["MAX_REPORTED", "REFUSAL_EVENT", "SAMPLE_EVERY", "Refusals"]

#: LiteSOC's name for a request refused because of a block.
REFUSAL_EVENT: Final = "security.blocked"

SAMPLE_EVERY: Final = 20.0
MAX_REPORTED: Final = 30
MAX_TRACKED: Final = 10_000


class Refusals:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.totals: dict[str, int] = {}
        self._since_sample: dict[str, int] = {}
        self._sampled_at: dict[str, float] = {}

    def count(self, action_id: str) -> int:
        """Count one refusal; return how many a ``security.blocked`` event should now stand
        for (0: not yet, the last one is too recent)."""
        now = self._clock()
        with self._lock:
            if action_id not in self.totals and len(self.totals) >= MAX_TRACKED:
                return 0
            self.totals[action_id] = self.totals.get(action_id, 0) + 1
            pending = self._since_sample.get(action_id, 0) + 1
            last = self._sampled_at.get(action_id)
            if last is not None and now - last < SAMPLE_EVERY:
                self._since_sample[action_id] = pending
                return 0
            self._sampled_at[action_id] = now
            self._since_sample[action_id] = 0
            return pending

    def sample(self, blocked: Blocked) -> dict[str, object] | None:
        """Count a refusal by ``blocked``; the properties of the :data:`REFUSAL_EVENT` that
        now stands for the refusals since the last one, or None (not yet)."""
        action_id = blocked.action_id or ""
        count = self.count(action_id)
        if not count:
            return None
        return {"block_id": action_id, "kind": "user" if blocked.user else "ip", "count": count}

    def report(self) -> dict[str, int]:
        """The busiest blocks' totals, for the heartbeat."""
        with self._lock:
            busiest = sorted(self.totals.items(), key=lambda item: -item[1])[:MAX_REPORTED]
        return dict(busiest)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self.totals.clear()
        self._since_sample.clear()
        self._sampled_at.clear()
