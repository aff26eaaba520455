"""IP intelligence at ingest: its cost per event, and ingest throughput with it on and off.

Method
------
Addresses: public IPv4 addresses drawn at random (seeded) outside the special ranges, one in
ten an IPv6 address inside 2001::/16-2a0f::/16, one in ten from Google's and Tor's ranges
(kind known). ``.mmdb``: a City-layout file written by ``tests/mmdb.py`` with ``--networks``
/24 networks (real GeoLite2-City files are deeper trees: a lookup there walks up to 128
nodes, here up to 120, and decodes a record of the same shape).

1. **Per event**: :class:`IpIntel` called on batches of 500 parsed events, as the pipeline
   calls it, in three set-ups (country + kind; country + kind + one ``.mmdb``; and the latter
   with ``Reputation`` over a real SQLite storage holding 1000 IP blocks). ``cold``: every
   address new (the cache never hits: the worst case, a scan from many addresses);
   ``warm``: 250 addresses repeated (an attack, or a busy app's regular users). The best of
   ``--repeat`` runs, in µs an event.
2. **Ingest on vs off**: the collector's :class:`IngestPipeline` (parse, enrich, store in
   SQLite, one transaction a batch) on the same pre-built 500-event bodies, with no enricher
   and with IP intelligence (country + kind + one ``.mmdb``, cold addresses), alternated
   ``--repeat`` times in one process on fresh databases; best of each; cold and warm
   addresses as above. HTTP is left out: it costs the same in both and would only hide the
   difference.

Run: ``.venv/bin/python bench/bench_enrich.py [--events 50000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# --against: a child measuring another revision's package (tests/mmdb.py stays this tree's).
sys.path.insert(0, os.environ.get("SQREEN_BENCH_PACKAGE", str(ROOT)))

from sqreen._event import format_timestamp  # noqa: E402
from sqreen._wire import parse_event  # noqa: E402
from sqreen.server.blocks import BlockService, ip_block  # noqa: E402
from sqreen.server.intel import IpIntel, Reputation, parse_address, special_kind  # noqa: E402
from sqreen.server.pipeline import Batch, IngestPipeline  # noqa: E402
from sqreen.server.storage import open_storage  # noqa: E402
from tests.mmdb import write_mmdb  # noqa: E402

BATCH = 500
SETUPS = ("country + kind", "country + kind + 1 mmdb", "  + reputation (1000 blocks)")


def public_addresses(count: int, rng: random.Random) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        roll = rng.random()
        if roll < 0.05:
            text = f"8.8.{rng.randrange(256)}.{rng.randrange(256)}"
        elif roll < 0.1:
            text = f"185.220.101.{rng.randrange(1, 255)}"
        elif roll < 0.2:
            value = (rng.randrange(0x2001, 0x2A10) << 112) | rng.getrandbits(64)
            text = str(ipaddress.IPv6Address(value))
        else:
            text = str(ipaddress.IPv4Address(rng.getrandbits(32)))
        address = parse_address(text)
        if address is not None and special_kind(address) is None:
            out.append(text)
    return out


def wire(n: int, ip: str) -> dict[str, Any]:
    return {
        "id": f"bench-{n:010d}",
        "name": "auth.login.failure",
        "timestamp": format_timestamp(time.time()),
        "properties": {"reason": "bad_password", "attempt": n % 7},
        "user": {"uid": str(n % 5000)},
        "target": None,
        "request": {
            "ip": ip,
            "user_agent": "Mozilla/5.0",
            "path": "/login",
            "route": "/login",
            "method": "POST",
            "params": {"username": f"user{n % 5000}"},
            "body": None,
        },
    }


def city_file(path: Path, networks: int, rng: random.Random) -> Path:
    records: dict[str, Any] = {}
    while len(records) < networks:
        net = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24"
        records[net] = {
            "city": {"names": {"en": f"City {len(records)}"}},
            "country": {"iso_code": "GB"},
            "location": {
                "latitude": rng.uniform(-60, 60),
                "longitude": rng.uniform(-180, 180),
                "accuracy_radius": rng.randrange(1, 500),
            },
        }
    return write_mmdb(path, records, database_type="GeoLite2-City")


def per_event(intel: IpIntel, ips: list[str], repeat: int) -> float:
    """Best µs an event of ``intel`` over ``ips`` in batches (cache emptied before each run)."""
    events = [parse_event(wire(n, ip)) for n, ip in enumerate(ips)]
    best = float("inf")
    for _ in range(repeat):
        intel._cache.clear()
        batches = [
            Batch(None, None, events[i : i + BATCH], [{} for _ in events[i : i + BATCH]])
            for i in range(0, len(events), BATCH)
        ]
        start = time.perf_counter()
        for batch in batches:
            intel(batch)
        best = min(best, time.perf_counter() - start)
    return best / len(events) * 1e6


def ingest_rate(make: Callable[[Any], list[Any]], bodies: list[bytes], tmp: Path, n: int) -> float:
    storage = open_storage(str(tmp / f"ingest-{n}.db"))
    try:
        pipeline = IngestPipeline(storage, enrichers=make(storage))
        start = time.perf_counter()
        for body in bodies:
            pipeline(body)
        elapsed = time.perf_counter() - start
    finally:
        storage.close()
    return len(bodies) * BATCH / elapsed


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Every figure of one run of this process's ``sqreen``, by name."""
    out: dict[str, float] = {}
    rng = random.Random(15)
    cold = public_addresses(args.events, rng)
    warm_pool = cold[:250]
    warm = [warm_pool[i % 250] for i in range(args.events)]

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        mmdb = str(city_file(tmp / "city.mmdb", args.networks, rng))
        storage = open_storage(str(tmp / "blocks.db"))
        service = BlockService(storage)
        for i in range(1000):
            service.create(ip_block(f"100.{i // 250 + 1}.{i % 250}.0/24"), created_by="bench")
        setups: list[tuple[str, IpIntel]] = [
            (SETUPS[0], IpIntel()),
            (SETUPS[1], IpIntel.open([mmdb])),
            (SETUPS[2], IpIntel.open([mmdb])),
        ]
        setups[2][1].reputation = Reputation(storage)
        for label, intel in setups:
            out[f"{label}/cold"] = per_event(intel, cold, args.repeat)
            out[f"{label}/warm"] = per_event(intel, warm, args.repeat)
        storage.close()

        for label, ips in (("cold", cold), ("warm", warm)):
            bodies = []
            for start in range(0, args.events, BATCH):
                end = min(args.events, start + BATCH)
                events = [wire(n, ips[n]) for n in range(start, end)]
                envelope = {"sdk": {"name": "sqreen-python", "version": "bench"}, "events": events}
                bodies.append(json.dumps(envelope).encode())
            off: list[float] = []
            on: list[float] = []
            for i in range(args.repeat):
                n = 4 * i + (2 if label == "warm" else 0)
                off.append(ingest_rate(lambda s: [], bodies, tmp, n))
                on.append(
                    ingest_rate(lambda s: [IpIntel.open([mmdb], reputation=s)], bodies, tmp, n + 1)
                )
            out[f"ingest/{label}/off"], out[f"ingest/{label}/on"] = max(off), max(on)
    return out


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    """The tables, one column a variant (this tree, and ``--against``'s revision)."""
    names = list(results)
    print(f"IP intelligence per event ({args.events} events, best of {args.repeat}; µs/event)")
    print(f"{'set-up':32}" + "".join(f" {f'{n} cold':>14} {f'{n} warm':>14}" for n in names))
    for label in SETUPS:
        cells = "".join(
            f" {r[f'{label}/cold']:14.2f} {r[f'{label}/warm']:14.2f}" for r in results.values()
        )
        print(f"{label:32}{cells}")
    print()
    print(f"Ingest pipeline into SQLite ({args.events} events, best of {args.repeat})")
    print(f"{'variant':10} {'addresses':10} {'off ev/s':>10} {'on ev/s':>10} {'change':>8}")
    for name, r in results.items():
        for label in ("cold", "warm"):
            best_off, best_on = r[f"ingest/{label}/off"], r[f"ingest/{label}/on"]
            change = 100 * (best_on / best_off - 1)
            print(f"{name:10} {label:10} {best_off:10,.0f} {best_on:10,.0f} {change:+7.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--networks", type=int, default=20_000)
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also measure the sqreen package of git revision REV (e.g. main), alternating "
        "runs of both in child processes, best of each",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="with --against: alternations of the two"
    )
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # a child
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure(args)))
        return
    if not args.against:
        report({"now": measure(args)}, args)
        return
    with tempfile.TemporaryDirectory() as tmpdir:
        # REV's package, with this script and tests/mmdb.py (the bench is the same for both).
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.against, "sqreen"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmpdir], input=archive, check=True)
        roots = {"now": str(ROOT), args.against: tmpdir}
        results: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):
            for name, root in roots.items():
                child = subprocess.run(
                    [sys.executable, __file__, "--json", *child_args(args)],
                    check=True,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "SQREEN_BENCH_PACKAGE": root},
                )
                got = json.loads(child.stdout)
                seen = results.setdefault(name, got)
                for key, value in got.items():
                    better = max if key.startswith("ingest/") else min
                    seen[key] = better(seen[key], value)
        report(results, args)


def child_args(args: argparse.Namespace) -> list[str]:
    return [
        *("--events", str(args.events)),
        *("--repeat", str(args.repeat)),
        *("--networks", str(args.networks)),
    ]


if __name__ == "__main__":
    main()
