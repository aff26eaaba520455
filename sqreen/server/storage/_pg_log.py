"""PostgreSQL's log of what each windows' write added, read by snapshot, so that a collector
counts in SQL only the keys that may have reached a threshold.

Every transaction that stores hits (the events' own, in a step tied to it, or one of its
own) adds a row to ``window_writes``: the hits it added per key (:func:`~._window_reads.
adds_text`), under its transaction id (``pg_current_xact_id()``). After its commit, a
collector reads, in one statement, the rows that statement sees and that its previous read
did not (``pg_visible_in_snapshot`` of that read's ``pg_current_snapshot()``): every row
committed in between, once, in whatever order transactions committed (ids are not in
commit order; snapshots are). What the other collectors added is then known by key
(:meth:`~..playbooks._bounds.Bounds.others`), and what the process remembers of the
windows' counts still bounds them from above: a key far below every threshold is not
counted in SQL. Whichever collector commits last reads every row committed before it, as
it counted every hit before: a threshold crossed by two at once is still seen.

When a read cannot tell all (this process's first, another owner's, more rows than
LOG_CATCH_UP, a row it cannot read, or a row purged that the previous read may not have
seen: the purge keeps the highest id it deleted in ``counters``), the windows are not
fresh, and the process forgets what it remembered, as SQLite's log does
(:meth:`~._playbooks.PlaybookQueries.update_windows`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

from ._after_commit import AfterCommit
from ._window_reads import AddsTold, HorizonTold, WindowKey, adds_of, adds_text
from .model import to_us

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["HITS", "PURGED", "WritesLog"]

#: PostgreSQL's hits' table (``window_hits`` before the log: schema 19).
HITS: Final = "window_hits_logged"

#: Rows read at most a batch; with more, the windows are counted again in SQL.
LOG_CATCH_UP: Final = 256
#: The name, in ``counters``, of the highest id the purge deleted.
PURGED: Final = "window_writes_purged"

_FIRST: Final = (
    f"SELECT pg_current_snapshot()::text, (SELECT max(ts) FROM {HITS}), "
    f"(SELECT value FROM counters WHERE name = '{PURGED}'), NULL::int8, NULL::text"
)
# The rows this statement sees that the snapshot given did not: committed since.
_SINCE: Final = (
    f"SELECT s.snap::text, (SELECT max(ts) FROM {HITS}), "
    f"(SELECT value FROM counters WHERE name = '{PURGED}'), w.id, w.counts "
    "FROM (SELECT pg_current_snapshot() AS snap) AS s LEFT JOIN LATERAL ("
    " SELECT id, counts FROM window_writes"
    " WHERE id >= pg_snapshot_xmin(?::text::pg_snapshot)::text::int8"
    " AND NOT pg_visible_in_snapshot(id::text::xid8, ?::text::pg_snapshot)"
    # (No scan when a purge says the read cannot tell all anyway: a transaction left open
    # holds every snapshot's xmin back, and the range would grow with it.)
    f" AND coalesce((SELECT value FROM counters WHERE name = '{PURGED}'), -1)"
    " < pg_snapshot_xmin(?::text::pg_snapshot)::text::int8"
    " ORDER BY id LIMIT ?) AS w ON true"
)
_REPAIR: Final = (
    "DELETE FROM window_writes WHERE id >= pg_snapshot_xmax(pg_current_snapshot())::text::int8",
    f"DELETE FROM counters WHERE name = '{PURGED}' "
    "AND value >= pg_snapshot_xmax(pg_current_snapshot())::text::int8",
)


class _Read(NamedTuple):
    """A row of a read of the log: the statement's snapshot, the newest hit's time, the
    purge's mark, and a row of the log (or none)."""

    snapshot: str
    newest: int | None
    purged: int | None
    id: int | None
    counts: str | None


class _Seen(NamedTuple):
    """A read of the log: its snapshot (``pg_current_snapshot()`` as text), for whom."""

    snapshot: str
    owner: object


class WritesLog(AfterCommit):
    """Mixed into :class:`~.postgres.PostgresStorage`: the rows of ``window_writes``."""

    #: The snapshot of this process's last read of the log that the windows' count used,
    #: and for whom it read.
    _log_read: _Seen | None = None
    #: The snapshot of the read in progress, until its count is done (:meth:`_adds_used`).
    _log_reading: _Seen | None = None
    #: The id of this process's latest row, until the next read: the batch whose hits the
    #: runner adds itself after that read (:meth:`~..playbooks._bounds.Bounds.advance`).
    #: Only that one is not told: a batch of this process's whose count never ran (its
    #: runner failed after the commit) is told as another's would be.
    _log_pending: int | None = None

    def _repair_log(self) -> None:
        """At start: delete the rows and the purge mark no transaction of this cluster can
        have written (ids past the next one), which a restore from another cluster brings:
        the mark would make every read forget, and the rows take the ids of transactions to
        come. (Nothing on a schema without the log: an older one, migrated no further.)"""
        with self._write() as cur:
            if cur.execute("SELECT to_regclass('window_writes')").fetchone() != (None,):
                for sql in _REPAIR:
                    cur.execute(sql)

    def _log_adds(
        self,
        cur: Cursor,
        hits: Sequence[tuple[str, str, int, int, str | None]],
        added: Mapping[WindowKey, int] | None,
    ) -> None:
        """In a transaction that stores ``hits``: its row, what it adds per key (``added``,
        when the caller counted them; one row a transaction: its id is the
        transaction's)."""
        # Whatever row an earlier batch left here was not counted by this process (its
        # count never ran): told as another's, whether or not this batch writes one.
        self._log_pending = None
        if added is None:
            added = Counter((stream, key) for stream, key, *_ in hits)
        if not added:
            return
        (row,) = cur.execute(
            "INSERT INTO window_writes (id, at, counts) "
            "VALUES (pg_current_xact_id()::text::int8, ?, ?) RETURNING id",
            (to_us(self.now()), adds_text(added)),
        ).fetchone()
        self._log_pending = int(row)

    def _read_adds(
        self,
        cur: Cursor,
        owner: object,
        others: AddsTold | None,
        horizon: HorizonTold | None,
    ) -> bool:
        """After this process's hits are committed: read what the rows committed since its
        previous read for ``owner`` added (but its latest, this batch's), tell ``others``
        (when all is known) and ``horizon`` (the newest hit stored, in the same
        statement); whether the windows are fresh (all that was added since is known by
        key). The read counts as done once :meth:`_adds_used` says so: until then, a
        failure (this batch's count, or this read) makes the next read start afresh."""
        last, pending = self._log_read, self._log_pending
        self._log_read = self._log_reading = self._log_pending = None
        mine = last is not None and owner is not None and last.owner is owner
        if mine and last is not None:
            found = cur.execute(_SINCE, (*[last.snapshot] * 3, LOG_CATCH_UP + 1)).fetchall()
        else:
            found = cur.execute(_FIRST).fetchall()
        read = [_Read._make(values) for values in found]
        snapshot, newest, purged = read[0].snapshot, read[0].newest, read[0].purged
        fresh = mine and last is not None and len(read) <= LOG_CATCH_UP
        if fresh and last is not None and purged is not None:
            # A row the previous read may not have seen (its transaction still running, or
            # not begun, then) is gone: not all is known.
            fresh = int(purged) < int(last.snapshot.split(":", 1)[0])
        told: dict[WindowKey, int] | None = {}
        if fresh:
            told = adds_of(r.counts or "" for r in read if r.id is not None and r.id != pending)
            # (Another's rows, and no one to tell them to: not all is known.)
            fresh = told is not None and (not told or others is not None)
        if horizon is not None:
            horizon(None if newest is None else int(newest))
        if fresh and told and others is not None:
            others(told)
        if owner is not None:
            self._log_reading = _Seen(snapshot, owner)
        return fresh

    def _adds_used(self) -> None:
        """The windows were counted on what :meth:`_read_adds` read: the next read goes on
        from there."""
        self._log_read, self._log_reading = self._log_reading, None
