"""PostgreSQL's insert of a batch, COPY (now) against multi-row INSERT (before), alternated.

Method
------
One process, one throwaway cluster (as the tests start it, ``tests/_postgres.py``: fsync and
synchronous commit off), or ``--dsn`` of yours (a fresh database is made in it for each
variant). Two ingest pipelines built as ``sqreen serve`` builds them (IP intelligence
enriching), each on its own fresh database: one with today's ``PostgresStorage`` (binary COPY
into a staging table, one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, COPY into the side
tables), one with the insert it replaced (multi-row ``INSERT ... VALUES`` of the shared SQL,
rows sorted by id). The batches are ``bench_ingest.py``'s (500 events, parsed from JSON: no
HTTP, no gzip), each through both pipelines, the order swapped every batch, after
``--warmup`` batches that are not counted. Per event: the CPU of the calling thread (the
collector's share) and of the PostgreSQL backend serving that pipeline (its
``/proc/<pid>/schedstat``, in nanoseconds), medians over the batches; and the wall time of
the call. The background processes (WAL writer, checkpointer) are left out of both.

Run: ``.venv/bin/python bench/bench_pg_insert.py [--events 50000] [--mix attack] [--dsn ...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import BATCH  # noqa: E402
from bench_playbooks_ab import bodies  # noqa: E402

from sqreen.server.intel import IpIntel, Reputation  # noqa: E402
from sqreen.server.pipeline import IngestPipeline  # noqa: E402
from sqreen.server.storage._rows import EventRecord  # noqa: E402
from sqreen.server.storage._sql import Cursor, SqlStorage  # noqa: E402
from sqreen.server.storage.postgres import PostgresStorage  # noqa: E402


class Before(PostgresStorage):
    """The insert this release replaced: the shared multi-row INSERT, rows sorted by id."""

    def _insert_events(self, cur: Cursor, rows: list[EventRecord]) -> list[int | None]:
        by_id = sorted(rows, key=lambda row: row.id)
        got = SqlStorage._insert_events(self, cur, by_id)
        seqs = dict(zip((row.id for row in by_id), got, strict=True))
        return [seqs[row.id] for row in rows]

    def _insert_index(self, cur: Cursor, table: str, flat: list[Any]) -> None:
        SqlStorage._insert_index(self, cur, table, flat)


@contextlib.contextmanager
def cluster(dsn: str | None) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    from tests import _postgres

    bin_dir = _postgres.find_pg_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    with _postgres.cluster(bin_dir) as made:
        yield made.dsn


def backend_ns(admin: Any, database: str) -> int:
    """CPU nanoseconds used so far by every backend connected to ``database``."""
    pids = [
        pid
        for (pid,) in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    ]
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=6, help="batches not counted")
    parser.add_argument("--mix", choices=["attack", "typical", "storm"], default="attack")
    parser.add_argument("--dsn", help="a PostgreSQL cluster of yours (default: a throwaway one)")
    args = parser.parse_args()
    import psycopg

    from tests._postgres import fresh_database

    with cluster(args.dsn) as dsn, psycopg.connect(dsn, autocommit=True) as admin:
        variants = {}
        for label, kind in (("before", Before), ("copy", PostgresStorage)):
            db = fresh_database(dsn)
            storage = kind(db)
            variants[label] = (
                db.rsplit("/", 1)[1],
                IngestPipeline(storage, enrichers=[IpIntel(reputation=Reputation(storage))]),
            )
        costs: dict[str, dict[str, list[float]]] = {
            label: {"collector": [], "postgres": [], "wall": []} for label in variants
        }
        run = f"pg-{time.time_ns()}"
        for n, body in enumerate(bodies(args.events + args.warmup * BATCH, run, args.mix)):
            order = list(variants.items())
            for label, (database, pipe) in order if n % 2 else reversed(order):
                pg, wall, cpu = backend_ns(admin, database), time.perf_counter(), time.thread_time()
                reply, _ = pipe.ingest(body)
                cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
                pg = backend_ns(admin, database) - pg
                assert reply["accepted"] == BATCH, reply
                if n >= args.warmup:
                    costs[label]["collector"].append(cpu / BATCH * 1e6)
                    costs[label]["postgres"].append(pg / BATCH / 1e3)
                    costs[label]["wall"].append(wall / BATCH * 1e6)
    batches = len(costs["copy"]["wall"])
    print(f"\n--mix {args.mix}, {batches} batches of {BATCH} events, median µs per event:")
    print(f"{'':>8}  {'collector CPU':>14}  {'PostgreSQL CPU':>14}  {'both':>8}  {'wall':>8}")
    for label, c in costs.items():
        a, b = statistics.median(c["collector"]), statistics.median(c["postgres"])
        both = statistics.median(x + y for x, y in zip(c["collector"], c["postgres"], strict=True))
        wall = statistics.median(c["wall"])
        print(f"{label:>8}  {a:>14.1f}  {b:>14.1f}  {both:>8.1f}  {wall:>8.1f}")


if __name__ == "__main__":
    main()
