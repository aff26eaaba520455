"""The alerts waiting for one webhook URL: a queue per playbook, served in turn, and past a
few waiting, one summary post for the rest.

A flood of one playbook's alerts (a scan of a thousand addresses, or alerts forged with a
leaked ingest key, each for a new address) must neither delay nor push out the alert that
matters, which may be of another playbook or of the same one. So a playbook has at most
``burst`` alerts waiting to be posted alone; the next ones, until its turn comes to post
them, are merged into one :class:`Summary` (how many, and each group key with its count),
posted after those ``burst``. Whatever the flood, an alert is posted, alone or named in a
summary, after at most ``burst + 1`` posts of its playbook (each preceded by at most one of
every other playbook with alerts waiting), and memory stays bounded: a summary names at most
``most_keys`` group keys, and :data:`MOST_KEY_BYTES` of them (a user's group key can be
kilobytes long), and counts the alerts of any others.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

__all__ = ["BURST", "MOST_KEYS", "MOST_KEY_BYTES", "Lane", "Summary", "Waiting"]

#: Alerts of one playbook waiting to be posted alone, past which they are summarised.
BURST: Final = 10
#: Group keys a summary names (the alerts of any others are counted, as ``unlisted``).
MOST_KEYS: Final = 1000
#: The bytes of the group keys a summary names, at most, as the post's JSON writes them: a
#: post stays a few hundred KB (a receiver's body limit refuses a larger one whole),
#: whatever the keys' length and characters.
MOST_KEY_BYTES: Final = 256 * 1024


@dataclass(slots=True)
class Summary:
    """Alerts of one playbook merged into one post, while ``burst`` of them waited."""

    playbook: str
    most_keys: int = MOST_KEYS
    alerts: int = 0
    keys: dict[str, int] = field(default_factory=dict)
    unlisted: int = 0  # alerts whose group key is past the most_keys (or bytes) named
    key_bytes: int = 0  # the bytes of the keys named, as JSON posts them
    group_by: str | None = None
    first: Mapping[str, Any] = field(default_factory=dict)  # the first alert merged
    last: Mapping[str, Any] = field(default_factory=dict)  # the last

    def add(self, alert: Mapping[str, Any]) -> None:
        self.alerts += 1
        key = str(alert.get("group_key", ""))
        if key in self.keys:
            self.keys[key] += 1
        elif len(self.keys) < self.most_keys and (
            # As posted: JSON escapes a control character to 6 bytes, an accented letter
            # to 6, an emoji to 12.
            self.key_bytes + (size := len(json.dumps(key))) <= MOST_KEY_BYTES
        ):
            self.keys[key] = 1
            self.key_bytes += size
        else:
            self.unlisted += 1
        if not self.first:
            self.first = alert
            group_by = alert.get("group_by")
            self.group_by = None if group_by is None else str(group_by)
        self.last = alert

    def payload(self) -> dict[str, Any]:
        """What is posted: ``{"summary": {...}}`` (documented in the README, Playbooks)."""
        return {
            "summary": {
                "playbook": self.playbook,
                "group_by": self.group_by,
                "alerts": self.alerts,
                "group_keys": self.keys,
                "unlisted": self.unlisted,
                "first_id": self.first.get("id"),
                "last_id": self.last.get("id"),
                "first_created_at": self.first.get("created_at"),
                "last_created_at": self.last.get("created_at"),
            }
        }


class Waiting(NamedTuple):
    """The next post of a lane: an alert's body, or a summary (encoded by the poster)."""

    body: Callable[[], bytes] | None  # encoded when posted
    summary: Summary | None

    @property
    def alerts(self) -> int:
        return 1 if self.summary is None else self.summary.alerts


class _Queue:
    """One playbook's alerts waiting: those to post alone, then the summary of the rest."""

    __slots__ = ("alone", "summary")

    def __init__(self) -> None:
        self.alone: deque[Callable[[], bytes]] = deque()
        self.summary: Summary | None = None


class Lane:
    """The posts waiting for one URL: a queue per playbook, served in turn, each holding at
    most ``burst`` alerts to post alone (one, while ``most`` posts wait in all) and one
    summary. Once a playbook's summary is open, its next alerts join it until it is taken,
    so that it comes after those ``burst`` at most, never after a stream of later ones."""

    def __init__(self, most: int, burst: int = BURST, most_keys: int = MOST_KEYS) -> None:
        self.most = most
        self.burst = burst
        self.most_keys = most_keys
        self._queues: dict[str, _Queue] = {}  # insertion order: the turn
        self._cond = threading.Condition()
        self._closed = False
        self.waiting = 0  # posts: alerts to post alone, and open summaries
        self.unfinished = 0  # waiting, or being posted

    def put(self, playbook: str, alert: Mapping[str, Any], body: Callable[[], bytes]) -> bool:
        """Queue ``alert`` (``body``, its post) in its playbook's turn; True when it went
        into the playbook's summary instead of a post of its own."""
        with self._cond:
            queue_ = self._queues.setdefault(playbook, _Queue())
            # A playbook with nothing waiting posts its alert alone whatever waits in all:
            # past ``most``, only the playbooks already waiting are summarised.
            if queue_.summary is None and len(queue_.alone) < self.burst:
                if self.waiting < self.most or not queue_.alone:
                    queue_.alone.append(body)
                    self._added()
                    return False
            if queue_.summary is None:
                queue_.summary = Summary(playbook, self.most_keys)
                self._added()
            queue_.summary.add(alert)
            return True

    def _added(self) -> None:
        self.waiting += 1
        self.unfinished += 1
        self._cond.notify()

    def get(self) -> Waiting | None:
        """The next post in turn (blocking), or None once closed (what waits then stays
        unposted: :meth:`close` counts it)."""
        with self._cond:
            while not self.waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            playbook, queue_ = next(iter(self._queues.items()))
            del self._queues[playbook]
            if queue_.alone:
                waiting = Waiting(queue_.alone.popleft(), None)
            else:
                waiting, queue_.summary = Waiting(None, queue_.summary), None
            if queue_.alone or queue_.summary is not None:
                self._queues[playbook] = queue_  # to the end of the turn
            self.waiting -= 1
            return waiting

    def done(self) -> None:
        with self._cond:
            self.unfinished -= 1

    def close(self) -> tuple[int, int]:
        """Stop: the lane's thread ends after its post in flight. Return the alerts left
        unposted: those waiting (alone or in summaries), and those being posted."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            left = sum(
                len(q.alone) + (q.summary.alerts if q.summary is not None else 0)
                for q in self._queues.values()
            )
            return left, self.unfinished - self.waiting
