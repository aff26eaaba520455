"""Validating blocks before they are stored: who or what, for how long, and why.

The rules mirror what every SDK enforces on the action set it receives (an SDK refuses a
block it considers dangerous, so the collector refuses it first, with a clear message): a user
block names a non-empty set of identifiers, checked with the SDK's own identifier rules; an IP
block is a network no wider than a /16 (IPv4) or a /48 (IPv6), host bits cleared. The
durations and times that blocks take are read here too, for the CLI and the explorer alike.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from .._event import InvalidEvent, validate_user

__all__ = [
    "InvalidBlock",
    "parse_duration",
    "parse_pairs",
    "parse_when",
    "validate_network",
    "validate_reason",
    "validate_user_spec",
]

MIN_PREFIX: Final = {4: 16, 6: 48}
MAX_REASON: Final = 512
MAX_DURATION: Final = timedelta(days=3650)
#: The times :func:`parse_when` accepts (what both databases store, with room to spare).
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9000, 1, 1, tzinfo=UTC)
_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class InvalidBlock(ValueError):
    """A block that cannot be created; ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_duration(value: object, field: str = "duration") -> timedelta:
    """``30s``, ``15m``, ``1h``, ``7d``, ``2w`` (or a number of seconds) as a timedelta."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.fullmatch(value.strip().lower())):
        seconds = float(m[1]) * _UNITS[m[2]]
    else:
        raise InvalidBlock(field, f"{str(value)[:40]!r} is not a duration like 30s, 15m, 1h or 7d")
    if not 0 < seconds <= MAX_DURATION.total_seconds():
        raise InvalidBlock(field, "must be positive and at most 3650 days")
    return timedelta(seconds=seconds)


def parse_when(value: str, now: datetime, field: str) -> datetime:
    """``15m``/``2h``/``7d`` (that long before ``now``) or an ISO 8601 time (naive is UTC)."""
    try:
        return now - parse_duration(value, field)
    except InvalidBlock:
        pass
    try:
        when = datetime.fromisoformat(value.strip())
        when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except ValueError:
        raise InvalidBlock(
            field, f"{value[:40]!r} is neither a duration (30m, 2h, 7d) nor an ISO 8601 time"
        ) from None
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        when = EARLIEST - timedelta(days=1)
    if not EARLIEST <= when <= LATEST:
        raise InvalidBlock(field, "must be between 1970 and 9000")
    return when


def parse_pairs(pairs: Iterable[str], field: str) -> dict[str, str]:
    """``["uid=42", "email=a@b.c"]`` as a dict (the CLI's spelling of identifiers)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidBlock(field, f"{pair[:40]!r} is not key=value")
        out[key] = value
    return out


def validate_user_spec(user: object) -> dict[str, str]:
    try:
        checked = validate_user(user, "user")
    except InvalidEvent as exc:
        raise InvalidBlock(exc.field, str(exc).partition(": ")[2]) from None
    if not checked:
        raise InvalidBlock("user", "a user block needs at least one identifier, e.g. uid=42")
    return checked


def validate_network(value: object) -> str:
    """The normalised CIDR of an IP block (``203.0.113.7/24`` -> ``203.0.113.0/24``)."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidBlock("ip", "must be an IP address or a CIDR network")
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise InvalidBlock("ip", f"{value!r} is not an IP address or a CIDR network") from None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        raise InvalidBlock("ip", "write IPv4-mapped addresses as IPv4")
    least = MIN_PREFIX[network.version]
    if network.prefixlen < least:
        raise InvalidBlock(
            "ip",
            f"/{network.prefixlen} is too wide: IPv{network.version} blocks are /{least} or "
            "narrower",
        )
    return str(network)


def validate_reason(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_REASON:
        raise InvalidBlock("reason", f"must be a string of at most {MAX_REASON} characters")
    return value
