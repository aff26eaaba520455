"""Ingest throughput of the collector: events per second into SQLite and PostgreSQL.

Method
------
For each back end and each ``--workers`` count, a real ``sqreen serve --workers N`` subprocess
(uvicorn, access log off) on 127.0.0.1 and a fresh database; PostgreSQL is a throwaway cluster
started like the tests do (``tests/_postgres.py``) and is skipped when not installed. Before
the clock starts, every batch is built and gzipped the way the SDK sends them: 500 realistic
events each (with ``--mix attack``, the default, login failures from 250 IPs against 5000
users; with ``--mix typical``, an app's own events, logins and sign-ups: see ``TYPICAL``;
each with four properties, two user identifiers and a request snapshot: about 480 bytes of
JSON an event, 240 KB a batch), each with its own id. Then ``--senders``
threads, each with its own httpx2 client (keep-alive), post the batches as fast as the
collector answers, each saying in its batches the version of the action set it holds from
its last reply, as the SDK does (:class:`Body`): the reply then carries what changed, not
the whole set (under ``--mix attack`` with the templates, 88 bytes instead of 38 KB).
The figure is events stored / wall time from the first request to the last
reply, and the database is counted afterwards to check that every event was stored once. The
senders share the machine with the collector (2 cores here), as an app server on the same host
would. CPU seconds are read from /proc during the timed part: the collector's processes
(uvicorn's supervisor and each worker), PostgreSQL's (the postmaster and its children:
backends, WAL writer, checkpointer; when the cluster runs on this machine), the senders, and
everything else on the machine ("other": anything else running, which makes a figure
unreliable when it is large). ``--dsn`` uses a cluster of yours (a fresh database is made in
it for each run) instead of a throwaway one started as the tests start theirs (fsync and
synchronous commit off: see ``tests/_postgres.py``).

With ``--compare REV``, every case runs twice a round, alternating: the collector of the
working tree, and that of git revision ``REV`` (its files exported to a temporary directory
and run from there): what a change costs, measured under the same load.

With ``--pin`` the collector's processes run on CPU 0 and the senders on the other CPUs. On
2 cores the senders otherwise take the collector's CPU and caches in turns (the machine is
oversubscribed), and a change that makes the collector's thread a little slower shows as
several times that over HTTP: pinned, the figure is the collector's own, as with apps on
other machines. Meant for ``--workers 1`` (two workers would share CPU 0).

With ``--preload N`` each SQLite database holds N events before the collector starts (one
batch stored by the collector's code, then copied in SQL with new ids, seqs, times and
addresses: see :func:`preload`), to measure ingest into a grown database.

Run: ``.venv/bin/python bench/bench_ingest.py [--events 100000] [--senders 8] [--workers 1,2]
[--compare main --rounds 3] [--pin]
[--only postgres] [--dsn postgresql://...] [--preload 5000000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Final

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# bench_enrich.py's addresses and .mmdb files (this directory is first on the path).
from bench_enrich import city_file, dense_city_file, public_addresses  # noqa: E402

from sqreen._wire_time import format_timestamp  # noqa: E402
from sqreen.server.auth import hash_token, new_token  # noqa: E402
from sqreen.server.intel import IMPOSSIBLE_TRAVEL  # noqa: E402
from sqreen.server.playbooks import TEMPLATES  # noqa: E402
from sqreen.server.storage import EventFilter, open_storage  # noqa: E402
from sqreen.transports.http import GZIP_LEVEL  # noqa: E402  (the SDK's)

BATCH = 500


#: ``--mix typical``: of every 100 events, what each is (an app's own events most of the
#: time; logins, mostly good; a few sign-ups), each user doing all of them in turn
#: (:func:`user_of`). Attack traffic (``--mix attack``) is all login failures, which five of
#: the six templates read. ``--mix storm``: the typical names, each user always doing the
#: same one (event ``n`` from user ``n % USERS``, whose name is ``n % 100``'s): 400 accounts
#: failing every login, 20 times each in 100 000 events, so that brute-force-account alerts
#: on each of them twice (what ``typical`` meant before: see CHANGELOG).
#: ``--intel split``'s third variant: IP intelligence without impossible travel.
NO_TRAVEL: Final = "no-travel"
#: Users the traffic's events come from (:func:`user_of`).
USERS: Final = 5000
TYPICAL: Final = (
    ["order.created"] * 20
    + ["cart.updated"] * 25
    + ["profile.updated"] * 15
    + ["auth.login.success"] * 30
    + ["auth.login.failure"] * 8
    + ["auth.signup"] * 2
)


def intel_label(intel: bool | str, geoip_db: str | None) -> str:
    """How a case ran IP intelligence, for the table."""
    if not intel:
        return "off"
    return "on" + (" +mmdb" if geoip_db else "") + (" -travel" if intel == NO_TRAVEL else "")


def user_of(n: int, mix: str = "typical") -> int:
    """The user of event ``n``: under ``typical``, spread by a multiplicative hash, so that
    each user does all of :data:`TYPICAL` in its proportions (``n % USERS`` gave each user
    the same name every time, as 100 divides USERS: ``storm``); else ``n % USERS``."""
    if mix == "typical":
        return (n * 2654435761) % 2**32 % USERS
    return n % USERS


def event(n: int, run: str, mix: str = "attack", ip: str | None = None) -> dict[str, object]:
    name = "auth.login.failure" if mix == "attack" else TYPICAL[n % len(TYPICAL)]
    user = user_of(n, mix)
    if ip is None:  # addresses that IP intelligence labels without a lookup
        ip = f"203.0.113.{n % 250}" if mix == "attack" else f"10.{n % 7}.{n % 113}.{n % 241}"
    return {
        "id": f"{run}-{n:010d}",
        "name": name,
        # Now: a playbook counts only events within its window.
        "timestamp": format_timestamp(time.time()),
        "properties": {"reason": "bad_password", "attempt": n % 7, "plan": "pro", "mfa": False},
        "user": {"uid": str(user), "email": f"user{user}@example.com"},
        "target": None,
        "request": {
            "ip": ip,
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
            "path": "/login",
            "route": "/login",
            "method": "POST",
            "params": {"username": f"user{user}", "password": "[redacted]"},
            "body": None,
        },
    }


def envelopes(
    total: int, run: str, mix: str = "attack", ips: Sequence[str] | None = None
) -> Iterator[dict[str, object]]:
    """The batches' bodies; with ``ips``, event ``n`` comes from ``ips[n]``."""
    app = {"name": "bench", "host": socket.gethostname(), "pid": os.getpid(), "framework": "none"}
    for start in range(0, total, BATCH):
        yield {
            "sdk": {"name": "sqreen-python", "version": "bench"},
            "app": app,
            "events": [
                event(n, run, mix, None if ips is None else ips[n])
                for n in range(start, min(total, start + BATCH))
            ],
        }


def batches(total: int, run: str, mix: str = "attack") -> list[bytes]:
    """The gzipped bodies, as the SDK sends them but without the action set it holds."""
    return [
        gzip.compress(json.dumps(body, separators=(",", ":")).encode(), GZIP_LEVEL)
        for body in envelopes(total, run, mix)
    ]


#: A gzip member's header: deflate, no name, no time, unknown OS (RFC 1952).
_GZIP_HEAD: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class Body:
    """A batch built and compressed before the clock starts, to which :meth:`gzip` adds what
    the SDK adds to each batch it sends: the version of the action set it holds
    (``"actions": {"version": n, "diff": true}``, from the reply before), so that the reply
    carries what changed since rather than the whole set, as it does for a real SDK (250
    blocks are 38 KB a reply, which the senders would parse on the collector's cores). The
    events are deflated once; each send deflates only the few bytes of the head in front
    of them (a block ending on a byte boundary, ``Z_SYNC_FLUSH``), then the gzip trailer."""

    def __init__(self, envelope: dict[str, object]) -> None:
        raw = json.dumps(envelope, separators=(",", ":")).encode()
        self.tail = raw[1:]  # after the opening brace
        deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
        self.deflated = deflate.compress(self.tail) + deflate.flush()

    def gzip(self, held: int | None) -> bytes:
        head = b"{" if held is None else b'{"actions":{"version":%d,"diff":true},' % held
        deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
        front = deflate.compress(head) + deflate.flush(zlib.Z_SYNC_FLUSH)
        crc = zlib.crc32(self.tail, zlib.crc32(head))
        size = (len(head) + len(self.tail)) & 0xFFFFFFFF
        return _GZIP_HEAD + front + self.deflated + struct.pack("<II", crc, size)


def bodies_for(
    total: int, run: str, mix: str = "attack", ips: Sequence[str] | None = None
) -> list[Body]:
    return [Body(envelope) for envelope in envelopes(total, run, mix, ips)]


def preload(path: str, total: int, mix: str, pkg: SimpleNamespace | None = None) -> None:
    """``total`` events in the database at ``path``: one batch stored through the package's
    own code, then copied in SQL (with new ids, seqs, times and addresses) until ``total``.
    ``pkg``: the package whose code and schema to use (``bench_ingest_cpu.package``; default
    this tree's)."""
    if pkg is None:
        from sqreen.server.ingest import gunzip
        from sqreen.server.pipeline import IngestPipeline

        pkg = SimpleNamespace(
            gunzip=gunzip, IngestPipeline=IngestPipeline, open_storage=open_storage
        )
    storage = pkg.open_storage(path)
    pipeline = pkg.IngestPipeline(storage)
    pipeline.store(pipeline.parse(pkg.gunzip(batches(BATCH, "seed", mix)[0], 1 << 30)))
    storage.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    # The indexes are made again at the end, from sorted data: minutes for millions of rows,
    # where inserting into them (random places, as ingest does) takes most of an hour.
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN ('events', 'event_props', 'event_users')"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    columns = [r[1] for r in conn.execute("PRAGMA table_info(events)") if r[1] != "seq"]
    # An id as an SDK process makes them (a random prefix a process, then a counter): here
    # a prefix a copy of the seed batch.
    changed = {
        "id": "printf('%012x-%x', (o.n * 2654435761) % 281474976710656, e.seq)",
        "ts": "e.ts - (o.n * 1000 + e.seq) * 1000",
        "received_at": "e.received_at - (o.n * 1000 + e.seq) * 1000",
        "ip": "'198.51.' || (abs(random()) % 256) || '.' || (abs(random()) % 256)",
    }
    select = ", ".join(changed.get(c, f"e.{c}") for c in columns)
    sides = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE name IN ('event_props', 'event_users')"
        )
    ]
    step = 0
    start = time.perf_counter()
    done = BATCH
    while done < total:
        # Copies of the seed events (seqs 1 to BATCH), ``rounds`` at a time, with their side
        # rows (seqs are given in order: a copy's seed is its seq modulo BATCH).
        rounds = max(1, min(1000, (total - done) // BATCH))
        conn.execute("BEGIN")
        (base,) = conn.execute("SELECT max(seq) FROM events").fetchone()
        conn.execute(
            f"INSERT INTO events ({', '.join(columns)}) "
            f"WITH RECURSIVE o(n) AS (SELECT {step + 1} UNION ALL SELECT n + 1 FROM o "
            f"WHERE n < {step + rounds}) SELECT {select} FROM o, events e "
            f"WHERE e.seq <= {BATCH} ORDER BY o.n, e.seq"
        )
        for table in sides:
            conn.execute(
                f"INSERT INTO {table} (seq, key, value) SELECT e.seq, p.key, p.value "
                f"FROM events e JOIN {table} p ON p.seq = (e.seq - 1) % {BATCH} + 1 "
                f"WHERE e.seq > {base}"
            )
        conn.execute("COMMIT")
        step += rounds
        done += rounds * BATCH
        if step % 2000 == 0:
            print(f"  preloaded {done} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def collector(
    db: str,
    workers: int = 1,
    playbooks: str | None = None,
    extra: Sequence[str] = (),
    root: Path = ROOT,
    pin: bool = False,
) -> Iterator[tuple[str, str, int]]:
    """A ``sqreen serve`` subprocess on ``db`` (with the playbook file ``playbooks``, and the
    options ``extra``), of the code in ``root``; yields (endpoint, token, its pid). ``pin``:
    the collector's processes run on CPU 0 only (see ``--pin``)."""
    if root == ROOT:
        token = new_token()
        storage = open_storage(db)
        storage.create_key("bench", hash_token(token))
        storage.close()
    else:  # by that code's own CLI: its schema may be older than this tree's
        token = subprocess.run(
            [sys.executable, "-m", "sqreen.server", "keys", "create", "--db", db],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sqreen.server",
            "serve",
            "--db",
            db,
            "--port",
            str(port),
            "--no-access-log",
            "--workers",
            str(workers),
            "--log-level",
            "error",
            *(["--playbooks", playbooks] if playbooks else []),
            *extra,
        ],
        cwd=root,  # python -m puts it first on the path
        preexec_fn=(lambda: os.sched_setaffinity(0, {0})) if pin else None,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the collector did not start") from None
                time.sleep(0.1)
        yield endpoint, token, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def send_all(endpoint: str, token: str, bodies: Sequence[bytes | Body], senders: int) -> float:
    """Post every body from ``senders`` threads; return the wall time. Each sender holds
    the action set's version from its last reply and says so in each :class:`Body` it
    sends, as the SDK does."""
    queue = list(reversed(bodies))
    lock = threading.Lock()
    errors: list[str] = []
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }

    def work() -> None:
        held: int | None = None
        with httpx.Client(headers=headers, timeout=60) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                content = body if isinstance(body, bytes) else body.gzip(held)
                reply = client.post(endpoint + "/v1/events", content=content)
                answer = reply.json() if reply.status_code == 200 else {}
                if reply.status_code != 200 or answer["rejected"]:
                    errors.append(f"{reply.status_code} {reply.text[:200]}")
                    continue
                version = answer["actions"].get("version")
                held = version if type(version) is int else held

    threads = [threading.Thread(target=work) for _ in range(senders)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} failed batches, first: {errors[0]}")
    return elapsed


def tree_times(pid: int) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds used so far by process ``pid`` and each of its children
    (Linux /proc)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            out[int(stat.parent.name)] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return out


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds used so far by process ``pid`` and each of its children (Linux /proc)."""
    return {p: user + system for p, (user, system) in tree_times(pid).items()}


def machine_busy() -> float:
    """CPU seconds all processes of the machine have used (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run(
    db: str,
    label: str,
    workers: int,
    args: argparse.Namespace,
    playbooks: str | None = None,
    code: tuple[str, Path] = ("tree", ROOT),
    intel: bool | str = True,
) -> dict[str, object]:
    if args.preload and label == "sqlite":
        start = time.perf_counter()
        preload(db, args.preload, args.mix)
        print(f"preloaded {args.preload} events in {time.perf_counter() - start:.0f} s")
    # --addresses new: every event from an address never seen before, in both variants.
    fresh = args.addresses == "new"
    first = BATCH * args.senders
    ips = public_addresses(args.events + first, random.Random(7)) if fresh else None
    warm, measured = (ips[:first], ips[first:]) if ips else (None, None)
    if args.addresses == "homes":  # each user always from the same public address
        homes = public_addresses(USERS, random.Random(8))
        warm = [homes[user_of(n, args.mix)] for n in range(first)]
        measured = [homes[user_of(n, args.mix)] for n in range(args.events)]
    bodies = bodies_for(args.events, f"{label}-{workers}-{os.getpid()}", args.mix, measured)
    warmup = bodies_for(BATCH * args.senders, f"warmup-{label}-{workers}", args.mix, warm)
    postmaster = postmaster_pid(db) if label == "postgresql" else None
    # This tree's collector says how many bodies each turn stored together, and how long
    # its writers held SQLite's write lock (/metrics).
    scrape = new_token() if code[1] == ROOT else None
    extra = ["--metrics-token", scrape] if scrape else []
    if not intel:
        extra.append("--no-ip-intel")
    elif args.geoip_db:
        extra += ["--geoip-db", args.geoip_db]
    if intel == NO_TRAVEL:
        extra += ["--travel-speed", "0"]
    with collector(db, workers, playbooks, extra, root=code[1], pin=args.pin) as (
        endpoint,
        token,
        pid,
    ):
        send_all(endpoint, token, warmup, args.senders)
        pg = sum(tree_cpu(postmaster).values()) if postmaster else 0.0
        turns = ingest_counters(endpoint, scrape)
        before, busy, mine = tree_cpu(pid), machine_busy(), time.process_time()
        elapsed = send_all(endpoint, token, bodies, args.senders)
        after, busy, mine = tree_cpu(pid), machine_busy() - busy, time.process_time() - mine
        pg = sum(tree_cpu(postmaster).values()) - pg if postmaster else 0.0
        turns = [b - a for a, b in zip(turns, ingest_counters(endpoint, scrape), strict=True)]
    per_process = {p: after[p] - before.get(p, 0.0) for p in after}
    cpu = sum(per_process.values())
    storage = open_storage(db)
    # Events the collector adds itself: impossible travel, when a City file places logins
    # (with --addresses new, a user's logins come from random places: most pairs are one).
    derived = storage.count_events(EventFilter(name=IMPOSSIBLE_TRAVEL))
    stored = storage.count_events() - derived
    storage.close()
    if stored != args.events + len(warmup) * BATCH + (args.preload if label == "sqlite" else 0):
        raise RuntimeError(f"{label}: {stored} events stored, expected more")
    return {
        "code": code[0],
        "back end": label,
        "playbooks": "templates" if playbooks else "none",
        "ip intel": intel_label(intel, args.geoip_db),
        "mix": args.mix,
        "workers": workers,
        "preloaded": args.preload if label == "sqlite" else 0,
        "events": args.events,
        "seconds": f"{elapsed:.2f}",
        "events/s": f"{args.events / elapsed:.0f}",
        "server CPU us/event": f"{cpu / args.events * 1e6:.0f}",
        "server CPU by process s": "/".join(f"{v:.1f}" for v in sorted(per_process.values())),
        "PostgreSQL CPU us/event": f"{pg / args.events * 1e6:.0f}" if postmaster else "-",
        "senders CPU s": f"{mine:.1f}",
        "other CPU s": f"{max(0.0, busy - cpu - pg - mine):.1f}",
        "bodies a turn": f"{turns[1] / turns[0]:.2f}" if turns[0] else "-",
        # The share of the time SQLite's write lock was held (every worker's turns): near
        # 100 %, writes take turns all the time, and another worker adds nothing.
        "write lock held": f"{turns[2] / elapsed:.0%}" if turns[0] and label == "sqlite" else "-",
        "derived": derived,
    }


#: What :func:`ingest_counters` reads, in its order.
COUNTERS: Final = (
    "sqreen_ingest_group_bodies_count",
    "sqreen_ingest_group_bodies_sum",
    'sqreen_storage_write_lock_seconds_total{phase="held"}',
)


def ingest_counters(endpoint: str, token: str | None) -> list[float]:
    """[turns, bodies] of the collector's ingest slot so far (``sqreen_ingest_group_bodies``
    on ``/metrics``, all workers) and the seconds SQLite's write lock was held; zeros
    without a metrics token (another tree's)."""
    if token is None:
        return [0.0] * len(COUNTERS)
    reply = httpx.get(
        endpoint + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    reply.raise_for_status()
    found = {}
    for line in reply.text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in COUNTERS:
            found[name] = float(value)
    return [found.get(name, 0.0) for name in COUNTERS]


def exported(rev: str, into: Path) -> Path:
    """The files of git revision ``rev`` of this repository, in ``into``."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "archive", rev], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def postmaster_pid(dsn: str) -> int | None:
    """The pid of the postmaster serving ``dsn``, when it runs on this machine (the parent of
    a backend); None otherwise."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        backend = conn.info.backend_pid
    try:
        parent = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return parent if Path(f"/proc/{parent}/cmdline").read_bytes().find(b"postgres") >= 0 else None


@contextlib.contextmanager
def postgres(dsn: str | None = None) -> Iterator[Callable[[], str] | None]:
    """A throwaway cluster (as the tests start it), or the cluster of ``dsn``; yields a maker
    of fresh databases."""
    from tests import _postgres

    if dsn:
        yield lambda: _postgres.fresh_database(dsn)
        return
    bin_dir = _postgres.find_pg_bin()
    if bin_dir is None:
        yield None
        return
    with _postgres.cluster(bin_dir) as server:
        yield lambda: _postgres.fresh_database(server.dsn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument("--dsn", help="a PostgreSQL cluster of yours (default: a throwaway one)")
    parser.add_argument(
        "--preload",
        type=int,
        default=0,
        help="SQLite: store N events first (directly, in SQL: minutes for millions), then measure",
    )
    parser.add_argument(
        "--playbooks",
        default="none",
        help="none, templates, or both (the six built-in playbooks enforced, or not, "
        "interleaved in one run)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat each case, interleaved")
    parser.add_argument(
        "--compare", metavar="REV", help="alternate each case with the collector of git REV"
    )
    parser.add_argument(
        "--mix",
        choices=["attack", "typical", "storm"],
        default="attack",
        help="attack: every event a login failure (the playbooks' worst case); typical: an "
        "app's events, logins and sign-ups (see TYPICAL); storm: the same names, each user "
        "always doing one of them (400 accounts failing every login: an alert storm)",
    )
    parser.add_argument(
        "--addresses",
        choices=["fixed", "new", "homes"],
        default="fixed",
        help="fixed: private or documentation addresses (IP intelligence labels them without "
        "a lookup); new: every event from a public address never seen before (its worst case); "
        "homes: each user always from the same public address (impossible travel's usual case: "
        "every login placed with a City file, none an alert)",
    )
    parser.add_argument(
        "--intel",
        choices=["on", "off", "both", "split"],
        default="on",
        help="the collector's IP intelligence (off: --no-ip-intel); both: each case with and "
        "without it, interleaved; split: also with it but impossible travel off "
        "(--travel-speed 0)",
    )
    parser.add_argument(
        "--geoip",
        choices=["none", "sparse", "dense"],
        default="none",
        help="with IP intelligence, one .mmdb file as bench_enrich.py writes it: sparse (20 000 "
        "/24 networks) or dense (every public IPv4 address placed, records as GeoLite2-City's)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the collector on CPU 0, the senders on the other CPUs: the load generator then "
        "takes no CPU time or caches from the collector (as apps on other machines would "
        "not); meant for --workers 1",
    )
    args = parser.parse_args()
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or cpus[0] != 0:
            parser.error("--pin needs CPU 0 and at least one other CPU")
        os.sched_setaffinity(0, set(cpus[1:]))
    counts = [int(w) for w in args.workers.split(",")]
    modes = {"none": [False], "templates": [True], "both": [False, True]}[args.playbooks]
    intels: list[bool | str] = {
        "on": [True],
        "off": [False],
        "both": [False, True],
        "split": [False, NO_TRAVEL, True],
    }[args.intel]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "playbooks.toml"
        path.write_text(TEMPLATES)
        args.geoip_db = None
        if args.geoip != "none":
            mmdb = Path(tmp) / f"{args.geoip}.mmdb"
            if args.geoip == "sparse":
                city_file(mmdb, 20_000, random.Random(15))
            else:
                dense_city_file(mmdb, random.Random(16))
            args.geoip_db = str(mmdb)
        codes = [("tree", ROOT)]
        if args.compare:
            codes.append((args.compare, exported(args.compare, Path(tmp) / "compared")))
        # Odd rounds run the codes in reverse order: neither always runs first after a pause.
        cases = [
            (w, m, i, c)
            for r in range(args.rounds)
            for w in counts
            for m in modes
            for i in (intels if r % 2 == 0 else intels[::-1])
            for c in (codes if r % 2 == 0 else codes[::-1])
        ]
        if args.only in (None, "sqlite"):
            for n, (w, armed, intel, code) in enumerate(cases):
                db = str(Path(tmp) / f"bench-{n}.db")
                book = str(path) if armed else None
                rows.append(run(db, "sqlite", w, args, book, code, intel))
        if args.only in (None, "postgres"):
            with postgres(args.dsn) as fresh:
                if fresh is None:
                    print("PostgreSQL not installed: skipped", file=sys.stderr)
                for w, armed, intel, code in cases if fresh else ():
                    book = str(path) if armed else None
                    rows.append(run(fresh(), "postgresql", w, args, book, code, intel))
    print(
        f"\nbatches of {BATCH} gzipped events, {args.senders} concurrent senders, "
        f"{os.cpu_count()} CPUs"
    )
    columns = list(rows[0]) if rows else []
    print("  ".join(f"{c:>10}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]!s:>10}" for c in columns))


if __name__ == "__main__":
    main()
