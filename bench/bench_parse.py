"""The collector's parse stage alone: the C fast path against the usual path, in one process.

The batches ``bench_ingest.py`` sends (500 events, ``--mix``), inflated, go through
``IngestPipeline.parse`` (the fast path: ``server/fastparse.py``, typed decoding in C, then
the few rules left to Python) and ``IngestPipeline.parse_slow`` (the usual path: the body
decoded, then each event through ``sqreen._wire.parse_event``), and ``fastjson.loads`` alone
(the decoding both start from), alternated body by body; CPU time (``time.process_time``),
medians over the bodies of µs an event. The first body's two batches are compared first:
the bench refuses to time paths that disagree.

Run: ``.venv/bin/python bench/bench_parse.py [--events 20000] [--rounds 3] [--mix attack]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import BATCH, batches  # noqa: E402

from sqreen.server import fastjson  # noqa: E402
from sqreen.server.ingest import gunzip  # noqa: E402
from sqreen.server.pipeline import IngestPipeline  # noqa: E402


def spoiled(body: bytes) -> bytes:
    """What follows the last event's name in ``body``."""
    tail = body[body.rindex(b'"name":"') + len(b'"name":"') :]
    return tail[tail.index(b'",') + 2 :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mix", choices=["attack", "typical", "storm"], default="typical")
    parser.add_argument(
        "--spoil",
        action="store_true",
        help="the last event of each body invalid (a reserved name): the fast path's worst case",
    )
    args = parser.parse_args()
    bodies = [gunzip(b, 1 << 30) for b in batches(args.events, "parse", args.mix)]
    if args.spoil:  # found by Python after every event was decoded and checked: both paths run
        bodies = [b[: b.rindex(b'"name":"')] + b'"name":"sq.x",' + spoiled(b) for b in bodies]
    pipeline = IngestPipeline.__new__(IngestPipeline)  # parse needs no storage
    if repr(pipeline.parse(bodies[0])) != repr(pipeline.parse_slow(bodies[0])):
        raise SystemExit("the two paths disagree")
    variants: dict[str, Callable[[bytes], Any]] = {
        "usual (parse_slow)": pipeline.parse_slow,
        "fast (parse)": pipeline.parse,
        "JSON decoding alone": fastjson.loads,
    }
    times: dict[str, list[float]] = {label: [] for label in variants}
    clock = time.process_time
    for _ in range(args.rounds):
        for i, body in enumerate(bodies):
            order = list(variants.items())
            for label, parse in order if i % 2 == 0 else reversed(order):
                start = clock()
                parse(body)
                times[label].append(clock() - start)
    print(
        f"\nCPU µs per event, median of {len(bodies) * args.rounds} bodies of {BATCH} "
        f"({args.mix} mix; alternated body by body; load {os.getloadavg()[0]:.1f})"
    )
    for label, rows in times.items():
        print(f"{label:22}{statistics.median(rows) * 1e6 / BATCH:9.2f}")


if __name__ == "__main__":
    main()
