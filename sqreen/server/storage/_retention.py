"""Retention beyond the events: what else holds people's identifiers, deleted by the same
``--retention-days`` (:meth:`RetentionQueries.purge_records`).

- ``alerts`` made before the cutoff (their ``group_key`` is a user's identifiers or an
  address, their summary quotes them), unless their block is still in force;
- ``blocks`` that ended (lifted, or expired) before the cutoff: never one in force. A block's
  row is also how a diff of the action set tells an SDK (or another collector process) that
  it was lifted, so the highest ``changed_in`` deleted is kept as the *floor* of diffs
  (``counters``' ``actions_floor``): :meth:`~._blocks.BlockQueries.action_changes` from a
  version below it says it is not complete, and the caller takes the whole set;
- ``users``' traits last set (by the latest ``sq.identify`` record's time) before the cutoff;
- ``export_cursors`` of a destination none of whose rows (its lease, renewed every few
  seconds while a collector sends to it, and its two cursors) changed since the cutoff: a
  destination gone. Every row at or below such a cursor was stored before its last move, so
  before the cutoff, and is gone too: a destination configured again starts from the oldest
  row stored, which is where it would have resumed (but for alerts kept for their blocks,
  sent again: the forwarder is at least once anyway).
"""

from __future__ import annotations

from datetime import timedelta

from ._blocks import raise_actions_floor
from ._parts import SqlPart
from .model import Purged, to_us

__all__ = ["RetentionQueries"]

_ACTIVE = "lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"


class RetentionQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    def purge_records(self, days: float) -> Purged:
        """Delete what :mod:`this module <._retention>` lists, older than ``days``, in one
        transaction (small tables: alerts are a few an attack)."""
        now = to_us(self.now())
        before_us = to_us(self.now() - timedelta(days=days))
        with self._write() as cur:
            cur.execute(
                "DELETE FROM alerts WHERE created_at < ? AND (block_id IS NULL OR block_id "
                f"NOT IN (SELECT id FROM blocks WHERE {_ACTIVE}))",
                (before_us, now),
            )
            alerts = cur.rowcount
            ended = cur.execute(
                "SELECT id, changed_in FROM blocks WHERE (lifted_at IS NOT NULL AND lifted_at < ?)"
                " OR (expires_at IS NOT NULL AND expires_at < ?)",
                (before_us, before_us),
            ).fetchall()
            ids = [block_id for block_id, _ in ended]
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ", ".join("?" * len(chunk))
                # An alert made after the cutoff, of a block that had ended: none in practice
                # (an alert names the block it placed or extended), but never a dangling id.
                cur.execute(f"UPDATE alerts SET block_id = NULL WHERE block_id IN ({marks})", chunk)
                cur.execute(f"DELETE FROM blocks WHERE id IN ({marks})", chunk)
            if ended:
                raise_actions_floor(cur, max(changed for _, changed in ended))
            cur.execute("DELETE FROM users WHERE last_seen < ?", (before_us,))
            users = cur.rowcount
            newest: dict[str, int] = {}
            rows = cur.execute("SELECT name, updated_at FROM export_cursors").fetchall()
            for name, updated_at in rows:
                destination = name.partition(" ")[2]
                newest[destination] = max(newest.get(destination, updated_at), updated_at)
            gone = [name for name, _ in rows if newest[name.partition(" ")[2]] < before_us]
            for name in gone:
                cur.execute("DELETE FROM export_cursors WHERE name = ?", (name,))
        return Purged(alerts, len(ids), users, len(gone))
