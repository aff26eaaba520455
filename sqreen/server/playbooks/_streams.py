"""Playbooks grouped into streams, once a playbook set (:class:`~._engine.Engine` is built
on them): which playbooks share a stream, its stable id, and for each event name the
streams it feeds and the rules it makes check, laid out for :meth:`~._engine.Engine.plan`,
which reads them for every event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

from ._config import Playbook, PlaybookSet
from ._fields import EventView, FieldPath

__all__ = ["US", "Feed", "Rule", "Stream", "Streams", "Trigger", "group_streams", "window_us_of"]

US: Final = 1_000_000  # µs a second


@dataclass(frozen=True, slots=True)
class Stream:
    id: str
    events: frozenset[str]
    where: tuple[tuple[FieldPath, frozenset[str]], ...]
    group_by: FieldPath
    distinct: FieldPath | None
    window_us: int


class Rule(NamedTuple):
    playbook: Playbook
    stream: Stream
    triggers: frozenset[str]  # event names that make it check (its own, not ``after``'s)
    window_us: int
    need: int  # the threshold (``after``'s for a sequence)
    distinct: bool  # counts distinct values
    id: str  # the playbook's
    counts: tuple[int, bool]  # (window_us, distinct): what its bound is remembered under
    quiet_id: str  # what its quiet times are kept under (:attr:`Playbook.quiet_id`)


class Feed(NamedTuple):
    """What an event of one name does to one stream: a hit, and the rules it checks."""

    stream: str  # its id
    window_us: int
    where: tuple[tuple[FieldPath, frozenset[str]], ...]
    read_key: Callable[[EventView], str | None]
    read_value: Callable[[EventView], str | None] | None
    rules: tuple[Rule, ...]
    shortest: int  # the rules' shortest window (µs)
    #: Every playbook reading the stream (those ``rules`` and the others: an ``after``
    #: rule's), with its window (µs): an event older than one counts for nothing there.
    readers: tuple[tuple[str, int], ...]
    late_after: int  # their shortest window (µs): an event older is late for some


#: A rule an event name triggers on a stream it does not feed (``after``): the rule, the
#: rule alone (the tuple checked), and its group key's reader.
Trigger = tuple[Rule, tuple[Rule, ...], Callable[[EventView], str | None]]


class Streams(NamedTuple):
    rules: list[Rule]
    streams: dict[str, Stream]
    readers: dict[str, list[Rule]]  # the rules that read a stream
    feeds: dict[str, list[Feed]]  # per event name
    triggers: dict[str, list[Trigger]]  # per event name


def window_us_of(p: Playbook) -> int:
    return int(p.window.total_seconds() * US)


def _signature(events: Iterable[str], p: Playbook) -> str:
    where = sorted((str(f), sorted(v)) for f, v in p.where)
    return json.dumps([sorted(events), where, p.group_by.spec], separators=(",", ":"))


def _by_distinct(
    members: list[tuple[Playbook, frozenset[str]]],
) -> dict[str | None, list[tuple[Playbook, frozenset[str]]]]:
    """Split playbooks that read the same events the same way by the field they count
    distinct values of; those that count events (no ``distinct``) join the first such
    stream, as its values cost them nothing."""
    fields = sorted({p.distinct.spec for p, _ in members if p.distinct is not None})
    split: dict[str | None, list[tuple[Playbook, frozenset[str]]]] = {}
    for member in members:
        distinct = member[0].distinct
        field = distinct.spec if distinct is not None else (fields[0] if fields else None)
        split.setdefault(field, []).append(member)
    return split


def group_streams(playbooks: PlaybookSet) -> Streams:
    """The streams of ``playbooks``, their rules, and what each event name does to them."""
    groups: dict[str, list[tuple[Playbook, frozenset[str]]]] = {}
    for p in playbooks.playbooks:
        fed_by = frozenset(p.after.events if p.after else p.events)
        groups.setdefault(_signature(fed_by, p), []).append((p, fed_by))
    rules: list[Rule] = []
    streams: dict[str, Stream] = {}
    readers: dict[str, list[Rule]] = {}
    ordered = [
        (json.dumps([signature, field]), members)
        for signature, group in groups.items()
        for field, members in _by_distinct(group).items()
    ]
    for signature, members in sorted(ordered):
        first = members[0][0]
        distinct = next((p.distinct for p, _ in members if p.distinct is not None), None)
        stream = Stream(
            # Short (every stored hit holds it), stable while the playbook file says the
            # same thing of this stream.
            id="s" + hashlib.sha256(signature.encode()).hexdigest()[:15],
            events=members[0][1],
            where=first.where,
            group_by=first.group_by,
            distinct=distinct,
            window_us=max(window_us_of(p) for p, _ in members),
        )
        streams[stream.id] = stream
        for p, _ in members:
            need = p.after.threshold if p.after else p.threshold
            by_value = p.distinct is not None
            us = window_us_of(p)
            rule = Rule(
                p, stream, frozenset(p.events), us, need, by_value, p.id, (us, by_value), p.quiet_id
            )
            rules.append(rule)
            readers.setdefault(stream.id, []).append(rule)
    # For each event name: the streams it feeds, each with the rules it triggers there
    # (same key), and the rules it triggers on a stream it does not feed (``after``).
    # Each with the shortest window of those rules: an event newer than that (almost
    # every one) checks them all, with no test per rule.
    # The stream's parts are spelled out (and its fields' readers made once): ``plan``'s
    # loop reads them for every event some playbook reads.
    feeds: dict[str, list[Feed]] = {}
    triggers: dict[str, list[Trigger]] = {}
    for stream in streams.values():
        windows = tuple((r.id, r.window_us) for r in readers[stream.id])
        for name in stream.events:
            same = tuple(r for r in readers[stream.id] if name in r.triggers)
            feed = Feed(
                stream.id,
                stream.window_us,
                stream.where,
                stream.group_by.reader(),
                None if stream.distinct is None else stream.distinct.reader(),
                same,
                min((r.window_us for r in same), default=0),
                windows,
                min(w for _, w in windows),
            )
            feeds.setdefault(name, []).append(feed)
    for rule in rules:
        for name in rule.triggers - rule.stream.events:
            reader = rule.playbook.group_by.reader()
            triggers.setdefault(name, []).append((rule, (rule,), reader))
    return Streams(rules, streams, readers, feeds, triggers)
