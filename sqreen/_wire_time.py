"""The times of events: their bounds and their wire form, for the SDK and the collector.

The one formatter (:func:`format_timestamp`, once per event on the flusher thread) and the one
parser (:func:`parse_timestamp`, :func:`normal_timestamp`, :func:`time_us`, a few times per
event in the collector) of the wire's ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, and the range every
reader can compute with (:data:`EARLIEST` to :data:`LATEST`). Validating the ``timestamp=`` a
caller passes to ``track()`` is :func:`sqreen._event.validate_timestamp`'s.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Final

from ._limits import InvalidEvent

__all__ = [
    "EARLIEST",
    "LATEST",
    "bounded",
    "format_timestamp",
    "in_range",
    "normal_timestamp",
    "parse_timestamp",
    "time_us",
]

#: The times an event may carry (what both databases store, with room to spare, and what
#: every reader can compute with: a histogram's buckets, the explorer's and the CLI's times).
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9000, 1, 1, tzinfo=UTC)


def in_range(when: datetime) -> bool:
    """Whether the aware datetime ``when`` is within [:data:`EARLIEST`, :data:`LATEST`]."""
    try:
        return EARLIEST <= when <= LATEST
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        return False


#: What :func:`format_timestamp` writes, for a year of 1970 to 8999 (within the bounds).
#: The hour is 00 to 23: Python 3.14's ``fromisoformat`` reads "T24:00:00.000000" as the
#: next day's midnight (and refuses T24 with anything after it), which must not make a
#: second of hour 24 the wire's form (:func:`time_us` remembers seconds).
_WIRE_TIME: Final = re.compile(
    r"(?:19[7-9][0-9]|[2-8][0-9]{3})-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-9]{2}:[0-9]{2}"
    r"\.[0-9]{6}Z"
)


def normal_timestamp(value: object, field: str = "timestamp") -> str:
    """``format_timestamp(parse_timestamp(value, field))``: ``value`` itself when it is in
    wire form already (as an SDK sends it), checked, without formatting it again."""
    if type(value) is str and _WIRE_TIME.fullmatch(value):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    return format_timestamp(parse_timestamp(value, field))


#: A wire time's second ("2026-12-02T09:38:44", what precedes ".ffffffZ"), checked, -> its
#: µs since the epoch. A batch's events fall in a few seconds: :func:`time_us` reads a time
#: of a second met before as a lookup and the fraction's digits, not a datetime and a
#: timedelta (926 -> 567 ns a call; the collector reads an event's time for its row, for the
#: playbooks and for impossible travel).
_SECONDS: dict[str, int] = {}
#: Seconds remembered at most (then all forgotten: a batch of times far apart costs what
#: parsing each costs, and no memory).
SECONDS_MAX: Final = 4096
_WIRE_LEN: Final = 27  # len("2026-12-02T09:38:44.000000Z")


def time_us(value: object, field: str = "timestamp") -> int:
    """µs since the epoch of :func:`parse_timestamp`'s time for ``value``."""
    if type(value) is str and len(value) == _WIRE_LEN and value[19] == "." and value[26] == "Z":
        fraction = value[20:26]
        # (int() also reads "+1234", " 1234", "1_234" and other scripts' digits)
        if fraction.isascii() and fraction.isdigit():
            base = _SECONDS.get(value[:19])
            if base is not None:
                return base + int(fraction)
            if _WIRE_TIME.fullmatch(value):
                try:
                    at = datetime.fromisoformat(value) - EARLIEST
                except ValueError:  # February 30th...: refused below, with the message
                    pass
                else:
                    us = _micros(at)
                    if len(_SECONDS) >= SECONDS_MAX:
                        _SECONDS.clear()
                    _SECONDS[value[:19]] = us - at.microseconds
                    return us
    return _micros(parse_timestamp(value, field) - EARLIEST)


def _micros(at: timedelta) -> int:
    """``at`` in whole µs (exact: no float)."""
    return (at.days * 86_400 + at.seconds) * 1_000_000 + at.microseconds


def format_timestamp(when: float | datetime) -> str:
    """The wire form of a time: ISO 8601 in UTC to the microsecond, ``Z`` for the zone (a POSIX
    time or an aware datetime; the one formatter of the SDK and the collector)."""
    if type(when) is float:
        return _format_posix(when)
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    elif when.utcoffset():
        when = when.astimezone(UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


#: The last whole second :func:`_format_posix` wrote, and its text (one tuple: threads read
#: and replace it whole).
_last_second: tuple[float, str] = (-1.0, "")


def _format_posix(ts: float) -> str:
    """``datetime.fromtimestamp(ts, UTC)``'s ISO text, without making the datetime: the
    microseconds rounded as it rounds them (half to even, carried into the second), and the
    date and time of the second reused while events come from the same one. The flusher
    formats one per event: 3.8 µs before, 1 after, on a loaded machine
    (``tests/test_wire.py`` holds the two equal)."""
    frac, whole = math.modf(ts)
    micro = round(frac * 1e6)
    if micro >= 1_000_000:
        whole += 1.0
        micro -= 1_000_000
    elif micro < 0:
        whole -= 1.0
        micro += 1_000_000
    second, text = _last_second
    if second != whole:
        t = time.gmtime(whole)
        text = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        )
        _set_last_second(whole, text)
    return f"{text}.{micro:06d}Z"


def _set_last_second(whole: float, text: str) -> None:
    global _last_second
    _last_second = (whole, text)


def parse_timestamp(value: object, field: str = "timestamp") -> datetime:
    """The time of a wire timestamp (ISO 8601; naive is UTC), in UTC, brought within 1970 to
    9000 (:func:`bounded`). A time outside them is not refused: the event it stamps (a failed
    login among them) is stored and counted, at the nearest time every reader can compute
    with; a time later than its receipt is then moved to its receipt by the collector."""
    if type(value) is str and _WIRE_TIME.fullmatch(value):
        # In wire form (what the SDK sends), of a year within the bounds: already in UTC and
        # bounded (3.5 -> 1.2 µs a timestamp, twice an event in the collector).
        try:
            return datetime.fromisoformat(value)
        except ValueError:  # February 30th...: refused below, with the message
            pass
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidEvent(field, "type", "must be an ISO 8601 string")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(field, "format", f"{value[:64]!r} is not ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return bounded(dt)


def bounded(when: datetime) -> datetime:
    """The aware datetime ``when`` in UTC, or the nearer of :data:`EARLIEST` and
    :data:`LATEST` when it is outside them (year 9999 as 9000, year 1 as 1970)."""
    try:
        return min(max(when, EARLIEST), LATEST).astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        return EARLIEST if when.year < EARLIEST.year else LATEST
