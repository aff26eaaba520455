"""What a collector process remembers of the windows' counts, to count in SQL less often.

The store counts, for each key a batch checks, its hits (or distinct values) in each rule's
window (the prefilter of :meth:`~..storage.ControlStore.update_windows`). Most keys are far
from any threshold, and ask again with their next hit. :class:`Bounds` remembers each count
with the hits this process has added since (:meth:`Bounds.advance`), which bounds the count
from above: the window has moved on (old hits only leave it) and nobody else wrote (the
store says so: on SQLite, ``PRAGMA data_version`` is unchanged since this process's
previous batch; on PostgreSQL it never says so). A key whose bound is below a rule's
threshold cannot fire on it: its probe is left out (:meth:`~._engine.Engine.probes`), and
the answer is the same as the count's. Anything else (another process wrote, the clock went
back, too many keys) forgets them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ._engine import StreamKey

__all__ = ["Bounds"]

#: Keys remembered at most (then all forgotten: they are counted again).
MAX_KEYS: Final = 200_000

#: A count's rule, as a probe names it: (window µs, distinct values?).
Rule = tuple[int, bool]


class Bounds:
    """Upper bounds of the hits (or distinct values) each key has in each rule's window."""

    def __init__(self) -> None:
        self._bounds: dict[StreamKey, dict[Rule, int]] = {}
        self._now = 0  # µs: the latest time a count or a batch was made at

    @property
    def known(self) -> Mapping[StreamKey, Mapping[tuple[int, bool], int]]:
        """Per key, (window µs, distinct?) -> at most that many (for :meth:`Engine.probes`)."""
        return self._bounds

    def advance(self, added: Mapping[StreamKey, int], now_us: int, fresh: bool) -> None:
        """A batch stored ``added`` hits per key (told in its transaction, after they were
        stored: :attr:`~._engine.Plan.counts`); ``fresh``: nobody else wrote since this
        process's previous batch."""
        bounds = self._bounds
        if not fresh or now_us < self._now or len(bounds) > MAX_KEYS:
            bounds.clear()
        self._now = now_us
        if not bounds:
            return
        for key, n in added.items():
            known = bounds.get(key)
            if known:
                for rule in known:
                    known[rule] += n  # each hit adds at most one to a count of distinct values

    def counted(self, counts: Mapping[tuple[str, str, int, int, bool], int]) -> None:
        """The store counted these probes (in the same transaction, hits included)."""
        now = self._now
        for (stream, key, since, _, distinct), n in counts.items():
            self._bounds.setdefault((stream, key), {})[(now - since, distinct)] = n
