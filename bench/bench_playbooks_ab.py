"""What the six built-in playbooks cost ingest: the same batches, with and without, alternated.

Method
------
One process, two fresh SQLite databases, two ingest pipelines built as ``sqreen serve``
builds them (IP intelligence enriching; the playbooks' hook on one only). The batches are
those of ``bench_ingest.py`` (500 events each, ``--mix attack`` or ``typical``), parsed from
JSON (no HTTP, no gzip). Each batch goes through both pipelines, the order swapped every
batch, after ``--warmup`` batches that are not counted (the first firings, the first
blocks). The figure is the CPU time of the calling thread per event (SQLite's work runs on
it too), median and mean over the batches, and their ratios: the machine's noise hits both
variants alike. The mean counts the batches where many keys fire at once (with ``--mix
attack`` and 100 000 events, each of the 5000 users crosses ``brute-force-account``'s 10
failures between the 45 000th event and the 50 000th); the median is the steady state.
``--profile`` prints a cProfile of the playbooks' hook alone.

Run: ``.venv/bin/python bench/bench_playbooks_ab.py [--mix attack] [--events 50000]``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import BATCH, event  # noqa: E402

from sqreen.server.intel import IpIntel, Reputation  # noqa: E402
from sqreen.server.pipeline import IngestPipeline  # noqa: E402
from sqreen.server.playbooks import TEMPLATES, PlaybookRunner, PlaybookSource  # noqa: E402
from sqreen.server.storage import open_storage  # noqa: E402


def bodies(total: int, run: str, mix: str) -> list[bytes]:
    app = {"name": "bench", "host": "bench", "pid": 1, "framework": "none"}
    return [
        json.dumps(
            {
                "sdk": {"name": "sqreen-python", "version": "bench"},
                "app": app,
                "events": [event(n, run, mix) for n in range(start, min(total, start + BATCH))],
            },
            separators=(",", ":"),
        ).encode()
        for start in range(0, total, BATCH)
    ]


def pipeline(db: str, playbooks: Path | None) -> tuple[IngestPipeline, PlaybookRunner | None]:
    storage = open_storage(db)
    enrichers = [IpIntel(reputation=Reputation(storage))]
    if playbooks is None:
        return IngestPipeline(storage, enrichers=enrichers), None
    runner = PlaybookRunner(storage, PlaybookSource(playbooks))
    return IngestPipeline(storage, enrichers=enrichers, hooks=[runner]), runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=10, help="batches not counted")
    parser.add_argument("--mix", choices=["attack", "typical"], default="attack")
    parser.add_argument("--profile", action="store_true", help="cProfile the playbooks' hook")
    parser.add_argument("--sort", default="cumulative", help="the profile's order")
    args = parser.parse_args()
    logging.getLogger("sqreen.server").setLevel(logging.ERROR)  # one line an alert
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "playbooks.toml"
        path.write_text(TEMPLATES)
        plain, _ = pipeline(str(Path(tmp) / "none.db"), None)
        armed, runner = pipeline(str(Path(tmp) / "templates.db"), path)
        assert runner is not None
        profile = cProfile.Profile() if args.profile else None
        if profile is not None:  # the hook alone, as the pipeline calls it
            inner = runner.stored_batch

            def profiled(batch: object, result: object) -> None:
                profile.runcall(inner, batch, result)

            runner.stored_batch = profiled  # type: ignore[method-assign,assignment]
        costs: dict[str, list[float]] = {"none": [], "templates": []}
        run = f"ab-{time.time_ns()}"
        for n, body in enumerate(bodies(args.events + args.warmup * BATCH, run, args.mix)):
            order = [("none", plain), ("templates", armed)]
            for label, pipe in order if n % 2 else reversed(order):
                start = time.thread_time()
                pipe.ingest(body)
                if n >= args.warmup:
                    costs[label].append((time.thread_time() - start) / BATCH * 1e6)
    print(f"\n--mix {args.mix}, {len(costs['none'])} batches of {BATCH} events, CPU µs/event:")
    print(f"{'':>8}  {'none':>10}  {'templates':>10}  {'extra':>8}")
    for label, cost in (("median", statistics.median), ("mean", statistics.fmean)):
        a, b = cost(costs["none"]), cost(costs["templates"])
        print(f"{label:>8}  {a:>10.1f}  {b:>10.1f}  {(b / a - 1) * 100:>+7.1f}%")
    if profile is not None:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(35)


if __name__ == "__main__":
    main()
