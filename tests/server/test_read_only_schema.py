"""Read-only commands (`events`, `export`, `alerts`, `blocks`, `keys list`, `playbooks
test`) migrate nothing: a database of an older schema (a running older collector's) is
refused with how to upgrade it, and left as it was."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from sqreen.server.cli import main
from sqreen.server.storage import open_storage


def older(tmp_path: Path) -> str:
    """A database whose schema says it is one version behind (as an older collector's)."""
    db = str(tmp_path / "old.db")
    open_storage(db).close()
    conn = sqlite3.connect(db)
    try:
        (current,) = conn.execute("SELECT version FROM schema_version").fetchone()
        conn.execute("UPDATE schema_version SET version = ?", (current - 1,))
        conn.commit()
    finally:
        conn.close()
    return db


def version(db: str) -> int:
    conn = sqlite3.connect(db)
    try:
        (found,) = conn.execute("SELECT version FROM schema_version").fetchone()
        return int(found)
    finally:
        conn.close()


@pytest.mark.parametrize(
    "command",
    [
        ["events"],
        ["events", "--json"],
        ["export", "--format", "jsonl"],
        ["alerts"],
        ["blocks"],
        ["keys", "list"],
    ],
)
def test_a_read_only_command_refuses_an_older_schema(tmp_path: Path, command: list[str]) -> None:
    db = older(tmp_path)
    before = version(db)
    result = CliRunner().invoke(main, [*command, "--db", db])
    assert result.exit_code == 1, result.output
    assert f"the database schema is version {before}, older than this sqreen's" in result.output
    assert "start `sqreen serve` to upgrade it" in result.output
    assert version(db) == before  # not migrated


def test_a_current_schema_reads(tmp_path: Path) -> None:
    db = str(tmp_path / "current.db")
    open_storage(db).close()
    result = CliRunner().invoke(main, ["events", "--db", db])
    assert result.exit_code == 0, result.output


def test_serve_s_upgrade_of_an_older_schema_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Moved from one version to another without a word, before: the operator of an older
    collector sharing the database learnt it from that collector's errors."""
    from sqreen.server.storage.sqlite import SQLiteStorage

    db = str(tmp_path / "old.db")
    full = SQLiteStorage.MIGRATIONS
    monkeypatch.setattr(SQLiteStorage, "MIGRATIONS", full[:-2])
    open_storage(db).close()  # a database as the version two migrations back made it
    monkeypatch.setattr(SQLiteStorage, "MIGRATIONS", full)
    with caplog.at_level("WARNING", "sqreen.server"):
        open_storage(db).close()
        open_storage(str(tmp_path / "new.db")).close()  # a new database: no upgrade
    said = [r.getMessage() for r in caplog.records if "upgraded" in r.getMessage()]
    assert said == [
        f"sqreen: database schema upgraded from version {len(full) - 2} to {len(full)} (a "
        "collector of an older version sharing it must be stopped)"
    ]
    assert version(db) == len(full)
