"""The storage seam of the collector: one small :class:`Storage` protocol, two back ends.

:mod:`.sqlite` (the default, one collector process) and :mod:`.postgres` (several collector
processes on one database) behave the same; one test suite runs against both. Everything the
collector, the CLI and the Event Explorer read or write goes through this protocol, in plain
values (dataclasses, datetimes in UTC), never through SQL.

Times are stored as integer microseconds since the epoch (UTC) in both back ends, so that
ranges, histograms and paging are exact and written once (:mod:`._sql`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple, Protocol

from ..._event import format_timestamp
from ..._wire import WireEvent

__all__ = [
    "KEY_SCOPES",
    "NO_FILTER",
    "ActionSet",
    "Agent",
    "ApiKey",
    "Block",
    "BlockType",
    "Clock",
    "EventFilter",
    "Heartbeat",
    "KeyScope",
    "Storage",
    "StoredEvent",
    "StoredKey",
    "from_us",
    "to_us",
    "utc_now",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

BlockType = Literal["block_user", "block_ip"]
KeyScope = Literal["ingest", "admin"]
KEY_SCOPES: Final = ("ingest", "admin")


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
    return EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What to select. Every given criterion must hold (AND).

    ``users`` and ``properties`` are (key, value) pairs: ``("uid", "42")`` matches events whose
    user identifiers have ``uid == "42"``; a property pair matches a top-level property whose
    value, as text, equals the given one (str as is, int in decimal, bool ``true``/``false``;
    values are indexed on their first :data:`~._sql.INDEXED_VALUE_MAX` characters).
    ``since`` is inclusive, ``until`` exclusive, both on the event's own time.
    """

    name: str | None = None
    users: tuple[tuple[str, str], ...] = ()
    properties: tuple[tuple[str, str], ...] = ()
    ip: str | None = None
    app: str | None = None
    since: datetime | None = None
    until: datetime | None = None


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

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON-ready dict: the wire event plus what the collector added."""
        return {
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
class Heartbeat:
    app: str
    host: str
    pid: int
    framework: str | None
    sdk_name: str | None
    sdk_version: str | None
    stats: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Agent(Heartbeat):
    """The latest heartbeat of one SDK process."""

    first_seen: datetime
    last_seen: datetime


class Storage(Protocol):
    """What the collector needs from a database. Every method is blocking and thread-safe;
    each write is one transaction, committed when the method returns."""

    def close(self) -> None: ...

    def now(self) -> datetime:
        """The time by this storage's :data:`Clock`: what it stamps writes with and measures
        expiry and retention against."""
        ...

    # Events.
    def insert_events(
        self,
        events: Sequence[WireEvent],
        *,
        app: str | None = None,
        host: str | None = None,
        received_at: datetime | None = None,
    ) -> tuple[int, int]:
        """Store validated events in one transaction; return (stored, duplicates).

        An event whose ``id`` is already stored (or repeated in ``events``) is a duplicate and
        is not stored again.
        """
        ...

    def query_events(
        self,
        filters: EventFilter = NO_FILTER,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 50,
    ) -> list[StoredEvent]:
        """Matching events, newest (highest ``seq``) first; page with ``before_seq``."""
        ...

    def get_event(self, event_id: str) -> StoredEvent | None: ...

    def count_events(self, filters: EventFilter = NO_FILTER) -> int: ...

    def count_by(
        self,
        field: str,
        filters: EventFilter = NO_FILTER,
        limit: int = 10,
        *,
        newest: int | None = None,
    ) -> list[tuple[str | None, int]]:
        """The most frequent values of ``field`` among matching events, most frequent first.

        ``field`` is ``name``, ``ip``, ``app``, ``host``, ``user.<key>`` or
        ``properties.<key>``; anything else raises :class:`ValueError`. With ``newest``, only
        the newest ``newest`` matching events (by ``seq``) are counted: a bounded cost.
        """
        ...

    def histogram(
        self,
        filters: EventFilter = NO_FILTER,
        buckets: int = 60,
        *,
        newest: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[tuple[datetime, int]]:
        """Counts of matching events in ``buckets`` equal slices of [start, end).

        ``start`` and ``end`` default to the filter's ``since`` and ``until``; ``end`` then to
        now, ``start`` to the oldest matching event (or an hour before ``end``). Events outside
        [start, end) are not counted. With ``newest``, only the newest ``newest`` matching
        events (by ``seq``; by time for a filter on time alone) are counted.
        """
        ...

    def span(
        self, filters: EventFilter = NO_FILTER, *, newest: int
    ) -> tuple[int, datetime | None, datetime | None]:
        """How many of the newest ``newest`` matching events there are (what a bounded
        :meth:`histogram` or :meth:`count_by` covers), and the times of the oldest and the
        newest of them by ``seq`` (by time too, when events are stored in time order).

        .. versionadded:: 0.1 (for the Event Explorer)
        """
        ...

    def purge_older_than(self, days: float) -> int:
        """Delete events whose own time is more than ``days`` old; return how many."""
        ...

    # API keys: only SHA-256 hashes (hex) are stored.
    def create_key(self, name: str, token_hash: str, scope: KeyScope = "ingest") -> ApiKey: ...

    def key_by_hash(self, token_hash: str) -> StoredKey | None:
        """The active (not revoked) key with this hash, and the stored hash itself."""
        ...

    def list_keys(self) -> list[ApiKey]: ...

    def revoke_key(self, key_id: int) -> bool: ...

    # Blocks and the action set.
    def create_block(
        self,
        type: BlockType,
        *,
        user: dict[str, str] | None = None,
        ip: str | None = None,
        duration: timedelta | None = None,
        reason: str = "",
        created_by: str = "",
    ) -> Block:
        """Store a block (already validated, see :mod:`sqreen.server.blocks`) and bump the
        action version in the same transaction."""
        ...

    def lift_block(self, block_id: int, lifted_by: str = "") -> Block | None:
        """Lift an active block (bumping the action version); None if there is none."""
        ...

    def list_blocks(self, *, include_inactive: bool = False) -> list[Block]: ...

    def action_set(self) -> ActionSet: ...

    # SDK processes.
    def record_heartbeat(self, heartbeat: Heartbeat) -> None: ...

    def agents(self) -> list[Agent]: ...

    # Small settings (the explorer's admin password hash...).
    def get_setting(self, key: str) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...

    def add_setting(self, key: str, value: str) -> str:
        """Store ``value`` unless ``key`` already has one; return the value stored (the first
        writer wins, also between processes)."""
        ...
