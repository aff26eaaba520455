"""``/livez`` and ``/readyz``: probes a load balancer calls without a key."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from sqreen.server import probes
from sqreen.server.storage import open_storage
from tests._postgres import Cluster

from .conftest import Collector, ServeProcess, add_key, envelope, wait_for, wire_event


def test_both_answer_without_a_key_and_readyz_writes_to_the_database(
    collector: Collector,
) -> None:
    assert httpx.get(collector.url + "/livez").json() == {"status": "live"}
    ready = httpx.get(collector.url + "/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert collector.storage.get_setting("readyz")  # a real write, read back


def test_a_failing_database_is_503_naming_the_error_not_its_message(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(key: str, value: str) -> None:
        raise sqlite3.OperationalError("disk I/O error at /secret/path/sqreen.db")

    monkeypatch.setattr(collector.storage, "set_setting", broken)
    reply = httpx.get(collector.url + "/readyz")
    assert reply.status_code == 503
    # SQLite's words for what failed, never the message's path.
    assert reply.json() == {"status": "unavailable", "reason": "database: disk i/o error"}
    assert "secret" not in reply.text
    assert httpx.get(collector.url + "/livez").status_code == 200  # the process still is


def test_readyz_is_503_while_batches_fail_though_its_own_small_write_succeeds(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk the probe's one row fits in pages SQLite holds, while every batch is
    refused: the batches' failures keep it at 503 for a while, and then it asks again."""
    from sqreen.server import unavailable

    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(collector.storage, "store_prepared", full)
    assert httpx.get(collector.url + "/readyz").status_code == 200  # nothing failed yet
    assert collector.post("/v1/events", envelope([wire_event()])).status_code == 503
    reply = httpx.get(collector.url + "/readyz")
    assert reply.status_code == 503
    reason = reply.json()["reason"]
    assert reason.startswith("database: a request failed ") and reason.endswith(
        " s ago (database or disk is full)"
    )
    monkeypatch.setattr(unavailable, "FAILED_RECENTLY", 0.2)
    assert _poll(collector.url + "/readyz", 200).json() == {"status": "ready"}


def test_failing_probes_are_said_once_a_minute_and_ready_again_once(
    collector: Collector, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Load balancers probe every few seconds: a line each was most of an outage's log."""

    def broken(key: str, value: str) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with caplog.at_level(logging.INFO, logger="sqreen.server"):
        with monkeypatch.context() as patch:
            patch.setattr(collector.storage, "set_setting", broken)
            for _ in range(5):
                assert httpx.get(collector.url + "/readyz").status_code == 503
        for _ in range(3):
            assert httpx.get(collector.url + "/readyz").status_code == 200
    said = [r.getMessage() for r in caplog.records if "/readyz" in r.getMessage()]
    assert said == ["sqreen: /readyz: database: disk i/o error", "sqreen: /readyz: ready again"]


def test_a_stuck_database_is_503_in_time_and_holds_one_thread(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that never answers: each probe answers 503 at its timeout, and the stuck
    calls hold one thread between them (not one a probe: the API's pool stays free)."""
    release = threading.Event()
    calls: list[int] = []

    def stuck(key: str, value: str) -> None:
        calls.append(1)
        release.wait(30)

    monkeypatch.setattr(probes, "READY_TIMEOUT", 0.3)
    monkeypatch.setattr(collector.storage, "set_setting", stuck)
    try:
        reply = httpx.get(collector.url + "/readyz", timeout=10)
        assert reply.status_code == 503
        assert reply.json()["reason"] == "database: no answer within 0.3 s"
        for _ in range(3):  # the stuck check still holds its thread: no second one
            reply = httpx.get(collector.url + "/readyz", timeout=10)
            assert reply.status_code == 503
            assert reply.json()["reason"] == "database: the previous check has not returned"
        assert len(calls) == 1
        # Meanwhile the API is served (its own threads).
        assert collector.admin.get(collector.url + "/v1/blocks").status_code == 200
    finally:
        release.set()
    # Once the database answers again, so does the probe.
    monkeypatch.undo()
    assert _poll(collector.url + "/readyz", 200).json() == {"status": "ready"}


def test_a_real_serve_is_ready_on_its_database(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    collector = serve(str(tmp_path / "sqreen.db"), None)
    assert httpx.get(collector.url + "/livez").status_code == 200
    assert httpx.get(collector.url + "/readyz").json() == {"status": "ready"}


def _poll(url: str, want: int, timeout: float = 5) -> httpx.Response:
    """The probe's reply once it is ``want`` (or the last one): a state change is seen by the
    next probe, but a probe under way when it happened may still answer the old state."""
    replies: list[httpx.Response] = []

    def answered() -> bool:
        replies.append(httpx.get(url, timeout=10))
        return replies[-1].status_code == want

    with contextlib.suppress(AssertionError):  # timed out: the caller's assert says what
        wait_for(answered, timeout)
    return replies[-1]


@contextlib.contextmanager
def unwritable(paths: list[Path]) -> Iterator[None]:
    """Make ``paths`` unwritable for a process that has them open, which chmod cannot do:
    permissions are checked at open(), and SQLite keeps its files open. The immutable flag
    (``chattr +i``) is checked at each write, root's included (tests here and in CI may run as
    root, where chmod stops nothing at all); setting it needs CAP_LINUX_IMMUTABLE and a file
    system that has it (ext4, xfs, btrfs; not tmpfs or overlayfs), else the test skips. The
    directory is made immutable too, so no journal or new file can be created beside them."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr (the immutable flag) to make an open file unwritable")
    done: list[Path] = []
    try:
        for path in paths:
            proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
            if proc.returncode != 0:
                pytest.skip(f"chattr +i failed here: {proc.stderr.decode().strip()}")
            done.append(path)
        # Check that writes really fail, through a descriptor opened before, as SQLite's.
        with pytest.raises(PermissionError), paths[0].open("ab") as f:
            f.write(b"x")
        yield
    finally:
        for path in done:
            subprocess.run(["chattr", "-i", str(path)], check=True)


def test_readyz_is_503_while_the_sqlite_file_is_unwritable_and_200_after(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """Batches are answered 503 and the probe says so, in every state of the WAL (after one
    write and after more): SQLite's write to its mapped WAL index, once the file can no
    longer be written, killed the process with SIGBUS in some of them."""
    db = tmp_path / "data" / "sqreen.db"
    db.parent.mkdir()
    token = add_key(str(db))
    collector = serve(str(db), None)
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), db.parent]

    def post_batch() -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.post(
            collector.url + "/v1/events", json=envelope([wire_event()]), headers=headers
        )

    for writes in (1, 2, 3):
        for _ in range(writes):  # (the WAL exists after the first)
            assert httpx.get(collector.url + "/readyz").status_code == 200
        with unwritable(files):
            reply = _poll(collector.url + "/readyz", 503)
            assert reply.status_code == 503
            assert reply.json()["reason"].startswith("database: ")
            assert httpx.get(collector.url + "/livez").status_code == 200
            if writes == 3:
                assert post_batch().status_code == 503
                assert post_batch().headers["retry-after"] == "5"
        if writes == 3:  # (the probe stays 503 for 10 s after a batch's 503: the batch says)
            assert post_batch().json()["accepted"] == 1
        else:
            assert _poll(collector.url + "/readyz", 200).json() == {"status": "ready"}
        assert httpx.get(collector.url + "/livez").status_code == 200


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_database_file_removed_or_replaced_under_the_collector_is_refused_not_acknowledged(
    tmp_path: Path, serve: Callable[..., ServeProcess], how: str
) -> None:
    """SQLite writes on into the file it holds open: batches were answered 200 and lost
    with the removed file, ``/readyz`` said ready, and the readers' connections made a new,
    empty file at the path (0644, tables missing: 500s with tracebacks)."""
    db = tmp_path / "sqreen.db"
    token = add_key(str(db))
    log = tmp_path / "serve.log"
    collector = serve(str(db), None, log=log)
    headers = {"Authorization": f"Bearer {token}"}

    def post_batch() -> httpx.Response:
        return httpx.post(
            collector.url + "/v1/events", json=envelope([wire_event()]), headers=headers
        )

    assert post_batch().json()["accepted"] == 1
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    if how == "replaced":
        open_storage(str(tmp_path / "other.db")).close()
        os.replace(tmp_path / "other.db", db)
    reply = post_batch()
    assert reply.status_code == 503 and reply.headers["retry-after"] == "5"
    probe = _poll(collector.url + "/readyz", 503)
    assert probe.status_code == 503
    assert "database file removed or replaced" in probe.json()["reason"]
    assert db.exists() == (how == "replaced")  # nothing made at the path
    for page in ("/v1/actions?version=0", "/healthz"):  # reads too: refused, never a 500
        assert httpx.get(collector.url + page, headers=headers).status_code in (200, 503)
    assert "Traceback" not in log.read_text()


#: Impossible travel's reads of a batch, on the writer's connection, once another connection
#: has committed (as ``--workers 2`` does all the time) and the files became unwritable: run in
#: a process of its own, since the SIGBUS it met killed the process.
_TRAVEL_UNWRITABLE = """
import subprocess, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tests.mmdb import write_mmdb
from tests.server.test_travel import body, city, login
from sqreen.server.auth import hash_token
from sqreen.server.intel import ImpossibleTravel, IpIntel
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.storage import open_storage

data = Path(sys.argv[1])
places = {"81.2.69.0/24": city("London", 51.5, -0.09, 10, "GB"),
          "1.128.0.0/16": city("Sydney", -33.8, 151.2, 20, "AU")}
mmdb = write_mmdb(data.parent / "city.mmdb", places, database_type="GeoLite2-City")
db = data / "sqreen.db"
storage = open_storage(str(db))
pipeline = IngestPipeline(storage, enrichers=[IpIntel.open([str(mmdb)]), ImpossibleTravel(storage)])
start = datetime.now(UTC) - timedelta(hours=1)
for i in range(3):
    pipeline(body(login(f"81.2.69.{i + 1}", start + timedelta(seconds=i), uid=str(i))))
other = open_storage(str(db))  # another connection commits
other.create_key("other", hash_token("x" * 40))
other.close()
files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), data]
for f in files:
    subprocess.run(["chattr", "+i", str(f)], check=True)
try:
    pipeline(body(login("1.128.0.1", start + timedelta(minutes=30), uid="0")))
except Exception as exc:
    print("refused:", type(exc).__name__, exc)
finally:
    for f in files:
        subprocess.run(["chattr", "-i", str(f)], check=True)
"""


def test_reads_on_the_writers_connection_are_refused_not_a_crash_once_unwritable(
    tmp_path: Path,
) -> None:
    probe, data = tmp_path / "probe", tmp_path / "data"
    probe.touch()
    data.mkdir()
    with unwritable([probe]):  # (skips where the immutable flag cannot be set)
        pass
    done = subprocess.run(
        [sys.executable, "-c", _TRAVEL_UNWRITABLE, str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "refused: OperationalError attempt to write a readonly database" in done.stdout


@pytest.mark.postgres
def test_readyz_follows_a_postgres_restart_and_the_pool_recovers_at_once(
    postgres_cluster: Cluster, postgres_db: str, serve: Callable[..., ServeProcess]
) -> None:
    """PostgreSQL stopped: 503 while it is down, 200 when it is back; liveness throughout. The
    collector's pool held several connections, all cut by the restart: the first requests after
    it must not be served on them (a batch would fail, and be retried, for nothing)."""
    token = add_key(postgres_db)
    collector = serve(postgres_db, None)
    sdk = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def post(n: int) -> int:
        return sdk.post(collector.url + "/v1/events", json=envelope([wire_event()])).status_code

    with sdk, ThreadPoolExecutor(4) as pool:
        assert set(pool.map(post, range(16))) == {200}  # several pooled connections
        assert httpx.get(collector.url + "/readyz").status_code == 200
        postgres_cluster.stop()
        try:
            reply = httpx.get(collector.url + "/readyz", timeout=10)
            assert reply.status_code == 503
            assert reply.json()["reason"].startswith("database: ")
            assert httpx.get(collector.url + "/livez").status_code == 200
        finally:
            postgres_cluster.start()
        # Every request after the restart is served, the first ones included.
        assert httpx.get(collector.url + "/readyz").json() == {"status": "ready"}
        assert [post(0) for _ in range(8)] == [200] * 8
        assert httpx.get(collector.url + "/livez").status_code == 200
