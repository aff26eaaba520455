"""Several collectors on one PostgreSQL, and a collector killed mid-stream."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import pytest

import sqreen
from sqreen.server.explorer import set_admin_password
from sqreen.server.explorer._login import LoginThrottle
from sqreen.server.storage import EventFilter, open_storage
from tests.explorer.conftest import PASSWORD, login

from .conftest import ServeProcess, add_key, envelope, free_port, wire_event


def send_every_batch_twice(db: str, urls: list[str]) -> None:
    """Four senders post every batch to two collectors (or twice to one) at once, as an SDK
    retrying through a load balancer might: each event is stored once, and the replies count
    it once."""
    token = add_key(db)
    batches = [[wire_event(properties={"n": b * 100 + i}) for i in range(100)] for b in range(24)]
    accepted: list[int] = []
    duplicates: list[int] = []
    errors: list[str] = []

    def send(url: str, mine: list[list[dict[str, object]]], reverse: bool) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            for batch in mine:
                events = list(reversed(batch)) if reverse else batch
                reply = client.post(url + "/v1/events", json=envelope(events))
                if reply.status_code != 200:
                    errors.append(reply.text)
                    continue
                accepted.append(reply.json()["accepted"])
                duplicates.append(reply.json()["duplicates"])

    threads = [
        threading.Thread(target=send, args=(urls[s], batches[half::2], s == 1))
        for half in (0, 1)
        for s in (0, 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = sum(len(b) for b in batches)
    assert sum(accepted) == total and sum(duplicates) == total
    storage = open_storage(db)
    try:
        assert storage.count_events() == total
        numbers = [e.properties["n"] for e in storage.query_events(limit=total + 1)]
        assert sorted(numbers) == list(range(total))
        assert storage.count_by("user.uid") == [("42", total)]
    finally:
        storage.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_two_collectors_on_one_postgres_lose_and_duplicate_nothing(
    postgres_db: str, serve: Callable[..., ServeProcess]
) -> None:
    send_every_batch_twice(postgres_db, [serve(postgres_db).url, serve(postgres_db).url])


@pytest.mark.slow
def test_several_workers_on_one_sqlite_file_lose_and_duplicate_nothing(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    db = str(tmp_path / "workers.db")
    url = serve(db, None, "--workers", "2").url
    send_every_batch_twice(db, [url, url])


@pytest.mark.slow
def test_one_worker_storing_waiting_bodies_together_loses_and_duplicates_nothing(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """Four senders on one process: the bodies that wait for it are stored together, copies
    of one batch among them (one stored, the other all duplicates)."""
    db = str(tmp_path / "groups.db")
    url = serve(db).url
    send_every_batch_twice(db, [url, url])


@pytest.mark.slow
def test_sigkill_mid_stream_then_restart_stores_every_event_once(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """The SDK streams events; the collector dies by SIGKILL between (or during) batches and
    comes back on the same port; once the SDK has retried, every event is there exactly once."""
    db = str(tmp_path / "crash.db")
    token = add_key(db)
    port = free_port()
    server = serve(db, port)
    client = sqreen.init(
        endpoint=server.url, token=token, flush_interval=0.05, batch_size=50, app_name="crash"
    )
    total = 3000
    tracked = threading.Event()

    def stream() -> None:
        for n in range(total):
            sqreen.track("crash.test", properties={"n": n}, user_identifiers={"uid": str(n % 7)})
            if n % 50 == 0:
                time.sleep(0.01)
        tracked.set()

    sender = threading.Thread(target=stream)
    sender.start()

    def stored() -> int:
        storage = open_storage(db)
        try:
            return storage.count_events()
        finally:
            storage.close()

    deadline = time.monotonic() + 30
    while stored() < 500 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill(signal.SIGKILL)
    assert stored() < total  # killed mid-stream
    time.sleep(0.3)  # batches fail meanwhile, and are retried
    serve(db, port)
    sender.join()
    assert tracked.is_set()
    assert sqreen.flush(timeout=60)

    storage = open_storage(db)
    try:
        assert storage.count_events() == total
        found = storage.query_events(EventFilter(name="crash.test"), limit=total + 1)
        assert sorted(e.properties["n"] for e in found) == list(range(total))
    finally:
        storage.close()
    stats = client.stats()
    assert stats["sent"] == total and sum(stats["dropped"].values()) == 0


@pytest.mark.slow
def test_failed_logins_across_workers_stay_within_one_limit(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """The workers count attempts in the database: together they allow no more than one
    process would, wherever the kernel sends each attempt (each comes on a new connection)."""
    db = str(tmp_path / "login.db")
    storage = open_storage(db)
    try:
        set_admin_password(storage, PASSWORD)
    finally:
        storage.close()
    url = serve(db, None, "--workers", "2").url
    statuses = []
    for _ in range(24):
        with httpx.Client(base_url=url) as client:
            statuses.append(login(client, "not the password", check=False).status_code)  # type: ignore[arg-type]
    assert set(statuses) == {401, 429}
    assert statuses.count(401) <= LoginThrottle.LIMIT  # whichever worker each attempt met
