"""The ``sqreen`` command as a new operator meets it: ``--ip`` takes an address or a network
and refuses junk, identifiers are not silently dropped or misread, a block asked twice says
what it did, read-only commands create nothing, ``--version``. Through click's CliRunner,
and once as the installed console script."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sqreen import __version__
from sqreen._wire import parse_event
from sqreen.server.cli import main
from sqreen.server.storage import open_storage

from .conftest import Collector, wire_event


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "ops.db")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def seed(db: str, *ips: str) -> None:
    storage = open_storage(db)
    try:
        events = []
        for ip in ips:
            event = wire_event(name=f"from.{ip.replace(':', '_')}")
            event["request"]["ip"] = ip
            events.append(parse_event(event))
        storage.insert_events(events)
    finally:
        storage.close()


def names(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    # The list is stdout (an empty one says so on stderr); a name comes after date and time.
    return [line.split()[2] for line in result.stdout.splitlines()]


def test_events_ip_takes_an_address_or_a_network(db: str) -> None:
    seed(db, "203.0.113.7", "203.0.113.200", "203.0.114.1", "2001:db8::1", "2001:db8::1:0")
    assert names(run("events", "--ip", "203.0.113.0/24", "--db", db)) == [
        "from.203.0.113.7",
        "from.203.0.113.200",
    ]
    assert names(run("events", "--ip", "203.0.113.7/32", "--db", db)) == ["from.203.0.113.7"]
    assert names(run("events", "--ip", "203.0.113.7", "--db", db)) == ["from.203.0.113.7"]
    # As SDKs record addresses: IPv6 compressed and lower-case, IPv4-mapped unmapped.
    assert names(run("events", "--ip", "2001:DB8:0::1", "--db", db)) == ["from.2001_db8__1"]
    assert names(run("events", "--ip", "::ffff:203.0.114.1", "--db", db)) == ["from.203.0.114.1"]
    assert names(run("events", "--ip", "2001:db8::/120", "--db", db)) == ["from.2001_db8__1"]
    assert names(run("events", "--ip", "198.51.100.0/24", "--db", db)) == []


@pytest.mark.parametrize(
    ("ip", "message"),
    [
        ("notanip", "Invalid value for --ip: 'notanip' is not an IP address or a CIDR network"),
        ("203.0.113.0/33", "is not an IP address or a CIDR network"),
        ("", "is not an IP address"),
        ("10.0.0.0/8", "10.0.0.0/8 holds 16777216 addresses: events are indexed by exact"),
        ("203.0.112.0/23", "at most 256 of them (an IPv4 /24, an IPv6 /120)"),
        ("2001:db8::/64", "2001:db8::/64 holds"),
    ],
)
def test_events_ip_refuses_junk_with_exit_2(db: str, ip: str, message: str) -> None:
    seed(db, "203.0.113.7")
    result = run("events", "--ip", ip, "--db", db)
    assert result.exit_code == 2 and message in result.output
    assert "from.203" not in result.output


@pytest.mark.parametrize(
    ("identifiers", "message"),
    [
        (["uid=42", "uid=43"], "'uid' is given twice: each key takes one value"),
        (["uid=42", "email=a@b.c", "uid=42"], "'uid' is given twice"),
        (["uid = 42"], "'uid = 42' has spaces around '=' or at its ends: write uid=42"),
        (["uid =42"], "'uid =42' has spaces around '='"),
        (["uid= 42"], "'uid= 42' has spaces around '='"),
        (["uid=42 "], "'uid=42 ' has spaces around '='"),
    ],
)
def test_block_user_refuses_what_it_would_misread(
    db: str, identifiers: list[str], message: str
) -> None:
    result = run("block", "user", *identifiers, "--db", db)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for IDENTIFIERS: {message}" in result.output
    assert not Path(db).exists()  # refused before any database was opened


def test_the_same_filters_are_refused_in_events_and_unblock(db: str) -> None:
    seed(db, "203.0.113.7")
    twice = run("events", "--user", "uid=1", "--user", "uid=2", "--db", db)
    assert twice.exit_code == 2 and "Invalid value for --user: 'uid' is given twice" in twice.output
    spaced = run("unblock", "user", "uid = 42", "--db", db)
    assert spaced.exit_code == 2 and "has spaces around '='" in spaced.output


def test_a_block_asked_again_extends_the_active_one_and_says_so(db: str) -> None:
    first = run("block", "ip", "203.0.113.7", "--for", "1h", "--db", db)
    assert first.exit_code == 0 and first.output.startswith("blocked #1 ip 203.0.113.7/32 until")
    for _ in range(5):
        again = run("block", "ip", "203.0.113.7/32", "--for", "10m", "--db", db)
        assert again.exit_code == 0
        assert again.output.startswith("already blocked, for at least as long: kept #1 ip ")
    longer = run("block", "ip", "203.0.113.7", "--for", "2h", "--db", db)
    assert longer.output.startswith("already blocked: extended #1 ip 203.0.113.7/32 until ")
    forever = run("block", "ip", "203.0.113.7", "--db", db)
    assert forever.output.startswith("already blocked: extended #1 ip 203.0.113.7/32 until lifted")
    user = run("block", "user", "uid=42", "email=a@b.c", "--db", db)
    assert user.output.startswith("blocked #2 user")
    same_user = run("block", "user", "email=a@b.c", "uid=42", "--db", db)
    assert same_user.output.startswith("already blocked, for at least as long: kept #2 user")
    other_user = run("block", "user", "uid=42", "--db", db)  # a different set of identifiers
    assert other_user.output.startswith("blocked #3 user uid=42 ")
    listing = run("blocks", "--db", db).output
    assert "version 5: 3 active" in listing  # created, extended twice, created twice


@pytest.mark.parametrize(
    ("network", "internal"),
    [
        ("10.1.2.3", "10.0.0.0/8"),
        ("172.20.0.0/16", "172.16.0.0/12"),
        ("192.168.1.0/24", "192.168.0.0/16"),
        ("100.64.0.9", "100.64.0.0/10"),
        ("fd00:1::/48", "fc00::/7"),
    ],
)
def test_a_block_on_a_private_network_is_placed_with_a_warning(
    db: str, network: str, internal: str
) -> None:
    result = CliRunner().invoke(main, ["block", "ip", network, "--db", db])
    assert result.exit_code == 0 and result.stdout.startswith("blocked #1 ip ")
    assert result.stderr.startswith(f"warning: {ipaddress.ip_network(network)} is in {internal}, ")
    assert "an SDK that trusts a proxy there refuses this block" in result.stderr


def test_public_networks_and_users_are_blocked_without_a_word(db: str) -> None:
    for args in (["ip", "203.0.113.0/24"], ["ip", "2001:db8::/48"], ["user", "uid=10"]):
        result = CliRunner().invoke(main, ["block", *args, "--db", db])
        assert result.exit_code == 0 and result.stderr == "", result.stderr


def test_the_blocks_api_warns_too(collector: Collector) -> None:
    reply = collector.post("/v1/blocks", {"type": "block_ip", "ip": "10.9.0.0/16"}, admin=True)
    assert reply.status_code == 201 and reply.json()["outcome"] == "created"
    (warning,) = reply.json()["warnings"]
    assert warning.startswith("10.9.0.0/16 is in 10.0.0.0/8, where proxies")
    again = collector.post("/v1/blocks", {"type": "block_ip", "ip": "10.9.0.0/16"}, admin=True)
    assert again.status_code == 200 and again.json()["outcome"] == "kept"
    assert again.json()["id"] == reply.json()["id"]
    public = collector.post("/v1/blocks", {"type": "block_ip", "ip": "192.0.2.1"}, admin=True)
    assert public.status_code == 201 and public.json()["warnings"] == []


@pytest.mark.parametrize(
    "args",
    [
        ["events"],
        ["events", "--follow"],
        ["blocks"],
        ["keys", "list"],
        ["keys", "revoke", "1"],
        ["unblock", "1"],
        ["purge"],
    ],
)
def test_read_only_commands_create_no_database(tmp_path: Path, args: list[str]) -> None:
    db = tmp_path / "typo.db"
    result = run(*args, "--db", str(db))
    assert result.exit_code == 1
    assert f"cannot open the SQLite database {str(db)!r}: no such file" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args", [["events"], ["blocks"], ["keys", "create"], ["block", "ip", "192.0.2.1"]]
)
def test_a_file_that_is_no_database_is_a_clean_error(tmp_path: Path, args: list[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database, but a file an operator pointed --db at\n")
    result = run(*args, "--db", str(notes))
    assert result.exit_code == 1, result.output
    assert f"cannot use {str(notes)!r} as a SQLite database: file is not a database" in (
        result.output
    )
    assert notes.read_text().startswith("not a database")


def test_version() -> None:
    for flag in ("--version", "-V"):
        result = run(flag)
        assert result.exit_code == 0 and result.output == f"sqreen (sqreen-sdk) {__version__}\n"


def test_as_the_installed_console_script(tmp_path: Path) -> None:
    """The same cases through the real ``sqreen`` script: exit codes and messages as a shell
    sees them."""
    script = shutil.which("sqreen", path=str(Path(sys.executable).parent))
    assert script, "the sqreen console script is not installed (pip install -e .)"
    db = str(tmp_path / "script.db")

    def sqreen(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([script, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        return proc

    assert sqreen("--version").stdout == f"sqreen (sqreen-sdk) {__version__}\n"
    missing = sqreen("events", "--db", db, code=1)
    assert "no such file" in missing.stderr and not Path(db).exists()
    assert sqreen("block", "ip", "127.0.0.1/32", "--db", db, code=2).stderr.count("loopback")
    assert not Path(db).exists()
    assert "given twice" in sqreen("block", "user", "uid=42", "uid=43", "--db", db, code=2).stderr
    assert "spaces around" in sqreen("block", "user", "uid = 42", "--db", db, code=2).stderr
    assert sqreen("block", "ip", "203.0.113.7", "--for", "1h", "--db", db).stdout.startswith(
        "blocked #1"
    )
    again = sqreen("block", "ip", "203.0.113.7", "--for", "1h", "--db", db).stdout
    assert again.startswith("already blocked: extended #1")
    seed(db, "203.0.113.9", "198.51.100.1")
    assert "from.203.0.113.9" in sqreen("events", "--ip", "203.0.113.0/24", "--db", db).stdout
    junk = sqreen("events", "--ip", "notanip", "--db", db, code=2)
    assert "Invalid value for --ip" in junk.stderr and junk.stdout == ""
    assert (
        "holds 65536 addresses"
        in sqreen("events", "--ip", "10.1.0.0/16", "--db", db, code=2).stderr
    )
    hostile = sqreen("block", "ip", "192.0.2.1", "--reason", "\x1b[2J", "--db", db, code=2)
    assert "must be one line of text" in hostile.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    broken = sqreen("blocks", "--db", str(notes), code=1)
    assert "file is not a database" in broken.stderr and "Traceback" not in broken.stderr
