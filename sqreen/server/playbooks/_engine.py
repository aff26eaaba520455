"""Evaluating playbooks over newly stored events: windows, thresholds, firings.

Playbooks that read the same events, grouped the same way, share one **stream**: for each
group key (an IP, a user), the recent hits (the event's time, its seq, and the values that
``distinct`` fields need), newest last, bounded in time by the longest window and in length
by what the deepest playbook needs. A stream's state also records, per playbook, until when
the key is quiet (one alert per key while its block lasts, or its cooldown).

The engine is pure: :meth:`Engine.plan` turns a batch of events into the keys it touches,
and :meth:`Engine.apply` turns those keys' states into new states and :class:`Firing`
values. The caller runs ``apply`` inside one transaction that holds the keys' rows (the
storage's ``update_windows``), so that several collector processes counting the same key
take turns and a threshold crossed by events split over two processes fires once, at the
crossing event. The same engine runs over an in-memory store for the backtest.

Exact where it matters: a count (``threshold`` events in the window) keeps exactly the
``threshold`` most recent hits; distinct counts keep up to ``4 x threshold + 64`` of them.
Only events stored by this batch count, and an event whose own time is older than a window
counts for nothing (an import of past events never blocks anyone).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from ..._json import dumps_ascii
from ._config import Playbook, PlaybookSet
from ._fields import EventView, FieldPath

__all__ = ["Engine", "Firing", "StreamKey", "WindowState"]

MAX_DEPTH: Final = 4096
_US: Final = 1_000_000
#: Exempt from every playbook: the collector's own machine and the proxies in front of apps.
LOOPBACK: Final = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

#: (stream id, group key): one row of window state.
StreamKey = tuple[str, str]


#: A hit: [time in µs, seq, [distinct values...]] (lists: they are stored as JSON as they are).
Hit = list[Any]


@dataclass(slots=True)
class WindowState:
    """The window of one group key in one stream: hits, oldest first, and until when each
    playbook is quiet for this key (µs)."""

    hits: list[Hit] = field(default_factory=list)
    quiet: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return dumps_ascii({"h": self.hits, "q": self.quiet})

    @classmethod
    def from_json(cls, text: str | None) -> WindowState:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(data.get("h", []), data.get("q", {}))


class Firing(NamedTuple):
    """A playbook crossed its threshold for a group key."""

    playbook: Playbook
    key: str
    total: int
    first_us: int
    last_us: int
    first_seq: int
    last_seq: int
    #: The seqs of the events behind it (the hits counted), oldest first.
    seqs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Stream:
    id: str
    events: frozenset[str]
    where: tuple[tuple[FieldPath, frozenset[str]], ...]
    group_by: FieldPath
    fields: tuple[FieldPath, ...]  # the distinct fields its playbooks read
    window_us: int
    depth: int


class _Rule(NamedTuple):
    playbook: Playbook
    stream: _Stream
    triggers: frozenset[str]  # event names that make it check (its own, not ``after``'s)
    field_index: int | None  # where its distinct value is in a hit
    window_us: int


class Plan(NamedTuple):
    """What a batch does: the hits to record per key, and the rules to check per key."""

    hits: dict[StreamKey, list[Hit]]
    checks: dict[StreamKey, list[_Rule]]


def _depth(playbook: Playbook) -> int:
    if playbook.after is not None:
        return playbook.after.threshold
    if playbook.distinct is not None:
        return 4 * playbook.threshold + 64
    return playbook.threshold


def _signature(events: Iterable[str], p: Playbook) -> str:
    where = sorted((str(f), sorted(v)) for f, v in p.where)
    return json.dumps([sorted(events), where, str(p.group_by)], separators=(",", ":"))


class Engine:
    """The playbooks of one :class:`PlaybookSet`, grouped into streams."""

    def __init__(self, playbooks: PlaybookSet) -> None:
        self.playbooks = playbooks
        groups: dict[str, list[tuple[Playbook, frozenset[str]]]] = {}
        for p in playbooks.playbooks:
            fed_by = frozenset(p.after.events if p.after else p.events)
            groups.setdefault(_signature(fed_by, p), []).append((p, fed_by))
        self._rules: list[_Rule] = []
        self._streams: dict[str, _Stream] = {}
        self._readers: dict[str, list[_Rule]] = {}  # the rules that read a stream
        for n, (signature, members) in enumerate(sorted(groups.items())):
            fields = tuple(dict.fromkeys(p.distinct for p, _ in members if p.distinct))
            first = members[0][0]
            stream = _Stream(
                id=f"s{n}:{signature}"[:255],
                events=members[0][1],
                where=first.where,
                group_by=first.group_by,
                fields=fields,
                window_us=max(_us(p) for p, _ in members),
                depth=min(MAX_DEPTH, max(_depth(p) for p, _ in members)),
            )
            self._streams[stream.id] = stream
            for p, _ in members:
                index = fields.index(p.distinct) if p.distinct else None
                rule = _Rule(p, stream, frozenset(p.events), index, _us(p))
                self._rules.append(rule)
                self._readers.setdefault(stream.id, []).append(rule)
        # For each event name: the streams it feeds, each with the rules it triggers there
        # (same key), and the rules it triggers on a stream it does not feed (``after``).
        self._feeds: dict[str, list[tuple[_Stream, list[_Rule]]]] = {}
        self._triggers: dict[str, list[_Rule]] = {}
        for stream in self._streams.values():
            for name in stream.events:
                same = [r for r in self._readers[stream.id] if name in r.triggers]
                self._feeds.setdefault(name, []).append((stream, same))
        for rule in self._rules:
            for name in rule.triggers - rule.stream.events:
                self._triggers.setdefault(name, []).append(rule)

    @property
    def empty(self) -> bool:
        return not self._rules

    def plan(
        self,
        events: Sequence[EventView],
        now_us: int,
        skip: Callable[[StreamKey], bool] | None = None,
    ) -> Plan:
        """The hits and checks of newly stored ``events`` (their order is kept); ``skip``
        leaves out keys known to be quiet for every rule that reads them."""
        hits: dict[StreamKey, list[Hit]] = {}
        checks: dict[StreamKey, list[_Rule]] = {}
        for event in events:
            name = event.name
            feeds = self._feeds.get(name)
            triggers = self._triggers.get(name)
            if feeds is None and triggers is None:
                continue
            for stream, rules in feeds or ():
                if event.ts_us < now_us - stream.window_us:
                    continue
                if stream.where and not _matches(stream.where, event):
                    continue
                key = stream.group_by.read(event)
                if key is None or (skip is not None and skip((stream.id, key))):
                    continue
                values = [f.read(event) for f in stream.fields]
                found = hits.get((stream.id, key))
                if found is None:
                    found = hits[(stream.id, key)] = []
                found.append([event.ts_us, event.seq, values])
                for rule in rules:
                    if event.ts_us >= now_us - rule.window_us:
                        checks.setdefault((stream.id, key), []).append(rule)
            for rule in triggers or ():
                p = rule.playbook
                if event.ts_us < now_us - rule.window_us or not _matches(p.where, event):
                    continue
                key = p.group_by.read(event)
                if key is not None and not (skip is not None and skip((rule.stream.id, key))):
                    checks.setdefault((rule.stream.id, key), []).append(rule)
        return Plan(hits, checks)

    def keys(self, plan: Plan) -> list[StreamKey]:
        """Every row the plan touches, in one order (rows are locked in it: no deadlock)."""
        return sorted(plan.hits.keys() | plan.checks.keys())

    def apply(
        self,
        plan: Plan,
        states: Mapping[StreamKey, WindowState],
        now_us: int,
        exempt: Callable[[Playbook, str], bool] | None = None,
    ) -> tuple[dict[StreamKey, WindowState], list[Firing]]:
        """New states for the plan's keys, and what fired (each playbook at most once per
        key, and never while the key is quiet for it)."""
        out: dict[StreamKey, WindowState] = {}
        firings: list[Firing] = []
        for key in self.keys(plan):
            stream = self._streams.get(key[0])
            if stream is None:
                continue
            state = states.get(key) or WindowState()
            horizon = now_us - stream.window_us
            new = plan.hits.get(key)
            kept = [h for h in state.hits if h[0] >= horizon]
            if new:
                kept += new
                kept.sort()
            quiet = {pid: until for pid, until in state.quiet.items() if until > now_us}
            state = WindowState(kept[-stream.depth :], quiet)
            for rule in {r.playbook.id: r for r in plan.checks.get(key, ())}.values():
                p = rule.playbook
                if quiet.get(p.id, 0) > now_us:
                    continue
                fired = _evaluate(rule, state.hits, now_us)
                if fired is None or (exempt is not None and exempt(p, key[1])):
                    continue
                count, counted = fired
                quiet[p.id] = now_us + int(p.quiet_for.total_seconds() * _US)
                firings.append(
                    Firing(
                        p,
                        key[1],
                        count,
                        counted[0][0],
                        counted[-1][0],
                        counted[0][1],
                        counted[-1][1],
                        tuple(h[1] for h in counted),
                    )
                )
            out[key] = state
        return out, firings

    def quiet_until(self, key: StreamKey, state: WindowState) -> int:
        """Until when (µs) ``key`` needs no hit recorded: every rule reading its stream is
        quiet until then and beyond its window (hits made before would be gone by then);
        0 when some rule is listening."""
        until = None
        for rule in self._readers.get(key[0], ()):
            quiet = state.quiet.get(rule.playbook.id, 0) - rule.window_us
            until = quiet if until is None else min(until, quiet)
        return max(0, until or 0)


def _matches(where: tuple[tuple[FieldPath, frozenset[str]], ...], event: EventView) -> bool:
    return all(path.read(event) in wanted for path, wanted in where)


def _us(p: Playbook) -> int:
    return int(p.window.total_seconds() * _US)


def _evaluate(rule: _Rule, hits: list[Hit], now_us: int) -> tuple[int, list[Hit]] | None:
    """(count, the hits counted) when the rule's playbook fires now, else None."""
    p = rule.playbook
    since = now_us - rule.window_us
    recent = hits if hits and hits[0][0] >= since else [h for h in hits if h[0] >= since]
    if p.after is not None:
        return (len(recent), recent) if len(recent) >= p.after.threshold else None
    if rule.field_index is None:
        return (len(recent), recent) if len(recent) >= p.threshold else None
    by_value: dict[str, list[Hit]] = {}
    for hit in recent:
        value = hit[2][rule.field_index]
        if value is not None:
            by_value.setdefault(value, []).append(hit)
    if p.max_per_value is not None:
        by_value = {v: hs for v, hs in by_value.items() if len(hs) <= p.max_per_value}
    if len(by_value) < p.threshold:
        return None
    counted = sorted(h for hs in by_value.values() for h in hs)
    return len(by_value), counted


def is_exempt(playbook: Playbook, key: str) -> bool:
    """Whether ``key`` (of ``playbook.group_by``) is exempt: loopback, the playbook's
    ``exempt_ips``, or a user matching one of its ``exempt_users``."""
    kind = playbook.group_by.kind
    if kind == "ip":
        try:
            address = ipaddress.ip_address(key)
        except ValueError:
            return False
        networks = (*LOOPBACK, *playbook.exempt_ips)
        return any(address.version == n.version and address in n for n in networks)
    if kind == "user" and playbook.exempt_users:
        if playbook.group_by.key is None:
            try:
                user = json.loads(key)
            except ValueError:
                return False
        else:
            user = {playbook.group_by.key: key}
        return any(
            all(user.get(k) == v for k, v in exempt.items()) for exempt in playbook.exempt_users
        )
    return False
