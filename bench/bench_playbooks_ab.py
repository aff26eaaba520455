"""What the six built-in playbooks cost ingest: the same batches, with and without, alternated.

Method
------
One process, two fresh SQLite databases, two ingest pipelines built as ``sqreen serve``
builds them (IP intelligence enriching; the playbooks' hook on one only). The batches are
those of ``bench_ingest.py`` (500 events each, ``--mix attack`` or ``typical``), parsed from
JSON (no HTTP, no gzip). Each batch goes through both pipelines, in an order drawn at random
(seeded) each batch, after ``--warmup`` batches that are not counted (the first firings, the
first blocks). The figure is the CPU time of the calling thread per event (SQLite's work runs on
it too), median and mean over the batches, and their ratios: the machine's noise hits both
variants alike. The mean counts the batches where many keys fire at once (with ``--mix
attack`` and 100 000 events, each of the 5000 users crosses ``brute-force-account``'s 10
failures between the 45 000th event and the 50 000th); the median is the steady state.
``--profile`` prints a cProfile of the playbooks' hook alone. ``--against REV`` also builds
the two pipelines from REV's package (``bench/revisions.py``) and alternates all four, so
that a change's figures and REV's come from the same minutes of a noisy machine. The
``hook`` column is the playbooks' hook's own CPU per event (``stored_batches``), and
``hook/none`` that over the pipeline without: steadier than ``extra``, which is the
difference of two totals.

``--backend postgres`` runs the pipelines on PostgreSQL (a throwaway cluster as the tests
start it, a fresh database each; ``--dsn`` for a cluster of yours): the hook's CPU there is
the collector's; PostgreSQL's own work is the server's, left out of the figures (its wall
time shows in ``--wall``).

The garbage collector runs as ``sqreen serve`` runs it (set-up frozen, the young
generation's threshold at 50 000: ``bench_enrich.collector_gc``); ``--default-gc`` keeps
CPython's (700), as this bench ran before: then the young collections that the hook's
objects make due land in whichever stage allocates next, another pipeline's too.

``--group N`` gives each pipeline N bodies at a time, stored and evaluated together
(``ingest_many``: one transaction, one evaluation of the playbooks), as a collector does
with the bodies that waited while it stored others; each body gets an equal share of the
group's CPU (a revision without ``ingest_many`` takes them one by one).

``--hits users-only`` or ``none`` writes only the user-keyed streams' hits, or none (this
tree, SQLite): what writing them costs the hook, as a measurement (the counts are then
wrong, and with ``--mix typical`` under 400 000 events nothing fires either way);
``appended`` writes every hit to a bare table in rowid order and to a dict by key instead
(measured before the collector's SQLite hits became such a log, ``window_log``: what it would
cost to write them, without reading them back).

Run: ``.venv/bin/python bench/bench_playbooks_ab.py [--mix attack] [--events 50000]
[--against main] [--group 4]``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import logging
import pstats
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_enrich import collector_gc  # noqa: E402
from bench_ingest import BATCH, event, postgres  # noqa: E402
from revisions import getter, load_revision  # noqa: E402

from sqreen.server.playbooks import TEMPLATES  # noqa: E402


def hits_table(db: sqlite3.Connection) -> str:
    """Where the hits are (``window_log``; ``window_hits`` in a revision before it,
    ``playbook_hits`` before the windows' log)."""
    found = db.execute(
        "SELECT name FROM sqlite_master "
        "WHERE name IN ('window_log', 'window_hits', 'playbook_hits')"
    ).fetchone()
    return str(found[0])


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


def pipeline(package: str, db: str, playbooks: Path | None) -> tuple[Any, Any]:
    """An ingest pipeline of ``package`` (``sqreen`` or another revision's), and its runner."""
    get = getter(package)
    storage = get("server.storage", "open_storage")(db)
    enrichers = [
        get("server.intel", "IpIntel")(reputation=get("server.intel", "Reputation")(storage))
    ]
    make = get("server.pipeline", "IngestPipeline")
    if playbooks is None:
        return make(storage, enrichers=enrichers), None
    source = get("server.playbooks", "PlaybookSource")(playbooks)
    runner = get("server.playbooks", "PlaybookRunner")(storage, source)
    return make(storage, enrichers=enrichers, hooks=[runner]), runner


def timed(call: Any, into: dict[str, float], rev: str, rest: bool = False) -> Any:
    """``call``, adding the CPU time it takes to ``into[rev]``; with ``rest``, that of the
    function it returns too (``tied_batches``: what is left for after the commit, where
    PostgreSQL counts the hits)."""

    def run(*args: Any) -> Any:
        start = time.thread_time()
        try:
            found = call(*args)
            return timed(found, into, rev) if rest and callable(found) else found
        finally:
            into[rev] += time.thread_time() - start

    return run


def hook_method(runner: Any) -> str:
    """The method a revision's pipeline calls on the playbooks' hook: ``tied_batches`` (in
    the events' transaction, where the storage ties: SQLite since it does), else
    ``stored_batches`` (the batches of a turn), or ``stored_batch`` before it."""
    if hasattr(runner, "tied_batches") and getattr(runner.store, "_TIES", False):
        return "tied_batches"
    return "stored_batches" if hasattr(runner, "stored_batches") else "stored_batch"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=10, help="batches not counted")
    parser.add_argument("--mix", choices=["attack", "typical", "storm"], default="attack")
    parser.add_argument(
        "--group",
        type=int,
        default=1,
        help="bodies stored and evaluated together (``ingest_many``), as a busy collector "
        "does; a revision without it takes them one by one",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the playbooks' hook")
    parser.add_argument("--sort", default="cumulative", help="the profile's order")
    parser.add_argument(
        "--callees", metavar="REGEX", help="with --profile: what the matching functions call"
    )
    parser.add_argument("--against", metavar="REV", help="also REV's package (e.g. main)")
    parser.add_argument(
        "--other-writer",
        action="store_true",
        help="another connection writes a hit before each batch, as a second worker "
        "(--workers 2) or another collector would (with its row of the windows' log, where "
        "the revision keeps one)",
    )
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="CPython's garbage collector thresholds, not the collector's",
    )
    parser.add_argument(
        "--hits",
        choices=["stored", "users-only", "none", "appended"],
        default="stored",
        help="what the hook writes of its hits (SQLite, this tree): every one (as the "
        "collector does); only the user-keyed streams'; none; every one appended to a log "
        "and indexed in memory. A measurement, not a mode: "
        "counts and alerts are wrong without them (the hook's cost of writing them)",
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--dsn", help="with --backend postgres: a cluster of yours")
    parser.add_argument(
        "--wall", action="store_true", help="also the wall time an event (waits for the server)"
    )
    args = parser.parse_args()
    if args.backend == "postgres" and args.other_writer:
        parser.error("--other-writer is SQLite's (PostgreSQL's processes write side by side)")
    if args.hits != "stored":
        if args.backend == "postgres":
            parser.error("--hits is SQLite's")
        drop_hits(args.hits)
    logging.getLogger("sqreen.server").setLevel(logging.ERROR)  # one line an alert
    with contextlib.ExitStack() as stack:
        fresh = stack.enter_context(postgres(args.dsn)) if args.backend == "postgres" else None
        if args.backend == "postgres" and fresh is None:
            parser.error("--backend postgres: no PostgreSQL binaries found (make system-deps)")
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        run_all(args, tmp, fresh)


def drop_hits(which: str) -> None:
    """Patch this tree's SQLite store so that the windows' transaction writes only the
    hits of user-keyed streams (``users-only``: a user's key is its identifiers' JSON), or
    none, or (``appended``) every hit to a table in the order written (rowid) and to a dict
    by key in memory, as a log with the index in each process would; everything else it
    does is unchanged."""
    from sqreen.server.storage.sqlite import SQLiteStorage

    insert = SQLiteStorage._insert_hits
    index: dict[tuple[str, str], list[tuple[int, int, str | None]]] = {}

    def kept(self: Any, cur: Any, hits: Any) -> None:
        if which == "users-only":
            insert(self, cur, [h for h in hits if h[1].startswith("{")])
        elif which == "appended":
            cur.execute(
                "CREATE TABLE IF NOT EXISTS bench_hit_log (id INTEGER PRIMARY KEY, "
                "stream TEXT NOT NULL, key TEXT NOT NULL, ts INT NOT NULL, seq INT NOT NULL, "
                "value TEXT)"
            )
            cur.executemany(
                "INSERT INTO bench_hit_log (stream, key, ts, seq, value) VALUES (?, ?, ?, ?, ?)",
                hits,
            )
            for stream, key, ts, seq, value in hits:
                index.setdefault((stream, key), []).append((ts, seq, value))

    SQLiteStorage._insert_hits = kept  # type: ignore[method-assign]


def run_all(args: argparse.Namespace, tmp: str, fresh: Any) -> None:
    """The A/B of :func:`main`, its databases in ``tmp`` or made by ``fresh`` (PostgreSQL)."""
    path = Path(tmp) / "playbooks.toml"
    path.write_text(TEMPLATES)
    packages = {"now": "sqreen"}
    if args.against:
        packages[args.against] = load_revision(args.against, tmp)
    pipes: list[tuple[str, Any]] = []
    runners: dict[str, Any] = {}
    for rev, package in packages.items():
        for label, playbooks in (("none", None), ("templates", path)):
            db = str(Path(tmp) / f"{rev}-{label}.db") if fresh is None else fresh()
            pipe, runner = pipeline(package, db, playbooks)
            pipes.append((f"{rev} {label}", pipe))
            if runner is not None:
                runners[rev] = runner
    armed = runners["now"]
    # CPU time, not wall: a round trip waited for is not work of this process.
    profile = cProfile.Profile(time.thread_time) if args.profile else None
    if profile is not None:  # the hook alone, as the pipeline calls it
        name = hook_method(armed)
        inner = getattr(armed, name)

        def profiled(*args: object) -> object:
            found = profile.runcall(inner, *args)
            if name == "tied_batches" and callable(found):  # what is left for after the commit
                return partial(profile.runcall, found)
            return found

        setattr(armed, name, profiled)
    costs: dict[str, list[float]] = {label: [] for label, _ in pipes}
    walls: dict[str, list[float]] = {label: [] for label, _ in pipes}
    # The hook's own CPU, each batch: the part of "templates" that "none" has not, and
    # steadier than the difference of two pipelines' totals (a few % apart between two
    # "none" of the same code, run to run).
    hook_cpu: dict[str, float] = {rev: 0.0 for rev in runners}
    hooks: dict[str, list[float]] = {rev: [] for rev in runners}
    for rev, runner in runners.items():
        name = hook_method(runner)
        setattr(runner, name, timed(getattr(runner, name), hook_cpu, rev, name == "tied_batches"))
    others = (
        [
            sqlite3.connect(str(Path(tmp) / f"{rev}-templates.db"), isolation_level=None)
            for rev in packages
        ]
        if args.other_writer
        else []
    )
    run = f"ab-{time.time_ns()}"
    shuffle = random.Random(13).shuffle
    every = bodies(args.events + args.warmup * BATCH, run, args.mix)
    step = max(1, args.group)
    # As the collector runs the garbage collector, once the set-up is made (frozen).
    with contextlib.nullcontext() if args.default_gc else collector_gc():
        for n in range(0, len(every), step):
            chunk = every[n : n + step]
            # Each batch (or group) through every pipeline, in an order drawn anew each time
            # (seeded): which runs after which matters (one's garbage is collected in the
            # next), and a fixed rotation of four put each pipeline after the same others.
            for other in others:  # untimed: another process's write, in effect
                now_us = time.time_ns() // 1000
                other.execute("BEGIN IMMEDIATE")
                other.execute(
                    f"INSERT INTO {hits_table(other)} (stream, key, ts, seq, value) "
                    "VALUES ('other-writer', ?, ?, ?, NULL)",
                    ("x", now_us, n),
                )
                if hits_table(other) != "playbook_hits":  # and its row, as a collector writes
                    other.execute(
                        "INSERT INTO window_writes (at, counts) VALUES (?, ?)",
                        (now_us, '{"other-writer":["x",1]}'),
                    )
                other.execute("COMMIT")
            order = list(pipes)
            shuffle(order)
            counted = n >= args.warmup
            for label, pipe in order:
                start, began = time.thread_time(), time.perf_counter()
                many = getattr(pipe, "ingest_many", None) if step > 1 else None
                if many is not None:  # stored together, as a busy collector stores them
                    many([(body, 0) for body in chunk])
                else:
                    for body in chunk:
                        pipe.ingest(body)
                if counted:
                    share = (time.thread_time() - start) / (BATCH * len(chunk)) * 1e6
                    costs[label] += [share] * len(chunk)
                    wall = (time.perf_counter() - began) / (BATCH * len(chunk)) * 1e6
                    walls[label] += [wall] * len(chunk)
            for rev in runners:
                if counted:
                    hooks[rev] += [hook_cpu[rev] / (BATCH * len(chunk)) * 1e6] * len(chunk)
                hook_cpu[rev] = 0.0
    batches = len(costs["now none"])
    print(f"\n--mix {args.mix}, {args.backend}, {batches} batches of {BATCH} events, CPU µs/event:")
    head = ("none", 8), ("templates", 9), ("extra", 7), ("hook", 6), ("hook/none", 9)
    print(f"{'':>8}  {'':>6}  " + "  ".join(f"{h:>{w}}" for h, w in head))
    for label, cost in (("median", statistics.median), ("mean", statistics.fmean)):
        for rev in packages:
            a, b = cost(costs[f"{rev} none"]), cost(costs[f"{rev} templates"])
            h = cost(hooks[rev])
            print(
                f"{label:>8}  {rev:>6}  {a:>8.1f}  {b:>9.1f}  {(b / a - 1) * 100:>+6.1f}%"
                f"  {h:>6.1f}  {h / a * 100:>+8.1f}%"
            )
    if args.wall:
        print(
            "wall µs/event (medians): "
            + ", ".join(f"{label} {statistics.median(w):.1f}" for label, w in walls.items())
        )
    if profile is not None:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(35)
        if args.callees:
            pstats.Stats(profile).sort_stats(args.sort).print_callees(args.callees)


if __name__ == "__main__":
    main()
