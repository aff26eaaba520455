"""The alerts of playbooks in storage: stored with their blocks, in the transaction of the
windows that fired them (:meth:`~._playbooks.PlaybookQueries.update_windows`), and read."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ._block_cap import CapTurn
from ._blocks import BlockQueries, release_quiet
from ._entity_rows import BlockRow, block_from_row
from ._parts import placeholders
from .model import Alert, NewAlert, Replacement, TooManyBlocks, from_us, to_us

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = [
    "ALERT_COLUMNS",
    "AlertQueries",
    "AlertRow",
    "alert_from_row",
    "refused",
    "replacing",
]

#: Alerts a statement (14 parameters each).
ALERT_CHUNK: Final = 50
#: The seqs an alert keeps of the events behind it (the newest).
SEQS_KEPT: Final = 100
ALERT_COLUMNS: Final = (
    "id, playbook, group_by, group_key, total, first_at, last_at, first_seq, last_seq, "
    "seqs_json, mode, action, block_id, summary, created_at"
)


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


def refused(summary: str) -> str:
    """An alert's summary, saying that its block was not made."""
    return f"{summary} (no block: the most blocks allowed are in force, --max-blocks)"


def replacing(summary: str, lifted: BlockRow) -> str:
    """An alert's summary, saying that its block took the place of ``lifted`` at the cap."""
    return (
        f"{summary} (at --max-blocks: its block replaced #{lifted.id} of {lifted.created_by}, "
        "the oldest playbook block)"
    )


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


class AlertQueries(BlockQueries):
    """Mixed into :class:`~._sql.SqlStorage` (through :class:`~._playbooks.PlaybookQueries`)."""

    def _store_alerts(
        self,
        cur: Cursor,
        alerts: Sequence[NewAlert],
        now: int,
        on_replace: Callable[[Replacement], None] | None = None,
    ) -> list[Alert]:
        """Store ``alerts`` (each block first, then the alerts in one statement a chunk: an
        attack on thousands of accounts crosses a threshold for hundreds of them at once);
        ``on_replace`` is told of each block that took another's place at the cap."""
        block_ids: list[int | None] = []
        turn = CapTurn()  # its placed: the blocks of block_ids
        replaced: dict[int, tuple[BlockRow, tuple[tuple[str, str], ...]]] = {}
        alerts = list(alerts)
        for n, alert in enumerate(alerts):
            block_id = None
            if alert.block is not None:
                try:
                    # Not in place of a block this call placed: its alert, not stored yet,
                    # would leave its key quiet (release_quiet reads the stored ones).
                    placed = self._block_for(cur, alert.block, now, turn)
                except TooManyBlocks:
                    # At the cap (``max_active``), every block in force a person's: the alert
                    # is stored without its block, says so, and its playbook is quiet for the
                    # key ``retry_us`` only (not while the block would have lasted), to ask
                    # again once blocks expire or are lifted.
                    cur.execute(
                        "UPDATE playbook_quiet SET until_at = ? WHERE playbook = ? AND key = ?",
                        [now + alert.retry_us, alert.playbook, alert.group_key],
                    )
                    alerts[n] = replace(alert, summary=refused(alert.summary))
                else:
                    block_id = placed.row.id
                    turn.placed.add(block_id)
                    if placed.replaced is not None:
                        released = release_quiet(cur, placed.replaced.id, now)
                        replaced[n] = (placed.replaced, released)
                        alerts[n] = replace(
                            alert, summary=replacing(alert.summary, placed.replaced)
                        )
            block_ids.append(block_id)
        rows = [
            (
                alert.playbook,
                alert.group_by,
                alert.group_key,
                alert.total,
                to_us(alert.first_at),
                to_us(alert.last_at),
                alert.first_seq,
                alert.last_seq,
                json.dumps(list(alert.seqs[-SEQS_KEPT:])),
                alert.mode,
                alert.action,
                block_id,
                alert.summary,
                now,
            )
            for alert, block_id in zip(alerts, block_ids, strict=True)
        ]
        ids: list[int] = []
        if rows:
            self._fence(cur)
        for i in range(0, len(rows), ALERT_CHUNK):
            part = rows[i : i + ALERT_CHUNK]
            found = cur.execute(
                "INSERT INTO alerts (playbook, group_by, group_key, total, first_at, last_at, "
                "first_seq, last_seq, seqs_json, mode, action, block_id, summary, created_at) "
                f"VALUES {placeholders(len(part), 14)} RETURNING id",
                [v for row in part for v in row],
            ).fetchall()
            # Ids are given in the order of the rows; RETURNING's own order is unspecified.
            ids.extend(sorted(int(id_) for (id_,) in found))
        created = from_us(now)
        if on_replace is not None:
            for n, (lifted, released) in replaced.items():
                by = block_ids[n]
                assert by is not None
                on_replace(Replacement(block_from_row(lifted), by, ids[n], released))
        return [
            replace(alert.stored(id_, block_id, created), seqs=alert.seqs[-SEQS_KEPT:])
            for alert, block_id, id_ in zip(alerts, block_ids, ids, strict=True)
        ]

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
