"""Evaluating playbooks over newly stored events: windows, thresholds, firings.

Playbooks that read the same events, filtered and grouped the same way (and counting the
same ``distinct`` field, or none), share one **stream**: each event it reads is one **hit**
(its time, its seq, its distinct value) under its group key (an IP, a user). Hits live in
the database (the collector's :meth:`update_windows`), so that every process counts the same
windows, or in memory (the backtest). The streams are made once a playbook set, in
:mod:`._streams`; here, what a batch of events does to them.

A batch goes through in three steps, all pure here:

1. :meth:`Engine.plan`: the hits the new events make, and the rules they ask to check.
2. :meth:`Engine.probes`: for each key and rule checked, how many hits (or distinct values)
   since when could make it fire. The store answers with the hits of the keys that reach
   that many, a necessary condition counted in SQL: most keys are far from any threshold and
   cost no Python work.
3. :meth:`Engine.decide`: for those keys, the exact rule (:func:`evaluate`) and the firings,
   each playbook at most once per key while the key is quiet for it (its block lasts, or its
   cooldown); an alert playbook counts only the events after its key's **mark**: later
   than the last event its previous alert there counted, or stored after every one it
   counted (:func:`marks_of`, :func:`~._hits.after_mark`). The store writes the firings'
   alerts and blocks, the quiet times and the marks in the same transaction, which holds
   the keys (two processes counting one key take turns, so a threshold crossed by events
   split over two processes fires once, at the crossing event).

Only events stored by this batch count, and an event whose own time is older than a window
counts for nothing (an import of past events never blocks anyone); :attr:`Plan.late` counts
those a playbook would have read, so that the collector can say that events came late.
"""

from __future__ import annotations

import ipaddress
import json
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from ..._blocking import fold_identifier
from ._config import Playbook, PlaybookSet
from ._fields import EventView, FieldPath, group_covers, matches
from ._hits import (
    Firing,
    Hit,
    HitRow,
    Mark,
    Plan,
    Probe,
    QuietKey,
    StreamKey,
    Triggered,
    after_mark,
    evaluate,
)
from ._streams import US, Rule, group_streams, window_us_of

__all__ = ["Engine", "is_exempt"]

#: Exempt from every playbook: the collector's own machine and the proxies in front of apps.
LOOPBACK: Final = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def _late(
    late: dict[str, tuple[int, int]],
    event: EventView,
    where: tuple[tuple[FieldPath, frozenset[str]], ...],
    read_key: Callable[[EventView], str | None],
    readers: tuple[tuple[str, int], ...],
    age: int,
) -> bool:
    """Count ``event``, ``age`` µs old, as late (:attr:`Plan.late`) for each of ``readers``
    (playbook id, window µs) whose window it is older than, if they read it at all; return
    whether they do not (``where`` or no group key): nothing more to do with it."""
    if (where and not matches(where, event)) or read_key(event) is None:
        return True
    for playbook, window_us in readers:
        if age > window_us:
            n, oldest = late.get(playbook, (0, 0))
            late[playbook] = (n + 1, max(oldest, age))
    return False


def _check(
    checks: dict[StreamKey, tuple[Rule, ...]], key: StreamKey, rules: tuple[Rule, ...]
) -> None:
    """Add ``rules`` to those checked for ``key``. The tuples are the engine's own, shared by
    every event of one name (almost always the same one again: an identity test)."""
    old = checks.get(key)
    if old is None:
        checks[key] = rules
    elif old is not rules:
        checks[key] = old + tuple(r for r in rules if all(r is not o for o in old))


class Engine:
    """The playbooks of one :class:`PlaybookSet`, grouped into streams."""

    def __init__(self, playbooks: PlaybookSet) -> None:
        self.playbooks = playbooks
        grouped = group_streams(playbooks)
        self._rules, self._streams, self._readers = grouped.rules, grouped.streams, grouped.readers
        # What each event name does: read by ``plan`` for every event.
        self._feeds, self._triggers = grouped.feeds, grouped.triggers
        self.max_window_us = max((s.window_us for s in self._streams.values()), default=0)
        #: Each playbook's window (µs).
        self.windows = {p.id: window_us_of(p) for p in playbooks.playbooks}
        #: The (window µs, distinct?) the rules count in: a probe since another time (a
        #: mark's) bounds no window's count.
        self.counted_windows = frozenset(r.counts for r in self._rules)
        self.stream_of = {r.id: r.stream.id for r in self._rules}  # each playbook's stream
        #: Every event name some playbook reads: the others need no look at all.
        self.names = frozenset(self._feeds) | frozenset(self._triggers)

    @property
    def empty(self) -> bool:
        return not self._rules

    def plan(
        self,
        events: Sequence[EventView],
        now_us: int,
        quiet: Mapping[StreamKey, int] | None = None,
    ) -> Plan:
        """The hits and checks of newly stored ``events``; ``quiet`` (key -> until when, µs)
        leaves out keys known to be quiet for every rule that reads them."""
        hits: list[HitRow] = []
        checks: dict[StreamKey, tuple[Rule, ...]] = {}
        counts: dict[StreamKey, int] = {}
        triggered: list[tuple[str, str, Triggered]] = []
        late: dict[str, tuple[int, int]] = {}
        feeds_of, triggers_of = self._feeds, self._triggers
        new_tuple = tuple.__new__  # a HitRow without NamedTuple's slower constructor
        skipped = (quiet or {}).get  # a lookup, not a call of the caller's, an event
        for event in events:
            name = event.name
            feeds = feeds_of.get(name)
            triggers = triggers_of.get(name)
            if feeds is None and triggers is None:
                continue
            ts = event.ts_us
            age = now_us - ts
            for feed in feeds or ():
                (
                    stream,
                    window_us,
                    where,
                    read_key,
                    read_value,
                    rules,
                    shortest,
                    readers,
                    late_after,
                ) = feed
                if age > late_after:  # older than a window of the stream's: came late
                    if _late(late, event, where, read_key, readers, age) or age > window_us:
                        continue
                elif where and not matches(where, event):
                    continue
                key = read_key(event)
                if key is None:
                    continue
                stream_key = (stream, key)
                if skipped(stream_key, 0) > now_us:
                    continue
                value = None if read_value is None else read_value(event)
                hits.append(new_tuple(HitRow, (stream, key, ts, event.seq, value)))
                counts[stream_key] = counts.get(stream_key, 0) + 1
                if age > shortest:
                    rules = tuple(r for r in rules if ts >= now_us - r.window_us)
                if rules:
                    _check(checks, stream_key, rules)
            for rule, alone, read_group in triggers or ():
                where = rule.playbook.where
                if age > rule.window_us:
                    _late(late, event, where, read_group, ((rule.id, rule.window_us),), age)
                    continue
                if where and not matches(where, event):
                    continue
                key = read_group(event)
                if key is not None:
                    stream_key = (rule.stream.id, key)
                    if skipped(stream_key, 0) <= now_us:
                        _check(checks, stream_key, alone)
                        at = new_tuple(Triggered, (ts, event.seq, name))
                        triggered.append((rule.id, key, at))
        return Plan(hits, checks, counts, triggered, late)

    def keys(self, plan: Plan) -> list[StreamKey]:
        """Every key the plan touches (in no order: the store sorts them where it locks them;
        sorting an attack's 500 keys a batch here cost 0.7 µs an event)."""
        return list(plan.counts.keys() | plan.checks.keys())

    def probes(
        self,
        plan: Plan,
        now_us: int,
        quiet: Mapping[QuietKey, int],
        bounds: Mapping[StreamKey, Mapping[tuple[int, bool] | str, int]] | None = None,
        unseen: tuple[Mapping[StreamKey, int], int] | None = None,
    ) -> list[Probe]:
        """What to ask the store for the rules the plan checks: not those quiet now, nor
        those whose count in their window is known to be below their threshold (``bounds``:
        per key, (window µs, distinct?) -> at most that many, and alert playbook -> at most
        that many from its mark; ``unseen``: hits per key, and a time after which a window
        holds no other hit). An alert playbook's rule on a key it alerted on is probed over
        its whole window, as any other: a hit stored after the alert may be older than the
        alert's last event (:func:`~._hits.after_mark`); the bounds' count from the mark
        keeps it unread until enough hits came after."""
        out = set()
        added, others = unseen if unseen is not None else ({}, 1 << 62)
        for stream_key, rules in plan.checks.items():
            key = stream_key[1]
            known = bounds.get(stream_key) if bounds else None
            for rule in rules:
                if quiet and quiet.get((rule.quiet_id, key), 0) > now_us:
                    continue
                # Most keys of an attack are known far below every threshold: no probe. So
                # are those an alert playbook alerted on, until enough hits came after.
                need = rule.need
                if known and (
                    known.get(rule.counts, need) < need or known.get(rule.id, need) < need
                ):
                    continue
                # A key first met, in a window of only hits this process added: as many.
                if now_us - rule.window_us > others and added.get(stream_key, 0) < rule.need:
                    continue
                out.add((stream_key[0], key, now_us - rule.window_us, rule.need, rule.distinct))
        return [Probe._make(p) for p in out]

    def listening(
        self, plan: Plan, key: StreamKey, quiet: Mapping[QuietKey, int], now_us: int
    ) -> bool:
        """Whether some rule the plan checks on ``key`` is not quiet now."""
        return any(quiet.get((r.quiet_id, key[1]), 0) <= now_us for r in plan.checks.get(key, ()))

    def decide(
        self,
        plan: Plan,
        hits: Mapping[StreamKey, Sequence[Hit]],
        quiet: Mapping[QuietKey, int],
        now_us: int,
        exempt: Callable[[Playbook, str], bool] | None = None,
        marks: Mapping[QuietKey, Mark] | None = None,
    ) -> tuple[list[Firing], dict[QuietKey, int]]:
        """What fires, given the hits of the keys whose probes found enough (the others
        cannot fire), and until when each fired playbook is quiet for its key (those quiet
        for a time). ``marks``: per (alert playbook, key), the last event its previous
        alert counted: it counts only the hits after (an ``after`` rule: its own events
        after too, each checked on the hits after the mark); each firing's mark is
        :func:`marks_of`."""
        firings: list[Firing] = []
        quieted: dict[QuietKey, int] = {}
        checks = plan.checks
        triggered: dict[QuietKey, list[Triggered]] | None = None  # made if an after rule asks
        # Only the keys whose hits were found (a few of the batch's hundreds), in key order.
        for stream_key in sorted(k for k, found in hits.items() if found and k in checks):
            rules, found = checks[stream_key], hits[stream_key]
            key = stream_key[1]
            for rule in {r.playbook.id: r for r in rules}.values():
                p, quiet_key = rule.playbook, (rule.quiet_id, key)
                if max(quiet.get(quiet_key, 0), quieted.get(quiet_key, 0)) > now_us:
                    continue
                mark = marks.get((p.id, key)) if marks and p.counts_once else None
                if p.after is not None:
                    if triggered is None:
                        triggered = {}
                        for rule_id, group, one in plan.triggered:
                            triggered.setdefault((rule_id, group), []).append(one)
                    at = triggered.get((p.id, key))
                    if at is not None:
                        # Each of its own events that fires leaves its mark, and the batch's
                        # later ones are checked against it as a later batch's would be: the
                        # logins of one batch alert as they would have one by one (and as
                        # the backtest replays them), MAX_AFTER_FIRINGS at most.
                        if exempt is None or not exempt(p, key):
                            for counted, trigger in _after_all(p, found, now_us, at, mark):
                                firings.append(_firing(p, key, counted, trigger))
                                if p.quiet_for:
                                    quieted[quiet_key] = now_us + int(
                                        p.quiet_for.total_seconds() * US
                                    )
                                    break
                        continue
                counted_from = found
                if mark is not None and p.after is None:
                    # The events behind its previous alert count for nothing again.
                    counted_from = [h for h in found if after_mark(h, mark)]
                fired = evaluate(p, counted_from, now_us)
                if fired is None or (exempt is not None and exempt(p, key)):
                    continue
                if p.quiet_for:
                    quieted[quiet_key] = now_us + int(p.quiet_for.total_seconds() * US)
                firings.append(_firing(p, key, fired, None))
        return firings, quieted

    def quiet_until(self, key: StreamKey, quiet: Mapping[QuietKey, int]) -> int:
        """Until when (µs) ``key`` needs no hit recorded: every rule reading its stream is
        quiet until then and beyond its window (hits made before would be gone by then);
        0 when some rule is listening."""
        until = None
        for rule in self._readers.get(key[0], ()):
            rest = quiet.get((rule.quiet_id, key[1]), 0) - rule.window_us
            until = rest if until is None else min(until, rest)
        return max(0, until or 0)


#: Firings of an ``after`` rule for one key from one batch, at most: a body of one user's
#: 500 failures each followed by a success gave 500 alerts of its window's hits each.
MAX_AFTER_FIRINGS: Final = 10


def _after_all(
    p: Playbook, hits: Sequence[Hit], now_us: int, triggers: Sequence[Triggered], mark: Mark | None
) -> list[tuple[tuple[int, list[Hit]], Triggered]]:
    """An ``after`` rule's firings on the batch's ``triggers``, in time order: each the first
    trigger after enough hits of the window and, after an alert (``mark``, then each firing),
    after a hit that came since. The owner's next logins, no failure since, do not alert
    again on the same failures; but a success after a new failure counts the window's, lest a
    success forged (or the owner's) in the middle of an attack spend the alert the takeover
    should raise. The hits are sorted once, each firing found by bisection."""
    if p.after is None or not triggers:
        return []
    ordered = sorted(hits, key=lambda h: (h.ts, h.seq))
    times = [h.ts for h in ordered]
    order = [(h.ts, h.seq) for h in ordered]
    first = bisect_left(times, now_us - window_us_of(p))  # the window's first hit
    need = p.after.threshold
    if len(times) - first < need:
        return []
    enough = times[first + need - 1] if need > 0 else None
    pending = sorted(t for t in triggers if enough is None or t.ts >= enough)
    out: list[tuple[tuple[int, list[Hit]], Triggered]] = []
    i = 0
    while i < len(pending) and len(out) < MAX_AFTER_FIRINGS:
        if mark is not None:
            j = bisect_right(order, mark)  # the first hit after the mark
            if j == len(order):
                break
            fresh = order[j]
            while i < len(pending) and (pending[i].ts, pending[i].seq) <= fresh:
                i += 1
            if i == len(pending):
                break
        trigger = pending[i]
        recent = ordered[first : bisect_right(times, trigger.ts)]
        out.append(((len(recent), recent), trigger))
        mark = (trigger.ts, trigger.seq)
        i += 1
    return out


def _firing(
    p: Playbook, key: str, fired: tuple[int, list[Hit]], trigger: Triggered | None
) -> Firing:
    """The :class:`Firing` of ``p`` for ``key``: ``fired`` is (total, the hits counted); an
    ``after`` rule's ``trigger`` (its own event) is the last event behind it."""
    total, counted = fired
    seqs = tuple(h.seq for h in counted)
    last_us, last_seq = counted[-1].ts, counted[-1].seq
    if trigger is not None:
        last_us, last_seq, seqs = trigger.ts, trigger.seq, (*seqs, trigger.seq)
    return Firing(
        p,
        key,
        total,
        counted[0].ts,
        last_us,
        counted[0].seq,
        last_seq,
        seqs,
        None if trigger is None else trigger.name,
    )


def is_exempt(playbook: Playbook, key: str) -> bool:
    """Whether ``key`` (of ``playbook.group_by``) is exempt: loopback, the playbook's
    ``exempt_ips`` (an IPv6 group holding one of them too, and an IPv4 address one of whose
    Teredo or 6to4 addresses is: its block would cover it), or a user matching one of its
    ``exempt_users``."""
    kind = playbook.group_by.kind
    if kind == "ip":  # an address, or an IPv6 network (``ipv6_prefix``): exempt if it holds one
        return group_covers(key, (*LOOPBACK, *playbook.exempt_ips))
    if kind == "user" and playbook.exempt_users:
        if playbook.group_by.key is None:
            try:
                user = json.loads(key)
            except ValueError:
                return False
        else:
            user = {playbook.group_by.key: key}
        # The group key's values are folded (user_key): the exemptions' too.
        return any(
            all(user.get(k) == fold_identifier(v) for k, v in e.items())
            for e in playbook.exempt_users
        )
    return False
