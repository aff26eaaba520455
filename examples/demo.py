"""``make demo``: the whole loop on the embedded default, on real servers on 127.0.0.1.

1. ``sqreen serve`` on a SQLite file in ``./demo-data/``, and an API key for the app;
2. the FastAPI example app on uvicorn, sending to that collector;
3. traffic: sign-ups, logins that succeed, a password-guessing attack from one IP, a
   credential-stuffing run over several IPs, custom events;
4. ``sqreen block ip`` on the attacker, and its next request refused with a 403;
5. what happened, and where to look; Ctrl-C stops both servers cleanly.

Run ``python -m examples.demo --no-wait`` to exit after the summary instead of waiting.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATA = ROOT / "demo-data"
ATTACKER = "203.0.113.66"
STUFFERS = ["198.51.100.7", "198.51.100.23", "192.0.2.41", "192.0.2.99"]
USERS = {"alice": "correct horse battery", "bob": "hunter2hunter2", "carol": "s3cure-passw0rd"}


def free_port(preferred: int) -> int:
    """``preferred`` when it is free (stable URLs to open), else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise SystemExit("demo: no free port on 127.0.0.1")


def sqreen_cli(*args: str) -> str:
    out = subprocess.run(
        [str(BIN / "sqreen"), *args, "--db", str(DATA / "sqreen.db")],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"demo: {url} did not come up within {timeout:.0f} s")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: the SDK flushes
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def traffic(app: str) -> dict[str, int]:
    counts = {"signups": 0, "logins_ok": 0, "logins_failed": 0, "custom": 0}
    with httpx.Client(base_url=app, timeout=10.0) as c:

        def as_ip(ip: str) -> dict[str, str]:
            # The demo stands behind the app as a loopback proxy would, so the app trusts
            # (and records) the forwarded client addresses.
            return {"X-Forwarded-For": ip, "User-Agent": "sqreen-demo/1.0"}

        for user, password in USERS.items():
            r = c.post(
                "/signup",
                json={"username": user, "password": password},
                headers=as_ip("192.0.2.10"),
            )
            counts["signups"] += r.status_code < 400
        for user, password in USERS.items():
            r = c.post(
                "/login", json={"username": user, "password": password}, headers=as_ip("192.0.2.10")
            )
            counts["logins_ok"] += r.status_code < 400
            r = c.post(
                "/export",
                json={"report": "q3-revenue", "format": "csv"},
                headers={**as_ip("192.0.2.10"), "X-User": user},
            )
            counts["custom"] += r.status_code < 400
        for guess in [
            "123456",
            "password",
            "qwerty",
            "letmein",
            "alice2024",
            "dragon",
            "monkey",
            "iloveyou",
        ]:
            c.post("/login", json={"username": "alice", "password": guess}, headers=as_ip(ATTACKER))
            counts["logins_failed"] += 1
        rng = random.Random(7)
        for i in range(12):
            ip = rng.choice(STUFFERS)
            c.post(
                "/login",
                json={"username": f"user{i}@example.com", "password": "Summer2024!"},
                headers=as_ip(ip),
            )
            counts["logins_failed"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-wait", action="store_true", help="exit after the summary")
    opts = parser.parse_args()

    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir()
    token = sqreen_cli("keys", "create", "--name", "demo-app").splitlines()[0]
    collector_port, app_port = free_port(8000), free_port(8001)
    collector = f"http://127.0.0.1:{collector_port}"
    app = f"http://127.0.0.1:{app_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    env.update(
        SQREEN_DB=str(DATA / "sqreen.db"),
        SQREEN_ADMIN_PASSWORD=env.get("SQREEN_ADMIN_PASSWORD", "demo-admin"),
        PYTHONPATH=str(ROOT),
    )
    app_env = {
        **env,
        "SQREEN_ENDPOINT": collector,
        "SQREEN_TOKEN": token,
        "SQREEN_APP_NAME": "demo-shop",
        "SQREEN_FLUSH_INTERVAL": "0.5",
        "SQREEN_HEARTBEAT_INTERVAL": "1",
    }
    print(f"demo: collector on {collector} (SQLite: {DATA / 'sqreen.db'}), app on {app}")
    serve = [str(BIN / "sqreen"), "serve", "--port", str(collector_port), "--no-access-log"]
    uvicorn = [
        str(BIN / "uvicorn"),
        "examples.fastapi_app:app",
        "--port",
        str(app_port),
        "--log-level",
        "warning",
    ]
    with (
        process(serve, env, DATA / "collector.log"),
        process(uvicorn, app_env, DATA / "app.log"),
    ):
        wait_http(collector + "/healthz")
        wait_http(app + "/")
        counts = traffic(app)
        print(
            f"demo: {counts['signups']} sign-ups, {counts['logins_ok']} logins, "
            f"{counts['logins_failed']} failed logins (one IP guessing alice's password, "
            f"four IPs stuffing credentials), {counts['custom']} report exports"
        )
        sqreen_cli(
            "block", "ip", f"{ATTACKER}/32", "--for", "1h", "--reason", "password guessing on alice"
        )
        print(f"demo: blocked {ATTACKER} for 1 h; waiting for the app to receive the block...")
        status = 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = httpx.post(
                app + "/login",
                json={"username": "alice", "password": "x"},
                headers={"X-Forwarded-For": ATTACKER},
            )
            status = r.status_code
            if status == 403:
                break
            time.sleep(0.5)
        print(
            f"demo: the attacker's next login answered {status}"
            + (" (refused)" if status == 403 else "")
        )
        ok = httpx.post(
            app + "/login",
            json={"username": "bob", "password": USERS["bob"]},
            headers={"X-Forwarded-For": "192.0.2.10"},
        )
        print(f"demo: bob, from another IP, still logs in: {ok.status_code}")
        time.sleep(1.5)  # one flush interval: the last events reach the collector
        print("\nWhat the collector stored (sqreen events --limit 12):\n")
        print(sqreen_cli("events", "--limit", "12"))
        print("\nWhere to look:")
        print(
            f"  Event Explorer  {collector}/explorer/  (password: {env['SQREEN_ADMIN_PASSWORD']})"
        )
        print(f"  The app         {app}/docs")
        print(f"  Terminal        .venv/bin/sqreen events --db {DATA / 'sqreen.db'} --follow")
        print(f"  Blocks          .venv/bin/sqreen blocks --db {DATA / 'sqreen.db'}")
        if opts.no_wait:
            return
        print("\nBoth servers keep running: press Ctrl-C to stop them.")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
        print("\ndemo: stopped")


if __name__ == "__main__":
    main()
