"""The flusher's CPU per event, this tree against an older one, in one process.

    .venv/bin/python bench/bench_flusher_ab.py REF [--rounds 21]

``bench_flusher.py --compare`` runs the two trees in alternate processes; on a loaded
machine the load moves between them. This one imports the package as of git ``REF``
(``git archive``, renamed ``sqreen_ref``) beside this tree's, builds the same 900 queued
login events for each (``bench_track.py``'s failed login in a WSGI request: a form body, a
query string, ``X-Forwarded-For``, three properties), and times ``encode_event`` + JSON on
each, alternating round by round (``thread_time``, medians): with the ``speedups`` extra
(``wire_bytes``) and without (``dumps_utf8``), and the wire dict alone.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import import_module
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.bench_track import ENVIRON, PROPS, Body  # noqa: E402

N = 900


def _events(pkg: str) -> tuple[Any, list[Any]]:
    config = import_module(f"{pkg}._config").Config()
    request, event = import_module(f"{pkg}._request"), import_module(f"{pkg}._event")
    out = []
    for seq in range(N):
        snap = request.snapshot_wsgi(ENVIRON, config.forwarded_environ_key, None, Body())
        props, _ = event.validate_properties(PROPS)
        out.append(
            event.QueuedEvent(
                seq, "auth.login.failure", time.time(), props, None, None, snap, False, 500
            )
        )
    return config, out


def _cases(pkg: str, label: str) -> dict[str, Callable[[], None]]:
    config, events = _events(pkg)
    encode = import_module(f"{pkg}._wire").encode_event
    json_mod = import_module(f"{pkg}._json")
    dumps = json_mod.dumps_utf8
    wire_bytes = getattr(json_mod, "wire_bytes", None) or (lambda w: dumps(w).encode("utf-8"))

    def total() -> None:
        for e in events:
            wire_bytes(encode(e, "p-1", config))

    def pure() -> None:
        for e in events:
            dumps(encode(e, "p-1", config)).encode("utf-8")

    def wire() -> None:
        for e in events:
            encode(e, "p-1", config)

    return {
        f"{label}: wire dict + JSON": total,
        f"{label}: wire dict + JSON, pure Python": pure,
        f"{label}: wire dict alone": wire,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ref")
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", args.ref, "sqreen"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        os.rename(os.path.join(tmp, "sqreen"), os.path.join(tmp, "sqreen_ref"))
        sys.path.insert(0, tmp)
        cases = _cases("sqreen_ref", args.ref) | _cases("sqreen", "now")
        times: dict[str, list[float]] = {name: [] for name in cases}
        load = os.getloadavg()[0]
        for fn in cases.values():
            fn()  # warm up: caches filled as in a long-running process
        for _ in range(args.rounds):
            for name, fn in cases.items():
                gc.disable()
                t0 = time.thread_time()
                fn()
                times[name].append((time.thread_time() - t0) / N * 1e6)
                gc.enable()
    print(
        f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs; "
        f"medians of {args.rounds} alternating rounds of {N} events\n"
    )
    print(f"| µs of CPU per event in a request | {args.ref} | now | now / {args.ref} |")
    print("| --- | ---: | ---: | ---: |")
    for stage in ("wire dict + JSON", "wire dict + JSON, pure Python", "wire dict alone"):
        a = statistics.median(times[f"{args.ref}: {stage}"])
        b = statistics.median(times[f"now: {stage}"])
        print(f"| {stage} | {a:.2f} | {b:.2f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
