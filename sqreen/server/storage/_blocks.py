"""Blocks and the action set: what every SDK enforces, versioned.

Every change to the set (a block made, extended or lifted) bumps the ``actions`` counter
*first* in its transaction, and stamps the row it changes with the new version
(``changed_in``). On PostgreSQL the counter's row lock then queues concurrent changes, so
versions commit in order and a reader that sees version n sees every change up to n; SQLite
has one writer anyway. What changed after version n is the rows with ``changed_in > n``, one
read of an index (:meth:`BlockQueries.action_changes`): the collector keeps the set in memory
and sends an SDK only what changed since the version it holds (``server/action_cache.py``).
Blocks in force are counted under the same lock, so a cap on them holds whatever runs at once.

One piece of code places a block, whoever asks (:meth:`BlockQueries.place_block` for the
block service, the CLI, the API and the explorer; a playbook's alert in the same transaction
as its windows, :meth:`BlockQueries._block_for`): a block on a network or a user that an
active block already covers extends that one (when asked to last longer) rather than adding
a second, and says which it did.

At the cap (``max_active``), a person's new block is refused; a playbook's takes the place of
the playbook block in force created longest ago (lifted, saying by which block), so that
whoever can send events (an ingest key) cannot fill the cap with blocks of made-up addresses
and switch blocking off. A person's block is never replaced: with only those in force, a
playbook's block is refused too. A person asking for a target a playbook's block covers makes
that block theirs (``created_by``), so that it is never replaced either.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ._block_cap import B_COLUMNS, CapTurn
from ._entity_rows import BLOCK_COLUMNS, BlockRow, block_from_row
from ._parts import SqlPart
from ._queries import id_list
from .model import (
    ActionChanges,
    ActionSet,
    Block,
    BlockOutcome,
    BlockSpec,
    BlockType,
    PlacedBlock,
    TooManyBlocks,
    block_target,
    by_playbook,
    to_us,
)

if TYPE_CHECKING:
    from ._sql import Cursor

__all__ = ["BlockQueries", "Placement"]

#: A block in force at a time (the one parameter), on ``blocks`` as ``b``.
_ACTIVE: Final = "b.lifted_at IS NULL AND (b.expires_at IS NULL OR b.expires_at > ?)"
#: The blocks in force at a time (the one parameter), as two searches of the
#: ``blocks_active`` index (its entries with no expiry, then those expiring later): written
#: with OR, SQLite reads the whole index, every block ever made and never lifted.
_IN_FORCE: Final = (
    "SELECT {columns} FROM blocks b WHERE b.lifted_at IS NULL AND b.expires_at IS NULL "
    "UNION ALL SELECT {columns} FROM blocks b WHERE b.lifted_at IS NULL "
    "AND b.expires_at > ?"
)
#: The newest blocks lifted or expired by ``?``, at most ``?``: newest first down the primary
#: key; most blocks ever made have ended, so the walk stops after about that many rows
#: whatever the table holds.
_ENDED: Final = (
    f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE lifted_at IS NOT NULL "
    "OR (expires_at IS NOT NULL AND expires_at <= ?) ORDER BY id DESC LIMIT ?"
)
#: The ``settings`` row of the event names SDKs were last told to send at once.
WATCHED_SETTING: Final = "watched_events"
#: How many times the quiet of playbooks was ended before its time (a block they made was
#: lifted or replaced at the cap): a process that remembers quiet times forgets them when
#: it changes (``ControlStore.quiet_released``).
RELEASED_SETTING: Final = "quiet_released"
#: The (playbook, key) pairs whose quiet a lifted or replaced block ends, at most (an alert
#: a pair placed or extended it; a key is quiet for a playbook only while its block lasts).
RELEASED_MAX: Final = 100


def release_quiet(cur: Cursor, block_id: int, now: int) -> tuple[tuple[str, str], ...]:
    """End the quiet of the (playbook, key) pairs whose alerts placed or extended block
    ``block_id`` (lifted, or replaced at the cap), so that they may fire, and block, again:
    else an attacker whose block was lifted, or replaced by a flood's, went free of them
    while it would have lasted; and count the release (:data:`RELEASED_SETTING`). Called
    with the action set's lock held; a playbook's transaction that places blocks takes that
    lock before it writes quiet rows (:meth:`BlockQueries._lock_actions`), so neither waits
    for the other while holding what the other needs."""
    # Sorted as a playbook's transaction writes its quiet rows (Python's order, not the
    # database's collation): two writers of the same rows take them in one order.
    found = cur.execute(
        "SELECT DISTINCT playbook, group_key FROM alerts WHERE block_id = ? LIMIT ?",
        (block_id, RELEASED_MAX),
    ).fetchall()
    pairs = tuple(sorted((str(p), str(k)) for p, k in found))
    for playbook, key in pairs:
        cur.execute(
            "UPDATE playbook_quiet SET until_at = ? WHERE playbook = ? AND key = ? "
            "AND until_at > ?",
            (now, playbook, key, now),
        )
    if pairs:
        cur.execute(
            "INSERT INTO settings (key, value) VALUES (?, '1') ON CONFLICT (key) "
            "DO UPDATE SET value = CAST(CAST(settings.value AS BIGINT) + 1 AS TEXT)",
            (RELEASED_SETTING,),
        )
    return pairs


#: How far :meth:`BlockQueries.renumber_actions` takes the action set's version at least:
#: more versions than a database gives between a backup and its restore (each is a block
#: placed, extended or lifted), and 2**53 (exact in JSON) is a million starts away.
RENUMBER_GAP: Final = 2**32
#: The ``counters`` row below which no diff of the action set is complete (:mod:`._retention`).
ACTIONS_FLOOR: Final = "actions_floor"
#: The version (first column; the other columns NULL), then the rows of ``{rows}``, in one
#: statement: one snapshot, on both databases.
_VERSIONED: Final = (
    "SELECT value, " + ", ".join(["NULL"] * len(BlockRow._fields)) + " FROM counters "
    "WHERE name = 'actions' UNION ALL {rows}"
)


def raise_actions_floor(cur: Cursor, version: int) -> None:
    """Raise :data:`ACTIONS_FLOOR` to ``version`` (never lower it): diffs from below it are
    not complete."""
    cur.execute(
        "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO "
        "UPDATE SET value = CASE WHEN excluded.value > counters.value "
        "THEN excluded.value ELSE counters.value END",
        (ACTIONS_FLOOR, version),
    )


class Placement(NamedTuple):
    """What :meth:`BlockQueries._block_for` did: the block in force on the target, whether it
    was created, extended or kept, and the playbook block it replaced at the cap, if any."""

    row: BlockRow
    outcome: BlockOutcome
    replaced: BlockRow | None = None


class BlockQueries(SqlPart):
    """Mixed into :class:`~._sql.SqlStorage` (and the base of the playbooks' part, whose
    alerts place their blocks with :meth:`_block_for`)."""

    def _lock_actions(self, cur: Cursor) -> None:
        """Hold the action set's lock (the row :meth:`_bump_actions` writes) without taking a
        version: where a transaction will place blocks, before it writes the quiet rows
        that a lift, holding that lock, may end (else each waited for the other). Nothing
        to take where there is one writer (SQLite)."""

    def _bump_actions(self, cur: Cursor) -> int:
        """Take the next version of the action set (first in a transaction: see above)."""
        (version,) = cur.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'actions' RETURNING value"
        ).fetchone()
        return int(version)

    @staticmethod
    def _insert_block(
        cur: Cursor,
        version: int,
        type: BlockType,
        user: dict[str, str] | None,
        ip: str | None,
        reason: str,
        now: int,
        expires: int | None,
        created_by: str,
    ) -> BlockRow:
        row = cur.execute(
            "INSERT INTO blocks (type, user_json, ip, reason, created_at, expires_at, "
            f"created_by, changed_in, target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            f"RETURNING {BLOCK_COLUMNS}",
            (
                type,
                None if user is None else json.dumps(user),
                ip,
                reason,
                now,
                expires,
                created_by,
                version,
                block_target(type, ip, user),
            ),
        ).fetchone()
        return BlockRow._make(row)

    def _block_for(
        self, cur: Cursor, spec: BlockSpec, now: int, turn: CapTurn | None = None
    ) -> Placement:
        """Place ``spec`` inside the write transaction of ``cur``: a new block, or the active
        block that already covers the same network or user, its expiry extended when
        ``spec`` lasts longer (its author kept, unless a person asks for a playbook's block:
        it becomes theirs; its reason kept, unless a person gives one: :func:`_reason`).
        When a new one would pass ``spec.max_active``, a playbook's replaces the playbook
        block created longest ago; else :class:`TooManyBlocks` is raised (the caller's
        transaction rolls back or, for a playbook, stores its alert without a block).
        ``turn``: what the transaction placing several blocks knows of the cap
        (:class:`~._block_cap.CapTurn`; its ``placed`` are never replaced)."""
        turn = CapTurn() if turn is None else turn
        expires = None if spec.duration is None else now + int(spec.duration.total_seconds() * 1e6)
        found = self._covering(cur, spec, now)
        if found is not None and _lasts(found, expires) and not _adopts(spec, found):
            return Placement(found, "kept")
        if (
            found is None
            and turn.full(cur, now, spec.max_active, locked=False)
            and not turn.could_replace(cur, spec, now)
        ):
            # Before the version is taken, so that at the cap no SDK is woken for nothing.
            raise TooManyBlocks(spec.max_active or 0)
        # Then read again under the version's lock: on PostgreSQL another writer may have
        # placed or extended the same block meanwhile (30 identical requests at once made
        # two blocks, and an extension read before another could shorten it).
        version = self._bump_actions(cur)
        found = self._covering(cur, spec, now)
        if found is None:
            replaced = None
            if turn.full(cur, now, spec.max_active, locked=True):
                replaced = turn.take(cur, spec, now)
                if replaced is None:
                    raise TooManyBlocks(spec.max_active or 0)
            row = self._insert_block(
                cur,
                version,
                spec.type,
                spec.user,
                spec.ip,
                spec.reason,
                now,
                expires,
                spec.created_by,
            )
            turn.created(replaced)
            if replaced is not None:
                replaced = BlockRow._make(
                    cur.execute(
                        "UPDATE blocks SET lifted_at = ?, lifted_by = ?, changed_in = ? "
                        f"WHERE id = ? RETURNING {BLOCK_COLUMNS}",
                        (now, f"--max-blocks: replaced by #{row.id}", version, replaced.id),
                    ).fetchone()
                )
            return Placement(row, "created", replaced)
        adopt = _adopts(spec, found)
        if _lasts(found, expires) and not adopt:
            return Placement(found, "kept")  # (the version taken is left unused: no row has it)
        outcome: BlockOutcome = "kept" if _lasts(found, expires) else "extended"
        row = cur.execute(
            "UPDATE blocks SET expires_at = ?, created_by = ?, reason = ?, changed_in = ? "
            f"WHERE id = ? RETURNING {BLOCK_COLUMNS}",
            (
                found.expires_at if outcome == "kept" else expires,
                spec.created_by if adopt else found.created_by,
                _reason(spec, found, adopt),
                version,
                found.id,
            ),
        ).fetchone()
        return Placement(BlockRow._make(row), outcome)

    def _covering(self, cur: Cursor, spec: BlockSpec, now: int) -> BlockRow | None:
        """The active block on the same network or user as ``spec``, if any (by the
        ``blocks_target`` index: one lookup, however many blocks are in force)."""
        target = block_target(spec.type, spec.ip, spec.user)
        # A user block made before migration 13 has its identifiers in the order given then:
        # the order given now is looked up too (a playbook's group key keeps its order).
        given = target if spec.user is None else "user:" + json.dumps(spec.user)
        row = cur.execute(
            f"SELECT {B_COLUMNS} FROM blocks b WHERE b.target IN (?, ?) AND {_ACTIVE} "
            "ORDER BY b.id LIMIT 1",
            (target, given, now),
        ).fetchone()
        return None if row is None else BlockRow._make(row)

    def place_block(self, spec: BlockSpec) -> PlacedBlock:
        with self._write() as cur:
            placed = self._block_for(cur, spec, to_us(self.now()))
        return PlacedBlock(block_from_row(placed.row), placed.outcome)

    def create_block(
        self,
        type: BlockType,
        *,
        user: dict[str, str] | None = None,
        ip: str | None = None,
        duration: timedelta | None = None,
        reason: str = "",
        created_by: str = "",
        max_active: int | None = None,
    ) -> Block:
        spec = BlockSpec(type, user, ip, duration, reason, created_by, max_active)
        return self.place_block(spec).block

    def lift_block(self, block_id: int, lifted_by: str = "") -> Block | None:
        now = to_us(self.now())
        if not self._read(
            f"SELECT b.id FROM blocks b WHERE b.id = ? AND {_ACTIVE}", [block_id, now]
        ):
            return None  # (no version taken for nothing)
        with self._write() as cur:
            version = self._bump_actions(cur)
            row = cur.execute(
                "UPDATE blocks SET lifted_at = ?, lifted_by = ?, changed_in = ? WHERE id = ? "
                "AND lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?) "
                f"RETURNING {BLOCK_COLUMNS}",
                (now, lifted_by, version, block_id, now),
            ).fetchone()
            if row is not None:
                release_quiet(cur, block_id, now)
        return None if row is None else block_from_row(BlockRow._make(row))

    def quiet_released(self) -> str:
        sql, params = "SELECT value FROM settings WHERE key = ?", [RELEASED_SETTING]
        # In the playbooks' step tied to the events' transaction, on its cursor: no second
        # connection taken from the pool while that one is held.
        cur = self._tied_cursor()
        found = cur.execute(sql, params).fetchall() if cur is not None else self._read(sql, params)
        return next((str(v) for (v,) in found), "0")

    def note_watched(self, names: Collection[str]) -> int | None:
        names_json = json.dumps(sorted(names), separators=(",", ":"))
        if self._watched_json() == names_json:
            return None  # (no version taken for nothing: every process but the first)
        with self._write() as cur:
            cur.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (WATCHED_SETTING, names_json),
            )
            return self._bump_actions(cur)

    def recorded_watched(self) -> list[str]:
        try:
            names = json.loads(self._watched_json())
        except ValueError:
            return []
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

    def _watched_json(self) -> str:
        found = self._read("SELECT value FROM settings WHERE key = ?", [WATCHED_SETTING])
        return next((str(v) for (v,) in found), "[]")

    def _blocks(self, sql: str, params: list[Any]) -> list[Block]:
        return [block_from_row(BlockRow._make(r)) for r in self._read(sql, params)]

    def list_blocks(self, *, ended: int = 0) -> list[Block]:
        now = to_us(self.now())
        found = {b.id: b for b in self._blocks(_IN_FORCE.format(columns=B_COLUMNS), [now])}
        if ended:
            # Two reads, not one snapshot: a block lifted between them is in both, and the
            # later row (ended) wins.
            found.update((b.id, b) for b in self._blocks(_ENDED, [now, ended]))
        return sorted(found.values(), key=lambda b: b.id, reverse=True)

    def ended_blocks(self, limit: int) -> list[Block]:
        return self._blocks(_ENDED, [to_us(self.now()), limit])

    def blocks_by_id(self, ids: Collection[int]) -> dict[int, Block]:
        """The blocks of these ids (at most :data:`~._queries.MAX_IDS`; active or not),
        by id."""
        wanted, marks = id_list(ids, "block ids")
        if not wanted:
            return {}
        found = self._blocks(f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE id IN ({marks})", wanted)
        return {b.id: b for b in found}

    def action_version(self) -> int:
        ((value,),) = self._read("SELECT value FROM counters WHERE name = 'actions'")
        return int(value)

    def _versioned(self, rows: str, params: list[Any]) -> tuple[int, list[Block]]:
        """The version and the blocks the query ``rows`` selects (by id), in one snapshot."""
        version = 0
        blocks = []
        for value, *columns in self._read(_VERSIONED.format(rows=rows), params):
            if value is None:
                blocks.append(block_from_row(BlockRow._make(columns)))
            else:
                version = int(value)
        return version, sorted(blocks, key=lambda b: b.id)

    def action_set(self) -> ActionSet:
        now = self.now()
        columns = "NULL, " + B_COLUMNS
        version, blocks = self._versioned(_IN_FORCE.format(columns=columns), [to_us(now)])
        return ActionSet(version=version, blocks=tuple(blocks), now=now)

    def action_changes(self, since: int) -> ActionChanges:
        """Every block made, extended or lifted after version ``since``, as of the current
        version (active or not: the caller sorts them out by ``now``)."""
        now = self.now()
        rows = f"SELECT NULL, {B_COLUMNS} FROM blocks b WHERE b.changed_in > ?"
        version, blocks = self._versioned(rows, [since])
        # Read after the rows: a purge since then raised it, or the rows read hold the
        # blocks it deleted.
        complete = since >= self.actions_floor()
        return ActionChanges(
            since=since, version=version, blocks=tuple(blocks), now=now, complete=complete
        )

    def renumber_actions(self) -> int:
        """Take the action set past every version it may have given before, and return its
        version: :data:`RENUMBER_GAP` past the one it holds, and at least the store clock's
        microseconds. Called as ``sqreen serve`` starts. A database restored from a backup
        (``sqreen restore``, ``pg_restore``) counts on from the backup's version, which SDKs
        may already hold with other blocks: they would keep that set (the same version) or
        apply a diff to the wrong one. The database it replaced gave fewer versions since
        the backup than the gap, whatever the clock says (one set back since the last start);
        the clock covers a database of unknown history. Diffs from below it are not complete
        (the floor moves with it), so every SDK and process reads the whole set once."""
        now = to_us(self.now())
        with self._write() as cur:
            (version,) = cur.execute(
                "UPDATE counters SET value = CASE WHEN value + ? < ? THEN ? ELSE value + ? END "
                "WHERE name = 'actions' RETURNING value",
                (RENUMBER_GAP, now, now, RENUMBER_GAP),
            ).fetchone()
            raise_actions_floor(cur, version)
        return int(version)

    def actions_floor(self) -> int:
        """The lowest version from which :meth:`action_changes` is complete (ended blocks
        deleted by retention changed in versions up to it: :mod:`._retention`)."""
        found = self._read("SELECT value FROM counters WHERE name = ?", [ACTIONS_FLOOR])
        return next((int(value) for (value,) in found), 0)


def _adopts(spec: BlockSpec, found: BlockRow) -> bool:
    """Whether placing ``spec`` makes block ``found`` its author's: a person asking for a
    target that a playbook's block covers (it is then never replaced at the cap)."""
    return by_playbook(found.created_by) and not by_playbook(spec.created_by)


def _reason(spec: BlockSpec, found: BlockRow, adopt: bool) -> str | None:
    """The reason of block ``found`` once ``spec`` extends or adopts it: a person's own
    reason when they give one (it was dropped without a word); a playbook's block a person
    adopts without one says whose it was (its reason stood under their name); else its own
    (a playbook's next alert does not rewrite it)."""
    if by_playbook(spec.created_by):
        return found.reason
    if spec.reason:
        return spec.reason
    if adopt:
        return f"first blocked by {found.created_by}" + (
            f": {found.reason}" if found.reason else ""
        )
    return found.reason


def _lasts(found: BlockRow, expires: int | None) -> bool:
    """Whether block ``found`` lasts at least until ``expires`` (None: until lifted)."""
    return found.expires_at is None or (expires is not None and expires <= found.expires_at)
