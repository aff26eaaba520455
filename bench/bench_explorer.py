"""Event Explorer latency at scale: the first page of each single filter, 1M stored events.

    .venv/bin/python bench/bench_explorer.py                 # 1M events, SQLite and PostgreSQL
    .venv/bin/python bench/bench_explorer.py --events 100000 --backend sqlite

Generates realistic events (30 days of logins, signups, purchases... from 50,000 users and
20,000 IPs, a few of them attacking) as a JSON-lines file, loads it with ``sqreen import``
into SQLite and into a throwaway PostgreSQL cluster (``tests/_postgres.py``), starts
``sqreen serve`` on each, logs in to the explorer and times the first page of each filter
through HTTP: what a user waits for, template rendering, histogram and group counts included.
Prints p50/p95 in milliseconds per filter per back end. The data file and the databases are
kept in ``--workdir`` between runs (generation and import take minutes).

This is a bench, not a test: the test suite checks the query plans instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import collector  # noqa: E402

PASSWORD = "bench-password-123"
NAMES = [
    ("auth.login.success", 40),
    ("auth.login.failure", 25),
    ("page.view.admin", 10),
    ("auth.signup", 5),
    ("checkout.completed", 6),
    ("password.reset.requested", 4),
    ("account.email.changed", 3),
    ("api.key.created", 2),
    ("auth.mfa.failure", 3),
    ("export.downloaded", 2),
]
REASONS = ["bad_password", "unknown_user", "locked", "expired_otp"]
PLANS = ["free", "pro", "team", "enterprise"]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148",
    "python-requests/2.32.3",
    "curl/8.8.0",
]
# The filters timed: a label and the query string of /explorer/events.
FILTERS = [
    ("none (newest page)", {}),
    ("name", {"name": "auth.login.failure"}),
    ("rare name", {"name": "api.key.created"}),
    ("user", {"user": "uid=1234"}),
    # A user with no event: every run of the users' index seeked, on SQLite (its worst case).
    ("user with no event", {"user": "uid=nobody"}),
    ("ip", {"ip": "198.51.100.7"}),
    ("property", {"prop": "reason=locked"}),
    ("time range (last 1 h)", {"since": "1h"}),
    ("time range (2 days, a week ago)", {"since": "9d", "until": "7d"}),
    ("group by ip", {"group": "ip"}),
    ("group by user:uid", {"group": "user:uid"}),
    ("group by prop:reason", {"name": "auth.login.failure", "group": "prop:reason"}),
    ("older page (before=)", {"name": "auth.login.success", "before": "BEFORE"}),
]


def generate(path: Path, count: int, seed: int = 7) -> None:
    """``count`` events over the last 30 days, oldest first, as JSON lines."""
    rng = random.Random(seed)
    names = [n for n, w in NAMES for _ in range(w)]
    end = datetime.now(UTC)
    start = end - timedelta(days=30)
    step = (end - start) / count
    attackers = [f"198.51.100.{i}" for i in range(1, 21)]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        for i in range(count):
            name = rng.choice(names)
            uid = str(rng.randrange(100) if rng.random() < 0.2 else rng.randrange(50_000))
            attack = name == "auth.login.failure" and rng.random() < 0.5
            ip = (
                rng.choice(attackers)
                if attack
                else f"203.0.{rng.randrange(80)}.{rng.randrange(250)}"
            )
            props: dict[str, object] = {"plan": rng.choice(PLANS)}
            if name.endswith("failure"):
                props = {"reason": rng.choice(REASONS), "attempt": rng.randrange(1, 9)}
            elif name == "checkout.completed":
                props = {"amount": rng.randrange(5, 900), "currency": "EUR", "items": 2}
            event = {
                "id": f"b{i:09d}",
                "name": name,
                "timestamp": (start + step * i).isoformat().replace("+00:00", "Z"),
                "properties": props,
                "user": {"uid": uid, "email": f"user{uid}@example.com"},
                "request": {
                    "ip": ip,
                    "user_agent": rng.choice(AGENTS),
                    "path": "/login" if name.startswith("auth") else "/app/" + name.split(".")[0],
                    "route": None,
                    "method": "POST",
                    "params": {"username": f"user{uid}"},
                    "body": None,
                },
            }
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
    tmp.rename(path)


@contextmanager
def postgres(dsn: str | None) -> Iterator[str]:
    """The database at ``dsn``, or a fresh one in a throwaway cluster (tests/_postgres.py)."""
    if dsn:
        yield dsn
        return
    from tests._postgres import cluster, find_pg_bin, fresh_database

    bin_dir = find_pg_bin()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    with cluster(bin_dir) as server:
        yield fresh_database(server.dsn)


def load_once_pg(db: str, data: Path) -> None:
    """``sqreen import`` into an empty database, then VACUUM ANALYZE (as autovacuum would)."""
    import psycopg

    from sqreen.server.storage import open_storage

    open_storage(db).close()  # the schema
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1) x").fetchone()
        if not row or not row[0]:
            started = time.perf_counter()
            sqreen("import", str(data), "--app", "bench", db=db, stdout=subprocess.DEVNULL)
            print(f"  imported in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        conn.execute("VACUUM ANALYZE")


def sqreen(*args: str, db: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sqreen.server", *args, "--db", db],
        cwd=ROOT,
        text=True,
        check=True,
        **kwargs,  # type: ignore[call-overload]
    )


def load(db: str, data: Path, marker: Path) -> None:
    """``sqreen import`` the data once (a marker file remembers it was done)."""
    if marker.exists():
        return
    started = time.perf_counter()
    sqreen("import", str(data), "--app", "bench", db=db, stdout=subprocess.DEVNULL)
    print(f"  imported in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    marker.write_text(db)


@contextmanager
def serving(db: str) -> Iterator[str]:
    """``sqreen serve`` on ``db`` (bench_ingest's), the admin password set from the env."""
    os.environ["SQREEN_ADMIN_PASSWORD"] = PASSWORD
    with collector(db) as (endpoint, *_):
        yield endpoint


def login(client: httpx.Client) -> None:
    page = client.get("/explorer/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, "no CSRF token on the login page"
    reply = client.post(
        "/explorer/login",
        data={"password": PASSWORD, "csrf_token": token[1]},
        headers={"Origin": str(client.base_url).rstrip("/")},
    )
    assert reply.status_code == 303, reply.text[:500]


def time_filters(base: str, runs: int) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    with httpx.Client(base_url=base, timeout=60) as client:
        login(client)
        found = client.get("/explorer/api/events", params={"name": "auth.login.success"}).json()
        before = str(found["events"][-1]["seq"]) if found["events"] else "1"
        for label, params in FILTERS:
            query = {k: (before if v == "BEFORE" else v) for k, v in params.items()}
            url = "/explorer/events?" + urlencode(query)
            client.get(url).raise_for_status()  # warm the caches
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                reply = client.get(url)
                times.append((time.perf_counter() - started) * 1000)
                reply.raise_for_status()
            times.sort()
            out[label] = (statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".benchmarks" / "explorer")
    parser.add_argument(
        "--pg-dsn", help="an existing PostgreSQL database (default: a throwaway cluster)"
    )
    args = parser.parse_args()
    args.workdir.mkdir(exist_ok=True)
    data = args.workdir / f"events-{args.events}.jsonl"
    if not data.exists():
        started = time.perf_counter()
        generate(data, args.events)
        print(f"generated {data} in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    results: dict[str, dict[str, tuple[float, float]]] = {}
    if args.backend in ("sqlite", "both"):
        db = str(args.workdir / f"sqlite-{args.events}.db")
        print("SQLite:", file=sys.stderr)
        load(db, data, Path(db + ".loaded"))
        with serving(db) as base:
            results["SQLite"] = time_filters(base, args.runs)
    if args.backend in ("postgres", "both"):
        print("PostgreSQL:", file=sys.stderr)
        with postgres(args.pg_dsn) as db:
            load_once_pg(db, data)
            with serving(db) as base:
                results["PostgreSQL"] = time_filters(base, args.runs)

    backends = list(results)
    print(f"\nFirst page of /explorer/events, {args.events:,} events, {args.runs} runs, ms")
    header = "| filter | " + " | ".join(f"{b} p50 | {b} p95" for b in backends) + " |"
    print(header)
    print("|" + "---|" * (1 + 2 * len(backends)))
    for label, _ in FILTERS:
        cells = [f"{results[b][label][0]:.1f} | {results[b][label][1]:.1f}" for b in backends]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\n({os.cpu_count()} CPUs, Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
