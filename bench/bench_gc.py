"""What the garbage collector's youngest-generation threshold costs the collector's ingest.

Method
------
One process, the collector's :class:`IngestPipeline` (parse, enrich, store into SQLite, one
transaction a batch) on pre-built 500-event bodies, cold addresses (every address new, as in
``bench_enrich.py``), with IP intelligence off and on (country + kind + one ``.mmdb``), and
the playbooks' six templates over the attack mix of ``bench_ingest.py`` (``--mix attack``),
each under CPython's default threshold (700) and under ``--threshold``. The threshold is
switched between runs in this process (``gc.set_threshold``), so every variant sees the same
machine load: the variants are alternated, in a new order each round, after a full
``gc.collect()`` and ``gc.freeze()`` of what set-up made (as ``sqreen serve`` does). The
figure is the CPU time of the calling thread per event (SQLite runs on it too), the median
over ``--rounds``.

Run: ``.venv/bin/python bench/bench_gc.py [--events 20000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_enrich import BATCH, city_file, public_addresses, wire  # noqa: E402
from bench_playbooks_ab import bodies as attack_bodies  # noqa: E402

from sqreen.server.intel import IpIntel, Reputation  # noqa: E402
from sqreen.server.pipeline import IngestPipeline  # noqa: E402
from sqreen.server.playbooks import TEMPLATES, PlaybookRunner, PlaybookSource  # noqa: E402
from sqreen.server.storage import open_storage  # noqa: E402

DEFAULT = gc.get_threshold()


def run(make: Callable[[Any], IngestPipeline], bodies: list[bytes], db: str, at: int) -> float:
    """CPU µs an event of ``bodies`` through a new pipeline on a new database, at gen0
    threshold ``at``."""
    storage = open_storage(db)
    try:
        pipeline = make(storage)
        gc.collect()
        gc.set_threshold(at, *DEFAULT[1:])
        start = time.thread_time()
        for body in bodies:
            pipeline.ingest(body)
        spent = time.thread_time() - start
    finally:
        gc.set_threshold(*DEFAULT)
        storage.close()
    return spent / (len(bodies) * BATCH) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threshold", type=int, default=50_000)
    args = parser.parse_args()
    logging.getLogger("sqreen.server").setLevel(logging.ERROR)
    rng = random.Random(15)
    ips = public_addresses(args.events, rng)
    enrich_bodies = [
        json.dumps(
            {
                "sdk": {"name": "sqreen-python", "version": "bench"},
                "events": [wire(i, ips[i]) for i in range(s, min(args.events, s + BATCH))],
            }
        ).encode()
        for s in range(0, args.events, BATCH)
    ]
    results: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        mmdb = str(city_file(tmp / "city.mmdb", 20_000, rng))
        playbooks = tmp / "playbooks.toml"
        playbooks.write_text(TEMPLATES)
        intel = IpIntel.open([mmdb])

        def enriched(storage: Any) -> IngestPipeline:
            intel.reputation = Reputation(storage)
            intel._cache.clear()  # cold: every address new
            return IngestPipeline(storage, enrichers=[intel])

        def armed(storage: Any) -> IngestPipeline:
            runner = PlaybookRunner(storage, PlaybookSource(playbooks))
            return IngestPipeline(storage, hooks=[runner])

        variants: list[tuple[str, Callable[[Any], IngestPipeline], list[bytes]]] = [
            ("cold addresses, intel off", IngestPipeline, enrich_bodies),
            ("cold addresses, intel on", enriched, enrich_bodies),
            ("attack, no playbooks", IngestPipeline, []),
            ("attack, six templates", armed, []),
        ]
        gc.collect()
        gc.freeze()
        n = 0
        for round_ in range(args.rounds):
            attack = attack_bodies(args.events, f"gc-{round_}", "attack")
            order = [(v, at) for v in variants for at in (DEFAULT[0], args.threshold)]
            rng.shuffle(order)
            for (label, make, body_list), at in order:
                n += 1
                got = run(make, body_list or attack, str(tmp / f"{n}.db"), at)
                results.setdefault((label, at), []).append(got)
    print(f"{args.events} events, median of {args.rounds} rounds, CPU µs/event")
    print(f"{'variant':28} {'gen0 ' + str(DEFAULT[0]):>10} {'gen0 ' + str(args.threshold):>12}")
    for label, _, _ in variants:
        a = statistics.median(results[(label, DEFAULT[0])])
        b = statistics.median(results[(label, args.threshold)])
        print(f"{label:28} {a:10.1f} {b:12.1f}  {(b / a - 1) * 100:+6.1f}%")


if __name__ == "__main__":
    main()
