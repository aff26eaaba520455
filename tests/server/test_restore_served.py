"""`sqreen restore --force` refuses a database a running `sqreen serve` uses (it would go on
from what it keeps in memory of the old one), and restores it once the collector stopped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
from click.testing import CliRunner, Result

from sqreen._blocking import Blocklist
from sqreen._client_ip import TrustedProxies
from sqreen._wire import parse_event
from sqreen.server.cli import main
from sqreen.server.storage import open_storage

from .conftest import ServeProcess, add_key, wire_event


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


def test_restore_is_refused_by_any_spelling_of_the_served_path(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """The collector serves the database through a symbolic link to the file; the restore
    names the file itself: the same lock, refused (the locks were named after the path as
    given: ``current.db-serve.lock`` beside ``live.db-serve.lock``)."""
    data = tmp_path / "data"
    data.mkdir()
    db, backup = str(data / "live.db"), str(tmp_path / "backup.db")
    (tmp_path / "current.db").symlink_to(data / "live.db")
    storage = open_storage(db)
    try:
        storage.insert_events([parse_event(wire_event())])
        assert run("backup", backup, "--db", db).exit_code == 0
    finally:
        storage.close()
    collector = serve(str(tmp_path / "current.db"), None)
    refused = run("restore", backup, "--db", db, "--force")
    assert refused.exit_code == 1 and "stop the collector first" in refused.output
    collector.stop()
    assert run("restore", backup, "--db", db, "--force").exit_code == 0


def test_sdks_holding_a_set_the_restore_undid_are_given_the_restored_one(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """The restored database counts on from its backup's version, which SDKs already hold
    with other blocks: restore, block by hand, serve, and the version an SDK holds is the
    new set's too ("unchanged": it kept a lifted block and never enforced the new one).
    ``sqreen serve`` takes the set past every version given before."""
    db, backup = str(tmp_path / "live.db"), str(tmp_path / "backup.db")
    token = add_key(db)
    assert run("block", "ip", "203.0.113.1", "--db", db).exit_code == 0
    assert run("backup", backup, "--db", db).exit_code == 0
    assert run("block", "ip", "203.0.113.2", "--db", db).exit_code == 0
    storage = open_storage(db)
    try:
        held = storage.action_set().to_json()  # what the SDKs hold: .1 and .2
    finally:
        storage.close()
    assert run("restore", backup, "--db", db, "--force").exit_code == 0
    assert run("block", "ip", "203.0.113.3", "--db", db).exit_code == 0  # the same version
    sdk = Blocklist(TrustedProxies(None))
    sdk.apply(held)
    collector = serve(db)
    reply = httpx.get(
        f"{collector.url}/v1/actions?version={held['version']}&diff=1&wait=0",
        headers={"Authorization": f"Bearer {token}"},
    )
    actions = reply.json()["actions"]
    assert actions["version"] > held["version"] and "unchanged" not in actions
    sdk.apply(actions)
    assert sdk.ip_block("203.0.113.3") is not None
    assert sdk.ip_block("203.0.113.2") is None
    assert sdk.ip_block("203.0.113.1") is not None
