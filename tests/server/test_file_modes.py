"""The database, its WAL and shared memory, and backups are their owner's alone (0600)
when sqreen creates them, whatever the umask lets others read; an existing file keeps the
mode its operator gave it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sqreen._wire import parse_event
from sqreen.server.cli import main
from sqreen.server.storage import open_storage

from .conftest import wire_event


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The usual 022: files others can read unless created otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_database_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    db = str(tmp_path / "new.db")
    storage = open_storage(db)
    try:
        storage.insert_events([parse_event(wire_event())])
        storage.set_setting("explorer_secret", "s")
        for path in (db, db + "-wal", db + "-shm", db + "-writer.lock"):
            assert mode(path) == 0o600, path
    finally:
        storage.close()


def test_a_database_path_linked_to_a_file_not_made_yet_is_made_there(tmp_path: Path) -> None:
    """A symbolic link into a fresh volume: the file is made where it points, private (the
    first open refused the link itself, and no later connection creates a file)."""
    (tmp_path / "volume").mkdir()
    link = tmp_path / "sqreen.db"
    link.symlink_to(tmp_path / "volume" / "real.db")
    storage = open_storage(str(link))
    try:
        storage.insert_events([parse_event(wire_event())])
        assert storage.count_events() == 1
    finally:
        storage.close()
    assert (tmp_path / "volume" / "real.db").is_file() and link.is_symlink()
    assert mode(str(tmp_path / "volume" / "real.db")) == 0o600


def test_a_relative_database_path_holds_after_the_working_directory_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database's identity is checked at each transaction against the file the storage
    opened, not against what a relative path names from wherever the process is now."""
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path / "data")
    storage = open_storage("rel.db")
    try:
        monkeypatch.chdir(tmp_path)
        storage.insert_events([parse_event(wire_event())])
        assert storage.count_events() == 1
    finally:
        storage.close()
    assert not (tmp_path / "rel.db").exists()


def test_an_existing_databases_mode_is_kept(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    open_storage(str(db)).close()
    db.chmod(0o640)  # the operator's choice (a group of readers)
    open_storage(str(db)).close()
    assert mode(str(db)) == 0o640


def test_backups_and_restores_are_private(tmp_path: Path) -> None:
    db = str(tmp_path / "live.db")
    storage = open_storage(db)
    try:
        storage.insert_events([parse_event(wire_event())])
    finally:
        storage.close()
    backup = str(tmp_path / "backup.db")
    result = CliRunner().invoke(main, ["backup", backup, "--db", db])
    assert result.exit_code == 0, result.output
    assert mode(backup) == 0o600
    restored = str(tmp_path / "restored.db")
    result = CliRunner().invoke(main, ["restore", backup, "--db", restored])
    assert result.exit_code == 0, result.output
    assert mode(restored) == 0o600
