"""Window state in memory: the backtest's store (the collector's is the database)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ._engine import Engine, Firing, StreamKey, WindowState
from ._fields import EventView

__all__ = ["MemoryWindows"]


class MemoryWindows:
    """Runs an :class:`Engine` over batches of events, keeping the windows in a dict."""

    def __init__(self, engine: Engine, exempt: Callable[..., bool] | None = None) -> None:
        self.engine = engine
        self.exempt = exempt
        self.states: dict[StreamKey, WindowState] = {}

    def run(self, events: Sequence[EventView], now_us: int) -> list[Firing]:
        plan = self.engine.plan(events, now_us)
        keys = self.engine.keys(plan)
        if not keys:
            return []
        current = {key: self.states[key] for key in keys if key in self.states}
        states, firings = self.engine.apply(plan, current, now_us, self.exempt)
        self.states.update(states)
        return firings
