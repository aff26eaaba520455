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
``sqreen`` package, loaded beside this tree's: ``revisions.py``). ``--backend postgres``
stores on PostgreSQL (a throwaway cluster as the tests start it, or ``--dsn``; a fresh
database a pipeline): the figures are the collector's CPU, PostgreSQL's own is left out.

Run: ``.venv/bin/python bench/bench_travel.py [--events 60000] [--against REV]``.
"""

from __future__ import annotations

import argparse
import contextlib
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

from bench_enrich import dense_city_file, public_addresses, staged  # noqa: E402
from bench_ingest import BATCH, USERS, envelopes, postgres, user_of  # noqa: E402
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
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--dsn", help="with --backend postgres: a cluster of yours")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        fresh = stack.enter_context(postgres(args.dsn)) if args.backend == "postgres" else None
        if args.backend == "postgres" and fresh is None:
            parser.error("--backend postgres: no PostgreSQL binaries found (make system-deps)")
        tmp = stack.enter_context(tempfile.TemporaryDirectory())

        def db(name: str) -> str:
            return f"{tmp}/{name}.db" if fresh is None else str(fresh())

        run(args, tmp, db)


def run(args: argparse.Namespace, tmp: str, db: Any) -> None:
    """The runs of :func:`main`, each pipeline on the database ``db(name)`` gives."""
    mmdb = str(dense_city_file(Path(tmp) / "city.mmdb", random.Random(16)))
    homes = public_addresses(USERS, random.Random(8))
    ips = [homes[user_of(n)] for n in range(args.events)]
    bodies = [
        json.dumps(e, separators=(",", ":")).encode()
        for e in envelopes(args.events, "travel", "typical", ips)
    ]
    variants = {
        "none": pipeline("sqreen", db("none"), mmdb, False, False),
        "IP intelligence": pipeline("sqreen", db("intel"), mmdb, True, False),
        "+ travel": pipeline("sqreen", db("travel"), mmdb, True, True),
    }
    if args.against:
        name = load_revision(args.against, tmp)
        variants[f"+ travel, {args.against}"] = pipeline(name, db("against"), mmdb, True, True)
    gc.freeze()  # as the collector runs (sqreen/server/_serve_worker.py)
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    times: dict[str, list[tuple[float, ...]]] = {label: [] for label in variants}
    clock = time.process_time
    for n, body in enumerate(bodies):
        order = list(variants)
        random.Random(n).shuffle(order)
        for label in order:
            times[label].append(staged(variants[label], body, clock)[0])
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
