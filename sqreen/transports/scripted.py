"""A transport whose replies a function decides: every delivery branch, tested in milliseconds.

Like httpx's ``MockTransport``::

    from sqreen.transports import Reply, ScriptedTransport

    def handler(call):
        if call.kind == "events" and len(call.events) > 100:
            return Reply("split")
        return Reply("ok", actions={"version": 1, "items": []})

    sqreen.init(transport=ScriptedTransport(handler))

:func:`replies` scripts a sequence (``replies(Reply("retry", retry_after=2), Reply("ok"))``):
each call takes the next reply, and ``ok`` once the script is spent.

.. versionadded:: 0.1
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .base import Reply

__all__ = ["Call", "ScriptedTransport", "replies"]


@dataclass(slots=True)
class Call:
    """One call made: a batch (``events``), a ``heartbeat`` or an ``actions`` long-poll."""

    kind: Literal["events", "heartbeat", "actions"]
    #: The batch's envelope, or the heartbeat's payload.
    payload: dict[str, Any]
    #: The batch's events, decoded.
    events: list[dict[str, Any]] = field(default_factory=list)
    timeout: float | None = None


Handler = Callable[[Call], Reply]


def replies(*script: Reply) -> Handler:
    """A handler that answers with ``script`` in order, then ``Reply("ok")``."""
    remaining = list(script)
    lock = threading.Lock()

    def handler(call: Call) -> Reply:
        with lock:
            return remaining.pop(0) if remaining else Reply("ok")

    return handler


class ScriptedTransport:
    """Answers each call with ``handler(call)`` and keeps every call in :attr:`calls`."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler: Handler = handler or (lambda call: Reply("ok"))
        self.calls: list[Call] = []
        self.closed = False

    def _answer(self, call: Call) -> Reply:
        self.calls.append(call)
        return self.handler(call)

    def send(
        self, envelope: dict[str, Any], events: list[bytes], timeout: float | None = None
    ) -> Reply:
        decoded = [json.loads(e) for e in events]
        return self._answer(Call("events", envelope, decoded, timeout))

    def heartbeat(self, payload: dict[str, Any], timeout: float | None = None) -> Reply:
        return self._answer(Call("heartbeat", payload, timeout=timeout))

    def poll_actions(self, version: int, wait: float) -> Reply:
        """The action long-poll (``payload``: the version held and the wait)."""
        return self._answer(Call("actions", {"version": version, "wait": wait}, timeout=wait))

    def batches(self) -> list[list[dict[str, Any]]]:
        """The events of each batch sent, in order."""
        return [c.events for c in self.calls if c.kind == "events"]

    def close(self) -> None:
        self.closed = True

    def after_fork(self) -> None:
        pass
