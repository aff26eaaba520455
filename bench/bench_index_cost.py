"""What each index and side table of the events costs SQLite's insert, in one process.

Method
------
The batches ``bench_ingest.py`` sends (500 events, ``--mix``) are parsed and turned into rows
once, by the collector's own code; then each variant's database (made by ``open_storage``,
written through a connection set up as the collector's writer) takes the statements the
SQLite back end runs (the events' multi-row INSERT, the two side tables', the commit, a
PASSIVE checkpoint every 8 commits), timed with ``time.process_time`` around the SQL alone.
Each variant is this tree's schema with one structure dropped (or the side tables reshaped),
on its own fresh database; variants alternate batch by batch, so they see the same load. The
figure is the median over the batches of CPU µs an event; a structure's cost is the base's
figure less its variant's.

Run: ``.venv/bin/python bench/bench_index_cost.py [--events 60000] [--mix typical]``.
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import BATCH, batches  # noqa: E402

from sqreen.server.ingest import gunzip  # noqa: E402
from sqreen.server.pipeline import IngestPipeline  # noqa: E402
from sqreen.server.storage import open_storage  # noqa: E402
from sqreen.server.storage._parts import placeholders  # noqa: E402
from sqreen.server.storage._rows import EVENT_COLUMNS, event_record  # noqa: E402
from sqreen.server.storage._side_rows import index_rows  # noqa: E402
from sqreen.server.storage.sqlite import WRITER_CACHE_KIB  # noqa: E402

SIDES = ("event_props", "event_users")
#: The side tables as one tree each, keyed (key, value, seq): no (seq, key) primary key.
KV_ONLY = [
    statement
    for table in SIDES
    for statement in (
        f"DROP TABLE {table}",
        f"CREATE TABLE {table} (key TEXT NOT NULL, value TEXT NOT NULL, seq INTEGER NOT NULL, "
        "PRIMARY KEY (key, value, seq)) WITHOUT ROWID",
    )
]
VARIANTS: dict[str, list[str]] = {
    "schema": [],
    "- events_received": ["DROP INDEX events_received"],
    "- events_ts": ["DROP INDEX events_ts"],
    "- events_ip": ["DROP INDEX events_ip"],
    "- events_name": ["DROP INDEX events_name"],
    "- events_id": ["DROP INDEX events_id"],
    "- (key, value) indexes": ["DROP INDEX event_props_kv", "DROP INDEX event_users_bkv"],
    "side tables (key, value) only": KV_ONLY,
    "- side tables": [],  # their INSERTs skipped
}


def prepared(total: int, mix: str, tmp: str) -> list[tuple[list[Any], int, list[Any], list[Any]]]:
    """Each batch's flattened event rows (seq first), their count, and its side rows."""
    pipeline = IngestPipeline(open_storage(str(Path(tmp, "parse.db"))))
    out = []
    seq = 0
    for body in batches(total, "cost", mix):
        events = pipeline.parse(gunzip(body, 1 << 30)).events
        received = int(time.time() * 1e6)
        flat: list[Any] = []
        for event in events:
            seq += 1
            flat.append(seq)
            flat += event_record(event, "app", "host", received)
        first = seq - len(events) + 1
        props, users = index_rows(events)
        props[0::3] = [first + p for p in props[0::3]]
        users[0::3] = [first + p for p in users[0::3]]
        out.append((flat, len(events), props, users))
    pipeline.storage.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--mix", choices=["attack", "typical", "storm"], default="typical")
    args = parser.parse_args()
    columns = ", ".join(("seq", *EVENT_COLUMNS))
    width = len(EVENT_COLUMNS) + 1
    with tempfile.TemporaryDirectory() as tmp:
        conns = {}
        for n, (label, ddl) in enumerate(VARIANTS.items()):
            path = str(Path(tmp, f"{n}.db"))
            open_storage(path).close()
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")  # as the collector's writer
            for statement in ddl:
                conn.execute(statement)
            conns[label] = conn
        work = prepared(args.events, args.mix, tmp)
        times: dict[str, list[float]] = {label: [] for label in VARIANTS}
        order = list(VARIANTS)
        gc.collect()
        for i, (flat, count, props, users) in enumerate(work):
            for label in order if i % 2 == 0 else reversed(order):
                conn = conns[label]
                dedup = "" if label == "- events_id" else " ON CONFLICT (id, key_id) DO NOTHING"
                start = time.process_time()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    f"INSERT INTO events ({columns}) VALUES {placeholders(count, width)}{dedup}",
                    flat,
                )
                if label != "- side tables":
                    for table, rows in zip(SIDES, (props, users), strict=True):
                        conn.execute(
                            f"INSERT INTO {table} (seq, key, value) VALUES "
                            f"{placeholders(len(rows) // 3, 3)}",
                            rows,
                        )
                conn.execute("COMMIT")
                if i % 8 == 7:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                times[label].append(time.process_time() - start)
        for conn in conns.values():
            conn.close()
    base = statistics.median(times["schema"]) * 1e6 / BATCH
    print(f"\nSQL CPU µs per event, median of {len(work)} batches of {BATCH} ({args.mix} mix)")
    print(f"{'variant':32}{'µs/event':>10}{'saved':>8}")
    for label, found in times.items():
        us = statistics.median(found) * 1e6 / BATCH
        print(f"{label:32}{us:10.1f}{base - us:8.1f}")


if __name__ == "__main__":
    main()
