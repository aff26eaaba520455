"""IP intelligence at ingest: its cost per event, and ingest throughput with it on and off.

Method
------
Addresses: public IPv4 addresses drawn at random (seeded) outside the special ranges, one in
ten an IPv6 address inside 2001::/16-2a0f::/16, one in ten from Google's and Tor's ranges
(kind known). ``.mmdb``: a City-layout file written by ``tests/mmdb.py`` with ``--networks``
/24 networks (real GeoLite2-City files are deeper trees: a lookup there walks up to 128
nodes, here up to 120), which random addresses seldom fall in; and a *dense* one
(:func:`dense_city_file`) as a real City file is for lookups: every public IPv4 address
placed, by networks of /16 to /20, 28-bit records, records shaped as GeoLite2-City's (names
in eight languages, subdivisions, postal code: what the reader decodes is six times what a
record of the five fields read would cost, measured), each network's record its city's
(Zipf-weighted over 20 000 cities, three accuracy radii each): then a new address leads to a
record read already, or to a new one to decode. The dense file is written as MaxMind's
writers write (keys, continents, countries, cities met before are pointers), and once more
with every record in full, for the per-event figure.

1. **Per event**: :class:`IpIntel` called on batches of 500 parsed events, as the pipeline
   calls it, in three set-ups (country + kind; country + kind + one ``.mmdb``; and the latter
   with ``Reputation`` over a real SQLite storage holding 1000 IP blocks). ``cold``: every
   address new (the cache never hits: the worst case, a scan from many addresses);
   ``warm``: 250 addresses repeated (an attack, or a busy app's regular users). The best of
   ``--repeat`` runs, in CPU µs an event (the thread's CPU time: the machine is shared),
   with the garbage collector as the collector runs it (set-up frozen, young threshold
   50 000; at CPython's 700 it was about 40 % of a cold event, measured, before that).
2. **Ingest on vs off**: the collector's :class:`IngestPipeline` (parse, enrich, store in
   SQLite, one transaction a batch) on the same pre-built 500-event bodies, with no enricher
   and with IP intelligence (country + kind + one ``.mmdb``, the collector's reputation),
   each pipeline on a fresh database, **taking each batch in turn** (the order rotating), so
   that the machine's load, its caches and the database's growth are the same for both;
   each stage timed apart (CPU of the thread), medians and means of the batches over
   ``--repeat`` passes. Two whole runs one after the other, as earlier versions of this
   bench did, disagreed by more than the enrichment costs: on a quiet machine, three pairs
   of separate processes measured the run *with* enrichment 1 to 13 % cheaper in two of
   them. HTTP is left out: it costs the same in both and would only hide the difference.

``--against REV`` (e.g. ``main``) measures REV's ``sqreen`` package too, in the same process:
``git archive`` extracts it under another name (its modules import each other relatively),
and every run above alternates between the two (which goes first swaps at each repeat), so
that both see the same machine load. Each timed run starts after a full ``gc.collect()``:
without it, a run pays for the collection the run before it made due (seen as a warm run
measured 2-3x slower, best of 5, when it came after the other variant's cold one).

Run: ``.venv/bin/python bench/bench_enrich.py [--events 50000] [--repeat 3] [--against main]``.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqreen._wire_time import format_timestamp  # noqa: E402
from sqreen.server._serve_worker import GC_GEN0 as GC_YOUNG  # noqa: E402
from sqreen.server.intel import parse_address, special_kind  # noqa: E402
from tests.mmdb import write_mmdb  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from revisions import getter, load_revision  # noqa: E402

BATCH = 500
STAGES = ("parse", "enrich", "store")
SETUPS = (
    "country + kind",
    "country + kind + 1 mmdb",
    "  + reputation (1000 blocks)",
    "country + kind + 1 dense mmdb",
    "  the same, written without pointers",
)
#: The enrichers of the ingest runs: none, the sparse ``.mmdb``, the dense one.
INGEST = ("off", "on", "dense")


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


#: The languages of a GeoLite2-City record's names.
LANGUAGES = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")
COUNTRIES = ("US", "CN", "DE", "GB", "FR", "BR", "IN", "JP", "RU", "NL", "CA", "KR", "IT", "ES")


def city_record(city: int, radius: int, rng: random.Random) -> dict[str, Any]:
    """A record shaped as GeoLite2-City's: every name in eight languages, the continent,
    the country and the registered country, a subdivision, the postal code, the time zone
    (about sixty objects for the reader to decode; the fields read are five of them)."""

    def names(text: str) -> dict[str, str]:
        return {language: f"{text} ({language})" for language in LANGUAGES}

    country = COUNTRIES[city % len(COUNTRIES)]
    named = {"geoname_id": 6_000_000 + city % len(COUNTRIES), "iso_code": country}
    return {
        "city": {"geoname_id": 2_000_000 + city, "names": names(f"City {city}")},
        "continent": {"code": "EU", "geoname_id": 6255148, "names": names("Europe")},
        "country": {**named, "names": names(f"Country {country}")},
        "location": {
            "accuracy_radius": radius,
            "latitude": round(rng.uniform(-60, 60), 4),
            "longitude": round(rng.uniform(-180, 180), 4),
            "time_zone": "Europe/London",
        },
        "postal": {"code": f"{city % 100_000:05d}"},
        "registered_country": {**named, "names": names(f"Country {country}")},
        "subdivisions": [
            {"geoname_id": 3_000_000 + city // 10, "iso_code": "S1", "names": names("Region")}
        ],
    }


def dense_city_file(
    path: Path, rng: random.Random, cities: int = 20_000, pointers: bool = True
) -> Path:
    """A City file as a real one is, as far as lookups go: a record for every address of
    1.0.0.0-223.255.255.255, in networks of /16 to /20 (356 000 networks; a real City file
    has more, smaller ones: a walk there takes a few more steps), 28-bit records as
    GeoLite2-City's, and records shaped as its are (:func:`city_record`). A network's record
    is its city's (of ``cities``, drawn with Zipf weights: a few large cities hold much of
    the address space, as they do) with one of three accuracy radii: records are shared by
    many networks, as cities share theirs. Written as MaxMind's writers write (a key or a
    value met before is a pointer to it), or with ``pointers=False`` every record in full
    (the most a record can cost to read)."""
    weights = [1 / (rank + 1) for rank in range(cities)]
    records: dict[tuple[int, int], dict[str, Any]] = {}
    networks: dict[str, dict[str, Any]] = {}
    for a in range(1, 224):
        for b in range(256):
            split = rng.choice((0, 1, 2, 3, 4))
            picks = rng.choices(range(cities), weights, k=1 << split)
            for n, city in enumerate(picks):
                radius = rng.choice((5, 50, 500))
                record = records.get((city, radius))
                if record is None:
                    record = records[(city, radius)] = city_record(city, radius, rng)
                networks[f"{a}.{b}.{n << (8 - split)}.0/{16 + split}"] = record
    return write_mmdb(
        path, networks, database_type="GeoLite2-City", record_size=28, pointers=pointers
    )


def package(name: str) -> SimpleNamespace:
    """What the bench uses of the package ``name`` (``sqreen``, or another revision's)."""

    get = getter(name)
    return SimpleNamespace(
        parse_event=get("_wire", "parse_event"),
        BlockService=get("server.blocks", "BlockService"),
        ip_block=get("server.blocks", "ip_block"),
        IpIntel=get("server.intel", "IpIntel"),
        Reputation=get("server.intel", "Reputation"),
        Batch=get("server.pipeline", "Batch"),
        IngestPipeline=get("server.pipeline", "IngestPipeline"),
        open_storage=get("server.storage", "open_storage"),
    )


def per_event(pkg: SimpleNamespace, intel: Any, ips: list[str]) -> float:
    """µs an event of ``intel`` over ``ips`` in batches (cache emptied first)."""
    events = [pkg.parse_event(wire(n, ip)) for n, ip in enumerate(ips)]
    intel._cache.clear()
    for memo in ("_shared", "_where"):  # what addresses share, their parsed addresses
        getattr(intel, memo, {}).clear()  # (not in older revisions)
    for db in intel.geoip:  # what each file's records said (not in older revisions)
        getattr(db, "_records", {}).clear()
    batches = [
        pkg.Batch(None, None, events[i : i + BATCH], [{} for _ in events[i : i + BATCH]])
        for i in range(0, len(events), BATCH)
    ]
    with collector_gc():
        start = time.thread_time()
        for batch in batches:
            intel(batch)
        return (time.thread_time() - start) / len(events) * 1e6


@contextmanager
def collector_gc() -> Iterator[None]:
    """The garbage collector as ``sqreen serve`` runs it: what set-up made frozen (the data
    tables, the pre-built bodies; the collector freezes what start-up made) and the young
    generation's threshold at :data:`GC_YOUNG`. A full collection first: the run before
    (its events, the other variant's cache) is not this one's. Unfrozen after. Without the
    freeze, each full collection also walks ``iporigin``'s index lists (built for each run's
    IpIntel), which the collector has frozen: fidelity, not a figure (ingest on vs off, 20 000
    cold events, two runs each, load 2.5: -15 and -9 % without it, -15 and -2.5 % with it)."""
    default = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *default[1:])
    try:
        yield
    finally:
        gc.set_threshold(*default)
        gc.unfreeze()


def staged(pipeline: Any, body: bytes, clock: Callable[[], float]) -> tuple[tuple[float, ...], int]:
    """``body`` parsed, enriched and stored by ``pipeline``: each stage's time by ``clock``,
    and the events stored (all of the batch's, or RuntimeError: the figure would be a
    dedupe's)."""
    t0 = clock()
    batch = pipeline.parse(body)
    t1 = clock()
    pipeline.enrich(batch)
    t2 = clock()
    result = pipeline.store(batch)
    t3 = clock()
    if result.stored != len(batch.events):
        raise RuntimeError(f"{result.stored} of {len(batch.events)} stored")
    return (t1 - t0, t2 - t1, t3 - t2), len(batch.events)


def ingest_interleaved(
    variants: dict[str, SimpleNamespace],
    bodies: list[bytes],
    tmp: Path,
    files: dict[str, str],
    run: str,
) -> dict[tuple[str, str], list[tuple[float, float, float]]]:
    """Each variant's pipeline with IP intelligence off, on with the sparse ``.mmdb`` and on
    with the dense one (``files`` by :data:`INGEST` name), each on a fresh database (``run``
    names it: a database used before would hold every event already, and store none),
    taking the same bodies batch by batch in turn (which goes first rotates each batch): CPU
    µs an event of (parse, enrich, store) for each batch, by (variant, state)."""
    pipelines: dict[tuple[str, str], Any] = {}
    storages = []
    for name, pkg in variants.items():
        for state in INGEST:
            storage = pkg.open_storage(str(tmp / f"ingest-{run}-{name}-{state}.db"))
            storages.append(storage)
            enrichers = (
                [pkg.IpIntel.open([files[state]], reputation=storage)] if state in files else []
            )
            pipelines[(name, state)] = pkg.IngestPipeline(storage, enrichers=enrichers)
    out: dict[tuple[str, str], list[tuple[float, float, float]]] = {k: [] for k in pipelines}
    order = list(pipelines)
    clock = time.thread_time
    try:
        with collector_gc():
            for i, body in enumerate(bodies):
                turn = i % len(order)
                for key in order[turn:] + order[:turn]:
                    stages, events = staged(pipelines[key], body, clock)
                    out[key].append(tuple(t / events * 1e6 for t in stages))
    finally:
        for storage in storages:
            storage.close()
    return out


def measure(args: argparse.Namespace, variants: dict[str, SimpleNamespace]) -> dict[str, Any]:
    """Every figure, by variant then name: each run alternates the variants, best kept."""
    out: dict[str, dict[str, float]] = {name: {} for name in variants}
    runs: dict[tuple[str, str], list[float]] = {}

    def keep(name: str, key: str, value: float, better: Callable[..., float]) -> None:
        """The best run (per event)."""
        runs.setdefault((name, key), []).append(value)
        out[name][key] = better(runs[(name, key)])

    rng = random.Random(15)
    cold = public_addresses(args.events, rng)
    warm_pool = cold[:250]
    warm = [warm_pool[i % 250] for i in range(args.events)]

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        mmdb = str(city_file(tmp / "city.mmdb", args.networks, rng))
        dense = str(dense_city_file(tmp / "dense.mmdb", random.Random(16)))
        full = str(dense_city_file(tmp / "full.mmdb", random.Random(16), pointers=False))
        setups: dict[str, list[tuple[str, Any]]] = {}
        storages = []
        for name, pkg in variants.items():
            storage = pkg.open_storage(str(tmp / f"blocks-{name}.db"))
            storages.append(storage)
            service = pkg.BlockService(storage)
            for i in range(1000):
                block = pkg.ip_block(f"100.{i // 250 + 1}.{i % 250}.0/24")
                service.create(block, created_by="bench")
            with_reputation = pkg.IpIntel.open([mmdb])
            with_reputation.reputation = pkg.Reputation(storage)
            setups[name] = [
                (SETUPS[0], pkg.IpIntel()),
                (SETUPS[1], pkg.IpIntel.open([mmdb])),
                (SETUPS[2], with_reputation),
                (SETUPS[3], pkg.IpIntel.open([dense])),
                (SETUPS[4], pkg.IpIntel.open([full])),
            ]
        for repeat in range(args.repeat):
            for index, label in enumerate(SETUPS):
                for temperature, ips in (("cold", cold), ("warm", warm)):
                    for name, pkg in ordered(variants, repeat):
                        got = per_event(pkg, setups[name][index][1], ips)
                        keep(name, f"{label}/{temperature}", got, min)
        for storage in storages:
            storage.close()

        for label, ips in (("cold", cold), ("warm", warm)):
            bodies = []
            for start in range(0, args.events, BATCH):
                end = min(args.events, start + BATCH)
                events = [wire(i, ips[i]) for i in range(start, end)]
                envelope = {"sdk": {"name": "sqreen-python", "version": "bench"}, "events": events}
                bodies.append(json.dumps(envelope).encode())
            batches: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
            for repeat in range(args.repeat):
                files = {"on": mmdb, "dense": dense}
                got = ingest_interleaved(variants, bodies, tmp, files, f"{label}-{repeat}")
                for key, rows in got.items():
                    batches.setdefault(key, []).extend(rows)
            for (name, state), rows in batches.items():
                for i, stage in enumerate(STAGES):
                    out[name][f"ingest/{label}/{state}/{stage}"] = statistics.median(
                        r[i] for r in rows
                    )
                totals = [sum(r) for r in rows]
                out[name][f"ingest/{label}/{state}/median"] = statistics.median(totals)
                out[name][f"ingest/{label}/{state}/mean"] = statistics.fmean(totals)
    return out


def ordered(variants: dict[str, SimpleNamespace], repeat: int) -> list[tuple[str, Any]]:
    """The variants, in reverse order every other repeat (neither always runs first)."""
    items = list(variants.items())
    return items if repeat % 2 == 0 else items[::-1]


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
    print(
        f"Ingest pipeline into SQLite ({args.events} events x {args.repeat}, every pipeline"
        " taking each batch in turn; CPU µs an event, medians of batches by stage)"
    )
    head = " ".join(f"{stage:>7}" for stage in STAGES)
    print(f"{'variant':8} {'addresses':9} {'enrich':6} {head} {'median':>7} {'mean':>7}")
    for name, r in results.items():
        for label in ("cold", "warm"):
            for state in INGEST:
                key = f"ingest/{label}/{state}"
                stages = " ".join(f"{r[f'{key}/{stage}']:7.2f}" for stage in STAGES)
                print(
                    f"{name:8} {label:9} {state:6} {stages} "
                    f"{r[f'{key}/median']:7.2f} {r[f'{key}/mean']:7.2f}"
                )
            off = f"ingest/{label}/off"
            for state in INGEST[1:]:
                on = f"ingest/{label}/{state}"
                for how in ("median", "mean"):
                    extra = r[f"{on}/{how}"] - r[f"{off}/{how}"]
                    rate = 100 * (r[f"{off}/{how}"] / r[f"{on}/{how}"] - 1)
                    print(
                        f"{name:8} {label:9} {state:6} by the {how}: enrichment costs"
                        f" {extra:+.2f} µs an event, events/s {rate:+.1f} %"
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--networks", type=int, default=20_000)
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also measure the sqreen package of git revision REV (e.g. main), loaded in this "
        "process under another name, runs alternating between the two",
    )
    args = parser.parse_args()
    variants = {"now": package("sqreen")}
    with tempfile.TemporaryDirectory() as tmpdir:
        if args.against:
            variants[args.against] = package(load_revision(args.against, tmpdir))
        report(measure(args, variants), args)


if __name__ == "__main__":
    main()
