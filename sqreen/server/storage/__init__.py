"""Storage of the collector: the protocols (:mod:`.base`), the values (:mod:`.model`), the
back ends chosen by the ``--db`` URL, and the follow reader (:mod:`.follow`)."""

from __future__ import annotations

from ._places import LatestPlaces, PlaceAsk, PlaceRow
from ._prepared import PreparedEvents, TiedStep
from ._queries import MAX_IDS, histogram_of, span_of
from ._rows import clean, new_events
from ._serve_lock import serving
from .base import ControlStore, EventStore, Storage
from .follow import Follower, newer
from .model import (
    AGENT_TTL,
    KEY_SCOPES,
    MAX_AGENTS_PER_KEY,
    MAX_IPS,
    MAX_TARGET_BYTES,
    NO_FILTER,
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
    Clock,
    DatabaseUnreachable,
    EventFilter,
    Heartbeat,
    InsertResult,
    KeyScope,
    NewAlert,
    PlacedBlock,
    Purged,
    Replacement,
    StoredEvent,
    StoredKey,
    TooManyBlocks,
    UserTraits,
    WindowWrite,
    block_target,
    by_playbook,
    utc_now,
)

__all__ = [
    "AGENT_TTL",
    "KEY_SCOPES",
    "MAX_AGENTS_PER_KEY",
    "MAX_IDS",
    "MAX_IPS",
    "MAX_TARGET_BYTES",
    "NO_FILTER",
    "PLAYBOOK_AUTHOR",
    "POSTGRES_SCHEMES",
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
    "ControlStore",
    "DatabaseUnreachable",
    "EventFilter",
    "EventStore",
    "Follower",
    "Heartbeat",
    "InsertResult",
    "KeyScope",
    "LatestPlaces",
    "NewAlert",
    "PlaceAsk",
    "PlaceRow",
    "PlacedBlock",
    "PreparedEvents",
    "Purged",
    "Replacement",
    "Storage",
    "StoredEvent",
    "StoredKey",
    "TiedStep",
    "TooManyBlocks",
    "UserTraits",
    "WindowWrite",
    "block_target",
    "by_playbook",
    "clean",
    "histogram_of",
    "new_events",
    "newer",
    "open_storage",
    "serving",
    "span_of",
    "utc_now",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_storage(
    db: str, *, clock: Clock = utc_now, create: bool = True, upgrade: bool = True
) -> Storage:
    """Open (creating and migrating as needed) the database ``db``: a ``postgresql://`` URL,
    or the path of a SQLite file (``sqlite:///path`` also works). ``clock`` is the time every
    write is stamped with and expiry and retention are measured against (tests pass their
    own, so that nothing waits for real time). ``create=False``: a PostgreSQL database that
    holds no sqreen schema is refused (:class:`RuntimeError`) rather than given one (the
    caller checks that a SQLite file exists). ``upgrade=False`` (read-only commands): a
    schema older than this code's is refused (:class:`RuntimeError`) rather than migrated,
    as a collector of an older version may be running on it."""
    if db.startswith(POSTGRES_SCHEMES):
        from .postgres import PostgresStorage

        return PostgresStorage(db, clock=clock, create=create, upgrade=upgrade)
    from .sqlite import SQLiteStorage

    return SQLiteStorage(db.removeprefix("sqlite://"), clock=clock, upgrade=upgrade)
