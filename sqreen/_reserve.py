"""The room the queue keeps for the events the collector's playbooks watch.

An attacker who floods an endpoint the app tracks (or a collector that is down while the app
keeps tracking) fills the queue; were every event alike, his brute force would then be dropped
as ``queue_full`` with the rest, and the playbooks that count failed logins would not see it.
So ordinary events may fill each bound (``max_queue_size``, ``max_queue_bytes``) only up to a
reserve below it, a tenth of it, at least 1 (but never the whole bound: a queue of one event
keeps no reserve, since refusing every ordinary event would make ``track()`` useless); an
event whose name is in the queue's ``urgent`` set (the action set's ``watch`` list, and its
other spellings) may use the whole bound.

``put()`` compares with the ordinary bounds, as it always compared with one bound: an
accepted event's path is unchanged. Only a watched event refused by them asks
:meth:`Reserve.admits`, which slims it (:func:`slim`: its request without the body, its
query, User-Agent and forwarded header cut): otherwise the attacker's own login failures,
each padded with a 64 KiB body, used up the reserve's bytes in about 25 events, and every
later login failure was refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._event import QueuedEvent

__all__ = ["RESERVE_CLIP", "Reserve", "reserve", "slim"]

#: What a watched event's request keeps of its query, User-Agent and forwarded header when
#: it takes the reserve (its body goes): a few KiB an event at most, so that the reserve's
#: bytes hold about as many events as its count.
RESERVE_CLIP: Final = 512


def reserve(bound: int) -> int:
    """The part of ``bound`` kept for watched events: a tenth, at least 1, never all of it."""
    return min(bound - 1, max(1, bound // 10))


class Reserve:
    """A queue's bounds: whole for watched events, less the reserve for the others; and the
    watched events dropped all the same (the whole bound was reached). Read and changed under
    the queue's lock."""

    __slots__ = ("dropped", "max_bytes", "max_events", "ordinary_bytes", "ordinary_events")

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.ordinary_events = max_events - reserve(max_events)
        self.ordinary_bytes = max_bytes - reserve(max_bytes)
        self.dropped = 0

    def admits(self, event: QueuedEvent, pending: int, pending_bytes: int) -> bool:
        """Whether a watched ``event``, refused by the ordinary bounds, fits within the whole
        bounds (the reserve), slimmed (:func:`slim`); one that does not is counted."""
        if pending < self.max_events:
            slim(event)
            if pending_bytes + event.size <= self.max_bytes:
                return True
        self.dropped += 1
        return False


def slim(event: QueuedEvent) -> None:
    """``event`` with its request slimmed (:meth:`~._request.RequestSnapshot.slimmed`), its
    size counted again. What a client pads (a 64 KiB body, a long query or User-Agent) would
    otherwise fill the reserve's bytes with a few dozen login failures of the attacker's,
    after which every other watched event was refused."""
    request = event.request
    if request is not None:
        slimmed = request.slimmed(RESERVE_CLIP)
        event.size += slimmed.weight - request.weight
        event.request = slimmed
