"""Gzip bombs posted on connections closed at once, and invalid bodies of 10 MB one after
another: what ``sqreen serve`` holds meanwhile.

    .venv/bin/python bench/bench_hangup_flood.py [--bombs 300] [--invalid 40] [--against REV]

Method: a real ``sqreen serve`` on 127.0.0.1 (SQLite, one worker, IP intelligence off) and
one client posting ``--bombs`` bodies under one ingest key, each about 10 KB of gzip that
inflates past the collector's 10 MiB bound (a 413 for whoever waits for it), hanging up
10 ms after each one is sent: the collector reads the body, starts inflating it, and its
client is gone. The collector's threads and resident memory are sampled every 5 ms from
``/proc`` until 3 s after the last bomb; the table gives the peaks. Then, on a new
collector, ``--invalid`` bodies of 9.8 MB of JSON whose last bytes are not JSON, posted one
after another on one connection, each answered 400 before the next: the peak memory
again (what a refused body leaves behind until a garbage collection). ``--against REV`` runs
REV's collector (its tree from ``git archive``) the same way, the two alternated round by
round, each on a fresh database and port.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MAX_BODY = 10 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flood(tree: Path, bombs: int, invalid: int, workdir: Path) -> tuple[int, int]:
    """Peak (threads, RSS MiB) of a collector run from ``tree`` during the flood of
    ``bombs`` (none: ``invalid`` bodies refused one after another instead)."""
    db = workdir / f"h{time.monotonic_ns()}.db"
    env = {**os.environ, "PYTHONPATH": str(tree)}  # before the editable install's path
    made = subprocess.run(
        [PY, "-m", "sqreen.server", "keys", "create", "--db", str(db)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    token = next(line.strip() for line in made.splitlines() if line.startswith("sqk_"))
    port = _free_port()
    proc = subprocess.Popen(
        [PY, "-m", "sqreen.server", "serve", "--db", str(db), "--port", str(port), "--no-ip-intel"],
        env=env,
        cwd=tree,  # (python -m puts the working directory first on the path)
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        raw = gzip.compress(b'{"events": "' + b"x" * MAX_BODY + b'"}')
        head = (
            f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n"
        ).encode()
        peak = [0, 0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                status = Path(f"/proc/{proc.pid}/status").read_text()
                threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
                rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
                peak[0], peak[1] = max(peak[0], threads), max(peak[1], rss)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for _ in range(bombs):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(head + raw)
            time.sleep(0.01)
            s.close()
        if invalid:
            junk = b'{"events": [' + b'{"name": "x"},' * 700_000 + b"oops]}"
            auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            with httpx.Client(timeout=60) as client:
                for _ in range(invalid):
                    reply = client.post(
                        f"http://127.0.0.1:{port}/v1/events", content=junk, headers=auth
                    )
                    assert reply.status_code == 400, reply.text
        time.sleep(3)
        done.set()
        sampler.join()
        return peak[0], peak[1] // 1024
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bombs", type=int, default=300)
    parser.add_argument("--invalid", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--against", metavar="REV", help="also REV's collector")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trees = {"this tree": ROOT}
        if args.against:
            other = work / "against"
            other.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.against, "sqreen"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(other)], input=archive, check=True)
            trees[args.against] = other
        rows: dict[str, list[tuple[int, int, int]]] = {name: [] for name in trees}
        for r in range(args.rounds):
            for name in list(trees)[:: 1 if r % 2 == 0 else -1]:
                threads, rss = flood(trees[name], args.bombs, 0, work)
                _, refused = flood(trees[name], 0, args.invalid, work)
                rows[name].append((threads, rss, refused))
    print(
        f"\n{args.bombs} gzip bombs posted and hung up; {args.invalid} invalid bodies of "
        f"9.8 MB one after another; {args.rounds} rounds (peaks)\n"
    )
    print("| collector | bombs: threads | bombs: RSS MiB | invalid bodies: RSS MiB |")
    print("| --- | --: | --: | --: |")
    for name, got in rows.items():
        columns = [", ".join(str(row[i]) for row in got) for i in range(3)]
        print(f"| {name} | {' | '.join(columns)} |")


if __name__ == "__main__":
    main()
