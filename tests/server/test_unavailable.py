"""The database gone for a while: 503 with Retry-After, said once a minute, not a 500 and a
traceback a request (and one every quarter second for the long-polls' version reader)."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from sqreen.server import unavailable as module
from sqreen.server.app import create_app
from sqreen.server.storage import Storage

from .conftest import envelope, wire_event


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("connection failed: Connection refused"),
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("database or disk is full"),
    ],
    ids=["postgresql-down", "sqlite-locked", "disk-full"],
)
def test_an_unavailable_database_is_answered_503_and_said_once_a_minute(
    sqlite_storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    def down(*args: Any) -> Any:
        raise error

    monkeypatch.setattr(module, "_REQUESTS", module.UnavailableLog("requests answered 503"))
    monkeypatch.setattr(sqlite_storage, "key_by_hash", down)
    app = create_app(sqlite_storage)
    headers = {"Authorization": "Bearer sq_" + "x" * 40}
    with caplog.at_level(logging.WARNING, "sqreen.server"), TestClient(app) as client:
        replies = [
            client.post("/v1/events", json=envelope([wire_event()]), headers=headers),
            client.post("/v1/heartbeat", json={}, headers=headers),
            client.get("/v1/actions", headers=headers),
            client.get("/v1/blocks", headers=headers),
        ]
    assert [r.status_code for r in replies] == [503] * 4
    assert {r.headers["retry-after"] for r in replies} == {"5"}
    assert replies[0].json() == {"error": "the database is unavailable: retry later"}
    said = [r for r in caplog.records if "database is unavailable" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None
    assert type(error).__name__ in said[0].getMessage()


def test_a_bug_s_sql_is_still_a_500_with_its_traceback(
    sqlite_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite says "no such column" with the class it says "locked" with: not unavailable."""

    def bug(*args: Any) -> Any:
        raise sqlite3.OperationalError("no such column: nope")

    monkeypatch.setattr(sqlite_storage, "key_by_hash", bug)
    app = create_app(sqlite_storage)
    with TestClient(app, raise_server_exceptions=False) as client:
        reply = client.get("/v1/actions", headers={"Authorization": "Bearer sq_" + "x" * 40})
    assert reply.status_code == 500


def test_the_log_says_how_many_times_it_was_met(caplog: pytest.LogCaptureFixture) -> None:
    log = module.UnavailableLog("things not done", every=3600)
    with caplog.at_level(logging.WARNING, "sqreen.server"):
        for _ in range(50):
            log.met(sqlite3.OperationalError("database is locked"))
        log.every = 0
        log.met(sqlite3.OperationalError("database is locked"))
    first, second = (r.getMessage() for r in caplog.records)
    assert "things not done (1 time since" in first
    assert "things not done (50 times since" in second
