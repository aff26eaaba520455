"""What playbooks see of an event (:class:`~._fields.EventView`): from a stored event, or
from a batch as the ingest pipeline parsed it (the collector's hook: nothing read back).

An event's time is never later than its receipt: a skewed SDK clock cannot hold a window
open.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from ..._wire import WireEvent
from ..storage import StoredEvent
from ..storage.model import EPOCH, to_us
from ._fields import EventView

__all__ = ["event_view", "wire_us", "wire_views"]

_new_tuple = tuple.__new__
#: A wire time's second ("2026-12-02T09:38:44", what precedes ".ffffffZ") -> µs since the
#: epoch. A batch's events fall in a few seconds: a lookup and the fraction's digits instead
#: of a datetime and a timedelta (2.8 -> ~1 µs an event with the view, loaded machine).
_SECONDS: dict[str, int] = {}
SECONDS_MAX: Final = 4096
#: The length of the wire form, ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (``sqreen._wire_time``'s
#: ``format_timestamp``: the pipeline's parser gives every event's time in it).
_WIRE_LEN: Final = 27


def wire_us(text: str) -> int:
    """µs since the epoch of a time in the wire's form (any other ISO text is parsed)."""
    wire = len(text) == _WIRE_LEN and text[19] == "." and text[26] == "Z"
    if wire:
        base = _SECONDS.get(text[:19])
        if base is not None:  # the parser checked the digits (normal_timestamp)
            return base + int(text[20:26])
    at = datetime.fromisoformat(text) - EPOCH  # aware: the wire's rules
    us = (at.days * 86_400 + at.seconds) * 1_000_000 + at.microseconds
    fraction = text[20:26]
    if wire and fraction.isascii() and fraction.isdigit():
        if len(_SECONDS) >= SECONDS_MAX:
            _SECONDS.clear()
        _SECONDS[text[:19]] = us - int(fraction)
    return us


def event_view(event: StoredEvent) -> EventView:
    """What playbooks read of a stored event."""
    ts = min(to_us(event.timestamp), to_us(event.received_at))
    return EventView(
        seq=event.seq,
        name=event.name,
        ts_us=ts,
        ip=event.ip,
        user=event.user,
        properties=event.properties,
        request=event.request,
        app=event.app,
        ip_info=event.enrichment.get("ip_info") if event.enrichment else None,
    )


def wire_views(
    events: Sequence[WireEvent],
    seqs: Iterable[int | None],
    enrichment: Sequence[Mapping[str, Any]] | None,
    received_us: int,
    app: str | None,
    names: frozenset[str],
) -> list[EventView]:
    """:func:`event_view` of the newly stored events (a seq) of ``names`` in a batch as
    parsed from the wire (most of a typical batch is of other names: one test each)."""
    out: list[EventView] = []
    append = out.append
    for n, (seq, event) in enumerate(zip(seqs, events, strict=True)):
        name = event["name"]
        if seq is None or name not in names:
            continue
        request = event["request"]
        ip = request.get("ip") if request else None
        ts = wire_us(event["timestamp"])
        extra = enrichment[n] if enrichment else None
        # tuple.__new__: without NamedTuple's slower keyword-taking constructor.
        append(
            _new_tuple(
                EventView,
                (
                    seq,
                    name,
                    ts if ts < received_us else received_us,
                    None if ip is None or len(ip) > 64 else ip,
                    event["user"],
                    event["properties"],
                    request,
                    app,
                    extra.get("ip_info") if extra else None,
                    None,
                ),
            )
        )
    return out
