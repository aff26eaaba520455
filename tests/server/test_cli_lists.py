"""What the listing commands print: an empty list says so (on stderr, stdout staying the
list: nothing; ``--json`` prints no line), and the backtest's summary counts its alerts and
the blocks they would have made, in words that agree with their numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sqreen._wire import parse_event
from sqreen.server.cli import main
from sqreen.server.playbooks import TEMPLATES
from sqreen.server.storage import open_storage

from .conftest import recent, wire_event


@pytest.fixture
def db(tmp_path: Path) -> str:
    open_storage(str(tmp_path / "lists.db")).close()
    return str(tmp_path / "lists.db")


def run(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def failures(db: str, ip: str, users: list[str]) -> None:
    """Failed logins from ``ip``, one per user, a minute apart, three days ago."""
    storage = open_storage(db)
    try:
        events = []
        for i, uid in enumerate(users):
            event = wire_event(user={"uid": uid}, timestamp=recent(days=3, seconds=-60 * i))
            event["request"]["ip"] = ip
            events.append(parse_event(event))
        storage.insert_events(events)
    finally:
        storage.close()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["alerts"], "no alerts\n"),
        (["alerts", "--playbook", "brute-force-ip"], "no alerts of playbook brute-force-ip\n"),
        (["events"], "no events\n"),
        (["events", "--name", "auth.login.failure"], "no events\n"),
        (["events", "--user", "username=ALICE"], "no events\n"),
        (
            ["events", "--prop", "reason=LOCKED"],
            "no events (--prop matches values exactly, case included)\n",
        ),
    ],
)
def test_an_empty_list_says_so_on_stderr(db: str, args: list[str], said: str) -> None:
    result = run(*args, "--db", db)
    assert result.stdout == "" and result.stderr == said


@pytest.mark.parametrize("option", ["--name", "--app"])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_filter_is_refused_not_matched(db: str, option: str, value: str) -> None:
    result = CliRunner().invoke(main, ["events", option, value, "--db", db])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}': must not be empty" in result.stderr


@pytest.mark.parametrize("command", ["alerts", "events", "blocks"])
def test_an_empty_json_list_prints_no_line(db: str, command: str) -> None:
    result = run(command, "--json", "--db", db)
    assert result.output == ""


def test_blocks_keep_their_header_when_empty(db: str) -> None:
    assert run("blocks", "--db", db).stdout == "action set version 0: 0 active\n"


def _backtest(db: str, tmp_path: Path, text: str = TEMPLATES) -> Result:
    file = tmp_path / "playbooks.toml"
    file.write_text(text)
    return run("playbooks", "test", str(file), "--since", "7d", "--db", db)


def test_the_backtest_summary_counts_alerts_and_blocks_in_agreeing_words(
    db: str, tmp_path: Path
) -> None:
    result = _backtest(db, tmp_path)
    assert result.stderr == "no alerts would have been raised\n"

    failures(db, "192.0.2.77", ["alice"] * 5)  # brute force on one IP: one IP block
    result = _backtest(db, tmp_path)
    (line,) = result.stdout.splitlines()
    assert line.split()[2:4] == ["block", "ip"] and "brute-force-ip" in line
    assert result.stderr == "1 alert would have been raised (1 IP block, 0 user blocks)\n"

    # Five failures on one account from each of two more IPs: two IP blocks, and at ten
    # failures in the hour the account is blocked; each of the ten sets off the alert of a
    # threshold of 1 (an alert-only playbook counts each event once: README).
    failures(db, "198.51.100.1", ["bob"] * 5)
    failures(db, "198.51.100.2", ["bob"] * 5)
    result = _backtest(db, tmp_path, ACCOUNTS)
    verbs = sorted(" ".join(line.split()[2:4]).rstrip(":") for line in result.stdout.splitlines())
    assert verbs == ["alert bob-seen"] * 10 + ["block ip"] * 3 + ["block user"], verbs
    assert result.stderr == "14 alerts would have been raised (3 IP blocks, 1 user block)\n"


@pytest.mark.parametrize(
    ("since", "until", "said"),
    [
        ("1d", "3d", "Invalid value for --until: must be later than --since (--since 1d is "),
        ("4000d", None, "Invalid value for --since: '4000d': must be positive and at most 3650 "),
    ],
)
def test_the_backtest_refuses_a_range_it_cannot_replay_saying_why(
    db: str, tmp_path: Path, since: str, until: str | None, said: str
) -> None:
    """An inverted range (which held no event: "no alerts") and a duration past the limit
    (which was "neither a duration nor an ISO 8601 time") are refused, naming the reason."""
    failures(db, "192.0.2.77", ["alice"] * 5)
    file = tmp_path / "playbooks.toml"
    file.write_text(TEMPLATES)
    args = ["playbooks", "test", str(file), "--since", since, "--db", db]
    result = CliRunner().invoke(main, args + (["--until", until] if until else []))
    assert result.exit_code == 2 and said in result.output, result.output
    assert "neither a duration" not in result.output


#: An IP block at 5 failures, a user block at 10, and an alert for bob's first failure.
ACCOUNTS = (
    TEMPLATES.split("[[playbook]]")[0]
    + """
[[playbook]]
id = "ips"
events = ["auth.login.failure"]
group_by = "ip"
threshold = 5
window = "10m"
action = "block_ip"
duration = "1h"

[[playbook]]
id = "accounts"
events = ["auth.login.failure"]
group_by = "user"
threshold = 10
window = "1h"
action = "block_user"
duration = "1h"

[[playbook]]
id = "bob-seen"
events = ["auth.login.failure"]
where = { "user.uid" = "bob" }
group_by = "user"
threshold = 1
window = "1h"
action = "alert"
"""
)


def test_the_backtest_summary_counts_monitor_and_alert_only_playbooks_apart(
    db: str, tmp_path: Path
) -> None:
    monitor = TEMPLATES.replace(
        'action = "block_ip"\nduration = "1h"',
        'action = "block_ip"\nduration = "1h"\nmode = "monitor"',
        1,
    )
    failures(db, "192.0.2.77", ["alice"] * 5)
    result = _backtest(db, tmp_path, monitor)
    assert "monitor" in result.stdout
    assert result.stderr == (
        "1 alert would have been raised (0 IP blocks, 0 user blocks; 1 in monitor mode)\n"
    )
