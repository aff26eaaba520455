"""The collector's CPU per stored event, by stage, in one process: fresh and grown databases.

Method
------
The batches ``bench_ingest.py`` sends (500 events, gzipped as the SDK sends them, ``--mix``)
go through the collector's own code, in this process, without HTTP: ``gunzip`` and the
pipeline's ``parse`` (JSON, validation), then its ``store`` (rows, the events table and its
indexes, the side tables, the commit and its share of checkpoints). Each stage is timed with
``time.process_time`` (CPU, not wall: the machine is shared), each batch on its own; the
figure is the median over the batches of CPU µs an event, and the mean of the totals beside
it: the checkpoint copying the WAL into the database runs after one commit in eight, in the
batch that made it due, so the median leaves it out and the mean counts it.

Variants alternate batch by batch, so that they see the same load: this tree on a fresh
SQLite database, and with ``--preload N`` this tree on a database already holding ``N``
events (loaded directly in SQL from a copy of real rows, each with its own id, time and
addresses: minutes, not hours); with ``--against REV`` (e.g. ``main``) REV's ``sqreen``
package too, loaded under another name (``git archive``), on its own databases.

With ``--warmup N``, the grown databases first store N events untimed: the preload builds
their indexes from sorted rows, every page full, where a database grown by ingest has room
in its pages (measured: it did not explain the growth; docs/benchmarks.md).

With ``--without INDEX`` (repeatable), this tree also runs on copies of its databases
(fresh, and grown with ``--preload``) from which that index is dropped, alternated with the
rest: what the index costs an event, fresh and grown (a diagnostic: the explorer and the
playbooks need what it holds).

With ``--group N``, N bodies at a time are parsed, then stored together (the pipeline's
``store_many``: one transaction), as a collector stores the bodies that waited while it
stored others; each body is given an equal share of its group's CPU.

Run: ``.venv/bin/python bench/bench_ingest_cpu.py [--events 100000] [--preload 5000000]
[--against main] [--group 4] [--warmup 100000] [--without event_users_bkv]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import BATCH, batches, preload  # noqa: E402
from revisions import getter, load_revision  # noqa: E402

STAGES = ("gunzip", "parse", "store")


def package(name: str) -> SimpleNamespace:
    """What the bench uses of the package ``name`` (``sqreen``, or another revision's)."""

    get = getter(name)
    return SimpleNamespace(
        gunzip=get("server.ingest", "gunzip"),
        IngestPipeline=get("server.pipeline", "IngestPipeline"),
        open_storage=get("server.storage", "open_storage"),
    )


def timed(pkg: SimpleNamespace, pipeline: Any, body: bytes) -> tuple[float, ...]:
    """CPU seconds of each stage for one body."""
    clock = time.process_time
    t0 = clock()
    raw = pkg.gunzip(body, 1 << 30)
    t1 = clock()
    batch = pipeline.parse(raw)
    t2 = clock()
    result = pipeline.store(batch)
    t3 = clock()
    if result.stored != len(batch.events):
        raise RuntimeError(f"{result.stored} of {len(batch.events)} stored")
    return t1 - t0, t2 - t1, t3 - t2


def timed_group(
    pkg: SimpleNamespace, pipeline: Any, bodies: list[bytes]
) -> list[tuple[float, ...]]:
    """:func:`timed` for bodies stored together, as a collector stores those that waited
    (``store_many``: one transaction; a package without it stores them one by one): each
    body gets an equal share of the group's stages."""
    clock = time.process_time
    t0 = clock()
    raws = [pkg.gunzip(body, 1 << 30) for body in bodies]
    t1 = clock()
    batches = [pipeline.parse(raw) for raw in raws]
    t2 = clock()
    many = getattr(pipeline, "store_many", None)
    results = many(batches) if many is not None else [pipeline.store(b) for b in batches]
    t3 = clock()
    for batch, result in zip(batches, results, strict=True):
        if isinstance(result, Exception) or result.stored != len(batch.events):
            raise RuntimeError(f"{result!r}: not all of {len(batch.events)} stored")
    n = len(bodies)
    return [((t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n)] * n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--preload", type=int, default=0, help="also a database of N events")
    parser.add_argument("--against", metavar="REV", help="also REV's package (e.g. main)")
    parser.add_argument("--mix", choices=["attack", "typical", "storm"], default="typical")
    parser.add_argument(
        "--group",
        type=int,
        default=1,
        help="bodies stored together (one transaction), as a busy collector stores those "
        "that waited for it (default 1: one by one)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="with --preload: events stored in the grown databases, untimed, before the "
        "runs (the preload builds their indexes from sorted rows, every page full: the first "
        "insert into each page splits it, where a database grown by ingest has room)",
    )
    parser.add_argument(
        "--without",
        metavar="INDEX",
        action="append",
        default=[],
        help="also this tree on copies of its databases without INDEX (repeatable)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        packages = {"now": package("sqreen")}
        if args.against:
            packages[args.against] = package(load_revision(args.against, tmp))
        variants: dict[str, tuple[SimpleNamespace, Any]] = {}
        for name, pkg in packages.items():
            for grown in (False, True) if args.preload else (False,):
                path = str(Path(tmp, f"{name}-{grown}.db"))
                if grown:
                    start = time.perf_counter()
                    preload(path, args.preload, args.mix, pkg)
                    print(
                        f"{name}: {args.preload} events preloaded in "
                        f"{time.perf_counter() - start:.0f} s",
                        file=sys.stderr,
                    )
                label = f"{name}, {args.preload} stored" if grown else f"{name}, fresh"
                pkg.open_storage(path).close()  # (made, migrated: then copied as it is)
                for index in args.without if name == "now" else ():
                    copy = str(Path(tmp, f"{name}-{grown}-without-{index}.db"))
                    shutil.copyfile(path, copy)
                    conn = sqlite3.connect(copy)
                    conn.execute(f'DROP INDEX "{index}"')
                    conn.close()
                    without = pkg.IngestPipeline(pkg.open_storage(copy))
                    variants[f"{label}, without {index}"] = (pkg, without)
                variants[label] = (pkg, pkg.IngestPipeline(pkg.open_storage(path)))
        if args.without:
            os.sync()  # the copies written back before the runs, not during them
        if args.warmup:
            for label, (pkg, pipeline) in variants.items():
                if "stored" in label:
                    for body in batches(args.warmup, "warmup" + label.replace(" ", ""), args.mix):
                        timed(pkg, pipeline, body)
        bodies = {
            label: batches(args.events, label.replace(" ", ""), args.mix) for label in variants
        }
        times: dict[str, list[tuple[float, ...]]] = {label: [] for label in variants}
        order = list(variants)
        gc.collect()
        step = max(1, args.group)
        for i in range(0, len(bodies[order[0]]), step):
            for label in order if (i // step) % 2 == 0 else reversed(order):
                pkg, pipeline = variants[label]
                if step == 1:
                    times[label].append(timed(pkg, pipeline, bodies[label][i]))
                else:
                    times[label] += timed_group(pkg, pipeline, bodies[label][i : i + step])
        for _, pipeline in variants.values():
            pipeline.storage.close()
    print(
        f"\nCPU µs per event, median of {len(bodies[order[0]])} batches of {BATCH} "
        f"({args.mix} mix; variants alternated batch by batch"
        + (f"; stored {args.group} at a time)" if args.group > 1 else ")")
    )
    width = max(28, *(len(label) + 1 for label in times))
    print(f"{'variant':{width}}" + "".join(f"{s:>9}" for s in (*STAGES, "total", "mean")))
    for label, rows in times.items():
        cells = [statistics.median(r[k] for r in rows) * 1e6 / BATCH for k in range(3)]
        total = statistics.median(sum(r) for r in rows) * 1e6 / BATCH
        mean = statistics.fmean(sum(r) for r in rows) * 1e6 / BATCH
        print(f"{label:{width}}" + "".join(f"{c:9.1f}" for c in (*cells, total, mean)))
    print(
        "(mean: of every batch's total, the checkpoints included: SQLite's runs after one "
        "commit in 8, which the medians leave out)"
    )


if __name__ == "__main__":
    main()
