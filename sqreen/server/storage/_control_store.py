"""The control half of the storage seam (:class:`ControlStore`): keys, blocks and the action
set, playbooks' windows and alerts, users' traits, export cursors, SDK processes, settings,
the explorer's logins. Imported through :mod:`.base`, which says what the seam is."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from ..._wire import WireEvent
from ._event_store import Clocked
from .model import (
    ActionChanges,
    ActionSet,
    Agent,
    Alert,
    ApiKey,
    Block,
    BlockSpec,
    BlockType,
    Heartbeat,
    KeyScope,
    PlacedBlock,
    Purged,
    Replacement,
    StoredKey,
    UserTraits,
    WindowWrite,
)

__all__ = ["ControlStore"]


class ControlStore(Clocked, Protocol):
    """API keys, blocks and the action set, SDK processes, settings, the explorer's logins and
    sessions: small and transactional.

    What it guarantees:

    - **One transaction a method**, committed when it returns; a reader never sees half of
      a change.
    - **The action set is versioned in the same transaction** as the block change it
      versions: :meth:`create_block` and :meth:`lift_block` bump the version with their own
      write (taken first: concurrent changes then commit in version order), so an SDK that
      has a version has every change up to it, and each changed block records that version
      (``changed_in``). :meth:`action_set` and :meth:`action_changes` read the version and
      the items in one statement (one snapshot). Expiry needs no bump: the items carry
      ``expires_in``, measured from :meth:`now`.
    - **Only hashes of API keys** are stored (SHA-256, hex).
    - Blocks arrive validated: create them through :class:`sqreen.server.blocks.BlockService`,
      which applies the rules every SDK enforces.
    """

    # API keys.
    def create_key(self, name: str, token_hash: str, scope: KeyScope = "ingest") -> ApiKey: ...

    def key_by_hash(self, token_hash: str) -> StoredKey | None:
        """The active (not revoked) key with this hash, and the stored hash itself."""
        ...

    def list_keys(self) -> list[ApiKey]: ...

    def revoke_key(self, key_id: int) -> bool: ...

    # Blocks and the action set.
    def place_block(self, spec: BlockSpec) -> PlacedBlock:
        """Place a block (already validated), in one transaction: a new one expiring
        ``spec.duration`` after :meth:`now` (never, for None), or, when an active block
        covers the same network or user, that block, its expiry extended if ``spec`` lasts
        longer (``extended``; else ``kept`` as it is; a person's request makes a playbook's
        block theirs). At ``spec.max_active``, a playbook's new block replaces the oldest
        playbook block (lifted); else :class:`~.model.TooManyBlocks`. The action
        version is bumped with any change."""
        ...

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
        """:meth:`place_block` with these fields; the block in force on that target. Raise
        :class:`~.model.TooManyBlocks` instead of making a new one when ``max_active``
        blocks are in force (unless ``created_by`` is a playbook's and a playbook block is
        in force: the new one replaces the oldest)."""
        ...

    def lift_block(self, block_id: int, lifted_by: str = "") -> Block | None:
        """Lift an active block (bumping the action version); None if there is none. The
        playbooks whose alerts placed or extended it are no longer quiet for their keys:
        an attacker still failing is counted, and blocked, again."""
        ...

    def quiet_released(self) -> str:
        """Changes whenever a block's end releases playbooks' quiet before its time (a lift,
        a replacement at the cap), by any process: a process remembering quiet times
        forgets them then."""
        ...

    def list_blocks(self, *, ended: int = 0) -> list[Block]:
        """Blocks in force at :meth:`now` (at most ``--max-blocks``) and the ``ended``
        newest lifted or expired ones, newest first. Never every block ever made: a
        playbook makes one an attacker, and the table keeps them all."""
        ...

    def ended_blocks(self, limit: int) -> list[Block]:
        """The ``limit`` newest blocks lifted or expired by :meth:`now`, newest first (the
        table keeps every block ever made: playbooks make one an attacker)."""
        ...

    def blocks_by_id(self, ids: Collection[int]) -> dict[int, Block]:
        """The blocks of these ids (at most 1000), active or not, by id."""
        ...

    def action_set(self) -> ActionSet: ...

    def action_changes(self, since: int) -> ActionChanges:
        """The blocks made, extended or lifted after version ``since`` (each block's
        ``changed_in`` is the version of its last change), with the current version, in one
        snapshot: cheap, whatever the number of blocks."""
        ...

    def action_version(self) -> int:
        """The action set's version alone (cheap: long-polls read it several times a
        second)."""
        ...

    def renumber_actions(self) -> int:
        """Take the action set past every version it may have given before (a database
        restored from a backup): its version, now."""
        ...

    def note_watched(self, names: Collection[str]) -> int | None:
        """Record ``names`` as the event names SDKs send at once (the enforcing playbooks'),
        and when they differ from those recorded, take a new version of the action set (its
        replies carry them, and an SDK holding the version gets none): that version, else
        None. Loading playbooks changes no block, and without a new version SDKs that hold
        the set kept the names of before, their watched events waiting for the interval."""
        ...

    def recorded_watched(self) -> list[str]:
        """The names :meth:`note_watched` recorded last (by any process), sorted: what
        replies carry, so that every process sends the list its version was taken for."""
        ...

    # Playbooks: windows held under row locks, the alerts they raise and their blocks.
    def update_windows(
        self,
        keys: Sequence[tuple[str, str]],
        hits: Sequence[tuple[str, str, int, int, str | None]],
        probes: Sequence[tuple[str, str, int, int, bool]]
        | Callable[[bool], Sequence[tuple[str, str, int, int, bool]]],
        decide: Callable[
            [dict[tuple[str, str], list[tuple[int, int, str | None]]], dict[tuple[str, str], int]],
            WindowWrite,
        ],
        wanted: Callable[[tuple[str, str], dict[tuple[str, str], int]], bool] | None = None,
        *,
        owner: object = None,
        counted: Callable[[dict[tuple[str, str, int, int, bool], int]], None] | None = None,
        horizon: Callable[[int | None], None] | None = None,
        added: Mapping[tuple[str, str], int] | None = None,
        others: Callable[[dict[tuple[str, str], int]], None] | None = None,
        present: tuple[int, Callable[[int, dict[tuple[str, str], int]], None]] | None = None,
        on_replace: Callable[[Replacement], None] | None = None,
        marked: Callable[[dict[tuple[str, str], tuple[int, int]]], None] | None = None,
        hits_stored: bool = False,
    ) -> list[Alert]:
        """In one transaction, with ``keys`` ((stream, key), in any order) held so that processes
        counting the same key take turns: store ``hits`` ((stream, key, time µs, seq, value));
        find the keys whose hits reach one of ``probes`` ((stream, key, since µs, how many,
        distinct?)); read until when each (playbook, key) is quiet for those keys; keep those
        still ``wanted`` given that; tell ``marked`` the marks ((time µs, seq) of the last
        event an alert counted) of each (playbook, key) on them; give ``decide`` their hits
        and the quiet times; store its quiet times, marks (each only moves on), alerts and
        each alert's block (created, or an active block on the same network or user
        extended, bumping the action version). ``probes`` may be a function
        told whether nobody but ``owner`` wrote windows since its previous call; ``counted``
        is told each probe's count; ``horizon``, when somebody else did (where the store can
        tell), the time of the newest hit before ``hits`` (None: none). ``added`` is ``hits``
        counted per key, logged where the store keeps a log of them (SQLite); ``others`` is
        told, when somebody else wrote since ``owner``'s previous call, what the log says they
        added per key, and the call then counts as if nobody had (where the log tells it all).
        ``present`` (a time, a function): told with ``horizon``, the hits newer than that time
        per key, when they are few. At ``--max-blocks`` (``BlockSpec.max_active``), an
        alert's block takes the place of the oldest playbook block, and
        ``on_replace`` is told (before the commit). Return the alerts stored.

        Where the store counts hits after their commit (PostgreSQL), ``hits`` are committed
        first (``hits_stored``: :meth:`store_hits` did, with the events), then counted, and
        only the keys that reached a probe are held while ``decide`` runs."""
        ...

    def store_hits(
        self,
        hits: Sequence[tuple[str, str, int, int, str | None]],
        added: Mapping[tuple[str, str], int],
    ) -> bool:
        """In the events' own transaction (a tied step), where the store counts hits after
        their commit: store ``hits`` there (``added``: them counted per key) and return
        True; else False, and :meth:`update_windows` stores them."""
        ...

    def list_alerts(
        self, *, playbook: str | None = None, before_id: int | None = None, limit: int = 50
    ) -> list[Alert]: ...

    def get_alert(self, alert_id: int) -> Alert | None: ...

    def alert_counts(self) -> dict[str, tuple[int, datetime | None]]:
        """Per playbook: how many alerts, and when the last one was."""
        ...

    def purge_windows(self, older_than: datetime) -> int: ...

    # Users' traits (identify(user, traits=...)).
    def record_traits(self, records: Sequence[WireEvent]) -> int:
        """Store the traits of ``sq.identify`` records (``user``, traits in ``properties``)
        in one transaction, one row a user: the latest record's traits (by its own time, never
        later than :meth:`now`) unless newer ones are stored, the first time seen kept, the
        last moved forward. Return how many users were written."""
        ...

    def get_user(self, user: Mapping[str, str]) -> UserTraits | None:
        """The traits last recorded for exactly these identifiers."""
        ...

    # IP intelligence: what the collector itself knows of addresses (the threat score).
    def recent_ip_blocks(self, since: datetime, limit: int) -> list[str]:
        """The networks of the newest ``limit`` IP blocks made since ``since``, active or
        not (IP intelligence's ``blocked_recently``)."""
        ...

    def recent_alert_ips(self, since: datetime, limit: int) -> list[str]:
        """The IPs of the newest ``limit`` alerts of playbooks grouped by IP made since
        ``since`` (IP intelligence's ``playbook_alert``)."""
        ...

    # Export (sqreen export, the forwarder of sqreen serve --export): alerts in id order,
    # and the forwarder's cursors and lease (migration 12).
    def scan_alerts(self, *, after_id: int = 0, limit: int = 1000) -> list[Alert]:
        """Alerts stored after id ``after_id``, oldest first (at most 1000 a call)."""
        ...

    def last_alert_id(self) -> int: ...

    def committed_marks(self) -> tuple[int, int]:
        """The highest event seq and alert id at or below which every row is committed (or
        never will be): an export that has read every row up to them misses none later (on
        PostgreSQL a lower seq can commit after a higher one: this waits for the
        transactions in flight)."""
        ...

    def export_cursor(self, name: str) -> int:
        """Cursor ``name``'s position: the last seq or alert id sent (0: none yet)."""
        ...

    def take_export_lease(self, name: str, holder: int, ttl: float) -> bool:
        """Take or renew lease ``name`` for token ``holder`` unless another holder renewed
        it within ``ttl`` seconds; whether ``holder`` holds it. Atomic between processes."""
        ...

    def release_export_lease(self, name: str, holder: int) -> None: ...

    def move_export_cursor(self, lease: str, holder: int, name: str, seq: int) -> bool:
        """Set cursor ``name`` to ``seq`` in one transaction with renewing ``lease``, only
        while ``holder`` holds it; whether it did."""
        ...

    # SDK processes.
    def record_heartbeat(self, heartbeat: Heartbeat) -> None:
        """Store an SDK process's latest heartbeat: one row per (key, app, host, pid), so a
        key never overwrites another's; beyond :data:`~.model.MAX_AGENTS_PER_KEY` processes
        of one key, its least recently seen are deleted."""
        ...

    def agents(self) -> list[Agent]:
        """The SDK processes heard from within :data:`~.model.AGENT_TTL`, latest first."""
        ...

    def purge_agents(self) -> int:
        """Delete the SDK processes silent for over :data:`~.model.AGENT_TTL`; how many."""
        ...

    def purge_records(self, days: float) -> Purged:
        """Retention of what else names people (``--retention-days``, ``sqreen purge``):
        delete the alerts made more than ``days`` ago whose block is not in force, the
        blocks that ended (lifted or expired) more than ``days`` ago, the users' traits last
        set before then, and the export cursors of a destination silent since then (see
        :mod:`._retention`). Never a block in force, nor its alert."""
        ...

    # Small settings (the explorer's admin password hash...).
    def get_setting(self, key: str) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...

    def add_setting(self, key: str, value: str) -> str:
        """Store ``value`` unless ``key`` already has one; return the value stored (the first
        writer wins, also between processes)."""
        ...

    # The Event Explorer's logins and sessions.
    def reserve_login(self, key: str, limit: int, window: float) -> float:
        """Count a login attempt of client ``key`` unless it made ``limit`` of them in the
        last ``window`` seconds: 0.0 if counted, else the seconds until the oldest leaves the
        window (at least 1). Atomic, also between processes: racing attempts are counted one
        after the other."""
        ...

    def clear_login_failures(self, key: str) -> None:
        """Forget the attempts of ``key`` (it logged in)."""
        ...

    def purge_login_failures(self, window: float) -> int:
        """Delete the attempts older than ``window`` seconds; return how many."""
        ...

    def open_session(self, token_hash: str, max_age: float, setting: str, expected: str) -> bool:
        """Store a session valid ``max_age`` seconds, if the setting ``setting`` (the admin
        password's hash) still holds ``expected``, the hash the login checked; whether it did.
        Expired sessions are deleted meanwhile."""
        ...

    def session_active(self, token_hash: str) -> bool:
        """Whether the session is stored and not expired."""
        ...

    def end_session(self, token_hash: str) -> None: ...

    def set_setting_ending_sessions(self, key: str, value: str) -> None:
        """:meth:`set_setting` and end every session, in one transaction (a new password)."""
        ...
