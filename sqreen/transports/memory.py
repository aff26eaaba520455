"""A transport that keeps events in memory: for tests, and ``transport="memory:"``."""

from __future__ import annotations

import json
import threading
from typing import Any

from .base import Reply

__all__ = ["MemoryTransport"]


class MemoryTransport:
    """Keeps every delivered event (as its wire dictionary) in :attr:`events`.

    ``actions`` is handed back with every reply, so tests can drive blocking.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.actions: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def send(
        self, envelope: dict[str, Any], events: list[bytes], timeout: float | None = None
    ) -> Reply:
        decoded = [json.loads(e) for e in events]
        with self._lock:
            self.events.extend(decoded)
        return Reply("ok", actions=self.actions)

    def heartbeat(self, payload: dict[str, Any], timeout: float | None = None) -> Reply:
        with self._lock:
            self.heartbeats.append(payload)
        return Reply("ok", actions=self.actions)

    def clear(self) -> None:
        with self._lock:
            self.events.clear()

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        self._lock = threading.Lock()
