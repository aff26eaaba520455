"""Real servers under load from another process: what one ``track()`` per request costs.

    .venv/bin/python bench/bench_servers.py [--rounds 15] [--requests 600] [--threads 2]
        [--compare REF]

gunicorn's sync worker serving Flask and uvicorn serving FastAPI, on 127.0.0.1, one worker
each, in four variants side by side (``bench/bench_middleware.py``'s apps): ``bare``;
``sqreen`` (the middleware, no track); ``sqreen + track`` (one ``track()`` per request, the
flusher writing every event to ``/dev/null`` through the file transport, so that its CPU is
the server's); ``sqreen + track, dropped`` (the same app with a queue of one event: each
``track()`` validated and snapshotted on the request path, then refused as the queue is
full, so the flusher has nothing to do: the request path's share alone). The requests come
from a separate process (``--load``: threads on raw sockets, keep-alive where the server
keeps connections, gunicorn's sync worker closes each one), as fast as the server answers.
The variants are measured in rounds, in a rotating order, and the median of the rounds is
kept: requests per second, and the server's CPU per request from ``/proc/<pid>/stat`` (utime
+ stime of the server and its workers, the flusher thread included), and the part of it
spent off each process's main thread (``/proc/<pid>/task``: the flusher, as neither server
runs a thread of its own), and the garbage collections each server made over the rounds
(the bench apps' ``/_bench``: a full collection is rare and long, a few of the rounds'
medians miss it, their mean does not). ``--compare REF`` runs the same servers on the
package as of git ``REF`` too, all in the same rounds. ``--flush-interval S`` sets the
servers' flush interval: with the SDK's 5 s, longer than a round, a server's flush lands in
whichever round runs then (often another server's, whose CPU it takes); 0.2 s keeps each
server's flushes in its own rounds. ``--pin`` runs the servers on CPU 0 and the load on
the other CPUs: the flusher then shares the server's CPU, as on a machine whose cores are
all busy serving. ``wrk`` and ``oha`` are not installed here; the client
is kept small so that it takes little of the two cores.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.bench_middleware import (  # noqa: E402
    DROPPED,
    HEADERS,
    SERVER_VARIANTS,
    Server,
    _tree_cpu_split,
)

PATH = "/items/42?page=2&q=shoes"


def _request(keep_alive: bool) -> bytes:
    lines = [f"GET {PATH} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in HEADERS.items()]
    lines.append("Connection: " + ("keep-alive" if keep_alive else "close"))
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(sock: socket.socket, buffer: bytes) -> tuple[bool, bytes]:
    """Read one response; return (whether the connection is still usable, bytes left over)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return False, b""
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:  # read until the server closes
        while sock.recv(65536):
            pass
        return False, b""
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return False, b""
        rest += chunk
    return True, rest[length:]


def load(port: int, n: int, threads: int, keep_alive: bool) -> float:
    """Send n requests over ``threads`` connections; return the wall seconds taken."""
    request = _request(keep_alive)
    counts = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]

    def client(count: int) -> None:
        sock: socket.socket | None = None
        buffer = b""
        for _ in range(count):
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffer = b""
            sock.sendall(request)
            usable, buffer = _read_response(sock, buffer)
            if not (usable and keep_alive):
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    workers = [threading.Thread(target=client, args=(c,)) for c in counts]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t0


def _run_load(port: int, n: int, threads: int, keep_alive: bool, pin: bool = False) -> float:
    others = set(range(1, os.cpu_count() or 2)) or {0}
    out = subprocess.run(
        [sys.executable, __file__, "--load", str(port), str(n), str(threads), str(int(keep_alive))],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, others)) if pin else None,
    )
    return float(out.stdout.strip())


def _served(port: int) -> dict[str, Any]:
    """The bench app's ``/_bench``: the server's garbage collections so far, by generation,
    and the file of the ``sqreen`` package it serves."""
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/_bench")
        served: dict[str, Any] = json.loads(conn.getresponse().read())
        return served
    finally:
        conn.close()


def servers(
    rounds: int,
    n: int,
    threads: int,
    trees: dict[str, str],
    pin: bool = False,
    sqreen_env: dict[str, str] | None = None,
) -> dict[tuple[str, str, str], dict[str, float]]:
    """For each framework, tree (name -> package root, "" for this one) and variant: the
    median requests/s and server CPU µs per request of the rounds."""
    results = {}
    kinds = [(tree, v) for tree in trees for v in [*SERVER_VARIANTS, DROPPED]]
    for framework in ("flask", "fastapi"):
        running = {}
        for tree, v in kinds:
            os.environ["SQREEN_BENCH_ROOT"] = trees[tree]
            running[(tree, v)] = Server(framework, v, pin, sqreen_env or {})
        os.environ.pop("SQREEN_BENCH_ROOT", None)
        rps: dict[tuple[str, str], list[float]] = {k: [] for k in kinds}
        cpu: dict[tuple[str, str], list[float]] = {k: [] for k in kinds}
        off_main: dict[tuple[str, str], list[float]] = {k: [] for k in kinds}
        collected: dict[tuple[str, str], list[int]] = {}
        try:
            for server in running.values():
                _run_load(server.port, 300, threads, server.keep_alive, pin)  # warm up
            for (tree, v), server in running.items():
                served = _served(server.port)
                root = os.path.realpath(trees[tree] or ROOT)
                if not os.path.realpath(served["sqreen"]).startswith(root + os.sep):
                    raise SystemExit(f"{tree} {v}: {served['sqreen']} served, not {root}'s")
                collected[(tree, v)] = served["collections"]
            for r in range(rounds):
                shift = r % len(kinds)
                for kind in kinds[shift:] + kinds[:shift]:
                    server = running[kind]
                    cpu0, off0 = _tree_cpu_split(server.proc.pid)
                    wall = _run_load(server.port, n, threads, server.keep_alive, pin)
                    time.sleep(0.3)  # the flusher's last events of the round
                    cpu1, off1 = _tree_cpu_split(server.proc.pid)
                    cpu[kind].append((cpu1 - cpu0) / n)
                    off_main[kind].append((off1 - off0) / n)
                    rps[kind].append(n / wall)
            for kind, server in running.items():
                collected[kind] = [
                    (b - a) * 10_000 / (rounds * n)
                    for a, b in zip(
                        collected[kind], _served(server.port)["collections"], strict=True
                    )
                ]
        finally:
            for server in running.values():
                server.stop()
        for tree, v in kinds:
            # Against the same tree's middleware without a track and its bare app, round by
            # round (paired: the load of the machine drifts between rounds, less within one).
            plain, bare = rps[(tree, "sqreen")], cpu[(tree, "bare")]
            results[(framework, tree, v)] = {
                "rps": statistics.median(rps[(tree, v)]),
                "cpu_us": statistics.median(cpu[(tree, v)]) * 1e6,
                "cpu_mean_us": statistics.mean(cpu[(tree, v)]) * 1e6,
                "collections": collected[(tree, v)],
                "off_main_us": statistics.median(off_main[(tree, v)]) * 1e6,
                "vs_plain": statistics.median(
                    a / b for a, b in zip(rps[(tree, v)], plain, strict=True)
                ),
                "added_us": statistics.median(
                    a - b for a, b in zip(cpu[(tree, v)], bare, strict=True)
                )
                * 1e6,
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare", metavar="REF", help="also the package as of git REF")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the servers on CPU 0, the load on the other CPUs (as clients on other machines)",
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        help="the servers' SQREEN_FLUSH_INTERVAL (default: the SDK's 5 s, longer than a "
        "round: a flush then lands in whichever round runs, often another server's)",
    )
    parser.add_argument("--load", nargs=4, type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.load:
        port, n, threads, keep_alive = opts.load
        print(load(port, n, threads, bool(keep_alive)))
        return
    trees = {"now": ""}
    with tempfile.TemporaryDirectory() as old:
        if opts.compare:
            archive = subprocess.run(
                ["git", "-C", ROOT, "archive", opts.compare, "sqreen"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
            trees = {opts.compare: old, "now": ""}
        start = os.getloadavg()
        env = (
            {}
            if opts.flush_interval is None
            else {"SQREEN_FLUSH_INTERVAL": str(opts.flush_interval)}
        )
        served = servers(opts.rounds, opts.requests, opts.threads, trees, opts.pin, env)
        end = os.getloadavg()
    pinned = " (pinned to CPU 0, the load on the others)" if opts.pin else ""
    if opts.flush_interval is not None:
        pinned += f", flush interval {opts.flush_interval:g} s"
    print(
        f"Real servers on 127.0.0.1{pinned}, "
        f"{opts.threads} client threads in another process, "
        f"{opts.rounds} rotating rounds of {opts.requests} requests (medians); load average "
        f"{start[0]:.1f} at the start, {end[0]:.1f} at the end, {os.cpu_count()} CPUs\n"
    )
    print(
        "| server | code | variant | requests/s | vs no track | server CPU µs/request (mean) "
        "| added | off the main thread | GC runs / 10 000 requests |"
    )
    print("|---|---|---|--:|--:|--:|--:|--:|--:|")
    for (framework, tree, variant), r in served.items():
        name = "gunicorn + Flask" if framework == "flask" else "uvicorn + FastAPI"
        vs = f"{r['vs_plain'] - 1:+.1%}" if variant.startswith("sqreen + track") else ""
        runs = "/".join(f"{c:.0f}" for c in r["collections"])
        print(
            f"| {name} | {tree} | {variant} | {r['rps']:,.0f} | {vs} | {r['cpu_us']:.0f} "
            f"({r['cpu_mean_us']:.0f}) | {r['added_us']:+.0f} | {r['off_main_us']:.0f} | {runs} |"
        )
    print(
        "\nvs no track: the median over rounds of requests/s with a track / without one (the"
        " same tree, the same round); added: the median over rounds of the server CPU per"
        " request minus the bare app's; off the main thread: the part of the server CPU per"
        " request spent on other threads (the flusher); (mean): of the rounds, which counts"
        " the rare full collections that the median leaves out; GC runs: the server's"
        " garbage collections (young/middle/full) over all rounds, per 10 000 requests."
    )


if __name__ == "__main__":
    main()
