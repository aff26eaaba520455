"""The playbooks' share of storage: windows under row locks, alerts, and their blocks.

:meth:`PlaybookQueries.update_windows` is the one place where playbooks write. In one
transaction it locks the window rows of the keys a batch touched (SQLite: the transaction is
the only writer; PostgreSQL: the rows are created if missing, then locked in key order, so
two processes take turns on a key and never deadlock), hands their states to the engine, and
writes back what it decided: the new states, the alerts, and the blocks. A block asked for a
network or a user that an active block already covers extends that one rather than adding a
second.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ._parts import SqlPart
from .model import Alert, BlockSpec, NewAlert, WindowWrite, from_us, to_us

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["ALERT_COLUMNS", "AlertRow", "PlaybookQueries"]

#: Keys a statement, when reading or writing windows (parameters stay under both limits).
WINDOW_CHUNK: Final = 400
ALERT_COLUMNS: Final = (
    "id, playbook, group_by, group_key, total, first_at, last_at, first_seq, last_seq, "
    "seqs_json, mode, action, block_id, summary, created_at"
)

WindowKey = tuple[str, str]


class AlertRow(NamedTuple):
    id: int
    playbook: str
    group_by: str
    group_key: str
    total: int
    first_at: int
    last_at: int
    first_seq: int
    last_seq: int
    seqs_json: str
    mode: str
    action: str
    block_id: int | None
    summary: str
    created_at: int


def _user(user_json: str | None) -> Any:
    return None if user_json is None else json.loads(user_json)


def alert_from_row(row: AlertRow) -> Alert:
    return Alert(
        id=row.id,
        playbook=row.playbook,
        group_by=row.group_by,
        group_key=row.group_key,
        total=row.total,
        first_at=from_us(row.first_at),
        last_at=from_us(row.last_at),
        first_seq=row.first_seq,
        last_seq=row.last_seq,
        seqs=tuple(json.loads(row.seqs_json)),
        mode=row.mode,
        action=row.action,
        block_id=row.block_id,
        summary=row.summary,
        created_at=from_us(row.created_at),
    )


class PlaybookQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage`."""

    @staticmethod
    def _bump_actions(cur: Cursor) -> None:
        raise NotImplementedError

    def _lock_windows(self, cur: Cursor, keys: Sequence[WindowKey]) -> None:
        """Hold the rows of ``keys`` for the transaction (a dialect's business: nothing to do
        where the transaction is the only writer, as in SQLite)."""

    def update_windows(
        self,
        keys: Sequence[WindowKey],
        apply: Callable[[dict[WindowKey, str]], WindowWrite],
    ) -> list[Alert]:
        """Run ``apply`` on the current states of ``keys`` (JSON text; absent when new) with
        their rows held, and store what it returns, in one transaction."""
        keys = sorted(set(keys))
        if not keys:
            return []
        with self._write() as cur:
            self._lock_windows(cur, keys)
            states: dict[WindowKey, str] = {}
            for i in range(0, len(keys), WINDOW_CHUNK):
                chunk = keys[i : i + WINDOW_CHUNK]
                rows = cur.execute(
                    "SELECT stream, key, state FROM playbook_windows WHERE "
                    + " OR ".join(["(stream = ? AND key = ?)"] * len(chunk)),
                    [v for k in chunk for v in k],
                ).fetchall()
                states.update(((stream, key), state) for stream, key, state in rows)
            write = apply(states)
            now = to_us(self.now())
            items = sorted(write.states.items())
            for i in range(0, len(items), WINDOW_CHUNK):
                rows = items[i : i + WINDOW_CHUNK]
                cur.execute(
                    "INSERT INTO playbook_windows (stream, key, state, updated_at) VALUES "
                    + ", ".join(["(?, ?, ?, ?)"] * len(rows))
                    + " ON CONFLICT (stream, key) DO UPDATE SET state = excluded.state, "
                    "updated_at = excluded.updated_at",
                    [v for (stream, key), state in rows for v in (stream, key, state, now)],
                )
            return [self._store_alert(cur, alert, now) for alert in write.alerts]

    def _store_alert(self, cur: Cursor, alert: NewAlert, now: int) -> Alert:
        block_id = None if alert.block is None else self._block_for(cur, alert.block, now)
        (row,) = cur.execute(
            "INSERT INTO alerts (playbook, group_by, group_key, total, first_at, last_at, "
            "first_seq, last_seq, seqs_json, mode, action, block_id, summary, created_at) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {ALERT_COLUMNS}",
            (
                alert.playbook,
                alert.group_by,
                alert.group_key,
                alert.total,
                to_us(alert.first_at),
                to_us(alert.last_at),
                alert.first_seq,
                alert.last_seq,
                json.dumps(list(alert.seqs[-100:])),
                alert.mode,
                alert.action,
                block_id,
                alert.summary,
                now,
            ),
        ).fetchall()
        return alert_from_row(AlertRow._make(row))

    def _block_for(self, cur: Cursor, spec: BlockSpec, now: int) -> int:
        """The id of a new block for ``spec``, or of the active block that already covers
        the same network or user (its expiry extended when ``spec`` lasts longer)."""
        expires = None if spec.duration is None else now + int(spec.duration.total_seconds() * 1e6)
        active = cur.execute(
            "SELECT id, ip, user_json, expires_at FROM blocks WHERE type = ? "
            "AND lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?) "
            + ("AND ip = ? " if spec.type == "block_ip" else "")
            + "ORDER BY id",
            (spec.type, now, spec.ip) if spec.type == "block_ip" else (spec.type, now),
        ).fetchall()
        for block_id, ip, user_json, current in active:
            same = ip == spec.ip if spec.type == "block_ip" else _user(user_json) == spec.user
            if not same:
                continue
            if current is not None and (expires is None or expires > current):
                cur.execute("UPDATE blocks SET expires_at = ? WHERE id = ?", (expires, block_id))
                self._bump_actions(cur)
            return int(block_id)
        (new_id,) = cur.execute(
            "INSERT INTO blocks (type, user_json, ip, reason, created_at, expires_at, "
            "created_by) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                spec.type,
                None if spec.user is None else json.dumps(spec.user),
                spec.ip,
                spec.reason,
                now,
                expires,
                spec.created_by,
            ),
        ).fetchone()
        self._bump_actions(cur)
        return int(new_id)

    def list_alerts(
        self,
        *,
        playbook: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[Alert]:
        """Alerts, newest first; page with ``before_id``."""
        conds: list[str] = []
        params: list[Any] = []
        if playbook is not None:
            conds.append("playbook = ?")
            params.append(playbook)
        if before_id is not None:
            conds.append("id < ?")
            params.append(before_id)
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        rows = self._read(
            f"SELECT {ALERT_COLUMNS} FROM alerts {where} ORDER BY id DESC LIMIT ?",
            [*params, max(0, min(limit, 1000))],
        )
        return [alert_from_row(AlertRow._make(r)) for r in rows]

    def get_alert(self, alert_id: int) -> Alert | None:
        found = self._read(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?", [alert_id])
        return next((alert_from_row(AlertRow._make(r)) for r in found), None)

    def alert_counts(self) -> dict[str, tuple[int, datetime | None]]:
        """Per playbook: how many alerts, and when the last one was."""
        rows = self._read(
            "SELECT playbook, count(*), max(created_at) FROM alerts GROUP BY playbook"
        )
        return {p: (int(n), None if last is None else from_us(last)) for p, n, last in rows}

    def purge_windows(self, older_than: datetime) -> int:
        """Forget windows untouched since ``older_than`` (longer ago than any window)."""
        with self._write() as cur:
            cur.execute("DELETE FROM playbook_windows WHERE updated_at < ?", (to_us(older_than),))
            return cur.rowcount
