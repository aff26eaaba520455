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

Run: ``.venv/bin/python bench/bench_time_to_block.py [--attackers 20] [--gap 0.05]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqreen.server.auth import hash_token, new_token  # noqa: E402
from sqreen.server.blocks import BlockService, ip_block  # noqa: E402
from sqreen.server.playbooks import TEMPLATES  # noqa: E402
from sqreen.server.storage import open_storage  # noqa: E402
from tests.integrations._servers import free_port, http_request, wait_for_port  # noqa: E402


def start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attackers", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between tries")
    parser.add_argument("--by-hand", type=int, default=10, help="blocks made by hand")
    args = parser.parse_args()
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
    print(
        f"\nseconds; FastAPI example on uvicorn, SDK defaults, sqreen serve on SQLite with the "
        f"templates enforced; {os.cpu_count()} CPUs"
    )
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
