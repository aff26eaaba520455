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


def _temporary_files() -> set[str]:
    """The temporary files SQLite holds open in this process (``etilqs_*``, unlinked)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "etilqs_" in target:
            found.add(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
def test_ingest_journals_its_statements_in_memory_not_in_a_temporary_file(
    tmp_path: Path,
) -> None:
    """Each INSERT copies the pages it changes to a statement journal first; past 64 KiB
    that journal was a temporary file written a page at a time (a third of the store's CPU
    at 5 000 000 events). Looked at from inside the transaction, at every statement."""
    db = filled(tmp_path, 2000)  # pages that exist before the transaction get journalled
    storage = open_storage(db)
    seen: list[set[str]] = []
    try:
        storage._writer.set_trace_callback(lambda _: seen.append(_temporary_files()))
        batch = [
            wire_event(user={"username": f"later-{i}"}, properties={"pad": "y" * 300})
            for i in range(500)
        ]
        storage.insert_events([parse_event(e) for e in batch])
        storage._writer.set_trace_callback(None)
        temp_store = storage._writer.execute("PRAGMA temp_store").fetchone()
    finally:
        storage.close()
    assert len(seen) > 3
    assert set().union(*seen) == set()
    assert temp_store == (1,)  # sorts and ephemeral tables in files; journals as at BEGIN


def test_vacuum_copies_through_a_file_and_ingest_goes_on_journalling_in_memory(
    tmp_path: Path,
) -> None:
    """VACUUM builds a copy of the whole database in a temporary one: never in memory."""
    storage = open_storage(filled(tmp_path, 1000))
    statements: list[str] = []
    try:
        storage._writer.set_trace_callback(statements.append)
        assert storage.reclaim_space()
        storage._writer.set_trace_callback(None)
        assert storage._writer.execute("PRAGMA temp_store").fetchone() == (1,)
        assert storage._read("PRAGMA temp_store") == [(0,)]  # readers keep the default
    finally:
        storage.close()
    assert "VACUUM" in statements
