"""Events that reached the playbooks later than their windows: counted and said.

An event whose own time is older than a playbook's window counts for nothing there
(:attr:`~._hits.Plan.late`): so that ``sqreen import`` of last week's attack blocks nobody
today. ``sqreen import`` stores its events without the ingest pipeline's hooks, so the
playbooks never see them; what they do see came through ingest, and an event of theirs too
old to count was delivered late (a collector flooded for longer than a window, an SDK's
spool sent after an outage). :class:`LateEvents` counts those per playbook (the
``sqreen_playbook_late_events_total`` counter, through ``on_late``) and says so on the
``sqreen.server`` logger, at most once a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Final

__all__ = ["ALERT_LINES", "LOG_EVERY", "AlertLines", "LateEvents", "Throttle", "span", "span_of"]

logger = logging.getLogger("sqreen.server")

#: Seconds between two lines at most.
LOG_EVERY: Final = 60.0
#: Playbooks a line names at most (the others counted).
NAMED_MAX: Final = 5


def span(us: int) -> str:
    """A duration (µs) as people read it, to its second largest unit: ``5m``, ``2h13m``,
    ``7m05s``, ``3d``."""
    rest = max(0, us // 1_000_000)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n or parts:
            parts.append(f"{n:02d}{unit}" if parts else f"{n}{unit}")
        if len(parts) == 2:
            break
    if len(parts) == 2 and parts[1].startswith("00"):
        parts.pop()
    return "".join(parts) or "0s"


def span_of(delta: timedelta) -> str:
    """:func:`span` of a timedelta (a playbook's window, duration or cooldown)."""
    return span(int(delta.total_seconds() * 1_000_000))


class Throttle:
    """A count said at most once every :data:`LOG_EVERY`: what came since the last line."""

    def __init__(self) -> None:
        self.count = 0
        self._said = -LOG_EVERY

    def add(self, n: int) -> int | None:
        """Count ``n``; the count to say now (it starts again), or None (said too lately)."""
        self.count += n
        now = time.monotonic()
        if now - self._said < LOG_EVERY:
            return None
        count, self.count, self._said = self.count, 0, now
        return count


#: The alerts of one playbook logged one by one in a minute at most.
ALERT_LINES: Final = 20


class AlertLines:
    """Which alerts get a line of their own: :data:`ALERT_LINES` of each playbook a minute.
    An attack on many accounts made thousands a minute (2 233 lines in 25 s), a log nobody
    could read; past them, one line says that the rest of the minute's are not logged one
    by one (``sqreen alerts`` and the explorer list them all, and webhooks get each)."""

    def __init__(self, per_minute: int = ALERT_LINES) -> None:
        self.per_minute = per_minute
        #: Per playbook: (when its minute began, its alerts in it).
        self._minutes: dict[str, tuple[float, int]] = {}

    def say(self, playbook: str) -> bool:
        """Whether this alert of ``playbook`` gets its line (the one past the limit says so,
        and the first of a later minute how many the last one held back)."""
        now = time.monotonic()
        began, said = self._minutes.get(playbook, (now, 0))
        if now - began >= LOG_EVERY:
            if said > self.per_minute:
                logger.warning(
                    "sqreen: playbook %s: %d more of its alerts were not logged one by one in "
                    "the minute that began %.0f s ago (sqreen alerts lists them all)",
                    playbook,
                    said - self.per_minute,
                    now - began,
                )
            began, said = now, 0
        self._minutes[playbook] = (began, said + 1)
        if said == self.per_minute:
            logger.warning(
                "sqreen: playbook %s: %d alerts within a minute: the rest of the minute's are "
                "not logged one by one (sqreen alerts lists them all)",
                playbook,
                self.per_minute,
            )
        return said < self.per_minute


class LateEvents:
    """Counts the events each playbook found older than its window, and says so."""

    def __init__(self, on_late: Callable[[str, int], None] | None = None) -> None:
        #: Told, for each batch with late events, each playbook's count (metrics).
        self.on_late = on_late
        #: Since the last line: per playbook, (events, the oldest's age µs, window µs).
        self._pending: dict[str, tuple[int, int, int]] = {}
        self._logged = -LOG_EVERY

    def note(self, late: Mapping[str, tuple[int, int]], windows: Mapping[str, int]) -> None:
        """A batch's late events (per playbook: how many, the oldest's age µs), with the
        playbooks' windows (µs)."""
        pending = self._pending
        for playbook, (n, age) in late.items():
            if self.on_late is not None:
                self.on_late(playbook, n)
            had, oldest, _ = pending.get(playbook, (0, 0, 0))
            pending[playbook] = (had + n, max(oldest, age), windows.get(playbook, 0))
        now = time.monotonic()
        if not pending or now - self._logged < LOG_EVERY:
            return
        ordered = sorted(pending.items(), key=lambda item: (-item[1][0], item[0]))
        said = "; ".join(
            f"{playbook}: {n} older than its window ({span(window)}), up to {span(age)} old"
            for playbook, (n, age, window) in ordered[:NAMED_MAX]
        )
        more = len(ordered) - NAMED_MAX
        logger.warning(
            "sqreen: events reached playbooks too late to count (%s%s; an event is named "
            "for each playbook it was too late for): delivered after their windows had "
            "passed (a collector behind its ingest, an SDK's spool sent after an outage), or "
            "stamped by an app host whose clock runs behind (an event's own time is what "
            "counts); sqreen_playbook_late_events_total counts them",
            said,
            f"; {more} more playbooks" if more > 0 else "",
        )
        self._pending, self._logged = {}, now
