"""The live forwarder's cost to ingest: a collector without ``--export``, one exporting to a
dead endpoint, and one exporting to a live OTLP/HTTP receiver, side by side.

Method
------
Three real ``sqreen serve`` subprocesses (SQLite, one worker each, fresh databases): ``off``
(no export), ``dead`` (``--export otlp+http://`` to a port nothing listens on: the forwarder
backs off) and ``live`` (``--export`` to an OTLP/HTTP receiver thread of this script that
answers 200 and counts the logs it decodes). Batches of 500 events (bench_ingest's, gzipped)
are posted one at a time, in rounds that alternate the three collectors (the machine is
shared and noisy: each round sees the same noise for the three). For each batch, the reply's
wall time; for each round, the collector's CPU seconds (/proc, its process and children),
read for ``live`` only once the receiver has every event of the round (so that its figure
includes the forwarding). Medians over the batches (latency) and rounds (CPU per event).

Run: ``.venv/bin/python bench/bench_export.py [--rounds 8] [--batches 4]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2 as httpx
from bench_ingest import batches, collector, free_port, tree_cpu
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest


class Receiver(ThreadingHTTPServer):
    logs = 0


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportLogsServiceRequest.FromString(body)
        self.server.logs += sum(
            len(s.log_records) for r in request.resource_logs for s in r.scope_logs
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4, help="batches a round a collector")
    args = parser.parse_args()
    receiver = Receiver(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    dead = free_port()
    variants = {
        "off": [],
        "dead": ["--export", f"otlp+http://127.0.0.1:{dead}/v1/logs"],
        "live": ["--export", f"otlp+http://127.0.0.1:{receiver.server_port}/v1/logs"],
    }
    per_round = args.batches * 500
    latency: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        with (
            collector(str(Path(tmp) / "off.db"), extra=variants["off"]) as off,
            collector(str(Path(tmp) / "dead.db"), extra=variants["dead"]) as dead_c,
            collector(str(Path(tmp) / "live.db"), extra=variants["live"]) as live,
        ):
            running = {"off": off, "dead": dead_c, "live": live}
            for r in range(args.rounds):
                order = list(variants)[r % 3 :] + list(variants)[: r % 3]
                for name in order:
                    endpoint, token, pid = running[name]
                    bodies = batches(per_round, f"{name}{r}")
                    headers = {
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                        "Content-Encoding": "gzip",
                    }
                    before = sum(tree_cpu(pid).values())
                    with httpx.Client(headers=headers, timeout=60) as client:
                        for body in bodies:
                            start = time.perf_counter()
                            reply = client.post(endpoint + "/v1/events", content=body)
                            latency[name].append(time.perf_counter() - start)
                            assert reply.status_code == 200, reply.text
                    if name == "live":
                        deadline = time.monotonic() + 60
                        while receiver.logs < per_round * (r + 1):
                            assert time.monotonic() < deadline, "the forwarder fell behind"
                            time.sleep(0.02)
                    cpu[name].append((sum(tree_cpu(pid).values()) - before) / per_round)
    print(f"{args.rounds} rounds x {args.batches} batches of 500 events, alternated")
    print(f"{'collector':<10} {'batch p50 ms':>13} {'batch p90 ms':>13} {'CPU µs/event':>13}")
    for name in variants:
        lat = sorted(latency[name])
        p90 = lat[int(len(lat) * 0.9) - 1]
        print(
            f"{name:<10} {statistics.median(lat) * 1000:>13.1f} {p90 * 1000:>13.1f} "
            f"{statistics.median(cpu[name]) * 1e6:>13.1f}"
        )
    receiver.shutdown()


if __name__ == "__main__":
    main()
