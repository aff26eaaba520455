"""Reading what people write for blocks and for the explorer's and the CLI's filters:
durations (``15m``, ``7d``), times (a duration ago, or ISO 8601) and ``key=value`` pairs,
each refused with an :class:`InvalidBlock` naming the field. Imported through
:mod:`.blocks`, which holds the rules of a block itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Final

from .._wire_time import in_range

__all__ = [
    "MAX_DURATION",
    "MAX_DURATION_DIGITS",
    "MIN_DURATION",
    "InvalidBlock",
    "parse_duration",
    "parse_pairs",
    "parse_when",
]

MIN_DURATION: Final = timedelta(seconds=1)
MAX_DURATION: Final = timedelta(days=3650)
#: Characters in the number of a duration written as text (``3650d`` is 4, ``0.5s`` 3).
MAX_DURATION_DIGITS: Final = 12
_UNITS: Final = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
#: One number and unit, or several, each unit once and larger first, as durations are shown
#: (``1h30m``, ``7m05s``: :func:`sqreen.server.playbooks._late.span`).
_DURATION_RE: Final = re.compile(
    "".join(rf"(?:([0-9]+(?:\.[0-9]+)?)\s*{unit}\s*)?" for unit in _UNITS)
)


class InvalidBlock(ValueError):
    """A block that cannot be created; ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_duration(
    value: object, field: str = "duration", most: timedelta = MAX_DURATION
) -> timedelta:
    """``30s``, ``15m``, ``1h``, ``7d``, ``2w`` (or a number of seconds, or a timedelta) as a
    timedelta, from :data:`MIN_DURATION` to ``most`` (:data:`MAX_DURATION` by default)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int) and not isinstance(value, bool):
        # Bounded before any conversion: a 400-digit integer is no float.
        seconds = float(value) if abs(value) < 10**MAX_DURATION_DIGITS else math.inf
    elif isinstance(value, float):
        seconds = value if math.isfinite(value) else math.inf
    elif isinstance(value, str) and (m := _duration_text(value)):
        if any(len(n) > MAX_DURATION_DIGITS for n in m.groups() if n):
            raise InvalidBlock(field, f"at most {MAX_DURATION_DIGITS} digits, like 30s or 7d")
        numbers = zip(m.groups(), _UNITS.values(), strict=True)
        seconds = sum(float(n) * size for n, size in numbers if n)
    else:
        raise InvalidBlock(
            field, f"{_shown(value)} is not a duration like 30s, 15m, 1h, 1h30m or 7d"
        )
    if not MIN_DURATION.total_seconds() <= seconds <= most.total_seconds():
        raise InvalidBlock(
            field, f"must be positive and at most {most.days} days (1 second at least)"
        )
    return timedelta(seconds=seconds)


def _duration_text(text: str) -> re.Match[str] | None:
    """The numbers of a duration's text by unit, or None when it is none."""
    m = _DURATION_RE.fullmatch(text.strip().lower())
    return m if m is not None and any(m.groups()) else None


def _shown(value: object) -> str:
    """A value, shortened, to name in an error message."""
    text = value if isinstance(value, str) else str(value)
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def parse_when(value: str, now: datetime, field: str) -> datetime:
    """``15m``/``2h``/``7d`` (that long before ``now``) or an ISO 8601 time (naive is UTC)."""
    try:
        return now - parse_duration(value, field)
    except InvalidBlock as exc:
        if _duration_text(value):
            # A duration out of its range (4000d): say that, not that it is none.
            raise InvalidBlock(
                field, f"{_shown(value)}: {exc.message}, or an ISO 8601 time"
            ) from None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidBlock(
            field, f"{value[:40]!r} is neither a duration (30m, 2h, 7d) nor an ISO 8601 time"
        ) from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    # The times an event may carry: every time the explorer and the CLI compare with is one.
    if not in_range(when):
        raise InvalidBlock(field, "must be between 1970 and 9000")
    return when.astimezone(UTC)


def parse_pairs(pairs: Iterable[str], field: str) -> dict[str, str]:
    """``["uid=42", "email=a@b.c"]`` as a dict (the CLI's spelling of identifiers, and the
    explorer form's). A key given twice, or spaces around the ``=`` (``uid = 42`` would be
    the key ``"uid "``, which no event has), are refused rather than guessed at."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidBlock(field, f"{pair[:40]!r} is not key=value")
        if key != key.strip() or value != value.strip():
            raise InvalidBlock(
                field,
                f"{pair[:40]!r} has spaces around '=' or at its ends: write "
                f"{(key.strip() + '=' + value.strip())[:40]}",
            )
        if key in out:
            raise InvalidBlock(
                field, f"{key[:40]!r} is given twice: each key takes one value (key=value)"
            )
        out[key] = value
    return out
