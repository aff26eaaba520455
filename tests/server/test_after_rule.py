"""``after`` rules (a success after failures: account takeover) judged with the hits' times
sorted once: the same firings as evaluating every trigger in turn, without reading the hits
again for each trigger."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import pytest

from sqreen.server.playbooks import Playbook, parse_playbooks
from sqreen.server.playbooks._engine import _after_all
from sqreen.server.playbooks._hits import Hit, Triggered, evaluate

S = 1_000_000
NOW = 1_800_000_000 * S


def takeover(threshold: int, window: str = "10m") -> Playbook:
    text = f"""
[[playbook]]
id = "ato"
events = ["auth.login.success"]
after = {{ events = ["auth.login.failure"], threshold = {threshold} }}
group_by = "user"
threshold = 1
window = "{window}"
action = "alert"
"""
    (playbook,) = parse_playbooks(text).playbooks
    return playbook


def _after(
    p: Playbook, hits: Sequence[Hit], now_us: int, triggers: Sequence[Triggered]
) -> tuple[tuple[int, list[Hit]] | None, Triggered | None]:
    """The rule's first firing on ``triggers`` (no alert before), else (None, None)."""
    for fired, trigger in _after_all(p, hits, now_us, triggers, None)[:1]:
        return fired, trigger
    return None, None


def plain(
    p: Playbook, hits: Sequence[Hit], now_us: int, triggers: Sequence[Triggered]
) -> tuple[tuple[int, list[Hit]] | None, Triggered | None]:
    """What ``_after`` did before: every trigger in order, the hits counted for each."""
    for trigger in sorted(triggers):
        fired = evaluate(p, hits, now_us, trigger.ts)
        if fired is not None:
            return fired, trigger
    return None, None


@pytest.mark.parametrize("seed", range(8))
def test_the_same_firings_as_each_trigger_counted_in_turn(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(400):
        p = takeover(rng.randint(1, 8), rng.choice(["30s", "1m", "2m"]))

        def at() -> int:  # around the window's start and up to now, on a coarse grid
            return NOW - rng.randint(0, 150) * S // 2

        seqs = rng.sample(range(1, 10_000), 60)
        hits = [Hit(at(), seqs.pop(), None) for _ in range(rng.randint(0, 25))]
        rng.shuffle(hits)  # as found, in no order: the hits counted come in time order
        names = ["auth.login.success", "auth.login.success.x"]
        triggers = [
            Triggered(at(), seqs.pop(), rng.choice(names)) for _ in range(rng.randint(0, 6))
        ]
        in_order = sorted(hits, key=lambda h: (h.ts, h.seq))
        assert _after(p, hits, NOW, triggers) == plain(p, in_order, NOW, triggers)


class CountedHits(list[Hit]):
    """Hits that count how often they are read through."""

    passes = 0

    def __iter__(self) -> Iterator[Hit]:
        self.passes += 1
        return super().__iter__()


def test_successes_before_many_failures_read_the_failures_once() -> None:
    # 4 096 failures of one user a second ago, then 1 000 of its successes timestamped five
    # minutes before them: none fires, and the failures were read once per success.
    hits = CountedHits(Hit(NOW - S, seq, None) for seq in range(4096))
    triggers = [Triggered(NOW - 300 * S, 10_000 + n, "auth.login.success") for n in range(1000)]
    assert _after(takeover(10), hits, NOW, triggers) == (None, None)
    assert hits.passes <= 2
    # One success after them fires, the failures counted once more.
    hits.passes = 0
    late = Triggered(NOW, 20_000, "auth.login.success")
    fired, trigger = _after(takeover(10), hits, NOW, [*triggers, late])
    assert trigger == late and fired is not None and fired[0] == 4096
    assert hits.passes <= 2
