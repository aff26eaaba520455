"""Playbooks in the collector: the hook that runs them.

:class:`PlaybookRunner` is the ingest pipeline's after-store hook: for the events a batch
newly stored, it plans the windows they touch, lets the storage hold those rows while the
engine decides, stores the alerts and blocks (on SQLite in the events' own transaction,
before its commit: :meth:`PlaybookRunner.tied_batches`; on PostgreSQL the hits there, the
rest once they are committed), and then, once they are committed, posts the webhooks and
wakes the action long-polls. The playbooks in force come from a
:class:`~._source.PlaybookSource` (re-exported here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from ..._text import visible
from ..storage import (
    Alert,
    ControlStore,
    InsertResult,
    Replacement,
    StoredEvent,
    WindowWrite,
)
from ..storage.model import from_us, to_us
from ..unavailable import UnavailableLog, unavailable
from ._alerts import behind, new_alert, retry_us
from ._bounds import Bounds
from ._config import Playbook
from ._engine import Engine, is_exempt
from ._fields import EventView, FieldPath, spellings
from ._hits import (
    Hit,
    Mark,
    Plan,
    Probe,
    QuietKey,
    StreamKey,
    left_after,
    marks_of,
    merged_marks,
)
from ._late import AlertLines, LateEvents, Throttle
from ._notify import Notifier
from ._source import PlaybookSource
from ._views import event_view, wire_views

if TYPE_CHECKING:
    from ..pipeline import Batch

__all__ = ["PlaybookRunner", "PlaybookSource", "event_view"]

logger = logging.getLogger("sqreen.server")
_COUNT_FAILED = UnavailableLog("the playbooks' count failed, counting again")

MAX_QUIET: Final = 100_000
#: Hits are kept this long past the longest window (µs) before :meth:`PlaybookRunner.purge`.
PURGE_MARGIN_US: Final = 60 * 1_000_000


class PlaybookRunner:
    """The after-store hook that evaluates the playbooks of ``source``."""

    def __init__(
        self,
        store: ControlStore,
        source: PlaybookSource,
        notifier: Notifier | None = None,
        on_block: Callable[[], None] | None = None,
        max_blocks: int | None = None,
        on_cap: Callable[[str, int], None] | None = None,
        on_late: Callable[[str, int], None] | None = None,
        events: Callable[[Sequence[int]], list[StoredEvent]] | None = None,
    ) -> None:
        self.store = store
        #: The stored events of seqs (the storage's ``events_by_seq``): a webhook's alert
        #: lists the addresses and users behind it (read when posted, off the ingest path).
        self.events = events
        self.source = source
        self.notifier = notifier
        self.on_block = on_block
        #: Blocks in force at most: past it, an alert's block replaces the oldest playbook
        #: block, or is refused (every block a person's: see storage/_blocks.py).
        self.max_blocks = max_blocks
        #: Told, at the cap, how many blocks were ``replaced`` or ``refused`` (metrics).
        self.on_cap = on_cap
        self.late = LateEvents(on_late)  # events older than a window: on_late is told (metrics)
        self._unblocked = Throttle()  # alerts stored without their block, said once a minute
        self._alert_lines = AlertLines()
        self._replaced = Throttle()  # blocks that replaced another, said once a minute
        # Keys every reader of whose stream is quiet (an IP blocked for an hour): until when
        # (µs), no hit of theirs can matter. Quiet only lengthens (but when a block is replaced
        # at --max-blocks: forgotten here then; another process skips the key a while longer,
        # counting it late, never wrongly), so a process may skip them on its own knowledge; a
        # new playbook set starts afresh.
        self._quiet: dict[StreamKey, int] = {}
        #: Until when each (playbook, group key) is quiet, as far as this process has read
        #: or written (so that it does not probe what cannot fire).
        self._known: dict[tuple[str, str], int] = {}
        self._bounds = Bounds()
        self._engine: Engine | None = None
        #: :meth:`~..storage.ControlStore.quiet_released` when the quiet times above were
        #: learned: once it changes (a block lifted, by any process), they are forgotten.
        self._released: str | None = None

    def purge(self) -> int:
        """Delete the hits no window reads any more, and ended quiet times (the collector
        calls this every minute, off the ingest path). Return how many hits went."""
        engine = self.source.current()
        oldest = to_us(self.store.now()) - engine.max_window_us - PURGE_MARGIN_US
        return self.store.purge_windows(from_us(oldest))

    def __call__(self, events: Sequence[StoredEvent]) -> None:
        self._run(lambda names: [event_view(e) for e in events if e.name in names])

    def stored_batches(self, stored: Sequence[tuple[Batch, InsertResult]]) -> None:
        """The pipeline's cheaper call: the wire events of the batches of one transaction and
        their seqs, evaluated together (one plan, one transaction for their hits)."""
        self._run(_views(stored))

    def tied_batches(self, stored: Sequence[tuple[Batch, InsertResult]]) -> Callable[[], None]:
        """:meth:`stored_batches` in the events' own transaction, before its commit (the
        pipeline's :class:`~..storage.TiedStep`): the windows' writes commit with the
        events, where they took a second turn at the write lock. What is left to do once
        committed (the log lines, notifications and the blocks' news) is returned; should
        the commit fail, :meth:`forget` is called instead."""
        return self._evaluate(_views(stored), tied=True)

    def forget(self) -> None:
        """What this runner remembers of the windows was learnt from writes rolled back: it
        counts from the database again."""
        self._engine = None

    def _run(self, views: Callable[[frozenset[str]], list[EventView]]) -> None:
        """Evaluate the events ``views`` gives (those of the names asked) on the playbooks."""
        self._evaluate(views)()

    def _evaluate(
        self, views: Callable[[frozenset[str]], list[EventView]], tied: bool = False
    ) -> Callable[[], None]:
        """:meth:`_run` up to the windows' transaction and what it tells this runner's
        memory; the rest (what is said of its alerts) returned. ``tied``: in the events'
        transaction, where the storage may store the hits alone
        (:meth:`~..storage.ControlStore.store_hits`, PostgreSQL's): the windows' transaction
        is then returned too, to run once the hits are committed."""
        engine = self.source.current()
        if engine is not self._engine:
            self._engine, self._quiet, self._known = engine, {}, {}
            self._bounds = Bounds(engine.counted_windows)
        if engine.empty:
            return _nothing
        now_us = to_us(self.store.now())
        events = views(engine.names)
        if not events:
            return _nothing
        # One small read a batch the playbooks read (read before what this batch learns,
        # so that a release after it is seen at the next one), while there is something to
        # forget: the count only grows, so any release since the last read changes it, and
        # what is learnt meanwhile is forgotten at the next read, at worst once too often.
        if self._quiet or self._known:
            released = self.store.quiet_released()
            if released != self._released:
                self._quiet, self._known, self._released = {}, {}, released
        plan = engine.plan(events, now_us, self._quiet)
        keys = engine.keys(plan)
        if not keys:
            rest = _nothing
        elif tied and self.store.store_hits(plan.hits, plan.counts):
            rest = partial(self._after_commit, engine, plan, keys, events, now_us)
        else:
            rest = self._windows(engine, plan, keys, events, now_us)
        if not plan.late:
            return rest
        # Said with the rest, once the events are committed: a step that fails, or whose
        # transaction does, is run again after, and counted its late events twice.
        return partial(self._late_then, plan.late, engine.windows, rest)

    def _late_then(
        self,
        late: Mapping[str, tuple[int, int]],
        windows: Mapping[str, int],
        rest: Callable[[], None],
    ) -> None:
        self.late.note(late, windows)
        rest()

    def _after_commit(
        self, engine: Engine, plan: Plan, keys: list[StreamKey], events: list[EventView], now: int
    ) -> None:
        """The windows' transaction of hits committed with their events: tried again once
        should it fail (a lost connection, a lock timeout), as nothing else would count them
        before their keys' next hits, nor look again at a success an ``after`` rule waits
        for."""
        try:
            tell = self._windows(engine, plan, keys, events, now, True)
        except Exception as exc:
            if unavailable(exc):  # the database gone a while: a line a minute, no traceback
                _COUNT_FAILED.met(exc)
            else:
                logger.warning("sqreen: the playbooks' count failed; counting again", exc_info=True)
            tell = self._windows(engine, plan, keys, events, now, True)
        tell()

    def _windows(
        self,
        engine: Engine,
        plan: Plan,
        keys: list[StreamKey],
        events: list[EventView],
        now_us: int,
        hits_stored: bool = False,
    ) -> Callable[[], None]:
        """:meth:`_evaluate`'s windows' transaction, and what it tells this runner's memory
        (``hits_stored``: :meth:`~..storage.ControlStore.store_hits` stored the plan's)."""
        quiet, known = self._quiet, self._known
        wanted: set[tuple[str, str]] = set()  # (playbook, key) of the alerts asking a block
        learned: dict[tuple[str, str], int] = {}  # quiet times read or set, once committed
        marked: dict[QuietKey, Mark] = {}  # marks read in the transaction, then those set
        left: dict[StreamKey, dict[str, int]] = {}  # hits after the marks set, per key
        replaced: list[Replacement] = []  # blocks that took another's place at the cap
        spelled: dict[FieldPath, dict[str, dict[str, str]]] = {}

        def spell(p: Playbook, key: str) -> dict[str, str] | None:
            """The identifiers of user ``key`` as an event of the batch spelled them (the
            key's are folded; a firing's key is always one of the batch's)."""
            if p.group_by not in spelled:
                spelled[p.group_by] = spellings(events, p.group_by)
            return spelled[p.group_by].get(key)

        def listening(key: StreamKey, quiet_now: dict[tuple[str, str], int]) -> bool:
            return engine.listening(plan, key, quiet_now, now_us)

        def decide(
            found: dict[StreamKey, list[tuple[int, int, str | None]]],
            quiet_now: dict[tuple[str, str], int],
        ) -> WindowWrite:
            hits = {key: [Hit._make(h) for h in rows] for key, rows in found.items()}
            firings, quieted = engine.decide(plan, hits, quiet_now, now_us, is_exempt, marked)
            learned.update(quiet_now)
            learned.update(quieted)
            alerts = [a for f in firings if (a := new_alert(f, self.max_blocks, spell)) is not None]
            wanted.update((a.playbook, a.group_key) for a in alerts if a.block is not None)
            moved = merged_marks(marked, marks_of(firings))
            marked.update(moved)
            left.update(left_after(firings, hits, engine.stream_of))
            return WindowWrite(quieted, alerts, moved)

        # Rules this process knows to be quiet for a key are not probed: quiet only lengthens
        # (see above), so its own knowledge is safe to act on.
        bounds = self._bounds

        def probes(fresh: bool) -> list[Probe]:
            bounds.advance(plan.counts, now_us, fresh)
            return engine.probes(plan, now_us, known, bounds.known, bounds.unseen)

        stored = self.store.update_windows(
            keys,
            plan.hits,
            probes,
            decide,
            listening,
            owner=self,
            counted=bounds.counted,
            horizon=bounds.horizon,
            added=plan.counts,
            others=bounds.others,
            present=(now_us - engine.max_window_us, bounds.present),
            on_replace=replaced.append,
            marked=marked.update,
            hits_stored=hits_stored,
        )
        bounds.fired(left)
        by_id = {p.id: p for p in engine.playbooks.playbooks} if stored else {}
        refused = [a for a in stored if a.block_id is None and (a.playbook, a.group_key) in wanted]
        for alert in refused:  # quiet for its retry only, as the store wrote (then asked again)
            learned[(alert.playbook, alert.group_key)] = now_us + retry_us(by_id[alert.playbook])
        known.update(learned)
        changed = {key for _, key in learned}
        for key in keys:  # what no hit of can matter for a while: skipped from now on
            if key[1] in changed and (until := engine.quiet_until(key, known)) > now_us:
                quiet[key] = until
        # A block replaced at the cap released its pairs' quiet, and counted it in
        # quiet_released: what is remembered here is forgotten at the next batch.
        if len(known) > MAX_QUIET:
            self._known = {k: u for k, u in known.items() if u > now_us}
        if len(quiet) > MAX_QUIET:
            self._quiet = {k: u for k, u in quiet.items() if u > now_us}
        if not stored:
            return _nothing
        return partial(self._tell, stored, by_id, refused, replaced)

    def _tell(
        self,
        stored: list[Alert],
        by_id: dict[str, Playbook],
        refused: list[Alert],
        replaced: list[Replacement],
    ) -> None:
        """Once the alerts ``stored`` are committed: the blocks' news, the log lines, the
        notifications."""
        if self.on_block is not None and any(a.block_id is not None for a in stored):
            self.on_block()
        if refused:
            self._log_unblocked(refused)
        if replaced:
            self._log_replaced(replaced)
        for alert in stored:
            playbook = by_id.get(alert.playbook)
            # The summary names the group key, which an event named: no terminal escapes.
            if self._alert_lines.say(alert.playbook):
                logger.warning("sqreen: playbook alert #%d: %s", alert.id, visible(alert.summary))
            if playbook is not None and playbook.notify and self.notifier is not None:
                more = None if self.events is None else partial(_behind, self.events, alert)
                self.notifier.submit(playbook.notify, {"alert": alert.to_json()}, more)

    def _log_unblocked(self, alerts: list[Alert]) -> None:
        """Alerts whose block was not made (as many blocks as allowed are in force, all of
        them made by people): the playbooks carry on, alerting; said once a minute."""
        if self.on_cap is not None:
            self.on_cap("refused", len(alerts))
        count = self._unblocked.add(len(alerts))
        if count is None:
            return
        logger.error(
            "sqreen: %d playbook alerts (the last: #%d, %s) made no block: %s blocks are in "
            "force, the most allowed (--max-blocks), and none is a playbook's to replace; "
            "the playbooks go on alerting",
            count,
            alerts[-1].id,
            alerts[-1].playbook,
            self.max_blocks,
        )

    def _log_replaced(self, replaced: list[Replacement]) -> None:
        """Blocks made at the cap in place of the oldest playbook blocks: said
        once a minute (an ingest key sending events of made-up addresses fills the cap)."""
        if self.on_cap is not None:
            self.on_cap("replaced", len(replaced))
        count = self._replaced.add(len(replaced))
        if count is None:
            return
        last = replaced[-1]
        logger.warning(
            "sqreen: %s blocks are in force, the most allowed (--max-blocks): %d new playbook "
            "blocks took the place of the oldest playbook blocks (the last: #%d, of "
            "alert #%d, in place of #%d of %s); blocks made by people are never replaced. "
            "Many of them are events of many addresses or users: an attack, or a leaked "
            "ingest key (sqreen keys create, then sqreen keys revoke the old one)",
            self.max_blocks,
            count,
            last.block_id,
            last.alert_id,
            last.lifted.id,
            last.lifted.created_by,
        )


def _nothing() -> None:
    """Nothing left to do once committed."""


def _views(
    stored: Sequence[tuple[Batch, InsertResult]],
) -> Callable[[frozenset[str]], list[EventView]]:
    """The views of the events newly stored by ``stored``'s batches, of the names asked."""

    def views(names: frozenset[str]) -> list[EventView]:
        out: list[EventView] = []
        for batch, result in stored:
            received = to_us(result.received_at)
            seqs = result.seqs
            out += wire_views(batch.events, seqs, batch.enrichment, received, batch.app, names)
        return out

    return views


def _behind(events: Callable[[Sequence[int]], list[StoredEvent]], alert: Alert) -> dict[str, Any]:
    return behind(events(alert.seqs), alert.last_seq)
