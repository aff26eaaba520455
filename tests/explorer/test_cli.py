"""Setting the admin password: ``sqreen admin-password`` and ``SQREEN_ADMIN_PASSWORD``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sqreen.server.cli import main
from sqreen.server.explorer import apply_env_password
from sqreen.server.explorer._secrets import PASSWORD_SETTING, verify_password
from sqreen.server.storage import Storage, open_storage


def stored(db: str) -> str | None:
    storage = open_storage(db)
    try:
        return storage.get_setting(PASSWORD_SETTING)
    finally:
        storage.close()


def test_admin_password_from_stdin(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    result = CliRunner().invoke(
        main, ["admin-password", "--password-stdin", "--db", db], input="a fine password\n"
    )
    assert result.exit_code == 0, result.output
    hashed = stored(db)
    assert hashed is not None and hashed.startswith("scrypt$")
    assert "a fine password" not in hashed
    assert verify_password("a fine password", hashed)


def test_admin_password_prompts_twice(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    mismatch = CliRunner().invoke(
        main, ["admin-password", "--db", db], input="first password\nsecond password\n" * 3
    )
    assert mismatch.exit_code != 0 and stored(db) is None
    ok = CliRunner().invoke(
        main, ["admin-password", "--db", db], input="same password\nsame password\n"
    )
    assert ok.exit_code == 0, ok.output
    assert verify_password("same password", stored(db))


def test_admin_password_without_a_terminal_or_input_says_to_pipe_it(tmp_path: Path) -> None:
    """Run from a script with no input (cron, CI): click said only "Aborted!"."""
    db = str(tmp_path / "s.db")
    result = CliRunner().invoke(main, ["admin-password", "--db", db], input="")
    assert result.exit_code == 2 and stored(db) is None
    assert "no password read" in result.output and "--password-stdin" in result.output
    assert "Aborted" not in result.output


def test_admin_password_refuses_a_short_one(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    result = CliRunner().invoke(
        main, ["admin-password", "--password-stdin", "--db", db], input="short\n"
    )
    assert result.exit_code == 1
    assert "at least 8 characters" in result.output
    assert stored(db) is None


def test_the_environment_sets_the_password_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage: Storage = open_storage(str(tmp_path / "s.db"))
    try:
        assert not apply_env_password(storage)  # not set: nothing happens
        monkeypatch.setenv("SQREEN_ADMIN_PASSWORD", "from the environment")
        assert apply_env_password(storage)
        first = storage.get_setting(PASSWORD_SETTING)
        # The same password at the next start: not re-hashed, so sessions survive restarts.
        assert not apply_env_password(storage)
        assert storage.get_setting(PASSWORD_SETTING) == first
        monkeypatch.setenv("SQREEN_ADMIN_PASSWORD", "another from the environment")
        assert apply_env_password(storage)
        assert verify_password(
            "another from the environment", storage.get_setting(PASSWORD_SETTING)
        )
        monkeypatch.setenv("SQREEN_ADMIN_PASSWORD", "short")
        with pytest.raises(ValueError, match="at least 8"):
            apply_env_password(storage)
    finally:
        storage.close()


def test_serve_refuses_a_short_password_from_the_environment(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["serve", "--db", str(tmp_path / "s.db"), "--port", "0"],
        env={"SQREEN_ADMIN_PASSWORD": "short"},
    )
    assert result.exit_code == 1
    assert "SQREEN_ADMIN_PASSWORD: the admin password must be at least 8" in result.output


def test_the_start_up_hint_names_the_database_the_collector_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sqreen serve --db x.db`` said to run ``sqreen admin-password``, which, run as said,
    set the password of ``./sqreen.db``: the hint now carries the ``--db``, and run as said
    it unlocks the served database."""
    import re
    import shlex

    from sqreen.server._cli_common import with_db
    from sqreen.server.explorer._cli import explorer_startup

    monkeypatch.delenv("SQREEN_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "dir with space" / "x.db")
    Path(db).parent.mkdir()
    said: list[str] = []
    storage = open_storage(db)
    try:
        explorer_startup(storage, "http://127.0.0.1:8000", said.append, db=db)
    finally:
        storage.close()
    (hint,) = [s for s in said if "admin-password" in s]
    (command,) = re.findall(r"`([^`]+)`", hint)
    argv = shlex.split(command)
    assert argv[0] == "sqreen"
    result = CliRunner().invoke(main, [*argv[1:], "--password-stdin"], input="a fine password\n")
    assert result.exit_code == 0, result.output
    assert stored(db) is not None and not (tmp_path / "sqreen.db").exists()
    assert with_db("sqreen keys create", "sqreen.db") == "`sqreen keys create`"
    url = "postgresql://u:secret@db/sqreen"
    assert "secret" not in with_db("sqreen keys create", url)
    monkeypatch.setenv("SQREEN_DB", db)
    assert with_db("sqreen keys create", db) == "`sqreen keys create`"  # read from SQREEN_DB
