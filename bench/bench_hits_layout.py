"""What the layout of ``playbook_hits`` costs SQLite's writes and reads, in one process.

Method
------
The six templates run once over the batches of ``bench_ingest.py`` (``--mix``, 500 events
each) through a real :class:`PlaybookRunner`; each batch's call to ``update_windows`` is
recorded: its hits, its probes (as the runner resolved them) and the keys whose hits were
fetched. The events' times are then respread as if ``--rate`` events a second arrived (the
bench makes them all in a few seconds; a collector under attack takes ~20 s for 100 000),
the probes' windows moved with them. Each layout's fresh SQLite database (the collector's
writer settings) takes, batch by batch and alternating the order, the statements the
collector runs: the hits' INSERT, the counts, the fetches, the commit, a PASSIVE checkpoint
every 8 commits; ``time.process_time`` around them. Figures: median CPU µs an event, and
pages written to the WAL a batch (its size growth, checkpoints reset it).

Run: ``.venv/bin/python bench/bench_hits_layout.py [--events 100000] [--mix attack]``.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import logging
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import BATCH, event  # noqa: E402

from sqreen.server.pipeline import IngestPipeline  # noqa: E402
from sqreen.server.playbooks import TEMPLATES, PlaybookRunner, PlaybookSource  # noqa: E402
from sqreen.server.storage import open_storage  # noqa: E402
from sqreen.server.storage.sqlite import WRITER_CACHE_KIB  # noqa: E402

Hit = tuple[str, str, int, int, str | None]
Probe = tuple[str, str, int, int, bool]
Record = tuple[list[Hit], list[Probe], list[tuple[str, str, int]]]
US = 1_000_000


def record(total: int, mix: str, tmp: str) -> list[Record]:
    """Each batch's hits, probes and fetched keys, from a real runner."""
    path = Path(tmp) / "playbooks.toml"
    path.write_text(TEMPLATES)
    storage = open_storage(str(Path(tmp) / "record.db"))
    runner = PlaybookRunner(storage, PlaybookSource(path))
    pipe = IngestPipeline(storage, hooks=[runner])
    out: list[Record] = []
    real = storage.update_windows

    def spy(keys: Any, hits: Any, probes: Any, decide: Any, *a: Any, **kw: Any) -> Any:
        seen: dict[str, Any] = {"probes": [], "fetched": []}

        def resolved(fresh: bool) -> Sequence[Probe]:
            got = probes(fresh) if callable(probes) else probes
            seen["probes"] = list(got)
            return got

        def deciding(found: dict[tuple[str, str], list[Any]], quiet: Any) -> Any:
            # Since the oldest hit found: the same rows as the runner's window start reads.
            seen["fetched"] = [(s, k, min(h[0] for h in v)) for (s, k), v in found.items() if v]
            return decide(found, quiet)

        result = real(keys, hits, resolved, deciding, *a, **kw)
        out.append((list(hits), seen["probes"], seen["fetched"]))
        return result

    storage.update_windows = spy  # type: ignore[method-assign]
    run = f"layout-{time.time_ns()}"
    for start in range(0, total, BATCH):
        body = {
            "sdk": {"name": "sqreen-python", "version": "bench"},
            "app": {"name": "bench", "host": "bench", "pid": 1, "framework": "none"},
            "events": [event(n, run, mix) for n in range(start, min(total, start + BATCH))],
        }
        pipe.ingest(json.dumps(body).encode())
    storage.close()
    return out


def respread(records: list[Record], rate: float) -> list[tuple[Record, int]]:
    """Times as if ``rate`` events a second arrived: batch i at base + i * BATCH / rate."""
    out = []
    base = 1_700_000_000 * US
    for i, (hits, probes, fetched) in enumerate(records):
        now = base + int(i * BATCH / rate * US)
        t0 = max((h[2] for h in hits), default=0)
        new_hits = [(s, k, now - (t0 - ts), seq, v) for s, k, ts, seq, v in hits]
        new_probes = [(s, k, now - (t0 - since), need, d) for s, k, since, need, d in probes]
        new_fetched = [(s, k, now - (t0 - since)) for s, k, since in fetched]
        out.append(((new_hits, new_probes, new_fetched), now))
    return out


class Layout:
    """A shape of the hits table: its DDL, how a hit is written, how counts and fetches read."""

    name = "(stream, key, ts, seq)"
    page_size = 8192
    ddl = (
        "CREATE TABLE h (stream TEXT NOT NULL, key TEXT NOT NULL, ts INTEGER NOT NULL, "
        "seq INTEGER NOT NULL, value TEXT, PRIMARY KEY (stream, key, ts, seq)) WITHOUT ROWID",
        "CREATE INDEX h_ts ON h (ts)",
    )

    def insert(self, conn: sqlite3.Connection, hits: list[Hit]) -> None:
        # As the collector's SQLite back end: one prepared statement run for each hit.
        conn.executemany(
            "INSERT INTO h (stream, key, ts, seq, value) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            hits,
        )

    def where(self, since: int, now: int) -> tuple[str, list[Any]]:
        return "ts >= ?", [since]

    def counts(self, conn: sqlite3.Connection, probes: list[Probe], now: int) -> int:
        by: dict[str, tuple[set[str], int]] = {}
        for s, k, since, _, _ in probes:
            keys, oldest = by.get(s, (set(), since))
            keys.add(k)
            by[s] = (keys, min(oldest, since))
        n = 0
        for s, (keys, oldest) in by.items():
            ks = sorted(keys)
            for i in range(0, len(ks), 400):
                chunk = ks[i : i + 400]
                cond, params = self.where(oldest, now)
                n += len(
                    conn.execute(
                        f"SELECT key, count(*), count(DISTINCT value) FROM h WHERE stream = ? "
                        f"AND {cond} AND key IN ({', '.join('?' * len(chunk))}) GROUP BY key",
                        [s, *params, *chunk],
                    ).fetchall()
                )
        return n

    def fetch(self, conn: sqlite3.Connection, fetched: list[tuple[str, str, int]], now: int) -> int:
        n = 0
        for s, k, since in fetched:
            cond, params = self.where(since, now)
            n += len(
                conn.execute(
                    f"SELECT ts, seq, value FROM h WHERE stream = ? AND key = ? AND {cond} "
                    "ORDER BY ts DESC, seq DESC LIMIT 4096",
                    [s, k, *params],
                ).fetchall()
            )
        return n


class Bucketed(Layout):
    """(stream, bucket, key, ts, seq), bucket = ts // B; reads list the window's buckets."""

    def __init__(self, seconds: int) -> None:
        self.b = seconds * US
        self.name = f"(stream, ts//{seconds}s, key, ts, seq)"
        self.ddl = (
            "CREATE TABLE h (stream TEXT NOT NULL, bucket INTEGER NOT NULL, key TEXT NOT NULL, "
            "ts INTEGER NOT NULL, seq INTEGER NOT NULL, value TEXT, "
            "PRIMARY KEY (stream, bucket, key, ts, seq)) WITHOUT ROWID",
            "CREATE INDEX h_ts ON h (ts)",
        )

    def insert(self, conn: sqlite3.Connection, hits: list[Hit]) -> None:
        conn.executemany(
            "INSERT INTO h (stream, bucket, key, ts, seq, value) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [(s, ts // self.b, k, ts, seq, v) for s, k, ts, seq, v in hits],
        )

    def where(self, since: int, now: int) -> tuple[str, list[Any]]:
        buckets = list(range(since // self.b, now // self.b + 1))
        return f"bucket IN ({', '.join('?' * len(buckets))}) AND ts >= ?", [*buckets, since]


class Appended(Layout):
    """A rowid table in arrival order and a covering index (stream, key, ts, seq, value)."""

    name = "rowid + index (stream, key, ts)"
    ddl = (
        "CREATE TABLE h (stream TEXT NOT NULL, key TEXT NOT NULL, ts INTEGER NOT NULL, "
        "seq INTEGER NOT NULL, value TEXT)",
        "CREATE UNIQUE INDEX h_k ON h (stream, key, ts, seq, value)",
    )


class Paged(Layout):
    """The schema's key in a file of smaller pages (a scattered hit dirties one page, which
    the commit writes to the WAL and the checkpoint copies: a smaller page is less to write;
    ``playbook_hits`` would need a database file of its own, ATTACHed, for this)."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.name = f"{Layout.name}, {page_size} B pages"


class Logged(Layout):
    """Windows held in the process's memory, the database keeping a log of one row a batch
    (its hits as one value: what a restart and the other processes would read), not a row a
    hit: the design docs/architecture.md (*Playbooks*, cost) estimates. Counts and fetches
    are answered from memory (per key: its hits' times in order, bisected), as a process
    that is the only writer would; what reading the other writers' rows would cost is not
    in it."""

    name = "log: a row a batch, windows in memory"
    ddl = ("CREATE TABLE h (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, hits BLOB NOT NULL)",)

    def __init__(self) -> None:
        import marshal

        self._dumps = marshal.dumps
        self._ts: dict[tuple[str, str], list[int]] = {}
        self._rest: dict[tuple[str, str], list[tuple[int, str | None]]] = {}

    def insert(self, conn: sqlite3.Connection, hits: list[Hit]) -> None:
        conn.execute(
            "INSERT INTO h (at, hits) VALUES (?, ?)",
            (max((h[2] for h in hits), default=0), self._dumps(hits)),
        )
        ts_of, rest_of = self._ts, self._rest
        for s, k, ts, seq, v in hits:
            key = (s, k)
            times = ts_of.get(key)
            if times is None:
                times = ts_of[key] = []
                rest_of[key] = []
            if times and ts < times[-1]:  # out of order: kept sorted
                at = bisect.bisect_right(times, ts)
                times.insert(at, ts)
                rest_of[key].insert(at, (seq, v))
            else:
                times.append(ts)
                rest_of[key].append((seq, v))

    def counts(self, conn: sqlite3.Connection, probes: list[Probe], now: int) -> int:
        n = 0
        for s, k, since, _, distinct in probes:
            times = self._ts.get((s, k))
            if not times:
                continue
            at = bisect.bisect_left(times, since)
            # What the SQL counts: the hits since ``since``, and their distinct values.
            values = len({v for _, v in self._rest[(s, k)][at:]}) if distinct else 0
            n += len(times) > at or values > 0
        return n

    def fetch(self, conn: sqlite3.Connection, fetched: list[tuple[str, str, int]], now: int) -> int:
        n = 0
        for s, k, since in fetched:
            times = self._ts.get((s, k), [])
            at = max(bisect.bisect_left(times, since), len(times) - 4096)
            rest = self._rest.get((s, k), [])
            n += len([(t, *r) for t, r in zip(times[at:], rest[at:], strict=True)][::-1])
        return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--mix", choices=["attack", "typical", "storm"], default="attack")
    parser.add_argument("--rate", type=float, default=5000.0, help="events a second")
    parser.add_argument("--buckets", default="1,4,16,64", help="bucket sizes, seconds")
    parser.add_argument("--pages", default="", help="also the schema's key with these page sizes")
    parser.add_argument("--log", action="store_true", help="also the log design (Logged)")
    args = parser.parse_args()
    logging.getLogger("sqreen.server").setLevel(logging.ERROR)
    layouts: list[Layout] = [Layout(), Appended()]
    layouts += [Bucketed(int(b)) for b in args.buckets.split(",") if b]
    layouts += [Paged(int(size)) for size in args.pages.split(",") if size]
    if args.log:
        layouts.append(Logged())
    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        work = respread(record(args.events, args.mix, tmp), args.rate)
        print(f"recorded {len(work)} batches in {time.time() - t:.0f} s", file=sys.stderr)
        conns = []
        for n, layout in enumerate(layouts):
            conn = sqlite3.connect(str(Path(tmp, f"{n}.db")), isolation_level=None)
            conn.execute(f"PRAGMA page_size={layout.page_size}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            for statement in layout.ddl:
                conn.execute(statement)
            conns.append((layout, conn))
        times: list[list[float]] = [[] for _ in layouts]
        pages: list[list[float]] = [[] for _ in layouts]
        gc.collect()
        for i, ((hits, probes, fetched), now) in enumerate(work):
            order = list(enumerate(conns))
            for j, (layout, conn) in order if i % 2 else reversed(order):
                start = time.process_time()
                conn.execute("BEGIN IMMEDIATE")
                layout.insert(conn, hits)
                layout.counts(conn, probes, now)
                layout.fetch(conn, fetched, now)
                conn.execute("COMMIT")
                elapsed = time.process_time() - start
                if i % 8 == 7:  # the frames of the last 8 commits: pages written a batch
                    start = time.process_time()
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    elapsed += time.process_time() - start
                    pages[j].append(frames / 8)
                times[j].append(elapsed)
        sizes = [conn.execute("PRAGMA page_count").fetchone()[0] for _, conn in conns]
        for _, conn in conns:
            conn.close()
    skip = len(work) // 4  # the table's first quarter: not yet its size
    base = statistics.median(times[0][skip:]) * US / BATCH
    print(f"\n--mix {args.mix}, {len(work)} batches of {BATCH}, {args.rate:.0f} events/s")
    print(f"{'layout':36}{'µs/event':>10}{'saved':>8}{'pages/batch':>13}{'pages':>8}")
    for layout, t_, p, size in zip(layouts, times, pages, sizes, strict=True):
        us = statistics.median(t_[skip:]) * US / BATCH
        pg = statistics.median(p) if p else 0
        print(f"{layout.name:36}{us:10.1f}{base - us:8.1f}{pg:13.0f}{size:8}")


if __name__ == "__main__":
    main()
