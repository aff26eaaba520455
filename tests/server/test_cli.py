"""The ``sqreen`` command, through click's CliRunner and as a real console script."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import httpx2 as httpx
import pytest
from click.testing import CliRunner, Result

import sqreen
from sqreen._wire import parse_event
from sqreen.server import _cli_events
from sqreen.server.cli import main
from sqreen.server.importer import import_lines, read_lines
from sqreen.server.storage import EventFilter, Follower, Storage, follow, newer, open_storage
from sqreen.server.storage._rows import event_record

from .conftest import SQREEN, ServeProcess, envelope, wait_for, wire_event


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "cli.db")


def run(*args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def stored_count(db: str) -> int:
    """How many events the database at ``db`` holds."""
    storage = open_storage(db)
    try:
        return storage.count_events()
    finally:
        storage.close()


def test_keys_create_list_revoke(db: str) -> None:
    created = run("keys", "create", "--name", "ci", "--db", db)
    token = created.stdout.strip()
    assert token.startswith("sqk_") and len(token) > 40
    assert "shown only now" in created.stderr
    storage = open_storage(db)
    try:
        assert token not in Path(db).read_bytes().decode("latin-1")  # only its hash is stored
        (key,) = storage.list_keys()
        assert key.name == "ci" and key.scope == "ingest"
    finally:
        storage.close()
    admin = run("keys", "create", "--name", "ops", "--scope", "admin", "--db", db)
    assert "created admin key #2 (ops)" in admin.stderr
    listed = run("keys", "list", "--db", db).output.splitlines()
    assert listed[0].split()[:3] == ["#1", "ci", "ingest"] and "active" in listed[0]
    assert listed[1].split()[:3] == ["#2", "ops", "admin"]
    wrong = run("keys", "create", "--scope", "root", "--db", db, ok=False)
    assert wrong.exit_code == 2 and "'root' is not one of 'ingest', 'admin'" in wrong.output
    assert "revoked key #1" in run("keys", "revoke", "1", "--db", db).output
    assert "revoked" in run("keys", "list", "--db", db).output
    again = run("keys", "revoke", "1", "--db", db, ok=False)
    assert again.exit_code == 1 and "no active key #1" in again.output


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * 101, "at most 100 characters, not 101"),
        ("shop\x1b[2J", "must not hold '\\x1b'"),
        ("shop\u202eppa", "must not hold '\\u202e'"),
        ("shop\nadmin", "must not hold '\\n'"),
    ],
)
def test_a_key_name_people_cannot_read_is_refused(db: str, name: str, error: str) -> None:
    """A key's name is listed and shown on the explorer's agents: one line of some text."""
    refused = run("keys", "create", "--name", name, "--db", db, ok=False)
    assert refused.exit_code == 2 and f"Invalid value for '--name': {error}" in refused.output
    assert not Path(db).exists()  # nothing created, not even the database


def test_db_defaults_to_sqreen_db_env(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQREEN_DB", db)
    run("keys", "create")
    assert Path(db).exists()


@pytest.mark.parametrize(
    ("variable", "value", "option", "command"),
    [
        ("SQREEN_MAX_BLOCKS", "abc", "--max-blocks", ("serve", "--port", "1")),
        ("SQREEN_LOG_FORMAT", "xml", "--log-format", ("serve", "--port", "1")),
        ("SQREEN_DB", "ftp://x/y", "--db", ("events",)),
        ("SQREEN_EXPORT_FORMAT", "csv", "--export-format", ("serve", "--port", "1")),
    ],
)
def test_a_bad_value_from_the_environment_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, option: str, command: tuple[str]
) -> None:
    """The command line did not give the option: the error says where the value came from."""
    monkeypatch.setenv(variable, value)
    refused = CliRunner().invoke(main, list(command))
    said = f"Invalid value for '{option}' ({variable} in the environment)"
    assert refused.exit_code == 2 and said in refused.output, refused.output
    monkeypatch.delenv(variable)
    given = CliRunner().invoke(main, [*command, option, value])
    assert given.exit_code == 2 and f"Invalid value for '{option}'" in given.output
    assert variable not in given.output


def test_a_file_or_url_from_the_environment_refused_after_parsing_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    db = str(tmp_path / "x.db")
    monkeypatch.setenv("SQREEN_SSL_CERTFILE", str(tmp_path / "none.pem"))
    refused = CliRunner().invoke(main, ["serve", "--db", db, "--port", "1"])
    assert "--ssl-certfile (SQREEN_SSL_CERTFILE in the environment) " in refused.output
    monkeypatch.delenv("SQREEN_SSL_CERTFILE")
    monkeypatch.setenv("SQREEN_EXPORT", "ftp://u:secret@h/x")
    refused = CliRunner().invoke(main, ["serve", "--db", db, "--port", "1"])
    assert "--export (SQREEN_EXPORT in the environment)" in refused.output, refused.output
    assert "secret" not in refused.output


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("", "empty: a SQLite file's path, or a postgresql:// URL"),
        ("host=db.internal dbname=sqreen password=s3cret", "a key=value connection string"),
        ("postgresql:sqreen", "postgresql:...: write the URL as postgresql://USER:PASSWORD@"),
        ("postgresql+psycopg://u:s3cret@db/sqreen", "postgresql+psycopg://...: write the URL"),
        (" postgresql://u:s3cret@db/sqreen", "spaces around it"),
        ("mysql://u:s3cret@db/sqreen", "mysql://... is no database this collector opens"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "keys create", "blocks", "events"])
def test_a_db_that_is_no_sqlite_path_nor_postgresql_url_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, said: str, command: str
) -> None:
    """Opened as a SQLite file named after it (password included) before: a collector
    that counted alone, a key created in a database nobody reads. Never repeated: it may
    hold a password."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*command.split(), "--db", value])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--db': {said}" in result.output
    assert "s3cret" not in result.output
    assert list(tmp_path.iterdir()) == []  # no file made


def test_a_postgresql_url_s_scheme_in_any_case_is_postgresql() -> None:
    from sqreen.server._cli_common import checked_db

    assert checked_db("POSTGRES://u@db/sqreen") == "postgresql://u@db/sqreen"
    assert checked_db("PostgreSQL://u@db/sqreen") == "postgresql://u@db/sqreen"
    assert checked_db("backup:2026.db") == "backup:2026.db"  # a path with a colon
    assert checked_db("sqlite:///var/lib/sqreen.db") == "sqlite:///var/lib/sqreen.db"


def test_block_unblock_and_blocks(db: str) -> None:
    out = run(
        "block",
        "user",
        "uid=42",
        "email=a@example.com",
        "--for",
        "1h",
        "--reason",
        "brute force",
        "--db",
        db,
    ).output
    assert out.startswith("blocked #1 user uid=42 email=a@example.com until ")
    assert "brute force" in out
    assert (
        "blocked #2 ip 203.0.113.0/24"
        in run("block", "ip", "203.0.113.7/24", "--for", "30m", "--db", db).output
    )
    assert "until lifted" in run("block", "ip", "2001:db8::1", "--db", db).output

    storage = open_storage(db)
    try:
        actions = storage.action_set().to_json()
        assert actions["version"] == 3
        assert actions["items"][0]["user"] == {"uid": "42", "email": "a@example.com"}
        assert actions["items"][0]["expires_in"] == pytest.approx(3600, abs=10)
        assert actions["items"][2]["ip"] == "2001:db8::1/128"
    finally:
        storage.close()

    listing = run("blocks", "--db", db).output
    assert "version 3: 3 active" in listing
    assert " by cli:" in listing.splitlines()[1]  # who made it
    assert (
        "unblocked #1" in run("unblock", "user", "uid=42", "email=a@example.com", "--db", db).output
    )
    assert "unblocked #2" in run("unblock", "ip", "203.0.113.0/24", "--db", db).output
    assert "unblocked #3" in run("unblock", "3", "--db", db).output
    again = run("unblock", "3", "--db", db, ok=False).output  # not as if #3 never was
    assert "not in force: #3 ip 2001:db8::1/128 until " in again and "(lifted " in again
    assert "version 6: 0 active" in run("blocks", "--db", db).output
    assert "(lifted " in run("blocks", "--all", "--db", db).output.splitlines()[1]
    assert len(run("blocks", "--all", "--json", "--db", db).output.splitlines()) == 3
    newest = run("blocks", "--all", "--limit", "2", "--json", "--db", db).output.splitlines()
    assert [json.loads(line)["id"] for line in newest] == ["3", "2"]
    assert "--limit" in run("blocks", "--all", "--limit", "0", "--db", db, ok=False).output


def test_unblocking_ids_says_which_lifted_nothing_and_expired_blocks_say_so(db: str) -> None:
    assert "blocked #1" in run("block", "ip", "198.51.100.216", "--for", "5m", "--db", db).output
    result = run("unblock", "999", "1", "--db", db, ok=False)
    assert result.exit_code == 1 and "unblocked #1" in result.output
    assert "no block #999" in result.output  # a mistyped id is not passed over
    assert "blocked #2" in run("block", "ip", "198.51.100.217", "--for", "1s", "--db", db).output
    wait_for(lambda: "(expired)" in run("blocks", "--all", "--db", db).output)
    lines = run("blocks", "--all", "--db", db).output.splitlines()
    assert next(line for line in lines if line.startswith("#2")).endswith("(expired)")
    expired = run("unblock", "2", "--db", db, ok=False).output
    assert "not in force: #2 ip 198.51.100.217/32" in expired and expired.endswith("(expired)\n")
    assert "(lifted " in next(line for line in lines if line.startswith("#1"))


@pytest.mark.parametrize("bad", ["99999999999999999999999", "-5", "1.5e3"])
def test_unblocking_a_number_that_is_no_block_id_names_it(db: str, bad: str) -> None:
    result = run("unblock", "--db", db, "--", "1", bad, ok=False)
    assert result.exit_code == 2
    assert f"{bad} is not a block id" in result.output and "sqreen blocks" in result.output


def test_unblocking_a_network_says_what_still_blocks_inside_it(db: str) -> None:
    """A block is lifted by its own target: a /32 blocked on its own inside a /24 stays
    blocked when the /24 is lifted, and the CLI says so (the same target again extends)."""
    assert "blocked #1 ip 203.0.113.0/24" in run("block", "ip", "203.0.113.0/24", "--db", db).output
    inner = run("block", "ip", "203.0.113.66", "--for", "10m", "--db", db).output
    assert "blocked #2 ip 203.0.113.66/32" in inner
    again = run("block", "ip", "203.0.113.0/24", "--for", "2h", "--db", db).output
    assert "#1" in again and "#3" not in again  # the same target: the block in force
    run("block", "ip", "198.51.100.0/24", "--db", db)  # elsewhere: not mentioned
    out = run("unblock", "ip", "203.0.113.0/24", "--db", db).output.splitlines()
    assert out[0].startswith("unblocked #1 ip 203.0.113.0/24")
    assert [line.split(" until")[0] for line in out[1:]] == [
        "still blocked by #2 ip 203.0.113.66/32"
    ]
    last = run("unblock", "ip", "203.0.113.66", "--db", db).output.splitlines()
    assert len(last) == 1 and last[0].startswith("unblocked #2")
    # An address with no block of its own, inside a blocked network: that block is named.
    inside = run("unblock", "ip", "198.51.100.7", "--db", db, ok=False)
    assert inside.exit_code == 1
    assert "no active block matches; still blocked by #3 ip 198.51.100.0/24" in inside.output


def test_a_user_is_one_target_in_any_spelling(db: str) -> None:
    """The SDKs compare identifiers folded (case, spaces): so do placing a block again (the
    block in force is extended, not doubled) and unblocking; what still refuses is said."""
    first = run("block", "user", "email=Bob@Example.com", "--db", db).output
    assert first.startswith("blocked #1 user email=Bob@Example.com")
    again = run("block", "user", "email=bob@example.COM", "--for", "1h", "--db", db).output
    assert "#1" in again and "#2" not in again
    run("block", "user", "email=bob@example.com", "uid=7", "--db", db)  # #2, a wider one
    out = run("unblock", "user", "uid=7", "email=BOB@example.com", "--db", db).output
    lines = [line.split(" until")[0] for line in out.splitlines()]
    assert lines == [
        "unblocked #2 user email=bob@example.com uid=7",
        "still blocked by #1 user email=Bob@Example.com",
    ]
    none = run("unblock", "user", "email=bob@example.com", "uid=8", "--db", db, ok=False)
    assert none.exit_code == 1
    assert "no active block matches; still blocked by #1 user email=Bob@Example.com" in (
        none.output
    )
    assert "unblocked #1" in run("unblock", "user", "email=bob@EXAMPLE.com", "--db", db).output
    assert "version 4: 0 active" in run("blocks", "--db", db).output
    run("block", "user", "username=bob", "uid=7", "--db", db)  # #3
    wider = run("unblock", "user", "username=BOB", "--db", db, ok=False)
    assert wider.exit_code == 1
    assert "no active block matches; a block on more identifiers: #3 user username=bob uid=7" in (
        wider.output
    )


@pytest.mark.parametrize("network", ["2001:db8:1::%eth0/48", "2001:db8::1%1"])
def test_a_network_with_an_ipv6_zone_is_refused(db: str, network: str) -> None:
    # Python reads the zone into the network; no SDK would enforce the block.
    refused = run("block", "ip", network, "--db", db, ok=False)
    assert refused.exit_code != 0 and "an IPv6 zone (%...)" in refused.output, refused.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["block", "user", "uid"], "not key=value"),
        (["block", "user", "uid=42", "--for", "soon"], "not a duration"),
        (["block", "user", "uid=42", "--for", "0s"], "must be positive"),
        (["block", "ip", "10.0.0.0/8"], "too wide"),
        (["block", "ip", "2001:db8::/32"], "too wide"),
        (["block", "ip", "example.com"], "not an IP address"),
        (["block", "ip", "127.0.0.1/32"], "covers loopback (127.0.0.0/8): every SDK trusts"),
        (["block", "ip", "1.2.3.4", "--reason", "x" * 513], "at most 512 characters"),
        (["block", "user", "uid="], "IDENTIFIERS: user.uid: values must be 1 to"),
        (
            ["block", "ip", "1.2.3.4", "--for", "-1h"],
            "Invalid value for --for: '-1h' is not a duration",
        ),
        (["unblock", "ip", "nonsense"], "not an IP address"),
        (["unblock", "nonsense"], "unblock takes"),
        (["events", "--since", "yesterday"], "neither a duration"),
        (["events", "--since", "4000d"], "'4000d': must be positive and at most 3650 days"),
        (["events", "--since", "1d", "--until", "3d"], "--until: must be later than --since"),
        (["export", "--since", "2h", "--until", "2h"], "--until: must be later than --since"),
        # Empty (an unset shell variable) is not "no bound": it exported everything.
        (["export", "--since", "", "--until", ""], "--since: '' is neither a duration"),
        (["events", "--until", ""], "--until: '' is neither a duration"),
        (["events", "--since", "0001-01-01T00:00:00+05:00"], "between 1970 and 9000"),
        (["events", "--until", "9999-12-31T23:59:59-23:00"], "between 1970 and 9000"),
        (["events", "--user", "uid"], "not key=value"),
        (["keys", "revoke", "abc"], "not a valid integer"),
        # Past the database's integers and SQLite's C int: an OverflowError's traceback.
        (["keys", "revoke", "99999999999999999999"], "not in the range 1<=x<=9223372036854775807"),
        (["backup", "out.db", "--step-pages", "2147483648"], "not in the range 1<=x<=2147483647"),
        (["block", "ip", "64:ff9b::/96"], "/112 or narrower"),
    ],
)
def test_bad_input_is_a_clear_error(db: str, args: list[str], message: str) -> None:
    result = run(*args, "--db", db, ok=False)
    assert result.exit_code == 2
    assert message in result.output
    storage = open_storage(db)
    try:
        assert storage.list_blocks(ended=100) == []
    finally:
        storage.close()


def test_a_loopback_block_made_before_the_rule_can_still_be_lifted(db: str) -> None:
    storage = open_storage(db)
    try:
        old = storage.create_block("block_ip", ip="127.0.0.1/32")
    finally:
        storage.close()
    assert (
        f"unblocked #{old.id} ip 127.0.0.1/32"
        in run("unblock", "ip", "127.0.0.1", "--db", db).output
    )


def test_events_filters_and_json(db: str) -> None:
    storage = open_storage(db)
    try:
        storage.insert_events(
            [
                parse_event(wire_event(name="auth.login.success", user={"uid": "1"})),
                parse_event(wire_event(user={"uid": "2"}, properties={"plan": "pro"})),
                parse_event(wire_event(user={"uid": "2"}, timestamp="2000-01-01T00:00:00Z")),
            ],
            app="shop",
        )
    finally:
        storage.close()
    all_lines = run("events", "--db", db).output.splitlines()
    assert len(all_lines) == 3
    assert "auth.login.success" in all_lines[0]  # oldest first, like a tail
    assert len(run("events", "--user", "uid=2", "--db", db).output.splitlines()) == 2
    assert len(run("events", "--prop", "plan=pro", "--db", db).output.splitlines()) == 1
    assert len(run("events", "--name", "auth.login.success", "--db", db).output.splitlines()) == 1
    recent = run("events", "--since", "3650d", "--db", db).output.splitlines()
    assert len(recent) == 2
    limited = run("events", "--limit", "1", "--json", "--db", db).output.splitlines()
    assert json.loads(limited[0])["user"] == {"uid": "2"}
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert run("events", "--until", since, "--db", db).output.count("\n") == 1


def test_import_reports_bad_lines_and_is_idempotent(db: str, tmp_path: Path) -> None:
    good = [wire_event(), wire_event()]
    no_id = wire_event(timestamp="2026-01-01T00:00:00Z")
    del no_id["id"]
    lines = [
        json.dumps(good[0]),
        "{broken",
        "",
        json.dumps(no_id),
        json.dumps(wire_event(name="bad\x00name")),
        json.dumps(good[1]),
    ]
    file = tmp_path / "events.jsonl"
    file.write_text("\n".join(lines) + "\n")
    first = run("import", str(file), "--app", "legacy", "--db", db, ok=False)
    assert first.exit_code == 1
    assert "6 lines: 3 events stored, 0 already stored, 2 bad" in first.stdout
    assert f"{file}:2: line: malformed JSON" in first.stderr
    assert f"{file}:5: name:" in first.stderr
    second = run("import", str(file), "--db", db, ok=False)
    assert "0 events stored, 3 already stored, 2 bad" in second.stdout
    storage = open_storage(db)
    try:
        assert storage.count_events() == 3
        assert {e.app for e in storage.query_events()} == {"legacy"}
    finally:
        storage.close()
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps(wire_event()) + "\n")
    assert "1 events stored" in run("import", str(clean), "--db", db).stdout


def test_import_skips_what_an_sdk_sent_already(db: str, tmp_path: Path) -> None:
    """Ids are unique per API key, and an import has none: an export of this collector
    imported back (events an SDK sent with its key) stores nothing again."""
    sent = [wire_event(), wire_event()]
    storage = open_storage(db)
    try:
        storage.insert_events([parse_event(e) for e in sent], key_id=7)
    finally:
        storage.close()
    file = tmp_path / "export.jsonl"
    file.write_text("".join(json.dumps(e) + "\n" for e in [*sent, wire_event()]))
    out = run("import", str(file), "--db", db).stdout
    assert "3 lines: 1 events stored, 2 already stored" in out
    assert stored_count(db) == 3


def test_import_stores_identical_lines_without_an_id_as_separate_events(
    db: str, tmp_path: Path
) -> None:
    """Six identical failed logins (a log with whole-second times writes them so) are six
    events: a line's id counts the identical lines before it. The same file again stores
    nothing; the file grown by a seventh stores that one."""
    failure = {
        "name": "auth.login.failure",
        "timestamp": "2026-12-02T10:00:00Z",
        "user": {"email": "a@example.com"},
        "request": {"ip": "203.0.113.5"},
    }
    other = {**failure, "user": {"email": "b@example.com"}}
    file = tmp_path / "log.jsonl"
    file.write_text("".join(json.dumps(e) + "\n" for e in [failure] * 3 + [other] + [failure] * 3))
    imported = run("import", str(file), "--db", db).stdout
    assert "7 lines: 7 events stored, 0 already stored" in imported
    assert "0 events stored, 7 already stored" in run("import", str(file), "--db", db).stdout
    with file.open("a") as f:
        f.write(json.dumps(failure) + "\n")
    assert "1 events stored, 7 already stored" in run("import", str(file), "--db", db).stdout
    storage = open_storage(db)
    try:
        found = storage.query_events(EventFilter(users=(("email", "a@example.com"),)))
        assert len(found) == 7 and len({e.id for e in found}) == 7
        # The first copy keeps the id it had when copies were merged into it.
        assert storage.get_event("imp_" + _content_hash(failure)) is not None
    finally:
        storage.close()


def _content_hash(event: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()[:40]


@contextmanager
def write_lock(db_url: str) -> Iterator[None]:
    """Another client holding the database's write lock: SQLite's ``BEGIN EXCLUSIVE`` (the
    import gives up at its busy timeout), PostgreSQL's ``LOCK TABLE events`` (at the
    ``lock_timeout`` the database gives each session)."""
    if not db_url.startswith("postgresql"):
        conn = sqlite3.connect(db_url, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(db_url) as conn:  # one transaction, rolled back at the end
        conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        yield


def test_an_import_stopped_by_a_write_lock_says_what_it_stored(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the write lock past the import's wait: the import stops in one
    line that says which lines were stored and that running it again is safe, which it is."""
    from sqreen.server.storage import sqlite

    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT", 0.2)
    postgres = db_url.startswith("postgresql")
    if postgres:
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {conn.info.dbname} SET lock_timeout = '200ms'")
    events = [wire_event() for _ in range(1200)]
    file = tmp_path / "events.jsonl"
    file.write_text("".join(json.dumps(e) + "\n" for e in events))
    locked = ExitStack()

    def lines_then_lock(stream: BinaryIO) -> Iterator[bytes]:
        for number, line in enumerate(read_lines(stream), 1):
            if number == 1001:  # lines 1 to 1000 are stored, in two batches
                locked.enter_context(write_lock(db_url))
            yield line

    monkeypatch.setattr(_cli_events, "read_lines", lines_then_lock)
    with locked:
        result = run("import", str(file), "--db", db_url, ok=False)
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.stdout == ""
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    reason = "canceling statement due to lock timeout" if postgres else "database is locked"
    assert error == (
        f"Error: the database refused a write at line 1200 ({reason}); lines 1 to 1000 are "
        "imported (1000 events stored, 0 already stored, 0 bad): run the same import again "
        "for the rest, it skips what is stored"
    )
    monkeypatch.setattr(_cli_events, "read_lines", read_lines)
    again = run("import", str(file), "--db", db_url).stdout
    assert "1200 lines: 200 events stored, 1000 already stored, 0 bad" in again
    assert stored_count(db_url) == 1200


def test_import_keeps_the_first_bad_lines_and_counts_the_rest(db: str, tmp_path: Path) -> None:
    """A file of garbage costs no memory a line: the report keeps the messages printed (the
    issue: 4 000 000 lines of ``x`` held 889 MB of messages, 50 of them shown)."""
    storage = open_storage(db)
    try:
        tracemalloc.start()
        try:
            report = import_lines(storage, (b"x\n" for _ in range(100_000)))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        storage.close()
    assert peak < 2_000_000, peak  # 100 000 messages kept: 22 MB
    assert [number for number, _ in report.bad] == list(range(1, 51))  # those printed
    assert report.lines == report.bad_lines == 100_000 and report.stored == 0
    file = tmp_path / "bad.jsonl"
    file.write_text("x\n" * 60 + json.dumps(wire_event()) + "\n")
    result = run("import", str(file), "--db", db, ok=False)
    assert result.exit_code == 1
    assert "61 lines: 1 events stored, 0 already stored, 60 bad" in result.stdout
    shown = result.stderr.splitlines()
    assert shown[-2].startswith(f"{file}:50: line: malformed JSON: Expecting value")
    assert shown[-1] == "... and 10 more bad lines"


def test_import_of_the_file_transport_sets_traits_and_stores_events(
    db: str, tmp_path: Path
) -> None:
    from sqreen.transports.file import FileTransport

    file = tmp_path / "sdk.jsonl"
    sqreen.init(transport=FileTransport(file), flush_interval=0.01)
    sqreen.identify({"uid": "7"}, traits={"plan": "pro"})
    sqreen.track("auth.login.success", user_identifiers={"uid": "7"})
    sqreen.shutdown()
    assert file.read_text().count("\n") == 2
    result = run("import", str(file), "--db", db)
    assert "2 lines: 1 events stored, 0 already stored, 0 bad, 1 users' traits set" in result.stdout
    storage = open_storage(db)
    try:
        assert [e.name for e in storage.query_events()] == ["auth.login.success"]
        traits = storage.get_user({"uid": "7"})
        assert traits is not None and traits.traits == {"plan": "pro"}
    finally:
        storage.close()


def test_purge(db: str) -> None:
    storage = open_storage(db)
    try:
        storage.insert_events(
            [parse_event(wire_event(timestamp="2000-01-01T00:00:00Z"))],
            received_at=datetime(2000, 1, 1, 0, 0, 1, tzinfo=UTC),
        )
        storage.insert_events([parse_event(wire_event(timestamp=datetime.now(UTC).isoformat()))])
    finally:
        storage.close()
    assert "deleted 1 event older than 30 days" in run("purge", "--days", "30", "--db", db).output
    # 0 is every event here, where serve's --retention-days 0 keeps everything: confirmed only
    refused = run("purge", "--days", "0", "--db", db, ok=False)
    assert refused.exit_code == 2 and "add --yes" in refused.output
    assert (
        "deleted 1 event older than 0 days"
        in run("purge", "--days", "0", "--yes", "--db", db).output
    )


def test_an_unopenable_database_is_a_clear_error(tmp_path: Path) -> None:
    result = run("blocks", "--db", str(tmp_path), ok=False)
    assert result.exit_code == 1 and "a directory, not a file" in result.output
    result = run("blocks", "--db", str(tmp_path / "missing" / "dir" / "x.db"), ok=False)
    assert result.exit_code == 1 and "cannot open the SQLite database" in result.output
    result = run("blocks", "--db", "postgresql://nobody@127.0.0.1:1/none", ok=False)
    assert result.exit_code == 1 and "cannot connect to PostgreSQL" in result.output
    # One line: libpq puts its hint ("Is the server running...") on a line of its own.
    assert result.output.count("\n") == 1, result.output


@pytest.mark.slow
def test_console_script_serves_and_blocks(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """The installed ``sqreen`` script: create a key, serve, ingest, block from another
    process while serving, and see the block in the next reply."""
    script = shutil.which("sqreen", path=str(Path(sys.executable).parent))
    assert script, "the sqreen console script is not installed (pip install -e .)"
    db = str(tmp_path / "served.db")

    def sqreen(*args: str) -> str:
        proc = subprocess.run([script, *args, "--db", db], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    token = sqreen("keys", "create").strip()
    started = time.time_ns() // 1000
    server = serve(db, command=[script])
    headers = {"Authorization": f"Bearer {token}"}
    reply = httpx.post(server.url + "/v1/events", json=envelope([wire_event()]), headers=headers)
    # Serving takes the action set past every version given before (a restored database):
    # the clock's microseconds.
    assert reply.json()["accepted"] == 1 and reply.json()["actions"]["version"] >= started
    sqreen("block", "user", "uid=42", "--for", "1h")
    reply = httpx.post(server.url + "/v1/events", json=envelope([]), headers=headers)
    assert [i["user"] for i in reply.json()["actions"]["items"]] == [{"uid": "42"}]
    assert "auth.login.failure" in sqreen("events")


def test_import_refuses_an_overlong_line_without_reading_it_whole(db: str, tmp_path: Path) -> None:
    file = tmp_path / "long.jsonl"
    good = json.dumps(wire_event())
    file.write_bytes(b'{"id": "' + b"x" * (2 * 1024 * 1024) + b'"}\n' + good.encode() + b"\n")
    result = run("import", str(file), "--db", db, ok=False)
    assert result.exit_code == 1
    assert "1 events stored" in result.stdout
    assert f"{file}:1: line: over 1048576 bytes" in result.stderr


@pytest.mark.slow
def test_events_follow_prints_new_events(db: str) -> None:
    storage = open_storage(db)
    storage.insert_events([parse_event(wire_event(name="before.follow"))])
    with subprocess.Popen(
        [*SQREEN, "events", "--follow", "--interval", "0.05", "--db", db],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert "before.follow" in proc.stdout.readline()
            storage.insert_events([parse_event(wire_event(name="after.follow"))])
            assert "after.follow" in proc.stdout.readline()
            # Ctrl-C is how one stops following: a quiet end, not click's "Aborted!".
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
            assert proc.stdout.read() == ""
        finally:
            if proc.poll() is None:
                proc.terminate()
            storage.close()


def test_follow_reads_every_event_stored_since_its_last_look(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More events than a page between two looks: all of them, none twice (a page of the
    storage is the newest events first, so the oldest of a burst once went missing)."""
    monkeypatch.setattr(follow, "PAGE", 10)
    storage.insert_events([parse_event(wire_event(name="seen.before"))])
    (last,) = storage.query_events()
    burst = [parse_event(wire_event(name="in.burst")) for _ in range(35)]
    storage.insert_events(burst)
    found = newer(storage, EventFilter(), last.seq)
    assert [e.id for e in reversed(found)] == [e["id"] for e in burst]
    assert newer(storage, EventFilter(name="seen.before"), last.seq) == []
    follower = Follower(storage, last=last.seq)
    assert [e.id for e in reversed(follower.poll())] == [e["id"] for e in burst]
    assert follower.poll() == [] and follower.last == found[0].seq


@pytest.mark.postgres
def test_follow_prints_a_batch_committed_after_a_later_one(postgres_db: str) -> None:
    """Two collectors on one PostgreSQL database: batch A takes its seqs, batch B takes higher
    ones and commits first, a look shows B; when A commits, the next look shows A, and
    nothing is shown twice. (On SQLite, with one writer at a time, seqs commit in order.)"""
    storage, other = open_storage(postgres_db), open_storage(postgres_db)
    try:
        looks = _cli_events.tail(Follower(storage), interval=0)
        assert next(looks) == []
        a = event_record(parse_event(wire_event(name="batch.a")), None, None, 0)
        with other._write() as cur:  # type: ignore[attr-defined]
            other._insert_events(cur, [a])  # type: ignore[attr-defined]
            storage.insert_events([parse_event(wire_event(name="batch.b"))])
            assert [e.name for e in next(looks)] == ["batch.b"]
        assert [e.name for e in next(looks)] == ["batch.a"]
        assert next(looks) == []
        storage.insert_events([parse_event(wire_event(name="batch.c"))])
        assert [e.name for e in next(looks)] == ["batch.c"]
        assert next(looks) == [] and next(looks) == []
        assert [e.name for e in storage.query_events()] == ["batch.c", "batch.b", "batch.a"]
    finally:
        other.close()
        storage.close()


def test_a_worker_collects_young_garbage_past_a_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector process raises the youngest generation's threshold above what one batch
    allocates (bench/bench_gc.py), and freezes what start-up built."""
    import gc

    from sqreen.server import _serve_worker as cli

    before = gc.get_threshold()
    config = {
        "db": str(tmp_path / "gc.db"),
        "retention_days": None,
        "workers": 2,
        "playbooks": None,
        "max_blocks": 10_000,
        "max_polls_per_key": 64,
        "export": None,
    }
    monkeypatch.setenv(cli.WORKER_ENV, json.dumps(config))
    try:
        app = cli.worker_app()
        app.state.storage.close()
        assert gc.get_threshold()[0] == cli.GC_GEN0 > 20 * before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://sq:Hunter2-Secret@[::1/sqreen",  # an IPv6 host left open
        "postgresql://sq:Hunter2%zz@127.0.0.1:1/sqreen",  # a bad percent-escape
        "postgresql://sq:Hunter2-Secret@127.0.0.1:1/sqreen?foo=bar",  # an unknown option
    ],
)
@pytest.mark.parametrize("command", [["events"], ["serve", "--port", "1"]])
def test_a_malformed_postgresql_url_is_one_line_without_its_password(
    dsn: str, command: list[str]
) -> None:
    result = run(*command, "--db", dsn, ok=False)
    assert result.exit_code == 1
    assert "cannot use the PostgreSQL URL: psycopg cannot parse it" in result.output
    assert "Hunter2" not in result.output and "Traceback" not in result.output


def test_a_read_only_command_gives_no_postgresql_database_a_schema(postgres_db: str) -> None:
    """As with a missing SQLite file: ``events`` pointed at a database of no sqreen tables
    (a typo in its name) says so and creates nothing; ``keys create`` creates them."""
    import psycopg

    for command in (["events"], ["blocks"], ["alerts"], ["keys", "list"]):
        result = run(*command, "--db", postgres_db, ok=False)
        assert result.exit_code == 1, command
        assert "no sqreen database at that PostgreSQL URL" in result.output
    with psycopg.connect(postgres_db) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
    assert "sqk_" in run("keys", "create", "--db", postgres_db).output
    assert run("events", "--db", postgres_db).exit_code == 0


def test_another_application_s_database_is_said_so_not_taken_for_a_bad_url(
    postgres_db: str,
) -> None:
    """A database holding another application's ``events`` table: the server's words
    (the table exists) and what to do, not "psycopg cannot parse" the URL; nothing is
    left behind (the migration is rolled back)."""
    import psycopg

    with psycopg.connect(postgres_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int)")
    for command in (["keys", "create"], ["serve", "--port", "1"]):
        result = run(*command, "--db", postgres_db, ok=False)
        assert result.exit_code == 1, result.output
        assert 'relation "events" already exists' in result.output
        assert "give sqreen a database of its own" in result.output
        assert "cannot parse" not in result.output and "Traceback" not in result.output
    with psycopg.connect(postgres_db) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchall() == [("events",)]


def test_a_host_that_never_answers_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener that takes the connection and never says a word (a firewall's tarpit, a
    hung server): the command gives up after the connect timeout, saying so, rather than
    waiting forever; a timeout the URL gives is its own."""
    import socket

    from sqreen.server.storage import postgres

    monkeypatch.setattr(postgres, "CONNECT_TIMEOUT", 1)
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        port = mute.getsockname()[1]
        for url, least, most in (
            (f"postgresql://sq:Hunter2@127.0.0.1:{port}/sqreen", 0.9, 6),
            (f"postgresql://sq:Hunter2@127.0.0.1:{port}/sqreen?connect_timeout=3", 2.9, 12),
        ):
            started = time.monotonic()
            result = run("keys", "list", "--db", url, ok=False)
            took = time.monotonic() - started
            assert result.exit_code == 1 and "cannot connect to PostgreSQL" in result.output
            assert "Hunter2" not in result.output
            # Which timeout was waited for (a bound on a wait that had none, not a speed).
            assert least < took < most, took


def test_events_and_blocks_quote_a_value_that_looks_like_more_pairs(db: str) -> None:
    storage = open_storage(db)
    try:
        storage.insert_events(
            [parse_event(wire_event(user={"uid": "a,b=c"}, properties={"why": "bad mfa=ok"}))]
        )
    finally:
        storage.close()
    (line,) = run("events", "--db", db).output.splitlines()
    assert 'user="a,b=c"' in line.replace("uid=", "") and 'why="bad mfa=ok"' in line
    run("block", "user", "email=eve x=1", "--db", db)
    assert 'email="eve x=1"' in run("blocks", "--db", db).output


def test_events_keeps_its_columns_near_their_place_whatever_the_user_s_names(db: str) -> None:
    long = {"username": "a" * 80, "email": "b" * 80 + "@example.com"}
    storage = open_storage(db)
    try:
        storage.insert_events(
            [parse_event(wire_event(user=long)), parse_event(wire_event(user={"uid": "7"}))]
        )
    finally:
        storage.close()
    lines = run("events", "--db", db).output.splitlines()
    places = [line.index(" ip=") for line in lines]
    assert max(places) - min(places) <= 16, lines  # 32 characters of a user at most
    assert "user=username=" + "a" * 22 + "… ip=" in lines[0]
    whole = [
        json.loads(line)["user"] for line in run("events", "--json", "--db", db).output.splitlines()
    ]
    assert long in whole  # the JSON has them whole


def test_unblocking_ids_one_of_which_lifted_nothing_still_says_what_refuses(db: str) -> None:
    assert "blocked #1" in run("block", "ip", "198.51.100.0/24", "--db", db).output
    assert "blocked #2" in run("block", "ip", "198.51.100.7", "--db", db).output
    result = run("unblock", "2", "999", "--db", db, ok=False)
    assert result.exit_code == 1
    assert "unblocked #2 ip 198.51.100.7/32" in result.output
    assert "still blocked by #1 ip 198.51.100.0/24" in result.output
    assert "no block #999; the others were lifted" in result.output
