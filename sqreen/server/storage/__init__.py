"""Storage back ends of the collector, chosen by the ``--db`` URL."""

from __future__ import annotations

from .base import (
    KEY_SCOPES,
    ActionSet,
    Agent,
    ApiKey,
    Block,
    BlockType,
    Clock,
    EventFilter,
    Heartbeat,
    KeyScope,
    Storage,
    StoredEvent,
    StoredKey,
    utc_now,
)

__all__ = [
    "KEY_SCOPES",
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
    "open_storage",
    "utc_now",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_storage(db: str, *, clock: Clock = utc_now) -> Storage:
    """Open (creating and migrating as needed) the database ``db``: a ``postgresql://`` URL,
    or the path of a SQLite file (``sqlite:///path`` also works). ``clock`` is the time every
    write is stamped with and expiry and retention are measured against (tests pass their
    own, so that nothing waits for real time)."""
    if db.startswith(POSTGRES_SCHEMES):
        from .postgres import PostgresStorage

        return PostgresStorage(db, clock=clock)
    from .sqlite import SQLiteStorage

    return SQLiteStorage(db.removeprefix("sqlite://"), clock=clock)
