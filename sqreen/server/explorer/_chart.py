"""The histogram of the events page: counts over time, drawn as server-side SVG.

The bucket width is a round duration picked from the range (1 s to 30 days, at most
:data:`MAX_BARS` bars), buckets start on multiples of it (a day starts at midnight UTC), and
each bar is a link that zooms into its bucket and carries a ``<title>`` for screen readers
and tooltips. The SVG holds only numbers computed here and text escaped by the template.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from ..storage.model import from_us, to_us

__all__ = ["Bar", "Chart", "bucketing", "draw"]

MAX_BARS: Final = 60
VIEW_WIDTH: Final = 600
VIEW_HEIGHT: Final = 80
#: Candidate bucket widths, in seconds, with how the page names them.
WIDTHS: Final = (
    (1, "second"),
    (5, "5 seconds"),
    (15, "15 seconds"),
    (30, "30 seconds"),
    (60, "minute"),
    (300, "5 minutes"),
    (900, "15 minutes"),
    (1800, "30 minutes"),
    (3600, "hour"),
    (3 * 3600, "3 hours"),
    (6 * 3600, "6 hours"),
    (12 * 3600, "12 hours"),
    (86400, "day"),
    (7 * 86400, "7 days"),
    (30 * 86400, "30 days"),
)


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    start: datetime
    end: datetime
    href: str


@dataclass(frozen=True, slots=True)
class Chart:
    bars: tuple[Bar, ...]
    since: datetime
    until: datetime
    per: str
    total: int
    peak: int
    view_width: int = VIEW_WIDTH
    view_height: int = VIEW_HEIGHT


def bucketing(
    since: datetime, until: datetime, align: bool
) -> tuple[datetime, int, timedelta, str]:
    """(start, number of buckets, bucket width, its name) covering [since, until); with
    ``align``, the start is moved back to a multiple of the width, else to a whole second."""
    span = max(1.0, (until - since).total_seconds())
    # (A range typed as "1h" is a hair longer than an hour by the time it is drawn.)
    fits = ((s, n) for s, n in WIDTHS if span / s <= MAX_BARS * 1.01)
    seconds, per = next(fits, (0, ""))
    if not seconds:  # years: whole days a bar
        days = -(-int(span) // (MAX_BARS * 86400))
        seconds, per = days * 86400, f"{days} days"
    step = seconds * 1_000_000
    # Unaligned, buckets still start on a whole second: each bar links to its bucket with
    # times to the second, and must show the very events the bar counts.
    unit = step if align else 1_000_000
    start = to_us(since) // unit * unit
    count = max(1, -(-(to_us(until) - start) // step))
    return from_us(start), count, timedelta(seconds=seconds), per


def draw(
    points: Sequence[tuple[datetime, int]], until: datetime, per: str, link: Callable[..., str]
) -> Chart:
    """The chart of histogram ``points`` (bucket start, count); ``link(since=, until=)``
    is the URL of the view zoomed into one bucket."""
    if not points:
        raise ValueError("a chart needs at least one bucket")
    peak = max(n for _, n in points)
    slot = VIEW_WIDTH / len(points)
    gap = min(2.0, slot * 0.15)
    bars = []
    for i, (start, count) in enumerate(points):
        end = points[i + 1][0] if i + 1 < len(points) else until
        height = 0.0 if not count else max(1.5, (VIEW_HEIGHT - 2) * count / max(1, peak))
        bars.append(
            Bar(
                x=round(i * slot + gap / 2, 2),
                y=round(VIEW_HEIGHT - height, 2),
                width=round(slot - gap, 2),
                height=round(height, 2),
                count=count,
                start=start,
                end=end,
                href=link(since=_iso(start), until=_iso(end)),
            )
        )
    return Chart(
        bars=tuple(bars),
        since=points[0][0],
        until=until,
        per=per,
        total=sum(n for _, n in points),
        peak=peak,
    )


def _iso(dt: datetime) -> str:
    return dt.replace(tzinfo=None).isoformat(timespec="seconds")
