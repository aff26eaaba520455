"""The values storage speaks in: filters, stored events, keys, blocks, the action set, agents.

Plain frozen dataclasses (and named tuples), datetimes in UTC; no SQL. Times are stored as
integer microseconds since the epoch (UTC) in both back ends (:func:`to_us`, :func:`from_us`),
so that ranges, histograms and paging are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple, TypeVar

from ..._wire_time import EARLIEST, LATEST, format_timestamp

__all__ = [
    "AGENT_TTL",
    "KEY_SCOPES",
    "MAX_AGENTS_PER_KEY",
    "MAX_IPS",
    "NO_FILTER",
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
    "EventFilter",
    "Heartbeat",
    "InsertResult",
    "KeyScope",
    "NewAlert",
    "PlacedBlock",
    "StoredEvent",
    "StoredKey",
    "TooManyBlocks",
    "UserTraits",
    "WindowWrite",
    "from_us",
    "to_us",
    "utc_now",
]

T = TypeVar("T")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_MIN_US: Final = (EARLIEST - EPOCH) // _US
_MAX_US: Final = (LATEST - EPOCH) // _US

BlockType = Literal["block_user", "block_ip"]
#: What placing a block did: stored a new one, extended the active block on the same target
#: (now lasting as long as asked), or kept it as it was (it already lasts at least as long).
BlockOutcome = Literal["created", "extended", "kept"]
KeyScope = Literal["ingest", "admin"]
KEY_SCOPES: Final = ("ingest", "admin")


#: An SDK process silent (no heartbeat) for longer is forgotten: no longer listed, deleted.
AGENT_TTL: Final = timedelta(days=7)
#: SDK processes remembered per API key at most (the least recently seen are forgotten
#: first): the agents table stays bounded whatever a key sends.
MAX_AGENTS_PER_KEY: Final = 10_000

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


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What to select. Every given criterion must hold (AND).

    ``users`` and ``properties`` are (key, value) pairs: ``("uid", "42")`` matches events whose
    user identifiers have ``uid == "42"``; a property pair matches a top-level property whose
    value, as text, equals the given one (str as is, int in decimal, bool ``true``/``false``;
    values are indexed on their first :data:`~._sql.INDEXED_VALUE_MAX` characters).
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
        ``ip_info`` (IP intelligence, when the event had an address) and ``enrichment``
        (what other enrichers added), each only when there is something."""
        out = {
            "seq": self.seq,
            "id": self.id,
            "name": self.name,
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
class ApiKey:
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None = None
    #: "ingest" (events, heartbeats, the action set) or "admin" (the blocks API too).
    scope: KeyScope = "ingest"


class StoredKey(NamedTuple):
    """An active key found by its hash, and the hash as stored (to compare in constant time)."""

    key: ApiKey
    token_hash: str


@dataclass(frozen=True, slots=True)
class Block:
    id: int
    type: BlockType
    user: dict[str, str] | None
    ip: str | None
    reason: str
    created_at: datetime
    expires_at: datetime | None
    created_by: str
    lifted_at: datetime | None = None
    lifted_by: str | None = None
    #: The action set version that last changed this block (made, extended or lifted it);
    #: 0 for a change made before the column existed.
    changed_in: int = 0

    def is_active(self, now: datetime) -> bool:
        return self.lifted_at is None and (self.expires_at is None or self.expires_at > now)

    def action(self, now: datetime) -> dict[str, Any]:
        """This block as an item of the action set the SDKs receive."""
        item: dict[str, Any] = {"id": str(self.id), "type": self.type}
        if self.type == "block_user":
            item["user"] = self.user
        else:
            item["ip"] = self.ip
        item["expires_in"] = (
            None
            if self.expires_at is None
            else round(max(0.0, (self.expires_at - now).total_seconds()), 3)
        )
        item["reason"] = self.reason
        return item

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            **self.action(now),
            "created_at": format_timestamp(self.created_at),
            "expires_at": format_timestamp(self.expires_at) if self.expires_at else None,
            "created_by": self.created_by,
            "lifted_at": format_timestamp(self.lifted_at) if self.lifted_at else None,
            "lifted_by": self.lifted_by,
            "active": self.is_active(now),
        }


@dataclass(frozen=True, slots=True)
class ActionSet:
    """The blocks in force at ``now`` and the version of the set they belong to."""

    version: int
    blocks: tuple[Block, ...]
    now: datetime

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "items": [b.action(self.now) for b in self.blocks]}


@dataclass(frozen=True, slots=True)
class ActionChanges:
    """What changed in the action set after version ``since``, as of ``version``: each block
    made, extended or lifted since (active or not at ``now``), by id."""

    since: int
    version: int
    blocks: tuple[Block, ...]
    now: datetime


class TooManyBlocks(Exception):
    """A block refused because ``limit`` blocks are already in force."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} blocks are in force, the most allowed")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What an SDK process says of itself; ``key_id`` is the API key it was sent with (an
    SDK process is one row per key: a key cannot overwrite another's)."""

    app: str
    host: str
    pid: int
    framework: str | None
    sdk_name: str | None
    sdk_version: str | None
    stats: dict[str, Any]
    key_id: int = field(default=0, kw_only=True)


@dataclass(frozen=True, slots=True)
class Agent(Heartbeat):
    """The latest heartbeat of one SDK process."""

    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class PlacedBlock:
    """A block placed (:meth:`~.base.ControlStore.place_block`): the block now in force on
    that target, and whether it was ``created``, ``extended`` or ``kept``."""

    block: Block
    outcome: BlockOutcome


@dataclass(frozen=True, slots=True)
class BlockSpec:
    """A block to place (already validated: :mod:`sqreen.server.blocks`): a playbook's, or
    the one :class:`~sqreen.server.blocks.BlockService` makes of a request."""

    type: BlockType
    user: dict[str, str] | None
    ip: str | None
    duration: timedelta | None
    reason: str
    created_by: str
    #: Made only while fewer blocks than this are in force (None: no limit); else the alert
    #: is stored without a block.
    max_active: int | None = None


@dataclass(frozen=True, slots=True)
class NewAlert:
    """An alert to store, with the block to create (or extend) with it."""

    playbook: str
    group_by: str
    group_key: str
    total: int
    first_at: datetime
    last_at: datetime
    first_seq: int
    last_seq: int
    seqs: tuple[int, ...]
    mode: str
    action: str
    summary: str
    block: BlockSpec | None = None

    def stored(self, id: int, block_id: int | None, created_at: datetime) -> Alert:
        """This alert as stored under ``id`` (with the block made for it, if any)."""
        return Alert(
            id=id,
            playbook=self.playbook,
            group_by=self.group_by,
            group_key=self.group_key,
            total=self.total,
            first_at=self.first_at,
            last_at=self.last_at,
            first_seq=self.first_seq,
            last_seq=self.last_seq,
            seqs=self.seqs,
            mode=self.mode,
            action=self.action,
            block_id=block_id,
            summary=self.summary,
            created_at=created_at,
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """A playbook that fired for a group key; ``block_id`` is the block it created or
    extended (None for an alert alone, or in monitor mode)."""

    id: int
    playbook: str
    group_by: str
    group_key: str
    total: int
    first_at: datetime
    last_at: datetime
    first_seq: int
    last_seq: int
    seqs: tuple[int, ...]
    mode: str
    action: str
    block_id: int | None
    summary: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "playbook": self.playbook,
            "group_by": self.group_by,
            "group_key": self.group_key,
            "count": self.total,
            "first_event_at": format_timestamp(self.first_at),
            "last_event_at": format_timestamp(self.last_at),
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "events": list(self.seqs),
            "mode": self.mode,
            "action": self.action,
            "block_id": self.block_id,
            "summary": self.summary,
            "created_at": format_timestamp(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class WindowWrite:
    """What playbooks decided while their keys were held: until when each (playbook, key)
    is now quiet (µs), and the alerts to store in the same transaction."""

    quiet: Mapping[tuple[str, str], int]
    alerts: Sequence[NewAlert] = ()


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
