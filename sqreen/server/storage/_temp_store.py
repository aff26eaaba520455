"""Where SQLite's writer keeps what it writes aside: statement journals in memory, sorts and
copies of the whole database in files.

Each INSERT of the events' transaction may fail half-way (its constraints), so SQLite first
copies every page it changes that existed before it to a statement journal, to undo it. Past
64 KiB that journal was a temporary file (``etilqs_*``), written a page at a time: a third
of the store's CPU at 5 000 000 events (``docs/benchmarks.md``, *Statement journals in
memory*). So the writer keeps its temporary storage in memory (:data:`WRITER_TEMP_STORE`):
a journal holds one statement's pages, or a savepoint's, and is dropped at its end (a
purge's DELETEs need none). SQLite's sorter follows the same setting, though, and sorts
everything in memory there: what sorts a table whole on the writer (``CREATE INDEX`` of the
windows' log past its bounds, ``VACUUM``'s copy of the database) runs under
:func:`on_disk`. Reads that sort run on the readers, which keep SQLite's default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, Protocol

__all__ = ["WRITER_TEMP_STORE", "on_disk"]

#: The writer's ``PRAGMA temp_store`` (set after the migrations, which build indexes).
WRITER_TEMP_STORE: Final = "MEMORY"


class _Executes(Protocol):
    def execute(self, sql: str, /) -> object: ...


@contextmanager
def on_disk(conn: _Executes) -> Iterator[None]:
    """Temporary storage in files while the block runs, on the writer's ``conn`` (a
    connection or a cursor of it; within a transaction too, as no temporary table is ever
    open), then back to :data:`WRITER_TEMP_STORE`."""
    conn.execute("PRAGMA temp_store=FILE")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA temp_store={WRITER_TEMP_STORE}")
