"""Impossible travel's cost at ingest: the collector's CPU per event with IP intelligence
alone, and with impossible travel after it, beside no enrichment at all.

Method
------
Traffic: ``bench_ingest.py``'s typical mix (a third of it successful logins), 5 000 users,
each user always from the same public address (so no pair is impossible: what every login
costs, not what alerts cost), each event's time now. A dense City ``.mmdb``
(``bench_enrich.dense_city_file``: every public IPv4 address placed, records as
GeoLite2-City's), so that every login has a place and is compared. The same bodies go
through each pipeline (parse, enrich, store in SQLite, one transaction a batch; each on its
own fresh database), **taking each batch in turn** in an order drawn anew each batch, so
that load, caches and the databases' growth are the same for all; CPU of the thread a
stage, median and mean of the batches after a warm-up, µs an event.

``--against REV`` (e.g. ``main``) adds REV's pipeline with impossible travel (its
``sqreen`` package, loaded beside this tree's: ``revisions.py``).

Run: ``.venv/bin/python bench/bench_travel.py [--events 60000] [--against REV]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_enrich import dense_city_file, public_addresses  # noqa: E402
from bench_ingest import BATCH, USERS, envelopes, user_of  # noqa: E402
from revisions import getter, load_revision  # noqa: E402

STAGES = ("parse", "enrich", "store")
WARMUP = 20


def pipeline(name: str, db: str, mmdb: str, intel: bool, travel: bool) -> Any:
    """The ingest pipeline of package ``name`` on a fresh database ``db``."""
    get = getter(name)
    storage = get("server.storage", "open_storage")(db)
    enrichers: list[Any] = []
    if intel:
        enrichers.append(get("server.intel", "IpIntel").open([mmdb], reputation=storage))
    if travel:
        enrichers.append(get("server.intel", "ImpossibleTravel")(storage))
    return get("server.pipeline", "IngestPipeline")(storage, enrichers=enrichers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--against", metavar="REV", help="also REV's pipeline with travel")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mmdb = str(dense_city_file(Path(tmp) / "city.mmdb", random.Random(16)))
        homes = public_addresses(USERS, random.Random(8))
        ips = [homes[user_of(n)] for n in range(args.events)]
        bodies = [
            json.dumps(e, separators=(",", ":")).encode()
            for e in envelopes(args.events, "travel", "typical", ips)
        ]
        variants = {
            "none": pipeline("sqreen", f"{tmp}/none.db", mmdb, False, False),
            "IP intelligence": pipeline("sqreen", f"{tmp}/intel.db", mmdb, True, False),
            "+ travel": pipeline("sqreen", f"{tmp}/travel.db", mmdb, True, True),
        }
        if args.against:
            name = load_revision(args.against, tmp)
            variants[f"+ travel, {args.against}"] = pipeline(
                name, f"{tmp}/against.db", mmdb, True, True
            )
        gc.freeze()  # as the collector runs (sqreen/server/_cli_serve.py)
        gc.set_threshold(50_000, *gc.get_threshold()[1:])
        times: dict[str, list[tuple[float, ...]]] = {label: [] for label in variants}
        clock = time.process_time
        for n, body in enumerate(bodies):
            order = list(variants)
            random.Random(n).shuffle(order)
            for label in order:
                pipe = variants[label]
                t0 = clock()
                batch = pipe.parse(body)
                t1 = clock()
                pipe.enrich(batch)
                t2 = clock()
                pipe.store(batch)
                times[label].append((t1 - t0, t2 - t1, clock() - t2))
    print(f"\n{args.events} events, batches of {BATCH}, CPU µs an event (median / mean)")
    print(f"{'pipeline':<28}" + "".join(f"{stage:>16}" for stage in (*STAGES, "total")))
    for label, rows in times.items():
        rows = rows[WARMUP:]
        cells = []
        for i in range(len(STAGES) + 1):
            values = [sum(r) if i == len(STAGES) else r[i] for r in rows]
            cells.append(
                f"{statistics.median(values) / BATCH * 1e6:7.1f} /"
                f"{statistics.mean(values) / BATCH * 1e6:6.1f}"
            )
        print(f"{label:<28}" + "".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
