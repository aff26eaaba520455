"""Hits, quiet times and marks in memory: the backtest's store (the collector's is the
database)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ._engine import Engine
from ._fields import EventView
from ._hits import Firing, Hit, Mark, QuietKey, StreamKey, marks_of, merged_marks

__all__ = ["MemoryWindows"]


class MemoryWindows:
    """Runs an :class:`Engine` over batches of events, keeping hits in a dict."""

    def __init__(self, engine: Engine, exempt: Callable[..., bool] | None = None) -> None:
        self.engine = engine
        self.exempt = exempt
        self.hits: dict[StreamKey, list[Hit]] = {}
        self.quiet: dict[QuietKey, int] = {}
        self.marks: dict[QuietKey, Mark] = {}

    def run(self, events: Sequence[EventView], now_us: int) -> list[Firing]:
        engine = self.engine
        plan = engine.plan(events, now_us)
        for row in plan.hits:
            found = self.hits.setdefault((row.stream, row.key), [])
            found.append(Hit(row.ts, row.seq, row.value))
        horizon = now_us - engine.max_window_us
        for key in plan.checks:
            kept = self.hits.get(key)
            if kept and kept[0].ts < horizon:
                self.hits[key] = [h for h in kept if h.ts >= horizon]
        probes = engine.probes(plan, now_us, self.quiet)
        wanted = {(p.stream, p.key) for p in probes}
        fetched = {key: sorted(self.hits.get(key, ())) for key in wanted}
        firings, quieted = engine.decide(plan, fetched, self.quiet, now_us, self.exempt, self.marks)
        self.quiet.update(quieted)
        self.marks.update(merged_marks(self.marks, marks_of(firings)))
        return firings
