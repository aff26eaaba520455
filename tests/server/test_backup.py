"""``sqreen backup`` while a stream of batches is ingested, and ``sqreen restore``: the copy
opens, passes ``PRAGMA integrity_check`` and holds every event acknowledged before the backup
began; restored into a fresh path, ``sqreen events`` reads it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import pytest
from click.testing import CliRunner

from sqreen.server.cli import main
from sqreen.server.storage import open_storage

from .conftest import SQREEN, ServeProcess, add_key, envelope, wire_event


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SQREEN, *args], capture_output=True, text=True, timeout=60)


class Ingest(threading.Thread):
    """Batches of 20 events posted one after another until stopped; the ids of those the
    collector acknowledged (200), in order."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.acknowledged: list[str] = []
        self.failures: list[str] = []
        self.stopped = threading.Event()
        self.progress = threading.Condition()  # notified after each batch's reply

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(headers=headers, timeout=30) as client:
            while not self.stopped.is_set():
                batch = [wire_event(properties={"pad": "x" * 500}) for _ in range(20)]
                reply = client.post(self.url + "/v1/events", json=envelope(batch))
                with self.progress:
                    if reply.status_code == 200:
                        self.acknowledged += [e["id"] for e in batch]
                    else:
                        self.failures.append(f"{reply.status_code} {reply.text[:200]}")
                    self.progress.notify_all()

    def wait_for(self, count: int, timeout: float = 30) -> None:
        with self.progress:
            done = self.progress.wait_for(
                lambda: len(self.acknowledged) >= count or bool(self.failures), timeout
            )
        assert done and not self.failures, self.failures


def test_a_backup_under_ingest_holds_every_acknowledged_event_and_restores(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    db, copy, restored = tmp_path / "sqreen.db", tmp_path / "copy.db", tmp_path / "new.db"
    token = add_key(str(db))
    collector = serve(str(db), None)
    ingest = Ingest(collector.url, token)
    ingest.start()
    try:
        ingest.wait_for(400)  # about 60 pages of events: many 4-page steps
        before = set(ingest.acknowledged)  # acknowledged before the backup began
        made = cli("backup", str(copy), "--db", str(db), "--step-pages", "4")
        during = len(ingest.acknowledged) - len(before)
    finally:
        ingest.stopped.set()
        ingest.join(30)
    assert made.returncode == 0, made.stderr
    assert "backed up" in made.stdout
    assert during > 0 and not ingest.failures  # ingest went on, unhindered
    assert not Path(f"{copy}.tmp").exists()

    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one file
        in_copy = {row[0] for row in conn.execute("SELECT id FROM events")}
    finally:
        conn.close()
    assert before <= in_copy
    assert in_copy <= set(ingest.acknowledged)  # nothing half-stored either

    # In this process (a command's start costs seconds on a loaded machine): the same CLI.
    code, output = run("restore", str(copy), "--db", str(restored))
    assert code == 0, output
    code, output = run("events", "--db", str(restored), "--json", "--limit", "10000")
    assert code == 0, output
    assert {json.loads(line)["id"] for line in output.splitlines()} == in_copy


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture
def backed_up(tmp_path: Path) -> Path:
    """A backup of a database with one key."""
    add_key(str(tmp_path / "sqreen.db"))
    code, output = run("backup", str(tmp_path / "copy.db"), "--db", str(tmp_path / "sqreen.db"))
    assert code == 0, output
    return tmp_path / "copy.db"


def test_backup_and_restore_replace_a_file_only_with_force(backed_up: Path) -> None:
    db, live = str(backed_up.with_name("sqreen.db")), str(backed_up.with_name("live.db"))
    code, output = run("backup", str(backed_up), "--db", db)
    assert code == 1 and "exists: give --force" in output
    assert run("backup", str(backed_up), "--db", db, "--force")[0] == 0
    add_key(live)
    code, output = run("restore", str(backed_up), "--db", live)
    assert code == 1 and "stop the collector that uses it, and give --force" in output
    assert run("restore", str(backed_up), "--db", live, "--force")[0] == 0
    storage = open_storage(live)
    try:
        assert [k.name for k in storage.list_keys()] == ["test"]  # the backup's key only
    finally:
        storage.close()


def test_postgres_is_pointed_to_pg_dump_with_status_2(tmp_path: Path) -> None:
    for command in ("backup", "restore"):
        code, output = run(command, str(tmp_path / "x.db"), "--db", "postgresql://db/sqreen")
        assert code == 2 and "pg_dump --format=custom" in output and "pg_restore" in output


def test_restore_refuses_a_damaged_backup_a_foreign_file_or_a_newer_schema(
    backed_up: Path,
) -> None:
    target = str(backed_up.with_name("new.db"))
    newer = backed_up.with_name("newer.db")
    newer.write_bytes(backed_up.read_bytes())
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE schema_version SET version = 999")
    conn.commit()
    conn.close()
    code, output = run("restore", str(newer), "--db", target)
    assert code == 1 and "schema version 999, newer than" in output

    damaged = backed_up.with_name("damaged.db")
    data = bytearray(backed_up.read_bytes())
    page = 4096
    data[3 * page : 5 * page] = b"\xff" * (2 * page)  # two pages of the tables overwritten
    damaged.write_bytes(bytes(data))
    code, output = run("restore", str(damaged), "--db", target)
    assert code == 1 and ("integrity_check" in output or "malformed" in output), output

    foreign = backed_up.with_name("other.db")
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    code, output = run("restore", str(foreign), "--db", target)
    assert code == 1 and "not a sqreen database" in output
    assert not Path(target).exists()


def test_restore_refuses_a_schema_version_that_sqreen_never_wrote(backed_up: Path) -> None:
    """The backup's ``schema_version`` row is read, not trusted: text was a traceback, and
    -3 was restored ("schema version -3", status 0) into a database every command then
    refused."""
    target = backed_up.with_name("new.db")
    for version, said in (
        ("'abc'", "'abc'"),
        ("2.5", "2.5"),
        ("x'07'", "b'\\x07'"),
        ("-3", "-3"),
        ("0", "0"),
    ):
        odd = backed_up.with_name("odd.db")
        odd.write_bytes(backed_up.read_bytes())
        conn = sqlite3.connect(odd)
        conn.execute(f"UPDATE schema_version SET version = {version}")
        conn.commit()
        conn.close()
        code, output = run("restore", str(odd), "--db", str(target))
        assert code == 1, (version, output)
        assert output == (
            f"Error: {str(odd)!r} is not a sqreen database (its schema version is {said}, "
            "not a whole number from 1)\n"
        )
        assert not target.exists()


def test_a_backup_over_its_own_database_is_refused(backed_up: Path) -> None:
    """``--force`` does not rename a copy over the database it copies (under a running
    collector), by its path or by another name of the same file."""
    db = backed_up.with_name("sqreen.db")
    alias = backed_up.with_name("alias.db")
    alias.symlink_to(db)
    inode = db.stat().st_ino
    for target in (db, alias):
        code, output = run("backup", str(target), "--db", str(db), "--force")
        assert code == 1 and "is the database itself" in output, output
    assert db.stat().st_ino == inode


def test_a_target_that_cannot_be_written_is_an_error_not_a_traceback(backed_up: Path) -> None:
    """A destination whose folder is missing, is a file, or cannot be written in: the error
    names the folder and what is wrong with it (not SQLite's 'unable to open database file'
    about a .tmp file the user never named), for backup and restore alike."""
    folder = backed_up.parent / "missing"
    nowhere = str(folder / "x.db")
    for args in (
        ("backup", nowhere, "--db", str(backed_up)),
        ("restore", str(backed_up), "--db", nowhere),
    ):
        code, output = run(*args)
        assert code == 1, output
        assert (
            output
            == f"Error: cannot write {nowhere!r}: the folder {str(folder)!r} does not exist\n"
        )

    afile = backed_up.parent / "afile"
    afile.write_text("not a folder")
    inside = str(afile / "x.db")
    for args in (
        ("backup", inside, "--db", str(backed_up)),
        ("restore", str(backed_up), "--db", inside),
    ):
        code, output = run(*args)
        assert code == 1, output
        assert output == f"Error: cannot write {inside!r}: {str(afile)!r} is not a folder\n"
    assert afile.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any folder")
def test_a_folder_without_write_permission_is_named(backed_up: Path) -> None:
    locked = backed_up.parent / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        target = str(locked / "x.db")
        code, output = run("backup", target, "--db", str(backed_up))
        assert code == 1, output
        assert output == (
            f"Error: cannot write {target!r}: no permission to write in {str(locked)!r}\n"
        )
    finally:
        locked.chmod(0o755)


def test_a_backup_of_no_database_says_where_it_looked_as_other_commands_do(
    tmp_path: Path,
) -> None:
    for db in (tmp_path / "nothere.db", tmp_path):
        code, output = run("backup", str(tmp_path / "out.db"), "--db", str(db))
        what = "no such file" if db != tmp_path else "a directory, not a file"
        assert code == 1 and f"cannot open the SQLite database '{db}': {what}" in output, output
        assert "(give --db, or set SQREEN_DB)" in output
    assert not (tmp_path / "out.db").exists()
