"""Collectors compared over HTTP, running at once and posted to in turn, slice by slice.

Method
------
``bench_ingest.py`` runs one collector, then the next, one after the other: on this
machine the same code's events/s moves by ±20 % from one minute to the next (the same case
gave 13 600 and 19 200 events/s within three minutes), so the difference of two such runs
says little about a 10 % goal.

Here the collectors compared (``sqreen serve --workers N`` on SQLite, real HTTP on
127.0.0.1, IP intelligence on as by default) run at once: by default one without playbooks
and one with the six templates enforced (``--playbooks both``); with ``--against REV``, this
tree's collector and git revision ``REV``'s, both with the same playbooks (``--playbooks
none`` or ``templates``). The same traffic (``bench_ingest.py``'s bodies, ``--mix typical``
by default: 500 gzipped events a body) is cut into slices of ``--slice`` bodies; each slice
is posted to every collector in turn, in an order drawn at random (seeded) for each slice,
by the same ``--senders`` threads (keep-alive clients, one per collector, each saying the
version of the action set it holds, as the SDK does). While one collector is posted to, the
others are idle, so each gets the machine alone, and they share its good and bad minutes,
as ``bench_playbooks_ab.py`` alternates batches in one process.

Per collector: events/s over its slices' wall time (first post to last reply), the
collector's CPU per event (its processes, from ``/proc``) and the system's part of it, and
against the first: the events/s ratio, and the median and quartiles over the slices of
each slice's ratio. With ``--backend postgres`` on a server of this machine, the server's CPU
an event too (its processes, counted during each collector's slices: the collectors take
turns, so what the server does meanwhile is for the one posted to; its background work
spills over a little). Every database is counted afterwards: every event stored once. Then
the run cut into four parts by the events stored before each: per part, each collector's
events/s and CPU an event, and the ratio to the first (what changes as the databases grow).

With ``--mix typical`` the traffic's 5 000 users each fail 8 % of their events, and the run
puts an hour's worth of them in a minute: from the 409 394th event on, users pass
``brute-force-account``'s 10 failures in an hour, an alert each (570 accounts by 450 000
events, 2 721 by 600 000). Up to 400 000 events the templates fire on nobody; beyond, the
run also measures thousands of alerts.

``--intel travel`` compares IP intelligence instead (playbooks as ``--playbooks none`` or
``templates`` says): each user always from the same public address, a dense City
``.mmdb``, and three collectors: IP intelligence off, on without impossible travel
(``--travel-speed 0``), and on; with ``--against REV``, this tree and REV both with travel.
``--intel new``: every event from a public address never seen before (the enricher's worst
case, a scan from many addresses), the same ``.mmdb``, IP intelligence off and on without
impossible travel (every login from a random place would make a third of the events an
alert); with ``--against REV``, both trees so.

Run: ``.venv/bin/python bench/bench_ingest_ab.py [--workers 2] [--events 200000]
[--slice 40] [--mix typical] [--playbooks both | --against main] [--intel travel|new]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ingest
from bench_enrich import dense_city_file, public_addresses
from bench_ingest import BATCH, ROOT, USERS, Body, bodies_for, collector, exported, user_of

from sqreen.server.playbooks import TEMPLATES
from sqreen.server.storage import open_storage


class Variant(NamedTuple):
    label: str
    root: Path  # the code's tree
    playbooks: bool  # the six templates enforced
    extra: tuple[str, ...] = ()  # more ``sqreen serve`` options


def postmaster(dsn: str) -> int | None:
    """The PID of the PostgreSQL server of ``dsn`` when it runs on this machine (its
    backends are its children), else None."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT pg_backend_pid()").fetchone()
        try:
            stat = Path(f"/proc/{found[0]}/stat").read_text()
        except OSError:
            return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def tree_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by process ``pid`` and its children."""
    found = bench_ingest.tree_times(pid).values()
    return sum(user for user, _ in found), sum(system for _, system in found)


class Senders:
    """``count`` threads posting bodies, each with a keep-alive client per collector and the
    action set's version it last got from each."""

    def __init__(self, count: int, targets: dict[str, tuple[str, str]]) -> None:
        self.targets = targets  # label -> (endpoint, token)
        self.pool = ThreadPoolExecutor(count)
        self.local = threading.local()

    def _client(self, label: str) -> tuple[httpx.Client, dict[str, int]]:
        clients = getattr(self.local, "clients", None)
        if clients is None:
            clients = self.local.clients = {}
        if label not in clients:
            endpoint, token = self.targets[label]
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            }
            clients[label] = (httpx.Client(base_url=endpoint, headers=headers, timeout=60), {})
        return clients[label]

    def _post(self, label: str, body: Body) -> None:
        client, held = self._client(label)
        content = body.gzip(held.get("version"))
        try:
            reply = client.post("/v1/events", content=content)
        except httpx.TransportError:
            # A keep-alive connection the idle collector closed as it was reused: once more
            # (the same ids: stored once whatever the first try did).
            reply = client.post("/v1/events", content=content)
        answer = reply.json() if reply.status_code == 200 else {}
        if reply.status_code != 200 or answer["rejected"]:
            raise RuntimeError(f"{label}: {reply.status_code} {reply.text[:200]}")
        version = answer["actions"].get("version")
        if type(version) is int:
            held["version"] = version

    def send(self, label: str, bodies: list[Body]) -> float:
        """Post ``bodies`` to collector ``label``; the wall time until the last reply."""
        start = time.perf_counter()
        for future in [self.pool.submit(self._post, label, body) for body in bodies]:
            future.result()
        return time.perf_counter() - start

    def close(self) -> None:
        self.pool.shutdown()


def variants(args: argparse.Namespace, tmp: Path) -> list[Variant]:
    travel: tuple[str, ...] = ()
    if args.intel in ("travel", "new"):
        mmdb = tmp / "dense.mmdb"
        dense_city_file(mmdb, random.Random(16))
        travel = ("--geoip-db", str(mmdb))
    if args.against is None:
        if args.intel != "default" and args.playbooks == "both":
            raise SystemExit(
                f"--intel {args.intel} compares IP intelligence: playbooks none or templates"
            )
        if args.intel == "new":
            armed = args.playbooks == "templates"
            return [
                Variant("intel off", ROOT, armed, ("--no-ip-intel",)),
                Variant("no travel", ROOT, armed, (*travel, "--travel-speed", "0")),
            ]
        if args.intel == "travel":
            armed = args.playbooks == "templates"
            return [
                Variant("intel off", ROOT, armed, ("--no-ip-intel",)),
                Variant("no travel", ROOT, armed, (*travel, "--travel-speed", "0")),
                Variant("travel", ROOT, armed, travel),
            ]
        armed = {"none": [False], "templates": [True], "both": [False, True]}[args.playbooks]
        return [Variant("templates" if a else "none", ROOT, a) for a in armed]
    if args.playbooks == "both":
        raise SystemExit("--against compares two trees with the same playbooks: none or templates")
    armed = args.playbooks == "templates"
    other = exported(args.against, tmp / "against")
    if args.intel == "new":
        travel = (*travel, "--travel-speed", "0")
    return [Variant("tree", ROOT, armed, travel), Variant(args.against, other, armed, travel)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--slice", type=int, default=40, help="bodies a slice")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--mix", choices=["attack", "typical", "storm"], default="typical")
    parser.add_argument("--playbooks", choices=["none", "templates", "both"], default="both")
    parser.add_argument("--against", metavar="REV", help="this tree against git revision REV")
    parser.add_argument(
        "--intel",
        choices=["default", "travel", "new"],
        default="default",
        help="default: IP intelligence as by default (no .mmdb; the traffic's addresses "
        "private); travel: each user always from the same public address, a dense City "
        ".mmdb, and IP intelligence off, on without impossible travel, and on (with "
        "--against: both trees with travel); new: every event from a public address never "
        "seen before (the enricher's worst case: a scan), the dense City .mmdb, IP "
        "intelligence off and on without impossible travel (with --against: both trees so)",
    )
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="postgres: a fresh database a collector in a throwaway cluster (or --dsn's); "
        "the server's CPU counted apart when it runs on this machine",
    )
    parser.add_argument("--dsn", help="with --backend postgres: a cluster of yours")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    warm_ips = ips = None
    if args.intel == "travel":  # each user from their home (bench_ingest.py --addresses homes)
        homes = public_addresses(USERS, random.Random(8))
        warm_ips = [homes[user_of(n, args.mix)] for n in range(BATCH * args.senders * 2)]
        ips = [homes[user_of(n, args.mix)] for n in range(args.events)]
    elif args.intel == "new":  # every address new (bench_ingest.py --addresses new)
        fresh_ips = public_addresses(BATCH * args.senders * 2 + args.events, random.Random(8))
        warm_ips, ips = fresh_ips[: BATCH * args.senders * 2], fresh_ips[BATCH * args.senders * 2 :]
    warm = bodies_for(BATCH * args.senders * 2, "warmup", args.mix, warm_ips)
    bodies = bodies_for(args.events, "measured", args.mix, ips)
    slices = [bodies[i : i + args.slice] for i in range(0, len(bodies), args.slice)]
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as cluster:
        tmp = Path(tmpdir)
        fresh = None
        if args.backend == "postgres":
            fresh = cluster.enter_context(bench_ingest.postgres(args.dsn))
            if fresh is None:
                parser.error("--backend postgres: no PostgreSQL binaries found (make system-deps)")
        book = tmp / "playbooks.toml"
        book.write_text(TEMPLATES)
        cases = variants(args, tmp)
        labels = [v.label for v in cases]
        wall = dict.fromkeys(labels, 0.0)
        cpu = dict.fromkeys(labels, 0.0)
        system = dict.fromkeys(labels, 0.0)
        took: dict[str, list[float]] = {label: [] for label in labels}
        spent: dict[str, list[float]] = {label: [] for label in labels}  # CPU s a slice
        dbs = {
            v.label: str(tmp / f"{n}.db") if fresh is None else fresh() for n, v in enumerate(cases)
        }
        server = None if fresh is None else postmaster(dbs[labels[0]])
        served = dict.fromkeys(labels, 0.0)  # the server's CPU s, when it is ours to read
        with ExitStack() as running:
            started = {
                v.label: running.enter_context(
                    collector(
                        dbs[v.label],
                        args.workers,
                        str(book) if v.playbooks else None,
                        v.extra,
                        root=v.root,
                    )
                )
                for v in cases
            }
            senders = Senders(
                args.senders, {k: (url, token) for k, (url, token, _) in started.items()}
            )
            running.callback(senders.close)
            for label in labels:
                senders.send(label, warm)
            for part in slices:
                for label in rng.sample(labels, len(labels)):
                    pid = started[label][2]
                    before = tree_times(pid)
                    server_before = sum(tree_times(server)) if server else 0.0
                    took[label].append(senders.send(label, part))
                    after = tree_times(pid)
                    if server:
                        served[label] += sum(tree_times(server)) - server_before
                    wall[label] += took[label][-1]
                    spent[label].append(sum(after) - sum(before))
                    cpu[label] += spent[label][-1]
                    system[label] += after[1] - before[1]
        for label, db in dbs.items():
            storage = open_storage(db)
            stored = storage.count_events()
            storage.close()
            # Impossible travel adds no event here: the traffic's addresses are private, or
            # each user's always the same.
            if stored != args.events + len(warm) * BATCH:
                raise RuntimeError(f"{label}: {stored} events stored")
    print(
        f"\n{args.backend}, --mix {args.mix}, --workers {args.workers}, {len(slices)} slices "
        f"of {args.slice} bodies of {BATCH} events, posted to each in turn; {args.senders} senders"
    )
    first = labels[0]
    head = f"{'':>12} {'events/s':>9} {'CPU us/event':>13} {'of it, system':>14} "
    if server:
        head += f"{'server us/event':>16} "
    print(head + f"{'events/s against ' + first:>28}")
    for label in labels:
        per_event = cpu[label] / args.events * 1e6
        line = (
            f"{label:>12} {args.events / wall[label]:>9.0f} {per_event:>13.1f} "
            f"{system[label] / args.events * 1e6:>14.1f}"
        )
        if server:
            line += f" {served[label] / args.events * 1e6:>16.1f}"
        if label != first:
            ratios = [a / b for a, b in zip(took[first], took[label], strict=True)]
            q1, q2, q3 = statistics.quantiles(ratios, n=4)
            line += (
                f" {wall[first] / wall[label] - 1:>+8.1%} (slices: median {q2 - 1:+.1%}, "
                f"quartiles {q1 - 1:+.1%} {q3 - 1:+.1%}); CPU an event "
                f"{cpu[label] / cpu[first] - 1:+.1%}"
            )
            if server:
                line += f", the server's {served[label] / served[first] - 1:+.1%}"
        print(line)
    trend(labels, slices, took, spent)


def trend(
    labels: list[str],
    slices: list[list[Body]],
    took: dict[str, list[float]],
    spent: dict[str, list[float]],
    parts: int = 4,
) -> None:
    """The run cut into ``parts`` by the events stored before: per part, each collector's
    events/s and CPU an event, and the ratio to the first (what grows with the database)."""
    if len(slices) < parts:
        return
    first = labels[0]
    print("\nby part of the run (events stored before it); events/s, CPU us/event")
    done = 0
    for n in range(parts):
        lo, hi = n * len(slices) // parts, (n + 1) * len(slices) // parts
        events = sum(len(part) for part in slices[lo:hi]) * BATCH
        cells = []
        for label in labels:
            rate = events / sum(took[label][lo:hi])
            per_event = sum(spent[label][lo:hi]) / events * 1e6
            cell = f"{label} {rate:>6.0f} {per_event:>5.1f}"
            if label != first:
                ratio = sum(took[first][lo:hi]) / sum(took[label][lo:hi]) - 1
                cell += f" ({ratio:+.1%})"
            cells.append(cell)
        print(f"  from {done:>9,}: " + "   ".join(cells))
        done += events


if __name__ == "__main__":
    main()
