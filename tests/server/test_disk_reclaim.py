"""A purge gives its WAL back, and `sqreen purge --vacuum` the freed pages: sizes measured on
real SQLite files, while another connection (a running collector's) keeps the WAL from being
removed at close."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from sqreen._wire import parse_event
from sqreen.server.cli import main
from sqreen.server.storage import open_storage, sqlite

from .conftest import wire_event

LIMIT = 256 * 1024


def size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


@pytest.fixture
def small_wal_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite, "WAL_LIMIT", LIMIT)


def filled(tmp_path: Path, events: int = 6000) -> str:
    db = str(tmp_path / "big.db")
    storage = open_storage(db)
    try:
        for n in range(0, events, 500):
            batch = [
                wire_event(user={"username": f"user-{n + i}"}, properties={"pad": "x" * 300})
                for i in range(500)
            ]
            storage.insert_events([parse_event(e) for e in batch])
    finally:
        storage.close()
    return db


@contextmanager
def another_connection(db: str) -> Iterator[None]:
    """An open connection, as a running collector holds: the last connection to close
    checkpoints and removes the WAL, which would hide what a purge leaves."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("SELECT count(*) FROM events").fetchall()
        yield
    finally:
        conn.close()


def test_a_purge_cuts_the_wal_it_grew(tmp_path: Path, small_wal_limit: None) -> None:
    db = filled(tmp_path)
    assert size(db) > 8 * LIMIT and size(db + "-wal") == 0
    with another_connection(db):
        storage = open_storage(db)
        try:
            assert storage.purge_older_than(0) == 6000
        finally:
            storage.close()
        assert size(db + "-wal") == 0  # it held a copy of every page the purge freed


def test_the_writers_wal_is_bounded(tmp_path: Path, small_wal_limit: None) -> None:
    storage = open_storage(str(tmp_path / "limit.db"))
    try:
        assert storage._writer.execute("PRAGMA journal_size_limit").fetchone() == (LIMIT,)  # type: ignore[attr-defined]
    finally:
        storage.close()


def test_purge_vacuum_gives_the_free_pages_back(tmp_path: Path, small_wal_limit: None) -> None:
    db = filled(tmp_path)
    full = size(db)
    with another_connection(db):
        plain = CliRunner().invoke(main, ["purge", "--days", "0", "--yes", "--db", db])
        assert plain.exit_code == 0, plain.output
        assert size(db) == full  # the pages are free, not given back
        assert size(db + "-wal") == 0
        result = CliRunner().invoke(main, ["purge", "--days", "0", "--yes", "--vacuum", "--db", db])
        assert result.exit_code == 0, result.output
        assert "vacuumed: " in result.stdout
        assert size(db) < full / 10
        assert size(db + "-wal") == 0
    storage = open_storage(db)
    try:
        assert storage.count_events() == 0
        storage.insert_events([parse_event(wire_event())])  # still a working database
        assert storage.count_events() == 1
    finally:
        storage.close()
