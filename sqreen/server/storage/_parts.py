"""What the parts of :class:`~._sql.SqlStorage` mixed into it (playbooks' and users' queries)
use of it: its clock, its write transactions and its reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["Columns", "SqlPart", "insert_rows", "placeholders", "unnest"]

#: A table's columns as written, each with its PostgreSQL type (a dialect that sends a
#: column as one array parameter casts it: :meth:`SqlPart._insert`).
Columns = tuple[tuple[str, str], ...]


def unnest(kinds: Sequence[str], rows: Sequence[Sequence[object]]) -> tuple[str, list[Any]]:
    """``unnest(?::kind[], ...)`` and its parameters: ``rows`` sent a column an array, each
    of its PostgreSQL type in ``kinds`` (one statement text whatever the rows)."""
    arrays = ", ".join(f"?::{kind}[]" for kind in kinds)
    return f"unnest({arrays})", [list(column) for column in zip(*rows, strict=True)]


def placeholders(rows: int, columns: int) -> str:
    """``(?, ?), (?, ?)``: the VALUES of a multi-row insert."""
    one = "(" + ", ".join("?" * columns) + ")"
    return ", ".join([one] * rows)


def insert_rows(
    cur: Cursor, head: str, rows: Sequence[Sequence[Any]], tail: str = "", chunk: int = 500
) -> None:
    """``head VALUES (...), (...) tail`` for ``rows``, at most ``chunk`` rows a statement
    (parameters stay under SQLite's and PostgreSQL's limits)."""
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        cur.execute(
            f"{head} VALUES {placeholders(len(part), len(part[0]))}{tail}",
            [v for row in part for v in row],
        )


class SqlPart:
    """A base of the classes mixed into :class:`~._sql.SqlStorage`, which implements these."""

    #: Whether the dialect takes a list as one array parameter (``?::text[]``: PostgreSQL),
    #: for the keys a statement reads and the columns it inserts (see :meth:`_insert` and
    #: :func:`~._window_reads.keys_in`).
    _ARRAYS: bool = False

    def _tied_cursor(self) -> Cursor | None:
        """The cursor of the events' transaction when this thread runs a step tied to it
        (:mod:`._tied`), else None."""
        return None

    def _tied_write(self) -> AbstractContextManager[Cursor] | None:
        """Where the windows write in a step tied to the events' transaction (:mod:`._tied`):
        that transaction; None: not in one."""
        return None

    def _tied_undone(self) -> None:
        """What a tied step wrote was rolled back (its savepoint, or the events'
        transaction): forget what a part learnt from it (each part adds its own, then calls
        on)."""

    def _insert(
        self,
        cur: Cursor,
        table: str,
        columns: Columns,
        rows: Sequence[Sequence[object]],
        tail: str,
        chunk: int,
    ) -> None:
        """``INSERT INTO table (columns) ... tail`` of ``rows``: a multi-row statement a
        ``chunk`` of them; where the dialect takes arrays (:attr:`_ARRAYS`), one statement
        of one text whatever the rows, each column an array. psycopg splits a statement of
        more than 50 parameters into its placeholders again at each call, in Python, and
        PostgreSQL parses and plans it again (docs/architecture.md, *PostgreSQL's windows'
        statements*). ``rows`` are unique by the conflict target of a ``tail`` that updates
        (PostgreSQL refuses to update one row twice in a statement)."""
        if not rows:
            return
        names = ", ".join(name for name, _ in columns)
        if not self._ARRAYS:
            insert_rows(cur, f"INSERT INTO {table} ({names})", rows, tail, chunk)
            return
        source, params = unnest([kind for _, kind in columns], rows)
        cur.execute(f"INSERT INTO {table} ({names}) SELECT * FROM {source}{tail}", params)

    def _delete_chunks(
        self,
        sql: str,
        params: Sequence[object],
        chunk: int,
        each: Callable[[int], None] | None = None,
    ) -> int:
        """Run ``sql``, a DELETE of at most ``chunk`` rows (its last parameter, added here to
        ``params``), a transaction at a time (ingest writes in between) until one deletes
        fewer; how many rows in all. ``each`` is told every transaction's count before its
        commit, under the write lock."""
        total = 0
        while True:
            with self._write() as cur:
                cur.execute(sql, (*params, chunk))
                done = max(int(cur.rowcount), 0)
                if each is not None:
                    each(done)
            total += done
            if done < chunk:
                return total

    def now(self) -> datetime:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _read_each(self, reads: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """The rows of each statement, in order, read on one connection (never from inside a
        write transaction: SQLite reads them on the writer's, under its lock)."""
        return [row for sql, params in reads for row in self._read(sql, params)]

    def _fence(self, cur: Cursor) -> None:
        """Called in a transaction before it inserts events or alerts: see
        :meth:`~._export.ExportQueries.committed_marks` (nothing to do where transactions
        commit in the order of their seqs, as SQLite's one writer does)."""
