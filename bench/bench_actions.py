"""What the action set costs the collector with many blocks: reply sizes, latencies, replies/s.

Method
------
A real ``sqreen serve`` subprocess on 127.0.0.1 (uvicorn, SQLite, access log off) over a fresh
database holding ``--blocks`` active IP blocks (made through the block service before the
collector starts, each with a one-hour duration and a reason as a playbook writes them). One
httpx2 client (keep-alive) sends each kind of request ``--repeat`` times and the table gives the
median and 90th percentile of the wall time of each request, and the size of the reply body:

- *ingest, no version*: a batch of one event from an SDK that holds no action set (its first
  batch, or an SDK from before the version was sent): the whole set comes back;
- *ingest, current*: the same from an SDK holding the current version: ``unchanged``;
- *ingest, one behind*: an SDK holding the version before the last block was made: the
  change alone (the whole set from a collector that sends no diffs);
- *heartbeat, current*, and ``GET /v1/actions`` with no version (the whole set).

Then ``--senders`` threads, each with its own client, post one-event batches for ``--seconds``
seconds, holding the current version, then holding none; the figure is replies per second.
The senders share the machine with the collector (2 cores here). Timings are this machine's,
for comparison between versions of the collector; the tests assert sizes, never times.

Run: ``.venv/bin/python bench/bench_actions.py [--blocks 10000] [--repeat 200]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import collector  # noqa: E402
from sqreen._wire_time import format_timestamp  # noqa: E402
from sqreen.server.blocks import BlockService, ip_block  # noqa: E402
from sqreen.server.storage import open_storage  # noqa: E402

_counter = iter(range(10**12))


def batch(version: int | None) -> bytes:
    body: dict[str, object] = {
        "sdk": {"name": "sqreen-python", "version": "bench"},
        "app": {"name": "bench", "host": "bench", "pid": os.getpid(), "framework": "none"},
        "events": [
            {
                "id": f"bench-{os.getpid()}-{next(_counter)}",
                "name": "order.created",
                "timestamp": format_timestamp(time.time()),
                "properties": {"plan": "pro"},
                "user": {"uid": "7"},
                "target": None,
                "request": None,
            }
        ],
    }
    if version is not None:
        body["actions"] = {"version": version, "diff": True}
    return json.dumps(body, separators=(",", ":")).encode()


def heartbeat(version: int) -> bytes:
    return json.dumps(
        {
            "sdk": {"name": "sqreen-python", "version": "bench"},
            "app": {"name": "bench", "host": "bench", "pid": os.getpid(), "framework": "none"},
            "actions": {"version": version, "diff": True},
            "stats": {"tracked": 1},
        }
    ).encode()


def make_blocks(db: str, count: int) -> None:
    storage = open_storage(db)
    service = BlockService(storage)
    try:
        for n in range(count):
            network = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
            wanted = ip_block(
                network,
                duration=timedelta(hours=1),
                reason=f"brute-force-ip: 5 auth.login.failure in 5m for ip={network}",
            )
            service.create(wanted, created_by="playbook:brute-force-ip")
    finally:
        storage.close()


def timed(send: httpx.Client, method: str, url: str, repeat: int, **kw: object) -> list[object]:
    times, sizes = [], []
    for _ in range(repeat):
        body = kw.get("content")
        extra = dict(kw)
        if callable(body):
            extra["content"] = body()
        start = time.perf_counter()
        reply = send.request(method, url, **extra)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
        if reply.status_code != 200:
            raise RuntimeError(f"{method} {url}: {reply.status_code} {reply.text[:200]}")
        sizes.append(len(reply.content))
    times.sort()
    return [
        f"{statistics.median(times) * 1000:.2f}",
        f"{times[int(len(times) * 0.9)] * 1000:.2f}",
        f"{statistics.median(sizes):,.0f}",
    ]


def rate(endpoint: str, token: str, senders: int, seconds: float, version: int | None) -> float:
    done = [0] * senders
    stop = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def work(i: int) -> None:
        with httpx.Client(headers=headers, timeout=60) as client:
            while time.monotonic() < stop:
                reply = client.post(endpoint + "/v1/events", content=batch(version))
                if reply.status_code != 200:
                    raise RuntimeError(reply.text[:200])
                done[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(senders)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.db")
        open_storage(db).close()
        started = time.perf_counter()
        make_blocks(db, args.blocks - 1)
        print(f"{args.blocks - 1} blocks made in {time.perf_counter() - started:.1f} s")
        with collector(db) as (endpoint, token, _pid):
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            with httpx.Client(headers=headers, timeout=60) as client:
                before = client.get(endpoint + "/v1/actions").json()["actions"]["version"]
                storage = open_storage(db)  # the last block, made while the collector runs
                try:
                    BlockService(storage).create(
                        ip_block("10.250.0.1", duration=timedelta(hours=1), reason="by hand"),
                        created_by="bench",
                    )
                finally:
                    storage.close()
                now = client.get(endpoint + "/v1/actions").json()["actions"]
                version = now["version"]
                print(f"action set: version {version}, {len(now.get('items', []))} blocks")
                rows = [
                    ("ingest, no version", "POST", "/v1/events", lambda: batch(None)),
                    ("ingest, current", "POST", "/v1/events", lambda: batch(version)),
                    ("ingest, one behind", "POST", "/v1/events", lambda: batch(before)),
                    ("heartbeat, current", "POST", "/v1/heartbeat", lambda: heartbeat(version)),
                    ("GET /v1/actions", "GET", "/v1/actions", None),
                ]
                print(f"\n{'request':<22} {'median ms':>10} {'p90 ms':>8} {'bytes':>10}")
                for name, method, path, body in rows:
                    kw: dict[str, object] = {} if body is None else {"content": body}
                    cells = timed(client, method, endpoint + path, args.repeat, **kw)
                    print(f"{name:<22} {cells[0]:>10} {cells[1]:>8} {cells[2]:>10}")
            print(f"\n{args.senders} senders, one-event batches, {args.seconds:g} s each:")
            for label, held in (("current version", version), ("no version", None)):
                per_s = rate(endpoint, token, args.senders, args.seconds, held)
                print(f"  holding {label:<16} {per_s:8.0f} replies/s")


if __name__ == "__main__":
    main()
