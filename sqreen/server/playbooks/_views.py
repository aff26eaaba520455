"""What playbooks see of an event (:class:`~._fields.EventView`): from a stored event, or
from a batch as the ingest pipeline parsed it (the collector's hook: nothing read back).

An event's time is never later than its receipt: a skewed SDK clock cannot hold a window
open.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..._wire import WireEvent
from ..._wire_time import time_us
from ..storage import StoredEvent
from ..storage.model import to_us
from ._fields import EventView

__all__ = ["event_view", "wire_views"]

_new_tuple = tuple.__new__


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
        ts = time_us(event["timestamp"])  # (a batch's seconds remembered)
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
