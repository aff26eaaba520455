"""The values storage speaks in: filters, stored events, keys, blocks, the action set, agents.

Plain frozen dataclasses (and named tuples), datetimes in UTC; no SQL. Times are stored as
integer microseconds since the epoch (UTC) in both back ends (:func:`to_us`, :func:`from_us`),
so that ranges, histograms and paging are exact. This module defines the values of events
and the times every value uses; those of the control store (keys, blocks, alerts, agents) are
defined in :mod:`._control_values` and imported from here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from ..._wire_time import EARLIEST, LATEST, format_timestamp
from ...events import severity
from ._control_values import (
    AGENT_TTL,
    KEY_SCOPES,
    MAX_AGENTS_PER_KEY,
    MAX_TARGET_BYTES,
    PLAYBOOK_AUTHOR,
    ActionChanges,
    ActionSet,
    Agent,
    Alert,
    ApiKey,
    Block,
    BlockOutcome,
    BlockSpec,
    BlockType,
    Heartbeat,
    KeyScope,
    NewAlert,
    PlacedBlock,
    Purged,
    Replacement,
    StoredKey,
    TooManyBlocks,
    WindowWrite,
    block_target,
    by_playbook,
)

__all__ = [
    "AGENT_TTL",
    "IP_KINDS",
    "KEY_SCOPES",
    "MAX_AGENTS_PER_KEY",
    "MAX_IPS",
    "MAX_SCORE",
    "MAX_TARGET_BYTES",
    "NO_FILTER",
    "PLAYBOOK_AUTHOR",
    "ActionChanges",
    "ActionSet",
    "Agent",
    "Alert",
    "ApiKey",
    "Block",
    "BlockOutcome",
    "BlockSpec",
    "BlockType",
    "Clock",
    "DatabaseUnreachable",
    "EventFilter",
    "Heartbeat",
    "InsertResult",
    "KeyScope",
    "NewAlert",
    "PlacedBlock",
    "Purged",
    "Replacement",
    "StoredEvent",
    "StoredKey",
    "TooManyBlocks",
    "UserTraits",
    "WindowWrite",
    "block_target",
    "by_playbook",
    "from_us",
    "ip_info_value",
    "ip_selection",
    "to_us",
    "utc_now",
]

T = TypeVar("T")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_MIN_US: Final = (EARLIEST - EPOCH) // _US
_MAX_US: Final = (LATEST - EPOCH) // _US

#: What storage reads the time from (``received_at``, block expiry, retention, heartbeats).
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default :data:`Clock`: the system's, in UTC."""
    return datetime.now(UTC)


def to_us(dt: datetime) -> int:
    """Exact microseconds since the epoch (a naive datetime is UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - EPOCH) // _US


def from_us(us: int) -> datetime:
    """The time of ``us`` microseconds since the epoch, brought within the times an event may
    carry (1970 to 9000): a time stored before they were checked (year 1, year 9999) reads
    as one every reader can compute with, never as an OverflowError."""
    return EPOCH + timedelta(microseconds=min(max(us, _MIN_US), _MAX_US))


class DatabaseUnreachable(RuntimeError):
    """The database could not be reached (its server down, refusing, or silent past the
    connect timeout), as opposed to one that answered with a refusal."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What to select. Every given criterion must hold (AND).

    ``users`` and ``properties`` are (key, value) pairs: ``("uid", "42")`` matches events whose
    user identifiers have ``uid == "42"``; a property pair matches a top-level property whose
    value, as text, equals the given one (str as is, int in decimal, bool ``true``/``false``;
    values are indexed on their first :data:`~._side_rows.INDEXED_VALUE_MAX` characters).
    ``since`` is inclusive, ``until`` exclusive, both on the event's own time. ``ips``: any
    of these addresses, as the SDKs record them (what a small network expands to; at most
    :data:`MAX_IPS`).
    """

    name: str | None = None
    users: tuple[tuple[str, str], ...] = ()
    properties: tuple[tuple[str, str], ...] = ()
    ip: str | None = None
    ips: tuple[str, ...] = ()
    app: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: IP intelligence's fields as stored with the event (``ip_info``): country code,
    #: network kind (``tor``, ``hosting``, ``private``...), ASN in decimal.
    country: str | None = None
    kind: str | None = None
    asn: str | None = None
    #: ``info``, ``warning`` or ``critical``: the severity of the event's name
    #: (:func:`sqreen.events.severity`; names that are not standard are ``info``).
    severity: str | None = None


#: The addresses an :class:`EventFilter` may list in ``ips`` (an IPv4 /24).
MAX_IPS: Final = 256


def ip_selection(value: str) -> tuple[str | None, tuple[str, ...]]:
    """``(ip, ips)`` of an :class:`EventFilter` for ``value``: an address (as SDKs record it:
    canonical, IPv4-mapped IPv6 unmapped), or a CIDR network's addresses. Events are indexed
    by exact address, so a network is looked up as the list of its addresses, and one wider
    than :data:`MAX_IPS` (an IPv4 /24, an IPv6 /120) is refused rather than scanned for.
    :class:`ValueError` saying why, for anything else."""
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an IP address or a CIDR network") from None
    if network.num_addresses > MAX_IPS:
        raise ValueError(
            f"{network} holds {network.num_addresses} addresses: events are indexed by exact "
            f"address, so a network is at most {MAX_IPS} of them (an IPv4 /24, an IPv6 /120)"
        )
    addresses = tuple(
        str(a.ipv4_mapped or a) if isinstance(a, ipaddress.IPv6Address) else str(a) for a in network
    )
    return (addresses[0], ()) if "/" not in value else (None, addresses)


#: Every network kind IP intelligence stores: the range lists' (``server/intel/_sources.py``)
#: and the special ranges' (``server/intel/_address.py``).
IP_KINDS: Final = ("tor", "vpn", "hosting", "cdn", "bot", "private", "loopback", "reserved")
#: The threat score's bounds (``server/intel/_score.py``).
MAX_SCORE: Final = 100
#: The largest AS number (32 bits).
MAX_ASN: Final = 2**32 - 1
#: IP intelligence's fields that have one spelling stored, each with its pattern (after
#: :func:`ip_info_value`'s case change) and what is expected.
_IP_INFO_VALUES: Final = {
    "country": (re.compile(r"[A-Z]{2}"), "a two-letter country code (e.g. DE)"),
    "kind": (
        re.compile("|".join(IP_KINDS)),
        f"a network kind: {', '.join(IP_KINDS)}",
    ),
    "asn": (re.compile(r"(?:AS)?([0-9]{1,10})"), "an AS number (e.g. 15169 or AS15169)"),
    "score": (
        re.compile(r"(100|[1-9]?[0-9])"),
        f"a threat score, a whole number from 0 to {MAX_SCORE}",
    ),
}


def ip_info_value(key: str, value: str) -> str:
    """``value`` of IP intelligence's ``country``, ``kind``, ``asn`` or ``score`` as events
    store it (``de`` -> ``DE``, ``Tor`` -> ``tor``, ``AS15169`` -> ``15169``), for the explorer's
    filters and playbooks' ``where`` alike; any other key's value as it is.
    :class:`ValueError` saying what is expected, for a value no event can have."""
    found = _IP_INFO_VALUES.get(key)
    if found is None:
        return value
    pattern, expected = found
    value = value.strip()
    # ASCII first: "ß".upper() is "SS", a country.
    match = value.isascii() and pattern.fullmatch(value.lower() if key == "kind" else value.upper())
    if not match:
        raise ValueError(f"must be {expected}")
    if key == "asn" and not 1 <= int(match[1]) <= MAX_ASN:  # AS0 is reserved: no data has it
        raise ValueError(f"must be {expected}, from 1 to {MAX_ASN}")
    return str(int(match[1])) if key in ("asn", "score") else match[0]


#: The filter that selects every event.
NO_FILTER: Final = EventFilter()


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    id: str
    name: str
    timestamp: datetime
    received_at: datetime
    app: str | None
    host: str | None
    ip: str | None
    user: dict[str, str] | None
    properties: dict[str, Any]
    target: dict[str, str] | None
    request: dict[str, Any] | None
    #: The fields the ingest pipeline's enrichers added (IP intelligence...); empty without.
    enrichment: dict[str, Any] = field(default_factory=dict)
    #: The API key that sent it (0: none, as for an import, or stored before keys were
    #: recorded). Ids are unique per key.
    key_id: int = 0

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON-ready dict: the wire event plus what the collector added:
        its ``severity`` (from its name), ``ip_info`` (IP intelligence, when the event had an
        address) and ``enrichment`` (what other enrichers added), each only when there is
        something."""
        out = {
            "seq": self.seq,
            "id": self.id,
            "name": self.name,
            "severity": severity(self.name),
            "timestamp": format_timestamp(self.timestamp),
            "received_at": format_timestamp(self.received_at),
            "app": self.app,
            "host": self.host,
            "properties": self.properties,
            "user": self.user,
            "target": self.target,
            "request": self.request,
        }
        if self.enrichment:
            ip_info = self.enrichment.get("ip_info")
            if ip_info is not None:
                out["ip_info"] = ip_info
            rest = {k: v for k, v in self.enrichment.items() if k != "ip_info"}
            if rest:
                out["enrichment"] = rest
        return out


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What one :meth:`~.base.EventStore.insert_events` call stored.

    ``seqs`` is aligned with the events given: the seq of each event this call stored, None
    for a duplicate (an id stored before under the same key, by any call or process, or
    repeated earlier in the same call). ``received_at`` is the time the events were stamped
    with.
    """

    stored: int
    duplicates: int
    seqs: tuple[int | None, ...]
    received_at: datetime

    def new(self, items: Sequence[T]) -> list[tuple[int, T]]:
        """``(seq, item)`` for each item (aligned with the events given) stored by this call,
        in input order: what an after-store hook is told about."""
        return [(seq, item) for seq, item in zip(self.seqs, items, strict=True) if seq is not None]


@dataclass(frozen=True, slots=True)
class UserTraits:
    """What ``identify(user, traits=...)`` said last of a user: the latest traits, and the
    times of the first and the last ``sq.identify`` record (each record's own time, never
    later than its receipt).

    .. versionadded:: 0.1
    """

    user: dict[str, str]
    traits: dict[str, Any]
    first_seen: datetime
    last_seen: datetime
