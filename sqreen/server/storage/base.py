"""The storage seam of the collector: an event store and a control store, two back ends.

:class:`Storage` is both on one database: :mod:`.sqlite` (the default) and :mod:`.postgres`
(several collector processes on one database) implement it with the same SQL, and one test
suite (``tests/server/test_storage.py``) runs against both. Everything the collector, the CLI
and the Event Explorer read or write goes through these protocols, in plain values
(:mod:`.model`), never through SQL. Every method blocks (call it from a thread, never the
event loop) and is thread-safe.

The two halves promise different things, and code that needs only one takes only that one:

- the :class:`EventStore` is append-only and large (millions of events): ingest writes it,
  the explorer, ``sqreen events`` and playbooks read it;
- the :class:`ControlStore` holds small tables changed by hand or by playbooks (API keys,
  blocks and the versioned action set every SDK receives, SDK processes, settings), one
  transaction a method.

Both read the time from the storage's :data:`~.model.Clock` (:meth:`Clocked.now`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from ._control_store import ControlStore
from ._event_store import Clocked, EventStore

__all__ = ["Clocked", "ControlStore", "EventStore", "Storage"]


class Storage(EventStore, ControlStore, Protocol):
    """Both stores on one database: what :func:`~sqreen.server.storage.open_storage` opens."""

    def database_bytes(self) -> int:
        """The database's size on disk (SQLite: its file and WAL; PostgreSQL: the database)."""
        ...

    def reclaim_space(self) -> bool:
        """Give the space of deleted rows back to the file system: SQLite's ``VACUUM``,
        which holds the write lock (ingest waits) for as long as it copies the database;
        whether done (False on PostgreSQL, whose autovacuum makes the space reusable, and
        whose ``VACUUM FULL`` is an operator's decision: it locks each table)."""
        ...

    def newest_received_at(self) -> datetime | None:
        """When the newest stored event (the highest seq) was received; None without any."""
        ...

    def close(self) -> None: ...
