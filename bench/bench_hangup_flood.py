"""Gzip bombs posted on connections closed at once, and invalid bodies of 10 MB one after
another: what ``sqreen serve`` holds meanwhile, and what another app's batches wait.

    .venv/bin/python bench/bench_hangup_flood.py [--bombs 300] [--invalid 40]
        [--senders 3000] [--against REV] [--rounds 2]

Method: a real ``sqreen serve`` on 127.0.0.1 (SQLite, one worker, IP intelligence off), a
new one (fresh database and port) for each of three scenarios:

1. one client posts ``--bombs`` bodies under one ingest key, each about 10 KB of gzip that
   inflates past the collector's 10 MiB bound (a 413 for whoever waits for it), hanging up
   10 ms after each one is sent: the collector reads the body, starts inflating it, and
   its client is gone;
2. ``--invalid`` bodies of 9.8 MB of JSON whose last bytes are not JSON, posted one after
   another on one connection, each answered 400 before the next (what a refused body
   leaves behind until a garbage collection);
3. ``--senders`` senders, each from its own loopback address (127.1.x.y), post one bomb
   each and hang up (32 at a time), while another app posts a small gzipped batch every
   100 ms from 127.0.0.1: the longest that app's batch waited, from the flood's start
   until 8 s after it.

The collector's threads and resident memory are sampled every 5 ms from ``/proc``; the
table gives the peaks. ``--against REV`` runs REV's collector (its tree from ``git
archive``) the same way, the two alternated round by round.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from revisions import extract  # noqa: E402

PY = sys.executable
MAX_BODY = 10 * 1024 * 1024
BOMB = gzip.compress(b'{"events": "' + b"x" * MAX_BODY + b'"}')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Peaks:
    """The peak threads and RSS (MiB) of process ``pid``, sampled until stopped."""

    def __init__(self, pid: int) -> None:
        self.threads = self.rss = 0
        self._done = threading.Event()
        self._pid = pid
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            status = Path(f"/proc/{self._pid}/status").read_text()
            threads = re.search(r"Threads:\s+(\d+)", status)
            rss = re.search(r"VmRSS:\s+(\d+)", status)
            if threads and rss:
                self.threads = max(self.threads, int(threads.group(1)))
                self.rss = max(self.rss, int(rss.group(1)) // 1024)
            time.sleep(0.005)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


@contextmanager
def collector(tree: Path, workdir: Path) -> Iterator[tuple[int, int, str]]:
    """A collector run from ``tree``: (pid, port, an ingest key's token)."""
    db = workdir / f"h{time.monotonic_ns()}.db"
    env = {**os.environ, "PYTHONPATH": str(tree)}  # before the editable install's path
    made = subprocess.run(
        [PY, "-m", "sqreen.server", "keys", "create", "--db", str(db)],
        env=env,
        cwd=tree,  # (python -m puts the working directory first on the path)
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    token = next(line.strip() for line in made.splitlines() if line.startswith("sqk_"))
    port = _free_port()
    serve = [PY, "-m", "sqreen.server", "serve", "--db", str(db), "--port", str(port)]
    proc = subprocess.Popen(
        [*serve, "--no-ip-intel", "--no-access-log", "--max-connections", "4000"],
        env=env,
        cwd=tree,
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
        yield proc.pid, port, token
    finally:
        proc.terminate()
        proc.wait(10)


def _head(token: str, length: int) -> bytes:
    return (
        f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def bombs(tree: Path, count: int, workdir: Path) -> tuple[int, int]:
    """Scenario 1: peak (threads, RSS MiB)."""
    with collector(tree, workdir) as (pid, port, token):
        peaks = Peaks(pid)
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(_head(token, len(BOMB)) + BOMB)
            time.sleep(0.01)
            s.close()
        time.sleep(3)
        peaks.stop()
        return peaks.threads, peaks.rss


def invalid(tree: Path, count: int, workdir: Path) -> int:
    """Scenario 2: peak RSS MiB."""
    junk = b'{"events": [' + b'{"name": "x"},' * 700_000 + b"oops]}"
    with collector(tree, workdir) as (pid, port, token):
        peaks = Peaks(pid)
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        with httpx.Client(timeout=60) as client:
            for _ in range(count):
                reply = client.post(
                    f"http://127.0.0.1:{port}/v1/events", content=junk, headers=auth
                )
                assert reply.status_code == 400, reply.text
        time.sleep(3)
        peaks.stop()
        return peaks.rss


def senders(tree: Path, count: int, workdir: Path) -> float:
    """Scenario 3: the longest wait of the other app's batches (seconds)."""
    with collector(tree, workdir) as (_, port, token):
        waits: list[float] = []
        stop = threading.Event()

        def other_app() -> None:
            event = {"name": "auth.login.failure", "user": {"uid": "1"}, "properties": {}}
            body = gzip.compress(json.dumps({"events": [event]}).encode())
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            }
            with httpx.Client(timeout=120) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    url = f"http://127.0.0.1:{port}/v1/events"
                    reply = client.post(url, content=body, headers=headers)
                    assert reply.status_code == 200, reply.text
                    waits.append(time.monotonic() - started)
                    time.sleep(0.1)

        def bomb(n: int) -> None:
            with socket.socket() as s:
                s.bind((f"127.1.{n // 250}.{n % 250 + 1}", 0))
                s.connect(("127.0.0.1", port))
                s.sendall(_head(token, len(BOMB)) + BOMB)
                time.sleep(0.01)

        app = threading.Thread(target=other_app)
        app.start()
        time.sleep(1)
        before = len(waits)
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            list(pool.map(bomb, range(count)))
        time.sleep(8)
        stop.set()
        app.join()
        return max(waits[before:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bombs", type=int, default=300)
    parser.add_argument("--invalid", type=int, default=40)
    parser.add_argument("--senders", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--against", metavar="REV", help="also REV's collector")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trees = {"this tree": ROOT}
        if args.against:
            other = work / "against"
            other.mkdir()
            trees[args.against] = extract(args.against, other)
        rows: dict[str, list[tuple[int, int, int, float]]] = {name: [] for name in trees}
        for r in range(args.rounds):
            for name in list(trees)[:: 1 if r % 2 == 0 else -1]:
                threads, rss = bombs(trees[name], args.bombs, work)
                refused = invalid(trees[name], args.invalid, work)
                waited = senders(trees[name], args.senders, work)
                rows[name].append((threads, rss, refused, waited))
    print(
        f"\n{args.bombs} gzip bombs posted and hung up; {args.invalid} invalid bodies of "
        f"9.8 MB one after another; {args.senders} senders' bombs hung up; "
        f"{args.rounds} rounds (peaks)\n"
    )
    print(
        "| collector | bombs: threads | bombs: RSS MiB | invalid bodies: RSS MiB "
        "| senders: another app's longest wait, s |"
    )
    print("| --- | --: | --: | --: | --: |")
    for name, got in rows.items():
        columns = [
            ", ".join(f"{row[i]:.1f}" if i == 3 else str(row[i]) for row in got) for i in range(4)
        ]
        print(f"| {name} | {' | '.join(columns)} |")


if __name__ == "__main__":
    main()
