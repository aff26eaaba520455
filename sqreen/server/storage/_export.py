"""What the export forwarder keeps in the database: its cursors and its lease.

``export_cursors`` (migration 12) holds one row a cursor: the last seq (events) or alert id
(alerts) a destination acknowledged, so that a restart resumes after it. The same table holds
the forwarder's lease, a row named ``lease <destination>`` whose ``seq`` is its holder's
token and ``updated_at`` when it last renewed: with ``sqreen serve --workers N`` every
process starts a forwarder, and only the one holding a fresh lease sends. A cursor moves only
in a transaction that finds the lease still held by the caller (a fence: a worker that lost
its lease while a send hung cannot move the cursor back under the new holder).
"""

from __future__ import annotations

from typing import Final

from ._alert_store import ALERT_COLUMNS, AlertRow, alert_from_row
from ._parts import SqlPart
from .model import Alert, to_us

__all__ = ["COMMITTED_MARKS", "ExportQueries"]

_TAKE: Final = (
    "UPDATE export_cursors SET seq = ?, updated_at = ? "
    "WHERE name = ? AND (seq = ? OR updated_at < ?)"
)

COMMITTED_MARKS: Final = (
    "SELECT (SELECT coalesce(max(seq), 0) FROM events), (SELECT coalesce(max(id), 0) FROM alerts)"
)


class ExportQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    def scan_alerts(self, *, after_id: int = 0, limit: int = 1000) -> list[Alert]:
        """Alerts stored after id ``after_id``, oldest first (a walk, page by page)."""
        rows = self._read(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id > ? ORDER BY id LIMIT ?",
            [after_id, max(0, min(limit, 1000))],
        )
        return [alert_from_row(AlertRow._make(r)) for r in rows]

    def committed_marks(self) -> tuple[int, int]:
        """The highest event seq and alert id at or below which every row is committed (or
        never will be): a reader that has seen every row up to them misses none later.

        Here the newest of each: on SQLite one writer at a time commits seqs in order. On
        PostgreSQL a lower seq can commit after a higher one; there every transaction that
        inserts events or alerts holds a shared lock (:meth:`_fence`) and this waits for
        them with the exclusive one before it reads."""
        ((events, alerts),) = self._read(COMMITTED_MARKS)
        return int(events), int(alerts)

    def last_alert_id(self) -> int:
        ((last,),) = self._read("SELECT coalesce(max(id), 0) FROM alerts")
        return int(last)

    def export_cursor(self, name: str) -> int:
        """The cursor's position (0 when it was never moved)."""
        found = self._read("SELECT seq FROM export_cursors WHERE name = ?", [name])
        return next((int(seq) for (seq,) in found), 0)

    def take_export_lease(self, name: str, holder: int, ttl: float) -> bool:
        """Take or renew lease ``name`` for ``holder`` (a random positive token) unless another
        holder renewed it within ``ttl`` seconds; whether ``holder`` holds it now."""
        now = to_us(self.now())
        with self._write() as cur:
            cur.execute(
                "INSERT INTO export_cursors (name, seq, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, holder, now),
            )
            if cur.rowcount == 1:
                return True
            cur.execute(_TAKE, (holder, now, name, holder, now - int(ttl * 1e6)))
            return cur.rowcount == 1

    def release_export_lease(self, name: str, holder: int) -> None:
        """Give the lease up (at a clean stop: the next process need not wait for it)."""
        with self._write() as cur:
            cur.execute(
                "UPDATE export_cursors SET updated_at = 0 WHERE name = ? AND seq = ?",
                (name, holder),
            )

    def move_export_cursor(self, lease: str, holder: int, name: str, seq: int) -> bool:
        """Set cursor ``name`` to ``seq`` if ``holder`` still holds ``lease`` (else False)."""
        now = to_us(self.now())
        with self._write() as cur:
            cur.execute(
                "UPDATE export_cursors SET updated_at = ? WHERE name = ? AND seq = ?",
                (now, lease, holder),
            )
            if cur.rowcount != 1:
                return False
            cur.execute(
                "INSERT INTO export_cursors (name, seq, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, "
                "updated_at = excluded.updated_at",
                (name, seq, now),
            )
            return True
