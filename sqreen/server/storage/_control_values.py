"""The values of the control store: API keys, blocks and the action set, playbooks' alerts
and windows, SDK processes (:class:`~.base.ControlStore`).

Imported through :mod:`.model`, which holds the values of events and the times they all use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal, NamedTuple

from ..._blocking import fold_identifier
from ..._wire_time import format_timestamp

__all__ = [
    "AGENT_TTL",
    "KEY_SCOPES",
    "MAX_AGENTS_PER_KEY",
    "MAX_TARGET_BYTES",
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
    "Heartbeat",
    "KeyScope",
    "NewAlert",
    "PlacedBlock",
    "Purged",
    "Replacement",
    "StoredKey",
    "TooManyBlocks",
    "WindowWrite",
    "block_target",
    "by_playbook",
]

BlockType = Literal["block_user", "block_ip"]
#: What placing a block did: stored a new one, extended the active block on the same target
#: (now lasting as long as asked), or kept it as it was (it already lasts at least as long).
BlockOutcome = Literal["created", "extended", "kept"]
KeyScope = Literal["ingest", "admin"]
KEY_SCOPES: Final = ("ingest", "admin")
#: How a playbook's blocks begin their ``created_by`` (``playbook:brute-force-ip``); every
#: other author is a person's (``cli:alice``, ``explorer:admin``, ``api-key:3:ops``).
PLAYBOOK_AUTHOR: Final = "playbook:"


def by_playbook(created_by: str) -> bool:
    """Whether a block of this ``created_by`` is a playbook's (else a person made it)."""
    return created_by.startswith(PLAYBOOK_AUTHOR)


#: The longest ``target`` a block may have (bytes): the column is indexed, and PostgreSQL
#: refuses an index entry past about 2 700 bytes (the error would roll back the whole
#: transaction: a playbook's, every alert of the body with it). Both back ends refuse alike.
MAX_TARGET_BYTES: Final = 2000


def block_target(type: BlockType, ip: str | None, user: Mapping[str, str] | None) -> str:
    """What a block is on, as the ``target`` column holds it (migration 13): one text for
    every spelling of the same target: a user's identifiers in any order, and their values
    folded as the SDKs compare them. Blocks placed before kept the values as given."""
    if type == "block_ip":
        return f"ip:{ip}"
    # As the SDKs compare identifiers (and playbooks group them): Bob@Example.com is bob's.
    folded = {k: fold_identifier(v) for k, v in (user or {}).items()}
    return "user:" + json.dumps(folded, sort_keys=True)


#: An SDK process silent (no heartbeat) for longer is forgotten: no longer listed, deleted.
AGENT_TTL: Final = timedelta(days=7)
#: SDK processes remembered per API key at most (the least recently seen are forgotten
#: first): the agents table stays bounded whatever a key sends.
MAX_AGENTS_PER_KEY: Final = 10_000


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
    #: False when blocks changed after ``since`` were deleted since (retention: ended
    #: blocks): what was lifted then cannot be told, and the caller takes the whole set.
    complete: bool = True


class Purged(NamedTuple):
    """What a purge deleted besides events (:meth:`~.base.ControlStore.purge_records`)."""

    alerts: int
    blocks: int
    users: int
    export_cursors: int


class TooManyBlocks(Exception):
    """A block refused because ``limit`` blocks are already in force."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} or more blocks are in force, {limit} at most allowed")
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
class Replacement:
    """At ``--max-blocks``, a playbook's new block (``block_id``, for alert ``alert_id``)
    took the place of ``lifted``, the oldest playbook block in force; the
    (playbook, key) pairs that block kept quiet are ``released``: they may fire again."""

    lifted: Block
    block_id: int
    alert_id: int
    released: tuple[tuple[str, str], ...]


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
    #: Made only while fewer blocks than this are in force (None: no limit). At the cap, a
    #: playbook's block takes the place of the oldest playbook block in force (created
    #: longest ago); with none (every block in force a person's), it is refused, and the
    #: alert is stored without a block.
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
    #: How long (µs) its playbook stays quiet for the key when the block is refused (at the
    #: cap): then it fires and asks again.
    retry_us: int = 60_000_000

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
    is now quiet (µs), the alerts to store in the same transaction, and the new mark
    (time µs, seq) of each (alert playbook, key) that alerted."""

    quiet: Mapping[tuple[str, str], int]
    alerts: Sequence[NewAlert] = ()
    marks: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
