"""How the collector shows a time to people: one form for the explorer's pages and the CLI.

Its own module, without Jinja2 or Starlette, so that an admin command (``sqreen blocks``)
prints times without importing the Event Explorer (about 0.2 s at every start).
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["days", "when"]


def when(dt: datetime | None) -> str:
    """A time for people: UTC, to the second."""
    return "-" if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def days(n: float) -> str:
    """A number of days for people: ``1 day``, ``0.5 days``, ``90 days``."""
    return f"{n:g} day" + ("" if n == 1 else "s")
