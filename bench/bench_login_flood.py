"""A flood of wrong explorer passwords: what it costs the collector, and ingest meanwhile.

    .venv/bin/python bench/bench_login_flood.py               # 150 at once, 1 and 2 workers
    .venv/bin/python bench/bench_login_flood.py --burst 300 --workers 1

``sqreen serve`` on SQLite with an admin password at scrypt's real cost (32 MiB, ~0.1 s a
check). ``--burst`` wrong passwords are posted at once, each on its own connection (the helper
of tests/explorer/test_login_attacks.py), while a probe posts a one-event batch to
``/v1/events`` every 50 ms. Two cases: all from one address (the throttle's case: at most its
limit are checked), and each from its own address behind a trusted proxy (no throttle: the
hasher's bound is all that holds). Prints, per case, the passwords checked (401) and refused
(429), the peak RSS of the largest collector process, and the ingest latency during the flood.

This is a bench, not a test: the tests assert the counts and a memory bound, never a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqreen.server.explorer import set_admin_password  # noqa: E402
from sqreen.server.storage import open_storage  # noqa: E402
from tests.explorer._flood import IngestProbe, flood, rss_peaks  # noqa: E402
from tests.server.conftest import ServeProcess, add_key  # noqa: E402

PASSWORD = "bench-password-123"


def run(burst: int, workers: int, many: bool, workdir: Path) -> list[str]:
    db = str(workdir / f"flood-{workers}-{int(many)}.db")
    storage = open_storage(db)
    try:
        set_admin_password(storage, PASSWORD)
    finally:
        storage.close()
    token = add_key(db)
    if many:
        os.environ["SQREEN_EXPLORER_TRUSTED_PROXIES"] = "127.0.0.1"
    collector = ServeProcess(db, None, "--workers", str(workers))
    try:
        collector.start()
        assert collector.proc is not None
        idle = max(rss_peaks(collector.proc.pid).values())
        with IngestProbe(collector.url, token) as probe:

            def headers(i: int) -> dict[str, str]:
                return {"X-Forwarded-For": f"198.51.{100 + i // 250}.{i % 250 + 1}"} if many else {}

            statuses = flood(collector.url, headers, burst)
        peak = max(rss_peaks(collector.proc.pid).values())
    finally:
        collector.stop()
        os.environ.pop("SQREEN_EXPLORER_TRUSTED_PROXIES", None)
    lat = sorted(probe.latencies) or [float("nan")]
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    return [
        "one per address" if many else "one address",
        str(workers),
        str(statuses.count(401)),
        str(statuses.count(429)),
        str(len(statuses) - statuses.count(401) - statuses.count(429)),
        f"{idle / 2**20:.0f}",
        f"{peak / 2**20:.0f}",
        f"{statistics.median(lat) * 1000:.0f}",
        f"{p95 * 1000:.0f}",
        f"{lat[-1] * 1000:.0f}",
        str(len(probe.errors)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--burst", type=int, default=150)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    head = [
        "addresses",
        "workers",
        "checked",
        "429",
        "other",
        "idle MiB",
        "peak MiB",
        "ingest p50 ms",
        "p95 ms",
        "max ms",
        "ingest errors",
    ]
    rows = [head]
    with tempfile.TemporaryDirectory() as tmp:
        for many in (False, True):
            for workers in args.workers:
                rows.append(run(args.burst, workers, many, Path(tmp)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    print(f"{args.burst} wrong passwords at once; RSS: the largest collector process")
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
