"""What one ``track()`` a request costs a real framework app in CPU: on the request path, and
on the flusher thread, apart.

    .venv/bin/python bench/bench_request_cpu.py [--rounds 11] [--requests 900]

Flask and FastAPI apps of ``bench/bench_middleware.py`` (the middleware; with and without one
``track()`` a request), called in-process (WSGI and ASGI runners, no server), in one process
per framework, the two variants alternated round by round. The flusher does not run while
the requests are timed (batches of 1000, an hour's interval): the requests' CPU
(``time.process_time``) is the request path's alone; then ``flush()`` is timed apart, which
is the flusher's CPU for the round's events. Medians over the rounds. The real servers'
figure (``bench_servers.py``'s "added" column) is the two together, plus what the server
adds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = ("sqreen", "sqreen + track")


def measure(framework: str, rounds: int, requests: int) -> None:
    """Print one framework's line (runs in its own process: one client, one app each)."""
    import sqreen
    from bench.bench_middleware import (
        NullTransport,
        asgi_runner,
        make_fastapi,
        make_flask,
        wsgi_runner,
    )

    client = sqreen.init(
        transport=NullTransport(), max_queue_size=1_000_000, batch_size=1000, flush_interval=3600
    )
    make, runner = (
        (make_flask, wsgi_runner) if framework == "flask" else (make_fastapi, asgi_runner)
    )
    runs = {v: runner(make(v)) for v in VARIANTS}
    for run in runs.values():
        run(300)
    client.flush(10)
    request: dict[str, list[float]] = {v: [] for v in VARIANTS}
    flusher: list[float] = []
    for r in range(rounds):
        for variant in VARIANTS if r % 2 else VARIANTS[::-1]:
            c0 = time.process_time()
            runs[variant](requests)
            c1 = time.process_time()
            client.flush(30)
            c2 = time.process_time()
            request[variant].append((c1 - c0) / requests * 1e6)
            if variant != "sqreen":
                flusher.append((c2 - c1) / requests * 1e6)
    without, with_track = (statistics.median(request[v]) for v in VARIANTS)
    track, flush = with_track - without, statistics.median(flusher)
    print(
        f"| {framework} | {without:.1f} | {with_track:.1f} | {track:+.1f} "
        f"| {flush:.1f} | {track + flush:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--requests", type=int, default=900)
    parser.add_argument("--framework", help=argparse.SUPPRESS)  # one framework's process
    args = parser.parse_args()
    if args.framework:
        measure(args.framework, args.rounds, args.requests)
        return
    print(
        f"In-process, {args.rounds} alternated rounds of {args.requests} requests, CPU µs "
        "(medians)\n"
    )
    print(
        "| framework | request, no track | request, one track | track on the request path "
        "| flusher per event | together |"
    )
    print("|---|--:|--:|--:|--:|--:|")
    for framework in ("flask", "fastapi"):
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--framework",
                framework,
                "--rounds",
                str(args.rounds),
                "--requests",
                str(args.requests),
            ],
            check=True,
            cwd=ROOT,
        )


if __name__ == "__main__":
    main()
