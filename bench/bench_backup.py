"""``sqreen backup`` under ingest: what a backup costs the writer, and why it holds one read
transaction.

Method
------
A SQLite database of ``--events`` stored events (about 1 KB each on disk), in this process.
A writer thread stores batches of 500 events (``insert_events``, as the collector does) one
after another, and each batch's time is recorded. In one run, rounds alternate (the machine
is shared and noisy): ``idle``, no backup, for as long as the previous backup took; ``held``,
``backup_sqlite`` (this release: 1024-page steps within one read transaction) copying the
database meanwhile; ``unheld``, the backup API in the same steps without the held
transaction (what a plain ``Connection.backup(pages=...)`` does), which SQLite restarts from
the first page whenever the writer committed since the previous step: its restarts are
counted, and it is cut off after ``--cap`` seconds. The table gives medians over the rounds:
the writer's batch time (median and 99th percentile), its events a second, the copy's time
and CPU time (``time.thread_time`` of the copying thread), and restarts.

Run: ``.venv/bin/python bench/bench_backup.py [--events 100000] [--rounds 3] [--cap 20]``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqreen._wire import parse_event  # noqa: E402
from sqreen._wire_time import format_timestamp  # noqa: E402
from sqreen.server.storage import Storage, open_storage  # noqa: E402
from sqreen.server.storage.backup import STEP_PAGES, backup_sqlite  # noqa: E402

BATCH = 500
_next = iter(range(1, 10**12))


def batch() -> list:
    now = format_timestamp(time.time())
    return [
        parse_event(
            {
                "id": f"b-{next(_next):012d}",
                "name": "auth.login.failure",
                "timestamp": now,
                "properties": {"reason": "bad_password", "note": "x" * 400},
                "user": {"uid": str(n % 5000)},
                "request": {"ip": f"203.0.113.{n % 250}", "path": "/login", "method": "POST"},
            }
        )
        for n in range(BATCH)
    ]


class Writer(threading.Thread):
    def __init__(self, storage: Storage) -> None:
        super().__init__(daemon=True)
        self.storage = storage
        self.times: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            events = batch()
            start = time.perf_counter()
            self.storage.insert_events(events, app="bench", host="bench")
            self.times.append(time.perf_counter() - start)


def unheld_backup(source: str, target: str, cap: float) -> tuple[bool, int]:
    """The backup API in STEP_PAGES steps, each its own read transaction."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    restarts, last, deadline = 0, [-1], time.monotonic() + cap

    def progress(status: int, remaining: int, total: int) -> None:
        nonlocal restarts
        if remaining > last[0] >= 0:
            restarts += 1
        last[0] = remaining
        if time.monotonic() > deadline:
            raise TimeoutError

    try:
        src.backup(dst, pages=STEP_PAGES, progress=progress)
        return True, restarts
    except (TimeoutError, sqlite3.Error):
        return False, restarts
    finally:
        src.close()
        dst.close()


def timed(copy: Callable[[], tuple[bool, int]]) -> tuple[float, float, bool, int]:
    out: list[tuple[bool, int]] = []
    cpu: list[float] = []

    def run() -> None:
        start = time.thread_time()
        out.append(copy())
        cpu.append(time.thread_time() - start)

    start = time.perf_counter()
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return time.perf_counter() - start, cpu[0], *out[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cap", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "sqreen.db")
        storage = open_storage(db)
        for _ in range(args.events // BATCH):
            storage.insert_events(batch(), app="bench", host="bench")
        print(
            f"database: {os.path.getsize(db) / 2**20:.0f} MiB, {args.events} events; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        writer = Writer(storage)
        writer.start()
        rows: dict[str, list[tuple[float, ...]]] = {"idle": [], "held": [], "unheld": []}
        last_copy = 1.0
        for r in range(args.rounds):
            for variant in ("idle", "held", "unheld"):
                target = os.path.join(tmp, f"copy-{r}-{variant}.db")
                first = len(writer.times)
                if variant == "idle":
                    time.sleep(last_copy)
                    wall, cpu, done, restarts = last_copy, 0.0, True, 0
                elif variant == "held":

                    def held(target: str = target) -> tuple[bool, int]:
                        backup_sqlite(db, target)
                        return True, 0

                    wall, cpu, done, restarts = timed(held)
                    last_copy = wall
                else:
                    wall, cpu, done, restarts = timed(
                        lambda target=target: unheld_backup(db, target, args.cap)  # type: ignore[misc]
                    )
                times = writer.times[first:] or [float("nan")]
                p99 = sorted(times)[int(0.99 * (len(times) - 1))]
                rate = len(times) * BATCH / wall
                rows[variant].append(
                    (statistics.median(times) * 1e3, p99 * 1e3, rate, wall, cpu, done, restarts)
                )
                for suffix in ("", "-journal", "-wal", "-shm"):
                    if os.path.exists(target + suffix):
                        os.unlink(target + suffix)
        writer.stopped.set()
        writer.join()
        storage.close()
    print(
        f"\n{'variant':<8} {'batch p50 ms':>12} {'batch p99 ms':>12} {'events/s':>9} "
        f"{'copy s':>7} {'copy CPU s':>10} {'finished':>9} {'restarts':>9}"
    )
    for variant, found in rows.items():
        med = [statistics.median(col) for col in list(zip(*found, strict=True))[:5]]
        finished = sum(1 for row in found if row[5])
        restarts = statistics.median(row[6] for row in found)
        copy = "-" if variant == "idle" else f"{med[3]:.2f}"
        cpu = "-" if variant == "idle" else f"{med[4]:.2f}"
        print(
            f"{variant:<8} {med[0]:>12.1f} {med[1]:>12.1f} {med[2]:>9.0f} {copy:>7} "
            f"{cpu:>10} {finished:>5}/{len(found):<3} {restarts:>9.0f}"
        )


if __name__ == "__main__":
    main()
