"""Where SQLite's writer keeps what it writes aside: statement journals in memory, sorts,
ephemeral tables and copies of the whole database in files.

Each INSERT of the events' transaction may fail half-way (its constraints), so SQLite first
copies every page it changes that existed before it to a statement journal, to undo it. Past
64 KiB that journal was a temporary file (``etilqs_*``), written a page at a time: a third
of the store's CPU at 5 000 000 events (``docs/benchmarks.md``, *Statement journals in
memory*). SQLite decides where a connection's statement (and savepoint) journals go when its
write transaction begins (the pager takes ``temp_store`` at ``BEGIN IMMEDIATE``), and where
each statement's sorter and ephemeral tables go when that statement runs. So the writer keeps
``temp_store=FILE`` and asks for ``MEMORY`` for the ``BEGIN IMMEDIATE`` alone
(:func:`begin_write`): a ``count(DISTINCT ...)`` of the windows' log, an index built, a
``VACUUM`` keep their files, as on the readers. Not for the migrations' transaction, whose
``UPDATE`` of a whole table would journal every page of it, nor while ``window_log`` is
indexed: the playbooks' savepoint then journals a page of its indexes for nearly every hit
of the bodies stored together (28 MiB for 20 000 hits at 300 000 rows, measured).
"""

from __future__ import annotations

from typing import Final, Protocol

__all__ = ["WRITER_TEMP_STORE", "begin_write"]

#: The writer's ``PRAGMA temp_store`` between transactions and within them.
WRITER_TEMP_STORE: Final = "FILE"


class _Executes(Protocol):
    def execute(self, sql: str, /) -> object: ...


def begin_write(cur: _Executes, journals_in_memory: bool) -> None:
    """``BEGIN IMMEDIATE`` on the writer's ``cur``, its statement journals in memory when
    ``journals_in_memory``. (Changing ``temp_store`` drops a connection's temporary
    database: no temporary table is ever made on the writer.)"""
    if not journals_in_memory:
        cur.execute("BEGIN IMMEDIATE")
        return
    cur.execute("PRAGMA temp_store=MEMORY")
    try:
        cur.execute("BEGIN IMMEDIATE")
    finally:
        cur.execute(f"PRAGMA temp_store={WRITER_TEMP_STORE}")
