"""What the engine (:mod:`._engine`) reads and makes: hits, probes, the events that make an
``after`` rule check, firings, a batch's plan, and the marks alert playbooks leave; and the
exact rule on one key's hits (:func:`evaluate`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from ._config import Playbook
from ._streams import Rule, window_us_of

__all__ = [
    "Firing",
    "Hit",
    "HitRow",
    "Mark",
    "Plan",
    "Probe",
    "QuietKey",
    "StreamKey",
    "Triggered",
    "evaluate",
    "left_after",
    "marks_of",
]

#: (stream id, group key).
StreamKey = tuple[str, str]
#: (playbook id, group key): what is quiet, or marked.
QuietKey = tuple[str, str]
#: (time µs, seq) of the last event an alert counted (:func:`marks_of`).
Mark = tuple[int, int]


class Hit(NamedTuple):
    ts: int  # µs
    seq: int
    value: str | None  # the stream's distinct field, if it counts one


class HitRow(NamedTuple):
    """A hit as stored: which stream and key it belongs to."""

    stream: str
    key: str
    ts: int
    seq: int
    value: str | None


class Probe(NamedTuple):
    """Ask the store for the hits of ``key`` in ``stream`` since ``since`` when they number at
    least ``need`` (distinct values, when ``distinct``)."""

    stream: str
    key: str
    since: int
    need: int
    distinct: bool


class Triggered(NamedTuple):
    """An event of an ``after`` rule's own names (a success), which makes it check the
    events it comes after (the failures)."""

    ts: int  # µs
    seq: int
    name: str


class Firing(NamedTuple):
    """A playbook crossed its threshold for a group key."""

    playbook: Playbook
    key: str
    total: int
    first_us: int
    last_us: int
    first_seq: int
    last_seq: int
    #: The seqs of the events behind it (the hits counted, then the event that fired an
    #: ``after`` rule), oldest first.
    seqs: tuple[int, ...]
    #: The name of the event that fired an ``after`` rule (its time and seq are the last):
    #: the success the failures came before. None for the other rules.
    trigger: str | None = None


class Plan(NamedTuple):
    """What a batch does: the hits to record, and the rules to check per key (each once)."""

    hits: list[HitRow]
    checks: dict[StreamKey, tuple[Rule, ...]]
    #: How many of ``hits`` each key has (counted as they are made: the bounds and the
    #: keys to hold read it, where a second pass over the hits cost ~2 µs an event under an
    #: attack, measured).
    counts: dict[StreamKey, int]
    #: The events that made an ``after`` rule check, as (playbook, group key, event), in the
    #: batch's order: the firing is one of them, not the last hit counted. Filled only by
    #: those events (a success), never by the others, and flat (an append an event): only
    #: :meth:`Engine.decide` groups them, when an ``after`` rule has hits to judge.
    triggered: list[tuple[str, str, Triggered]]
    #: Per playbook, the events it reads that were older than its window, which count for
    #: nothing: (how many, the oldest's age µs). Empty but for events delivered late.
    late: dict[str, tuple[int, int]]


def marks_of(firings: Iterable[Firing]) -> dict[QuietKey, Mark]:
    """The marks the firings of alert playbooks leave on their keys (``counts_once``): the
    time of the last event each counted and the greatest seq it counted (an ``after``
    rule's: the event that fired it, its time and seq). An event neither later than the
    mark's time nor stored after its seq counts for nothing again for that playbook
    (:func:`after_mark`): one stored after the alert with an earlier time of its own (another
    process's commit, an app server's clock behind) still counts."""
    return {
        (f.playbook.id, f.key): (f.last_us, f.last_seq if f.trigger else max(f.seqs))
        for f in firings
        if f.playbook.counts_once
    }


def merged_marks(
    known: Mapping[QuietKey, Mark], new: Mapping[QuietKey, Mark]
) -> dict[QuietKey, Mark]:
    """The marks ``new`` leaves on keys that may hold ``known`` ones: each field the greater
    (a mark's time and seq are not ordered together: an alert on events stored late has the
    greater seq and the earlier time, and the events of both alerts stay counted), as the
    store writes them."""
    out = dict(new)
    for key, (ts, seq) in new.items():
        old = known.get(key)
        if old is not None:
            out[key] = (max(old[0], ts), max(old[1], seq))
    return out


def after_mark(hit: tuple[int, int, object], mark: Mark) -> bool:
    """Whether ``hit`` (time, seq...) was not counted by the alert that left ``mark``
    (:func:`marks_of`): later than its last event, or stored after every event it counted."""
    return hit[0] > mark[0] or hit[1] > mark[1]


def left_after(
    firings: Iterable[Firing], hits: Mapping[StreamKey, Sequence[Hit]], stream_of: Mapping[str, str]
) -> dict[StreamKey, dict[str, int]]:
    """Per key, per alert playbook that fired on it (but ``after`` rules, whose count is not
    from their mark), how many of the key's ``hits`` came after the firing's mark (none,
    but for hits the rule did not count: ``max_per_value``): what its count from the mark
    is at most, until more hits come (``stream_of``: each playbook's stream)."""
    out: dict[StreamKey, dict[str, int]] = {}
    for f in firings:
        p = f.playbook
        if p.counts_once and p.after is None:
            key = (stream_of[p.id], f.key)
            mark = (f.last_us, max(f.seqs))
            out.setdefault(key, {})[p.id] = sum(1 for h in hits.get(key, ()) if after_mark(h, mark))
    return out


def evaluate(
    p: Playbook, hits: Sequence[Hit], now_us: int, until: int | None = None
) -> tuple[int, list[Hit]] | None:
    """(count, the hits counted) when ``p`` fires now on these hits of one key, else None;
    ``until``: only hits no later than that (the events an ``after`` rule's event came
    after)."""
    since = now_us - window_us_of(p)
    if until is None:
        recent = [h for h in hits if h.ts >= since]
    else:
        recent = [h for h in hits if since <= h.ts <= until]
    if p.after is not None:
        return (len(recent), recent) if len(recent) >= p.after.threshold else None
    if p.distinct is None:
        return (len(recent), recent) if len(recent) >= p.threshold else None
    by_value: dict[str, list[Hit]] = {}
    for hit in recent:
        if hit.value is not None:
            by_value.setdefault(hit.value, []).append(hit)
    if p.max_per_value is not None:
        by_value = {v: hs for v, hs in by_value.items() if len(hs) <= p.max_per_value}
    if len(by_value) < p.threshold:
        return None
    counted = sorted(h for hs in by_value.values() for h in hs)
    return len(by_value), counted
