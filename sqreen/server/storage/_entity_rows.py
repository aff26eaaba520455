"""The rows of blocks, API keys and agents, as named tuples, and the values read from them.

Each ``*_COLUMNS`` is the select list of its named row, so that no row is read by position
(``tests/server/test_named_rows.py``); JSON columns are read by :func:`~._rows.loads`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, NamedTuple

from ._rows import loads, loads_or_none
from .model import Agent, ApiKey, Block, from_us

__all__ = [
    "AGENT_COLUMNS",
    "BLOCK_COLUMNS",
    "KEY_COLUMNS",
    "AgentRow",
    "BlockRow",
    "KeyRow",
    "agent_from_row",
    "block_from_row",
    "key_from_row",
    "opt_time",
]


class BlockRow(NamedTuple):
    """A row of ``blocks``, as :data:`BLOCK_COLUMNS` selects it."""

    id: int
    type: str
    user_json: str | None
    ip: str | None
    reason: str
    created_at: int
    expires_at: int | None
    created_by: str
    lifted_at: int | None
    lifted_by: str | None
    changed_in: int


BLOCK_COLUMNS: Final = ", ".join(BlockRow._fields)


class KeyRow(NamedTuple):
    """A row of ``api_keys``, as :data:`KEY_COLUMNS` selects it (never the token's hash)."""

    id: int
    name: str
    created_at: int
    revoked_at: int | None
    scope: str


KEY_COLUMNS: Final = ", ".join(KeyRow._fields)


class AgentRow(NamedTuple):
    """A row of ``agents``, as :data:`AGENT_COLUMNS` selects it."""

    key_id: int
    app: str
    host: str
    pid: int
    framework: str | None
    sdk_name: str | None
    sdk_version: str | None
    stats_json: str
    first_seen: int
    last_seen: int


AGENT_COLUMNS: Final = ", ".join(AgentRow._fields)


def opt_time(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)


def block_from_row(row: BlockRow) -> Block:
    return Block(
        id=row.id,
        type=row.type,  # type: ignore[arg-type]  # the table's CHECK allows only BlockType
        user=loads_or_none(row.user_json),
        ip=row.ip,
        reason=row.reason,
        created_at=from_us(row.created_at),
        expires_at=opt_time(row.expires_at),
        created_by=row.created_by,
        lifted_at=opt_time(row.lifted_at),
        lifted_by=row.lifted_by,
        changed_in=row.changed_in,
    )


def key_from_row(row: KeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        created_at=from_us(row.created_at),
        revoked_at=opt_time(row.revoked_at),
        scope=row.scope,  # type: ignore[arg-type]  # the table's CHECK allows only KeyScope
    )


def agent_from_row(row: AgentRow) -> Agent:
    return Agent(
        app=row.app,
        host=row.host,
        pid=row.pid,
        framework=row.framework,
        sdk_name=row.sdk_name,
        sdk_version=row.sdk_version,
        stats=loads(row.stats_json),
        first_seen=from_us(row.first_seen),
        last_seen=from_us(row.last_seen),
        key_id=row.key_id,
    )
