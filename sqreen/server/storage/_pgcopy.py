"""PostgreSQL's event insert: binary COPY, a staging table, one INSERT ... SELECT.

The shared insert (``_sql.py``) sends multi-row ``INSERT ... VALUES`` statements of 16
parameters a row: psycopg adapts each parameter, and splits a statement of more than 50
parameters into its placeholders again at every call, in Python (about 210 µs of CPU an
event in all); PostgreSQL parses and plans a statement of 8 000 parameters a batch. Here a
batch's rows are streamed with binary ``COPY`` (psycopg formats each row in C; PostgreSQL
reads binary values without parsing text) into a temporary staging table, then moved into
``events`` by one statement:

    INSERT INTO events (...) SELECT ... FROM staging ORDER BY id
    ON CONFLICT (id, key_id) DO NOTHING RETURNING seq, id

which keeps what made an event stored exactly once: an id already stored under its key is
skipped, an id being inserted by another transaction (a retried batch on another worker) is
waited for and then skipped, and rows are inserted in id order so that two transactions
inserting overlapping batches take their locks in one order and cannot deadlock. COPY cannot
say ``ON CONFLICT``, hence the staging table; the side tables (``event_props``,
``event_users``) take fresh seqs only, so they are copied into directly (text format: see
:func:`side_text`).

The staging table is per connection (``TEMPORARY``: never logged, never seen by another
session), made once per connection (again after a transaction that failed, which may have
been the one that made it) and emptied at each commit (``ON COMMIT DELETE ROWS``,
a truncate: deleted rows would pile up, since autovacuum never visits temporary tables).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from ._rows import EVENT_COLUMNS, EventRecord

if TYPE_CHECKING:
    import psycopg

__all__ = ["EventCopier", "hits_text", "side_text"]

STAGING: Final = "sqreen_events_in"
_COLUMNS: Final = ", ".join(EVENT_COLUMNS)
#: The PostgreSQL type of each of :data:`~._rows.EVENT_COLUMNS` (binary COPY needs them).
_TYPES: Final = tuple(
    "int8" if c in ("ts", "received_at", "key_id") else "text" for c in EVENT_COLUMNS
)
_CREATE_STAGING: Final = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} ("
    + ", ".join(f"{c} {t}" for c, t in zip(EVENT_COLUMNS, _TYPES, strict=True))
    + ") ON COMMIT DELETE ROWS"
)


class EventCopier:
    """Inserts events and their side rows through COPY (see the module's docstring)."""

    def __init__(self) -> None:
        # Connections whose session has the staging table (a new connection has none).
        self._staged: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

    def insert_events(
        self, cur: psycopg.Cursor[Any], rows: Sequence[EventRecord]
    ) -> dict[str, int]:
        """Insert ``rows`` (of one key, ids unique among them) but those whose id is stored
        under that key already; return the seq of each row inserted, by id."""
        conn = cur.connection
        if conn not in self._staged:
            cur.execute(_CREATE_STAGING)
            self._staged.add(conn)
        with cur.copy(f"COPY {STAGING} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_TYPES)
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM {STAGING} ORDER BY id "
            "ON CONFLICT (id, key_id) DO NOTHING RETURNING seq, id"
        )
        return {id_: seq for seq, id_ in cur.fetchall()}

    @staticmethod
    def clear(cur: psycopg.Cursor[Any]) -> None:
        """Empty the staging table before the next batch of the same transaction."""
        cur.execute(f"DELETE FROM {STAGING}")

    def forget(self, conn: psycopg.Connection[Any]) -> None:
        """``conn``'s transaction failed: the staging table, if it made it, is gone."""
        self._staged.discard(conn)

    @staticmethod
    def insert_side(cur: psycopg.Cursor[Any], table: str, flat: list[Any]) -> None:
        """Copy flattened (seq, key, value) rows into ``event_props`` or ``event_users``."""
        with cur.copy(f"COPY {table} (seq, key, value) FROM STDIN") as copy:
            copy.write(side_text(flat))


def side_text(flat: list[Any]) -> str:
    """Flattened (seq, key, value) rows in COPY's text format.

    Built as one string rather than a ``write_row`` a row: 6.4 against 9.8 µs of CPU an
    event for the two side tables (``--mix attack``, in one process, alternated). Keys and
    values never hold NUL (:func:`~._rows.clean` replaces it), so NUL joins them all for one
    check, and one escape of COPY's four special characters when any is there.
    """
    count = len(flat) // 3
    texts = _escaped(flat[1::3] + flat[2::3])
    rows = zip(flat[0::3], texts[:count], texts[count:], strict=True)
    return "".join([f"{seq}\t{key}\t{value}\n" for seq, key, value in rows])


def hits_text(hits: Sequence[tuple[str, str, int, int, str | None]]) -> str | None:
    """``window_hits`` rows (stream, key, ts, seq, value) in COPY's text format, built as
    :func:`side_text` builds its rows (a value None is ``\\N``); None when a key or a value
    holds NUL, which COPY's text cannot carry (the caller inserts those otherwise)."""
    count = len(hits)
    texts = [hit[1] for hit in hits] + ["" if hit[4] is None else hit[4] for hit in hits]
    joined = "\x00".join(texts)
    if joined.count("\x00") != len(texts) - 1:
        return None
    texts = _escaped(texts, joined)
    null = "\\N"
    return "".join(
        [
            f"{stream}\t{key}\t{ts}\t{seq}\t{null if value is None else text}\n"
            for (stream, _, ts, seq, value), key, text in zip(
                hits, texts[:count], texts[count:], strict=True
            )
        ]
    )


def _escaped(texts: list[str], joined: str | None = None) -> list[str]:
    """``texts`` (none holding NUL; ``joined``: NUL-joined, when the caller has it) with
    COPY's four special characters escaped."""
    if joined is None:
        joined = "\x00".join(texts)
    if "\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined:
        return joined.translate(_ESCAPES).split("\x00")
    return texts


_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
