"""``--max-blocks``: how many blocks are in force, and which playbook block a new one replaces
at the cap, for the blocks one transaction places (:class:`CapTurn`).

A playbook's new block at the cap takes the place of the playbook block in force created
longest ago (see :mod:`._blocks`). Finding it sorts the blocks in force by creation (about
5 ms at 10 000 blocks in SQLite, the default cap), and counting them reads two ranges of an
index (0.4 ms). An ingest key that floods the cap with made-up addresses made each new block
pay both, twice (a check before the action set's version is taken, then again under it): a
playbooks' transaction placing 100 blocks spent about a second on them. Now a transaction
counts and sorts once, once it holds the version: on PostgreSQL the counter's row lock then
keeps every other writer from placing or lifting a block until it commits, and SQLite has
one writer, so what it read stays true but for its own changes, which it follows. The check
before the version asks only whether some playbook block could be replaced: the first rows
of an index, unsorted.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

from ._entity_rows import BlockRow
from .model import PLAYBOOK_AUTHOR, BlockSpec, by_playbook

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["B_COLUMNS", "CapTurn"]

#: A block row's columns, on ``blocks`` as ``b``.
B_COLUMNS: Final = ", ".join("b." + c for c in BlockRow._fields)
_PLAYBOOK_IN_FORCE: Final = (
    "FROM blocks b WHERE b.lifted_at IS NULL AND b.expires_at > ? "
    f"AND substr(b.created_by, 1, {len(PLAYBOOK_AUTHOR)}) = '{PLAYBOOK_AUTHOR}'"
)
#: The playbook blocks in force at ``?`` created longest ago, at most ``?`` (a playbook's
#: block always has a duration). Oldest first, not expiring soonest: a flood through the
#: longest-lasting playbook would otherwise choose its victim (a fresh shorter block,
#: replaced by the very next flood block). The ``blocks_active`` index from that time gives
#: the blocks in force (at most the cap's worth), sorted.
_OLDEST_PLAYBOOK: Final = (
    f"SELECT {B_COLUMNS} {_PLAYBOOK_IN_FORCE} ORDER BY b.created_at, b.id LIMIT ?"
)
#: Some playbook blocks in force at ``?``, at most ``?``, in no order: whether one can go.
_SOME_PLAYBOOK: Final = f"SELECT b.id {_PLAYBOOK_IN_FORCE} LIMIT ?"
#: How many blocks are in force at ``?``, by two searches of the ``blocks_active`` index
#: (one ``count(*)`` with OR read every block never lifted, expired ones included).
COUNT_IN_FORCE: Final = (
    "SELECT (SELECT count(*) FROM blocks WHERE lifted_at IS NULL AND expires_at IS NULL) + "
    "(SELECT count(*) FROM blocks WHERE lifted_at IS NULL AND expires_at > ?)"
)
#: Candidates read at once, past those this transaction placed.
READ_AHEAD: Final = 64


class CapTurn:
    """What one transaction knows of the cap while it places blocks: the blocks it placed
    (``placed``: never replaced, their alerts not stored yet would leave their keys quiet);
    once it holds the action set's version, how many blocks are in force and the oldest
    playbook blocks, read once and then followed."""

    __slots__ = ("_active", "_oldest", "placed")

    def __init__(self) -> None:
        self.placed: set[int] = set()
        self._active: int | None = None  # in force, once read under the version
        self._oldest: deque[BlockRow] | None = None  # candidates, oldest first

    def full(self, cur: Cursor, now: int, max_active: int | None, locked: bool) -> bool:
        """Whether ``max_active`` blocks (or more) are in force at ``now``; ``locked``: the
        transaction holds the action set's version (the count is then kept)."""
        if max_active is None:
            return False
        active = self._active
        if active is None:
            (active,) = cur.execute(COUNT_IN_FORCE, (now,)).fetchone()
            if locked:
                self._active = int(active)
        return int(active) >= max_active

    def could_replace(self, cur: Cursor, spec: BlockSpec, now: int) -> bool:
        """Before the version: whether a new block of ``spec`` could replace one at the cap
        (a playbook's, and some playbook block in force not placed here)."""
        if not by_playbook(spec.created_by):
            return False
        if self._oldest:
            return True
        rows = cur.execute(_SOME_PLAYBOOK, (now, len(self.placed) + 1)).fetchall()
        return any(block_id not in self.placed for (block_id,) in rows)

    def take(self, cur: Cursor, spec: BlockSpec, now: int) -> BlockRow | None:
        """Under the version: the block a new block of ``spec`` replaces at the cap (the
        playbook block in force created longest ago, not placed here), taken; for a
        person's, none."""
        if not by_playbook(spec.created_by):
            return None
        oldest = self._oldest
        while oldest and oldest[0].id in self.placed:
            oldest.popleft()
        if not oldest:
            rows = cur.execute(_OLDEST_PLAYBOOK, (now, len(self.placed) + READ_AHEAD)).fetchall()
            oldest = self._oldest = deque(
                b for b in map(BlockRow._make, rows) if b.id not in self.placed
            )
        return oldest.popleft() if oldest else None

    def created(self, replaced: BlockRow | None) -> None:
        """A block was created under the version (in place of ``replaced``, if any)."""
        if self._active is not None and replaced is None:
            self._active += 1
