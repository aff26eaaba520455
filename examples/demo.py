"""``make demo``: the whole loop on the embedded default, on real servers on 127.0.0.1.

1. ``sqreen serve`` on a SQLite file in ``./demo-data/``, and an API key for the app;
2. the FastAPI example app on uvicorn, sending to that collector;
3. traffic: sign-ups, logins that succeed, custom events, a credential-stuffing run over
   several IPs;
4. a password-guessing attack from one IP, stopped by the collector's built-in playbooks
   (``sqreen serve --playbooks``): refused with a 403 right after its 5th failure;
5. ``sqreen block ip`` by hand on another IP, refused within about a second;
6. what happened, and where to look; Ctrl-C stops both servers cleanly, once.

Run ``python -m examples.demo --no-wait`` to exit after the summary instead of waiting.
"""

from __future__ import annotations

import argparse
import contextlib
import os
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
#: Where the demo keeps its database, playbooks and logs (``DEMO_DATA`` to move it).
DATA = Path(os.environ.get("DEMO_DATA", ROOT / "demo-data"))
ATTACKER = "203.0.113.66"
STUFFERS = ["198.51.100.7", "198.51.100.23", "192.0.2.41", "192.0.2.99"]
USERS = {"alice": "correct horse battery", "bob": "hunter2hunter2", "carol": "s3cure-passw0rd"}


def free_port(preferred: int) -> int:
    """``preferred`` when it is free (stable URLs to open), else any free port."""
    for port in (preferred, 0):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise SystemExit("demo: no free port on 127.0.0.1")


def sqreen_cli(*args: str, db: bool = True) -> str:
    out = subprocess.run(
        [str(BIN / "sqreen"), *args, *(["--db", str(DATA / "sqreen.db")] if db else [])],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def wait_http(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    token: str | None = None,
    timeout: float = 20.0,
) -> None:
    """Until ``proc`` answers ``url`` (with ``token``: answers it as ours: a server of
    another demo started at the same moment may hold the port, and refuse our key)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise SystemExit(f"demo: the server of {log.name} exited: " + " / ".join(tail))
        try:
            if httpx.get(url, headers=headers, timeout=1.0).status_code < 400:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"demo: {url} did not come up within {timeout:.0f} s")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        # Its own session: Ctrl-C in the terminal reaches the demo alone, which then stops
        # each server once (a second SIGINT would cut uvicorn's graceful shutdown short).
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: the SDK flushes
            try:
                proc.wait(10)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):  # or a second Ctrl-C
                proc.kill()
                proc.wait()


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
        for i in range(12):
            ip = STUFFERS[i % len(STUFFERS)]  # three each: under any playbook's threshold
            c.post(
                "/login",
                json={"username": f"user{i}@example.com", "password": "Summer2024!"},
                headers=as_ip(ip),
            )
            counts["logins_failed"] += 1
    return counts


def login(app: str, ip: str, user: str, password: str) -> int:
    body = {"username": user, "password": password}
    return httpx.post(app + "/login", json=body, headers={"X-Forwarded-For": ip}).status_code


def until_refused(
    app: str, ip: str, since: float, limit: float = 15.0, guessing: bool = True
) -> tuple[float | None, int]:
    """Seconds from ``since`` to the first 403 for ``ip`` (a request every 50 ms: a wrong
    password if ``guessing``, else the home page), or None; and how many were not refused."""
    through = 0
    while time.monotonic() - since < limit:
        sent = time.monotonic()
        if guessing:
            status = login(app, ip, "alice", "guess")
        else:
            status = httpx.get(app + "/", headers={"X-Forwarded-For": ip}).status_code
        if status == 403:
            return sent - since, through
        through += 1
        time.sleep(0.05)
    return None, through


def guess(app: str) -> tuple[int, int, float | None]:
    """The attacker guesses alice's password until refused: how many guesses it made up to
    its 5th failure (brute-force-ip's threshold), how many more went through while the block
    came (it keeps guessing every 50 ms), and how long after the 5th the first 403 came
    (negative: refused before its 5th, a block already in force)."""
    guesses = ["123456", "password", "qwerty", "letmein", "alice2024"]
    started = time.monotonic()
    for n, password in enumerate(guesses, 1):
        status = login(app, ATTACKER, "alice", password)
        if status == 403:
            return n - 1, 0, started - time.monotonic()
    fifth = time.monotonic()
    delay, more = until_refused(app, ATTACKER, fifth)
    return len(guesses), more, delay


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-wait", action="store_true", help="exit after the summary")
    opts = parser.parse_args()
    # The servers run in sessions of their own (see process()): a stop of the demo by
    # SIGTERM (kill, `timeout`) or SIGHUP (a closed terminal) stops them as Ctrl-C does,
    # rather than leaving them serving a database the next run deletes.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)
    try:
        demo(opts)
    except KeyboardInterrupt:
        print("\ndemo: stopped")


def demo(opts: argparse.Namespace) -> None:

    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir()
    token = sqreen_cli("keys", "create", "--name", "demo-app").splitlines()[0]
    collector_port, app_port = free_port(8000), free_port(8001)
    collector = f"http://127.0.0.1:{collector_port}"
    app = f"http://127.0.0.1:{app_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    env.update(
        SQREEN_DB=str(DATA / "sqreen.db"),
        SQREEN_ADMIN_PASSWORD=os.environ.get("SQREEN_ADMIN_PASSWORD", "demo-admin"),
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
    (DATA / "playbooks.toml").write_text(sqreen_cli("playbooks", "init", db=False) + "\n")
    serve = [
        *[str(BIN / "sqreen"), "serve", "--port", str(collector_port), "--no-access-log"],
        *["--playbooks", str(DATA / "playbooks.toml")],
    ]
    uvicorn = [
        str(BIN / "uvicorn"),
        "examples.fastapi_app:app",
        "--port",
        str(app_port),
        "--log-level",
        "warning",
    ]
    with (
        process(serve, env, DATA / "collector.log") as served,
        process(uvicorn, app_env, DATA / "app.log") as app_server,
    ):
        # /healthz?verbose=1 takes a key: only the collector holding ours answers it.
        wait_http(collector + "/healthz?verbose=1", served, DATA / "collector.log", token)
        wait_http(app + "/", app_server, DATA / "app.log")
        counts = traffic(app)
        print(
            f"demo: {counts['signups']} sign-ups, {counts['logins_ok']} logins, "
            f"{counts['custom']} report exports, {counts['logins_failed']} failed logins from "
            "four IPs stuffing credentials"
        )
        guessed, more, delay = guess(app)
        print(
            f"demo: {ATTACKER} guessed alice's password {guessed} times (401)"
            + (f", and {more} more while its block came" if more else "")
            + "; "
            + (
                f"{delay:.2f} s after its 5th failure it was refused (403): the built-in "
                "playbook brute-force-ip blocked it for 1 h"
                if delay is not None and delay >= 0
                else "it was refused (403) before its 5th failure: a block was already in "
                "force (see demo-data/collector.log)"
                if delay is not None
                else "it was never refused: see demo-data/collector.log"
            )
        )
        started = time.monotonic()
        sqreen_cli(
            "block", "ip", f"{STUFFERS[0]}/32", "--for", "1h", "--reason", "credential stuffing"
        )
        # Probed on the home page: wrong passwords would be a brute force of their own.
        refused, _ = until_refused(app, STUFFERS[0], started, guessing=False)
        print(
            f"demo: blocked {STUFFERS[0]} by hand with sqreen block ip: "
            + (
                f"refused {refused:.2f} s after the command started (its start-up included)"
                if refused is not None
                else "never refused"
            )
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
        print("\nWhat the playbooks raised (sqreen alerts):\n")
        print(sqreen_cli("alerts"))
        print("\nWhere to look:")
        print(
            f"  Event Explorer  {collector}/explorer/  (password: {env['SQREEN_ADMIN_PASSWORD']})"
        )
        print(f"  Alerts          {collector}/explorer/alerts")
        print(f"  The playbooks   {DATA / 'playbooks.toml'} (sqreen playbooks init)")
        print(f"  The app         {app}/docs")
        cli = Path(sys.executable).parent / "sqreen"
        print(f"  Terminal        {cli} events --db {DATA / 'sqreen.db'} --follow")
        print(f"  Blocks          {cli} blocks --db {DATA / 'sqreen.db'}")
        if opts.no_wait:
            return
        print("\nBoth servers keep running: press Ctrl-C to stop them.")
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
