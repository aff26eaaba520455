"""Time to block: from the request that crosses a playbook's threshold to the first 403.

Method
------
The FastAPI example on uvicorn, its SDK on the HTTP transport with every default (a 5 s
flush interval: the SDK sends the watched ``auth.login.failure`` within 0.1 s all the same),
and ``sqreen serve`` on uvicorn, SQLite, the six built-in playbooks enforced. Clients come
through ``X-Forwarded-For`` from the loopback proxy. ``--attackers`` IPs, one after another,
each try a wrong password every ``--gap`` seconds; ``brute-force-ip`` fires at the 5th
failure. The figure is the time from sending the 5th failure to sending the first request
that got a 403, and how many requests got through in between (those after the 5th).

Then the same for blocks made by hand, with no event involved: an IP polled every 20 ms is
blocked through the block service (as ``sqreen block ip`` does), then unblocked; the figure is
the time to its first 403, and to its first 200 after the unblock. The SDK's long-poll for
the action set is what carries both; without it they waited for the next heartbeat (60 s).

With ``--flood N``, N more connections post to the collector all along the attacks, as
fast as it answers, under the SDK's own key (a leaked one) from another address
(127.0.0.2): gzip bodies of about 50 KB, each 1 000 events that inflate to about 9.5 MB (one
body a connection, posted again and again: its events are duplicates after the first time,
and the collector still inflates and parses each). The flood starts before the first
attacker and stops after the last; the table then says how many flood bodies it answered a
second. The blocks made by hand are measured after it.

With ``--compare REV``, the collector of git revision ``REV`` (its files exported to a
temporary directory and run from there) is measured too, after the working tree's: the same
example app and SDK, the same flood.

Run: ``.venv/bin/python bench/bench_time_to_block.py [--attackers 20] [--gap 0.05]
[--flood 40 --attackers 5 --compare main]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_ingest import event, exported  # noqa: E402

from sqreen.server.auth import hash_token, new_token  # noqa: E402
from sqreen.server.blocks import BlockService, ip_block  # noqa: E402
from sqreen.server.playbooks import TEMPLATES  # noqa: E402
from sqreen.server.storage import open_storage  # noqa: E402
from tests.integrations._servers import free_port, http_request, wait_for_port  # noqa: E402


def start(
    args: list[str], env: dict[str, str], port: int, root: Path = ROOT
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=root,  # python -m puts it first on the path: that tree's collector
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_for_port(port, 30, proc):
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start")
    return proc


def login(port: int, ip: str, password: str) -> int:
    body = json.dumps({"username": "alice", "password": password}).encode()
    headers = {"Content-Type": "application/json", "X-Forwarded-For": ip}
    return http_request(port, "POST", "/login", body, headers).status


def until(port: int, ip: str, wanted: int, limit: float = 30.0) -> float:
    """Poll ``GET /`` from ``ip`` every 20 ms; when it answered ``wanted`` first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sent = time.monotonic()
        if http_request(port, "GET", "/", headers={"X-Forwarded-For": ip}).status == wanted:
            return sent
        time.sleep(0.02)
    raise RuntimeError(f"{ip}: no {wanted} within {limit} s")


def attack(port: int, ip: str, gap: float) -> tuple[float, int]:
    """(seconds from the 5th failure to the first 403, requests that got through after it)."""
    crossing = None
    after = 0
    for n in range(1, 500):
        sent = time.monotonic()
        status = login(port, ip, f"guess{n}")
        if status == 403:
            assert crossing is not None
            return sent - crossing, after
        if n == 5:
            crossing = sent
        elif n > 5:
            after += 1
        time.sleep(gap)
    raise RuntimeError(f"{ip} never refused")


def flood_body(n: int) -> bytes:
    """1 000 events of about 9.5 KB of JSON each (properties of 4 000 characters, the most a
    string may hold being 4 096), gzipped: about 50 KB that inflate to about 9.5 MB, near
    the collector's 10 MB bound."""
    pad = {"note": "x" * 4000, "memo": "y" * 4000, "more": "z" * 1000}
    events = [{**e, "properties": {**e["properties"], **pad}} for e in (
        event(i, f"flood{n}", "typical") for i in range(1000)
    )]  # fmt: skip
    app = {"name": "flood", "host": "flood", "pid": 1, "framework": "none"}
    body = {"sdk": {"name": "sqreen-python", "version": "bench"}, "app": app, "events": events}
    return gzip.compress(json.dumps(body, separators=(",", ":")).encode(), 6)


class Flood:
    """``n`` connections posting ``bodies`` (one each) to the collector under ``token``
    from 127.0.0.2, one after the other, until stopped."""

    def __init__(self, port: int, token: str, bodies: list[bytes]) -> None:
        self.port, self.bodies = port, bodies
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }
        self.stopping = threading.Event()
        self.answered: list[int] = []  # the statuses
        self.threads = [threading.Thread(target=self._post, args=(b,)) for b in bodies]
        self.started = self.stopped = 0.0

    def _post(self, body: bytes) -> None:
        while not self.stopping.is_set():
            try:
                status = http_request(
                    self.port, "POST", "/v1/events", body, self.headers, source="127.0.0.2"
                ).status
            except OSError:
                status = 0
            self.answered.append(status)

    def __enter__(self) -> Flood:
        self.started = time.monotonic()
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + 60
        while not self.answered:  # a first turn of the flood over, the others queued
            if time.monotonic() > deadline:
                raise RuntimeError("the flood got no answer within 60 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.stopped = time.monotonic()
        for t in self.threads:
            t.join(120)

    def summary(self) -> str:
        ok = sum(s == 200 for s in self.answered)
        rate = ok / max(1e-9, self.stopped - self.started)
        return f"flood: {ok} bodies answered 200 ({rate:.1f}/s), {len(self.answered) - ok} not"


def by_hand(port: int, db: str, n: int) -> tuple[list[float], list[float]]:
    storage = open_storage(db)
    service = BlockService(storage)
    blocked, lifted = [], []
    try:
        for i in range(n):
            ip = f"192.0.2.{100 + i}"
            until(port, ip, 200)
            made = time.monotonic()
            block = service.create(ip_block(ip, duration="1h"), created_by="bench")
            blocked.append(until(port, ip, 403) - made)
            made = time.monotonic()
            service.lift(block.id, lifted_by="bench")
            lifted.append(until(port, ip, 200) - made)
    finally:
        storage.close()
    return blocked, lifted


def row(what: str, values: list[float], extra: str = "") -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (
        f"{what:<34}{len(values):>6}{statistics.median(values):>10.3f}{p90:>10.3f}"
        f"{max(values):>10.3f}  {extra}"
    )


def measure(
    root: Path, args: argparse.Namespace, flood: list[bytes]
) -> tuple[list[float], list[int], list[float], list[float], str]:
    """One collector (the tree at ``root``) on a fresh database: the attackers' delays and
    requests through, the blocks by hand, and what the flood got."""
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "ttb.db")
        storage = open_storage(db)
        token = new_token()
        storage.create_key("bench", hash_token(token))
        storage.close()
        playbooks = Path(tmp) / "playbooks.toml"
        playbooks.write_text(TEMPLATES)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
        env["TMPDIR"] = tmp  # the SDK's spool
        collector_port, app_port = free_port(), free_port()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs.append(
                start(
                    ["-m", "sqreen.server", "serve", "--db", db, "--port", str(collector_port),
                     "--playbooks", str(playbooks), "--no-access-log"],
                    env,
                    collector_port,
                    root,
                )
            )  # fmt: skip
            app_env = {
                **env,
                "PORT": str(app_port),
                "SQREEN_ENDPOINT": f"http://127.0.0.1:{collector_port}",
                "SQREEN_TOKEN": token,
                "SQREEN_APP_NAME": "bench",
            }
            procs.append(start(["examples/fastapi_app.py"], app_env, app_port))
            delays, through = [], []
            flooding = Flood(collector_port, token, flood)
            with flooding if flood else contextlib.nullcontext():
                for i in range(args.attackers):
                    delay, after = attack(app_port, f"198.51.100.{10 + i}", args.gap)
                    delays.append(delay)
                    through.append(after)
            blocked, lifted = by_hand(app_port, db, args.by_hand)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(15)
    return delays, through, blocked, lifted, flooding.summary() if flood else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attackers", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between tries")
    parser.add_argument("--by-hand", type=int, default=10, help="blocks made by hand")
    parser.add_argument(
        "--flood", type=int, default=0, metavar="N", help="connections flooding the collector"
    )
    parser.add_argument("--compare", metavar="REV", help="the collector of git REV too")
    args = parser.parse_args()
    flood = [flood_body(n) for n in range(args.flood)]
    with tempfile.TemporaryDirectory() as tmp:
        codes = [("tree", ROOT)]
        if args.compare:
            codes.append((args.compare, exported(args.compare, Path(tmp) / "compared")))
        results = [(name, measure(root, args, flood)) for name, root in codes]
    print(
        f"\nseconds; FastAPI example on uvicorn, SDK defaults, sqreen serve on SQLite with the "
        f"templates enforced; {os.cpu_count()} CPUs"
        + (f"; {args.flood} connections flooding (gzip, ~9.5 MB inflated)" if flood else "")
    )
    for name, (delays, through, blocked, lifted, flooded) in results:
        print(f"\n{name}: {flooded}" if flooded else f"\n{name}")
        print(f"{'':<34}{'n':>6}{'median':>10}{'p90':>10}{'max':>10}")
        print(
            row(
                "playbook: 5th failure -> 403",
                delays,
                f"requests through after the 5th: median {statistics.median(through):g}, "
                f"max {max(through)} (one every {args.gap * 1000:g} ms)",
            )
        )
        print(row("by hand: block -> first 403", blocked))
        print(row("by hand: unblock -> first 200", lifted))


if __name__ == "__main__":
    main()
