"""`sqreen restore --force` refuses a database a running `sqreen serve` uses (it would go on
from what it keeps in memory of the old one), and restores it once the collector stopped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from sqreen._wire import parse_event
from sqreen.server.cli import main
from sqreen.server.storage import open_storage

from .conftest import ServeProcess, wire_event


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def count(db: str) -> int:
    storage = open_storage(db)
    try:
        return storage.count_events()
    finally:
        storage.close()


def test_restore_over_a_served_database_is_refused(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    db, backup = str(tmp_path / "live.db"), str(tmp_path / "backup.db")
    storage = open_storage(db)
    try:
        storage.insert_events([parse_event(wire_event())])
        assert run("backup", backup, "--db", db).exit_code == 0
        storage.insert_events([parse_event(wire_event())])
    finally:
        storage.close()
    for extra in ((), ("--workers", "2")):
        collector = serve(db, None, *extra)
        refused = run("restore", backup, "--db", db, "--force")
        assert refused.exit_code == 1
        assert "a collector (sqreen serve) is using" in refused.output
        assert "stop the collector first" in refused.output
        assert count(db) == 2  # untouched
        collector.stop()
    restored = run("restore", backup, "--db", db, "--force")
    assert restored.exit_code == 0, restored.output
    assert count(db) == 1
