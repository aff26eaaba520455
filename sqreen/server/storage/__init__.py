"""Storage back ends of the collector, chosen by the ``--db`` URL."""

from __future__ import annotations

from .base import (
    KEY_SCOPES,
    ActionSet,
    Agent,
    ApiKey,
    Block,
    BlockType,
    EventFilter,
    Heartbeat,
    KeyScope,
    Storage,
    StoredEvent,
    StoredKey,
)

__all__ = [
    "KEY_SCOPES",
    "ActionSet",
    "Agent",
    "ApiKey",
    "Block",
    "BlockType",
    "EventFilter",
    "Heartbeat",
    "KeyScope",
    "Storage",
    "StoredEvent",
    "StoredKey",
    "open_storage",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_storage(db: str) -> Storage:
    """Open (creating and migrating as needed) the database ``db``: a ``postgresql://`` URL,
    or the path of a SQLite file (``sqlite:///path`` also works)."""
    if db.startswith(POSTGRES_SCHEMES):
        from .postgres import PostgresStorage

        return PostgresStorage(db)
    from .sqlite import SQLiteStorage

    return SQLiteStorage(db.removeprefix("sqlite://"))
