"""``/livez`` and ``/readyz``: probes a load balancer calls without a key."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import pytest

from sqreen.server import probes

from .conftest import Collector, ServeProcess


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
    assert reply.json() == {"status": "unavailable", "reason": "database: OperationalError"}
    assert httpx.get(collector.url + "/livez").status_code == 200  # the process still is


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
    for _ in range(50):
        if httpx.get(collector.url + "/readyz").status_code == 200:
            break
        time.sleep(0.05)
    assert httpx.get(collector.url + "/readyz").json() == {"status": "ready"}


def test_a_real_serve_is_ready_on_its_database(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    collector = serve(str(tmp_path / "sqreen.db"), None)
    assert httpx.get(collector.url + "/livez").status_code == 200
    assert httpx.get(collector.url + "/readyz").json() == {"status": "ready"}
