"""An attack replayed through a real app: the protection loop, end to end.

The FastAPI example on uvicorn, its SDK sending over HTTP with default settings (a 5 s flush
interval), to ``sqreen serve`` on uvicorn with the built-in playbooks enforced. Clients come
through ``X-Forwarded-For`` from the loopback proxy. Legitimate users sign up and log in, with
a typo now and then; one IP brute-forces an account, another stuffs credentials, a third
sprays a password over many accounts. Every attacker is refused within a second of the
request that crossed its threshold, no legitimate user or IP ever is, each alert is listed
once, and its webhook arrives signed.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from sqreen.server.auth import hash_token, new_token
from sqreen.server.playbooks import TEMPLATES, verify_signature
from sqreen.server.storage import open_storage
from tests._postgres import postgres_cluster, postgres_db, postgres_dsn  # noqa: F401 (fixtures)
from tests.integrations._servers import ROOT, free_port, http_request, wait_for_port, wait_until

pytestmark = pytest.mark.slow

SECRET = "replay-secret"
_turns = itertools.count()


class Hooks:
    """Webhook receivers: one that answers, one that hangs (the dead one is a closed port)."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/slow":
                    time.sleep(30)
                hooks.received.append((body, self.headers.get("X-Sqreen-Signature", "")))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    if not wait_for_port(port, 30, proc):
        proc.kill()
        raise AssertionError(proc.communicate()[0].decode()[-3000:])
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.terminate()
    try:
        out = proc.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
    return out.decode(errors="replace")


@pytest.fixture(
    params=[
        "sqlite",
        "sqlite-workers-2",
        pytest.param("postgres-two-collectors", marks=pytest.mark.postgres),
    ]
)
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """One app and one collector; one app and `serve --workers 2`; or two apps behind a
    round-robin "load balancer", each with its own collector, on one PostgreSQL."""
    layout = request.param
    db = (
        str(request.getfixturevalue("postgres_db"))
        if layout.startswith("postgres")
        else str(tmp_path / "replay.db")
    )
    storage = open_storage(db)
    token = new_token()
    storage.create_key("replay", hash_token(token))
    storage.close()
    hooks = Hooks()
    dead = free_port()
    notify = f'\nnotify = ["{hooks.url}/hook", "{hooks.url}/slow", "http://127.0.0.1:{dead}/x"]'
    text = TEMPLATES.replace(
        'duration = "1h"\n# notify', f'duration = "1h"{notify}\n# notify', 1
    ).replace("# webhook_secret", f'webhook_secret = "{SECRET}"\n#', 1)
    playbooks = tmp_path / "playbooks.toml"
    playbooks.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    pairs = 2 if layout == "postgres-two-collectors" else 1
    extra = ["--workers", "2"] if layout == "sqlite-workers-2" else []
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports = []
    try:
        for n in range(pairs):
            collector_port, app_port = free_port(), free_port()
            procs[f"collector{n}"] = _start(
                ["-m", "sqreen.server", "serve", "--db", db, "--port", str(collector_port),
                 "--playbooks", str(playbooks), "--no-access-log", *extra],
                env,
                collector_port,
            )  # fmt: skip
            app_env = {
                **env,
                "PORT": str(app_port),
                "SQREEN_ENDPOINT": f"http://127.0.0.1:{collector_port}",
                "SQREEN_TOKEN": token,
                "SQREEN_APP_NAME": "replay",
            }
            procs[f"app{n}"] = _start(["examples/fastapi_app.py"], app_env, app_port)
            ports.append(app_port)
        yield {"db": db, "ports": ports, "hooks": hooks}
    finally:
        outputs = {name: _stop(proc) for name, proc in procs.items()}
        hooks.close()
        for name, output in outputs.items():
            assert "Traceback" not in output, f"{name}: {output[-3000:]}"


def _post(ports: list[int], path: str, ip: str, username: str, password: str) -> tuple[int, float]:
    """A request through the "load balancer": each to the next app, round robin."""
    port = ports[next(_turns) % len(ports)]
    body = json.dumps({"username": username, "password": password}).encode()
    headers = {"Content-Type": "application/json", "X-Forwarded-For": ip}
    start = time.monotonic()
    status = http_request(port, "POST", path, body, headers).status
    return status, start


def test_attackers_are_refused_soon_after_crossing_and_nobody_else_ever(
    stack: dict[str, Any],
) -> None:
    port = stack["ports"]
    legit = {f"user{i}": (f"203.0.113.{10 + i}", f"pw-{i}") for i in range(6)}
    statuses: dict[str, list[int]] = {ip: [] for ip, _ in legit.values()}
    for name, (ip, pw) in legit.items():  # every app knows every user, as one database would
        statuses[ip] += [_post([app], "/signup", ip, name, pw)[0] for app in port]
    assert all(s == [201] * len(port) for s in statuses.values())

    attackers = {
        "198.51.100.10": [("user0", f"guess{n}") for n in range(40)],  # brute force
        "198.51.100.20": [(f"leaked{n}", "123456") for n in range(40)],  # stuffing
        "198.51.100.30": [(f"user{n % 6}", "Summer2026!") for n in range(40)],  # spray
    }
    crossing: dict[str, float] = {}
    refused_at: dict[str, float] = {}
    failures: dict[str, int] = {}
    failed_logins: dict[str, int] = {}  # per account, from anyone (brute-force-account)
    rounds = 0
    while len(refused_at) < len(attackers) and rounds < 40:
        for ip, tries in attackers.items():
            if ip in refused_at:
                continue
            user, pw = tries[rounds]
            status, sent = _post(port, "/login", ip, user, pw)
            if status == 403:
                refused_at[ip] = sent
                continue
            assert status == 401
            failures[ip] = failures.get(ip, 0) + 1
            failed_logins[user] = failed_logins.get(user, 0) + 1
            if failures[ip] == 5:  # brute-force-ip: 5 failures in 5 minutes
                crossing[ip] = sent
        # Legitimate users meanwhile: a typo now and then, then the right password.
        name = f"user{rounds % 6}"
        ip, pw = legit[name]
        if rounds % 4 == 0:
            statuses[ip].append(_post(port, "/login", ip, name, "typo")[0])
            assert statuses[ip][-1] == 401
            failed_logins[name] = failed_logins.get(name, 0) + 1
        statuses[ip].append(_post(port, "/login", ip, name, pw)[0])
        assert statuses[ip][-1] == 200, statuses
        rounds += 1
        time.sleep(0.05)
    assert set(refused_at) == set(attackers), (failures, refused_at)
    delays = {ip: refused_at[ip] - crossing[ip] for ip in attackers}
    # Pushed by the action long-poll, not learned at the next heartbeat (a minute): the
    # bound is loose because the suite shares its cores (one run took 1.08 s under
    # `pytest -n 2`); the time itself is measured by bench/bench_time_to_block.py (median
    # 0.11 s, README "Time to block").
    print("crossing -> first 403, seconds:", delays)
    assert all(delay < 10.0 for delay in delays.values()), delays
    assert all(403 not in s for s in statuses.values()), statuses  # nobody else, ever

    # The brute force, the spray and the typos all fail user0's logins: when the blocks take
    # a few rounds to arrive (a loaded machine), user0 reaches brute-force-account's 10
    # failures, and that alert (an alert only, no block) is then due, once a ten. user0's
    # next good login may then also be an account-takeover alert: whether the failures are
    # stored before it depends on which SDK flushes first, so it is allowed, not expected,
    # and only for an account that did fail 10 times. The last failures may still be on
    # their way from the SDKs: the alerts are read until they are all in.
    def key(user: str) -> str:
        return json.dumps({"username": user}, separators=(",", ":"))

    # Each attacker is blocked at its 5th failure: none reaches credential-stuffing's 8
    # accounts (a pace under brute-force-ip's would).
    stuffers = [ip for ip, tries in attackers.items() if len(dict(tries[: failures[ip]])) >= 8]
    assert stuffers == []
    expected = sorted(
        [("brute-force-ip", ip) for ip in attackers]
        + [("credential-stuffing", ip) for ip in stuffers]
        + [
            ("brute-force-account", key(u))
            for u, n in failed_logins.items()
            for _ in range(n // 10)
        ]
    )
    targeted = {key(u) for u, n in failed_logins.items() if n >= 10}
    read: dict[str, Any] = {}

    def all_in() -> bool:
        storage = open_storage(stack["db"])
        try:
            read["alerts"], read["blocks"] = storage.list_alerts(limit=100), storage.list_blocks()
        finally:
            storage.close()
        fired = sorted((a.playbook, a.group_key) for a in read["alerts"])
        read["takeovers"] = [k for playbook, k in fired if playbook == "account-takeover"]
        read["fired"] = [f for f in fired if f[0] != "account-takeover"]
        return bool(read["fired"] == expected)

    wait_until(all_in, 15)
    fired, blocks = read["fired"], read["blocks"]
    assert fired == expected, failed_logins  # each once
    assert set(read["takeovers"]) <= targeted, (read["takeovers"], failed_logins)
    assert sorted(b.ip or "" for b in blocks) == sorted(f"{ip}/32" for ip in attackers)
    # One block an address: credential-stuffing's extends brute-force-ip's to its 6 hours.
    hours = {b.ip: round((b.expires_at - b.created_at) / timedelta(hours=1)) for b in blocks}
    assert hours == {f"{ip}/32": 6 if ip in stuffers else 1 for ip in attackers}, hours
    assert {b.created_by for b in blocks} == {"playbook:brute-force-ip"}

    deadline = time.monotonic() + 10  # the webhook: off the ingest path, but on its way
    while len(stack["hooks"].received) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    received = [r for r in stack["hooks"].received]
    # Sign-ups of the same user on two apps (two collectors) are not an attack: only the
    # three attackers' alerts are posted, each once, signed, while the slow and the dead
    # webhooks hang or fail beside them (and the blocks above still came within a second).
    assert len(received) == 3
    for body, signature in received:
        assert verify_signature(SECRET, body, signature)
        payload = json.loads(body)
        alert = payload["alert"]
        assert alert["playbook"] == "brute-force-ip"
        # Beside the alert, the addresses and users of the events it counted (read when
        # posted): the attacker's address alone, and the accounts it tried.
        ip, counted = alert["group_key"], len(alert["events"])
        assert [(a["ip"], a["events"]) for a in payload["addresses"]] == [(ip, counted)]
        users = [(u["user"]["username"], u["events"]) for u in payload["users"]]
        assert sum(n for _, n in users) == counted == payload["from_events"]
        tried = {name for name, _ in attackers[ip]}
        assert {name for name, _ in users} <= tried, (ip, users)
        if ip == "198.51.100.10":  # the brute force: one account
            assert users == [("user0", counted)]
    print("time to block (s):", {ip: round(d, 3) for ip, d in delays.items()})
