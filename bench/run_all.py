"""Every benchmark, one after another, each printing its own table (``make bench``).

Each runs in its own process with the arguments below (short runs: a few minutes in all on
two cores); run a script alone, with its own ``--help``, for longer or other cases. A script
that fails is reported and the others still run; the exit code says whether all passed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUNS: list[tuple[str, list[str]]] = [
    ("bench_track.py", []),
    ("bench_middleware.py", []),
    ("bench_blocking.py", []),
    ("bench_scrub_hostile.py", []),
    ("bench_ingest.py", ["--events", "50000", "--workers", "1", "--playbooks", "both"]),
    ("bench_ingest.py", ["--events", "50000", "--workers", "1", "--playbooks", "both",
                         "--mix", "typical", "--only", "sqlite"]),
    ("bench_ingest_ab.py", ["--events", "100000"]),
    ("bench_time_to_block.py", ["--attackers", "10", "--by-hand", "5"]),
    ("bench_actions.py", ["--repeat", "50", "--seconds", "3"]),
    ("bench_explorer.py", ["--events", "200000"]),
    ("bench_login_flood.py", []),
    ("bench_enrich.py", ["--events", "20000", "--repeat", "3"]),
    ("bench_backup.py", ["--events", "50000", "--rounds", "2", "--cap", "10"]),
]  # fmt: skip


def main() -> int:
    failed = []
    for script, args in RUNS:
        print(f"\n=== {script} {' '.join(args)}", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / script), *args])
        print(f"--- {script}: exit {code} in {time.monotonic() - start:.0f} s", flush=True)
        if code:
            failed.append(script)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
