"""What ``/metrics`` costs: the counters a batch adds to ingest, and a scrape.

Method
------
In one process, with ``PROMETHEUS_MULTIPROC_DIR`` set (as ``sqreen serve --workers N`` sets
it: each increment is a write to a memory-mapped file under a lock), alternating in rounds:
what ``POST /v1/events`` does for the metrics once a batch (``observe_batch``, the
``count_refusals`` block around it, ``count_rejected`` with two rejected events, and the
request id: header read and reply header added), and the same loop without it; CPU time
(``time.process_time``) per batch, median of the rounds, divided by 500 for the figure per
event (the SDK's batches hold up to 500). Then ``render`` (a scrape) on a SQLite database with
``--blocks`` active blocks, ``--agents`` SDK processes and some alerts' worth of events.

Run: ``.venv/bin/python bench/bench_metrics.py [--batches 20000] [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Before prometheus_client is imported: it picks where values live then.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-metrics-"))

from sqreen.server.logs import request_id  # noqa: E402
from sqreen.server.metrics import (  # noqa: E402
    count_refusals,
    count_rejected,
    observe_batch,
    render,
)
from sqreen.server.storage import Heartbeat, open_storage  # noqa: E402
from sqreen.server.storage.model import BlockSpec  # noqa: E402

BATCH = 500
HEADERS = [(b"content-type", b"application/json"), (b"authorization", b"Bearer x" * 6)]


def with_metrics(n: int) -> object:
    reply: object = None
    for _ in range(n):
        rid = request_id(HEADERS)
        with count_refusals():
            started = time.perf_counter()
        count_rejected(["empty", "format"])
        observe_batch(BATCH - 2, 0, time.perf_counter() - started)
        reply = [*HEADERS, (b"x-request-id", rid.encode())]
    return reply


def without(n: int) -> object:
    reply: object = None
    for _ in range(n):
        started = time.perf_counter()
        reply = ([*HEADERS], time.perf_counter() - started)
    return reply


def per_batch(fn: object, n: int) -> float:
    start = time.process_time()
    fn(n)  # type: ignore[operator]
    return (time.process_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=200)
    args = parser.parse_args()
    a, b = [], []
    for _ in range(args.rounds):
        a.append(per_batch(with_metrics, args.batches))
        b.append(per_batch(without, args.batches))
    cost = statistics.median(x - y for x, y in zip(a, b, strict=True))
    print(
        f"\n{args.rounds} rounds of {args.batches} batches, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(
        f"metrics + request id, CPU per batch: {cost * 1e6:.2f} µs "
        f"(with {statistics.median(a) * 1e6:.2f}, without {statistics.median(b) * 1e6:.2f})"
    )
    print(f"per event (batches of {BATCH}): {cost / BATCH * 1e9:.1f} ns")
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(str(Path(tmp) / "bench.db"))
        for i in range(args.blocks):
            ip = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
            storage.place_block(BlockSpec("block_ip", None, ip, None, "bench", "bench"))
        for i in range(args.agents):
            storage.record_heartbeat(Heartbeat("app", f"host{i}", i, None, None, None, {}))
        times = []
        for _ in range(args.rounds):
            start = time.process_time()
            size = len(render(storage))
            times.append(time.process_time() - start)
        storage.close()
    print(
        f"a scrape ({args.blocks} active blocks, {args.agents} SDK processes): "
        f"{statistics.median(times) * 1e3:.1f} ms CPU, {size} bytes"
    )


if __name__ == "__main__":
    main()
