"""The storage seam of the collector: an event store and a control store, two back ends.

:class:`Storage` is both on one database: :mod:`.sqlite` (the default) and :mod:`.postgres`
(several collector processes on one database) implement it with the same SQL, and one test
suite (``tests/server/test_storage.py``) runs against both. Everything the collector, the CLI
and the Event Explorer read or write goes through these protocols, in plain values
(:mod:`.model`), never through SQL. Every method blocks (call it from a thread, never the
event loop) and is thread-safe.

The two halves promise different things, and code that needs only one takes only that one:

- the :class:`EventStore` is append-only and large (millions of events): ingest writes it,
  the explorer, ``sqreen events`` and playbooks read it;
- the :class:`ControlStore` holds small tables changed by hand or by playbooks (API keys,
  blocks and the versioned action set every SDK receives, SDK processes, settings), one
  transaction a method.

Both read the time from the storage's :data:`~.model.Clock` (:meth:`Clocked.now`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..._wire import WireEvent
from .model import (
    NO_FILTER,
    ActionChanges,
    ActionSet,
    Agent,
    Alert,
    ApiKey,
    Block,
    BlockSpec,
    BlockType,
    EventFilter,
    Heartbeat,
    InsertResult,
    KeyScope,
    PlacedBlock,
    StoredEvent,
    StoredKey,
    UserTraits,
    WindowWrite,
)

__all__ = ["Clocked", "ControlStore", "EventStore", "Storage"]


class Clocked(Protocol):
    def now(self) -> datetime:
        """The time by this storage's clock: what it stamps writes with and measures expiry
        and retention against (``datetime.now(UTC)`` unless a test gave another)."""
        ...


class EventStore(Clocked, Protocol):
    """Events: append-only, deduplicated, committed before the sender is answered.

    What it guarantees:

    - **Append-only.** A stored event never changes; it leaves only through
      :meth:`purge_older_than` (retention, by the time it was received).
    - **Deduplicated by id, per API key.** An event whose ``id`` is already stored under the
      same key (``key_id``), by any call of any process, or repeated earlier in the same
      call, is not stored again; the result says which events were new, so that a retried
      batch counts (and triggers) nothing twice. The same id sent with another key is
      another event: a key cannot pre-empt (and so suppress) the events of another.
    - **Durable on return.** :meth:`insert_events` is one transaction, committed before it
      returns: the collector replies to an SDK only after that.
    - **seq.** Each stored event gets a unique positive ``seq``, increasing in commit order
      within one process (and across processes on SQLite, one writer at a time). On
      PostgreSQL with several collector processes, a lower seq can commit after a higher
      one (by the length of a transaction): a reader that follows new events must read again
      a little below its last seq (:class:`~.follow.Follower` does).
    - **Reads see committed events only**, newest (highest seq) first where they are ordered.
    """

    def insert_events(
        self,
        events: Sequence[WireEvent],
        *,
        app: str | None = None,
        host: str | None = None,
        received_at: datetime | None = None,
        enrichment: Sequence[Mapping[str, Any]] | None = None,
        key_id: int = 0,
    ) -> InsertResult:
        """Store validated events (``sqreen._wire.parse_event``) sent with API key ``key_id``
        (0: none, as for an import) in one transaction.

        ``received_at`` defaults to :meth:`now`. ``enrichment``, aligned with ``events``, holds
        the fields the ingest pipeline's enrichers added to each (JSON values, stored with the
        event: :attr:`~.model.StoredEvent.enrichment`).
        """
        ...

    def query_events(
        self,
        filters: EventFilter = NO_FILTER,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 50,
    ) -> list[StoredEvent]:
        """Matching events, newest (highest ``seq``) first; page with ``before_seq``."""
        ...

    def scan_events(
        self, filters: EventFilter = NO_FILTER, *, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        """Matching events stored after ``after_seq``, oldest first (a walk, page by page)."""
        ...

    def get_event(self, event_id: str, *, seq: int | None = None) -> StoredEvent | None:
        """The event of this id (ids are unique per key: the first stored of them, or the
        one of ``seq``)."""
        ...

    def events_by_seq(self, seqs: Collection[int]) -> list[StoredEvent]:
        """The stored events of these seqs (at most 1000: :class:`ValueError` beyond), oldest
        first; a seq no longer stored (retention) is missing from the list.

        .. versionadded:: 0.1 (for the alerts of playbooks)
        """
        ...

    def count_events(self, filters: EventFilter = NO_FILTER) -> int: ...

    def count_by(
        self,
        field: str,
        filters: EventFilter = NO_FILTER,
        limit: int = 10,
        *,
        newest: int | None = None,
    ) -> list[tuple[str | None, int]]:
        """The most frequent values of ``field`` among matching events, most frequent first.

        ``field`` is ``name``, ``ip``, ``app``, ``host``, ``user.<key>`` or
        ``properties.<key>``; anything else raises :class:`ValueError`. With ``newest``, only
        the newest ``newest`` matching events (by ``seq``) are counted: a bounded cost.
        """
        ...

    def histogram(
        self,
        filters: EventFilter = NO_FILTER,
        buckets: int = 60,
        *,
        newest: int | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[tuple[datetime, int]]:
        """Counts of matching events in ``buckets`` equal slices of [start, end).

        ``start`` and ``end`` default to the filter's ``since`` and ``until``; ``end`` then to
        now, ``start`` to the oldest matching event (or an hour before ``end``). Events outside
        [start, end) are not counted. With ``newest``, only the newest ``newest`` matching
        events (by ``seq``; by time for a filter on time alone) are counted.
        """
        ...

    def span(
        self, filters: EventFilter = NO_FILTER, *, newest: int
    ) -> tuple[int, datetime | None, datetime | None]:
        """How many of the newest ``newest`` matching events there are (what a bounded
        :meth:`histogram` or :meth:`count_by` covers), and the times of the oldest and the
        newest of them by ``seq`` (by time too, when events are stored in time order).

        .. versionadded:: 0.1 (for the Event Explorer)
        """
        ...

    def purge_older_than(self, days: float) -> int:
        """Delete events received (``received_at``) more than ``days`` before :meth:`now`;
        return how many (in chunks of transactions: a purge never holds the write lock for
        long). Never by the event's own time: an SDK with its clock years behind would see
        its events, acknowledged a moment before, purged at the next run."""
        ...


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
        longer (``extended``; else ``kept`` as it is). The action version is bumped with
        any change."""
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
        blocks are in force."""
        ...

    def lift_block(self, block_id: int, lifted_by: str = "") -> Block | None:
        """Lift an active block (bumping the action version); None if there is none."""
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
    ) -> list[Alert]:
        """In one transaction, with ``keys`` ((stream, key), in any order) held so that processes
        counting the same key take turns: store ``hits`` ((stream, key, time µs, seq, value));
        find the keys whose hits reach one of ``probes`` ((stream, key, since µs, how many,
        distinct?)); read until when each (playbook, key) is quiet for those keys; keep those
        still ``wanted`` given that; give ``decide`` their hits and the quiet times; store its
        quiet times, alerts and each alert's block (created, or an active block on the same
        network or user extended, bumping the action version). ``probes`` may be a function
        told whether nobody but ``owner`` wrote windows since its previous call; ``counted``
        is told each probe's count; ``horizon``, when somebody else did (where the store can
        tell), the time of the newest hit before ``hits`` (None: none).
        Return the alerts stored."""
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
        """The networks of IP blocks made since ``since``, active or not, among the newest
        ``limit`` blocks (IP intelligence's ``blocked_recently``)."""
        ...

    def recent_alert_ips(self, since: datetime, limit: int) -> list[str]:
        """The IPs that playbooks grouped by IP alerted on since ``since``, among the newest
        ``limit`` alerts (IP intelligence's ``playbook_alert``)."""
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


class Storage(EventStore, ControlStore, Protocol):
    """Both stores on one database: what :func:`~sqreen.server.storage.open_storage` opens."""

    def database_bytes(self) -> int:
        """The database's size on disk (SQLite: its file and WAL; PostgreSQL: the database)."""
        ...

    def newest_received_at(self) -> datetime | None:
        """When the newest stored event (the highest seq) was received; None without any."""
        ...

    def close(self) -> None: ...
