"""Blocks and the versioned action set: the SQL both back ends share.

One piece of code places a block, whoever asks (:meth:`BlockQueries.place_block` for the
block service, the CLI, the API and the explorer; a playbook's alert in the same transaction
as its windows): a block on a network or a user that an active block already covers extends
that one (when asked to last longer) rather than adding a second, and says which it did.
Every change bumps the action set's version in its own transaction.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ._parts import SqlPart
from ._queries import id_list
from ._rows import BLOCK_COLUMNS, BlockRow, block_from_row
from .model import (
    ActionSet,
    Block,
    BlockOutcome,
    BlockSpec,
    BlockType,
    PlacedBlock,
    to_us,
)

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["BlockQueries"]


def _user(user_json: str | None) -> Any:
    return None if user_json is None else json.loads(user_json)


class BlockQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage` (and the base of the playbooks' part, whose
    alerts place their blocks with :meth:`_block_for`)."""

    def _read_as_blocks(self, sql: str, params: list[Any] | None = None) -> list[Block]:
        return [block_from_row(BlockRow._make(r)) for r in self._read(sql, params or [])]

    @staticmethod
    def _bump_actions(cur: Cursor) -> None:
        cur.execute("UPDATE counters SET value = value + 1 WHERE name = 'actions'")

    def _block_for(self, cur: Cursor, spec: BlockSpec, now: int) -> tuple[BlockRow, BlockOutcome]:
        """Place ``spec`` inside the write transaction of ``cur``: a new block, or the active
        block that already covers the same network or user, its expiry extended when
        ``spec`` lasts longer (its reason and author kept)."""
        expires = None if spec.duration is None else now + int(spec.duration.total_seconds() * 1e6)
        active = cur.execute(
            f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE type = ? "
            "AND lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?) "
            + ("AND ip = ? " if spec.type == "block_ip" else "")
            + "ORDER BY id",
            (spec.type, now, spec.ip) if spec.type == "block_ip" else (spec.type, now),
        ).fetchall()
        for found in map(BlockRow._make, active):
            if spec.type == "block_user" and _user(found.user_json) != spec.user:
                continue  # (an IP block was found by its network already)
            current = found.expires_at
            if current is None or (expires is not None and expires <= current):
                return found, "kept"
            row = cur.execute(
                f"UPDATE blocks SET expires_at = ? WHERE id = ? RETURNING {BLOCK_COLUMNS}",
                (expires, found.id),
            ).fetchone()
            self._bump_actions(cur)
            return BlockRow._make(row), "extended"
        row = cur.execute(
            "INSERT INTO blocks (type, user_json, ip, reason, created_at, expires_at, "
            f"created_by) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {BLOCK_COLUMNS}",
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
        return BlockRow._make(row), "created"

    def place_block(self, spec: BlockSpec) -> PlacedBlock:
        with self._write() as cur:
            row, outcome = self._block_for(cur, spec, to_us(self.now()))
        return PlacedBlock(block_from_row(row), outcome)

    def create_block(
        self,
        type: BlockType,
        *,
        user: dict[str, str] | None = None,
        ip: str | None = None,
        duration: timedelta | None = None,
        reason: str = "",
        created_by: str = "",
    ) -> Block:
        spec = BlockSpec(type, user, ip, duration, reason, created_by)
        return self.place_block(spec).block

    def lift_block(self, block_id: int, lifted_by: str = "") -> Block | None:
        now = to_us(self.now())
        with self._write() as cur:
            row = cur.execute(
                "UPDATE blocks SET lifted_at = ?, lifted_by = ? WHERE id = ? "
                "AND lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?) "
                f"RETURNING {BLOCK_COLUMNS}",
                (now, lifted_by, block_id, now),
            ).fetchone()
            if row is not None:
                self._bump_actions(cur)
        return None if row is None else block_from_row(BlockRow._make(row))

    def list_blocks(self, *, include_inactive: bool = False) -> list[Block]:
        if include_inactive:
            return self._read_as_blocks(f"SELECT {BLOCK_COLUMNS} FROM blocks ORDER BY id DESC")
        return self._read_as_blocks(
            f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE lifted_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY id DESC",
            [to_us(self.now())],
        )

    def blocks_by_id(self, ids: Collection[int]) -> dict[int, Block]:
        """The blocks of these ids (at most :data:`~._queries.MAX_IDS`; active or not),
        by id."""
        wanted, marks = id_list(ids, "block ids")
        if not wanted:
            return {}
        found = self._read_as_blocks(
            f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE id IN ({marks})", wanted
        )
        return {b.id: b for b in found}

    def action_version(self) -> int:
        ((value,),) = self._read("SELECT value FROM counters WHERE name = 'actions'")
        return int(value)

    def action_set(self) -> ActionSet:
        now = self.now()
        # One statement, so the version and the items come from the same snapshot.
        rows = self._read(
            f"SELECT c.value, {', '.join('b.' + c for c in BLOCK_COLUMNS.split(', '))} "
            "FROM counters c LEFT JOIN blocks b ON b.lifted_at IS NULL "
            "AND (b.expires_at IS NULL OR b.expires_at > ?) WHERE c.name = 'actions' "
            "ORDER BY b.id",
            [to_us(now)],
        )
        version = next((int(value) for value, *_ in rows), 0)
        found = (BlockRow._make(columns) for _, *columns in rows)
        # (With no block active, the LEFT JOIN's one row has NULL block columns.)
        blocks = tuple(block_from_row(b) for b in found if b.id is not None)
        return ActionSet(version=version, blocks=blocks, now=now)
