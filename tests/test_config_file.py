"""``sqreen.ini``, Sqreen's agent's configuration file: every key, where it is found, its place
below the environment, and a bad file that warns and never fails."""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

import sqreen
from sqreen._config import Config
from sqreen._config_file import from_file
from sqreen._config_values import CHECKS

CA = Path(__file__).resolve().parent / "data"

#: A line for each key of the file, and the value of the option it sets.
KEYS: dict[str, tuple[str, str, Any]] = {
    # key: (value in the file, option, expected)
    "token": ("sqk_from-ini", "token", "sqk_from-ini"),
    "endpoint": ("http://127.0.0.1:8123", "endpoint", "http://127.0.0.1:8123"),
    "app_name": ("My Application", "app_name", "My Application"),
    "strict": ("yes", "strict", True),
    "flush_interval": ("0.5", "flush_interval", 0.5),
    "batch_size": ("20", "batch_size", 20),
    "max_batch_bytes": ("2048", "max_batch_bytes", 2048),
    "heartbeat_interval": ("30", "heartbeat_interval", 30.0),
    "max_queue_size": ("100", "max_queue_size", 100),
    "max_queue_bytes": ("4096", "max_queue_bytes", 4096),
    "max_retry_age": ("60", "max_retry_age", 60.0),
    "shutdown_timeout": ("1.5", "shutdown_timeout", 1.5),
    "trusted_proxies": (
        "10.0.0.0/8, 192.168.0.0/16",
        "trusted_proxies",
        ("10.0.0.0/8", "192.168.0.0/16"),
    ),
    "client_ip_header": ("X-Real-IP", "client_ip_header", "X-Real-IP"),
    "ip_header": ("X-Client-IP", "client_ip_header", "X-Client-IP"),  # the agent's name
    "scrub_keys": ("nickname,pet", "scrub_keys", ("nickname", "pet")),
    "scrub_values": (r"ID-\d+", "scrub_values", (r"ID-\d+",)),
    "max_body_size": ("1024", "max_body_size", 1024),
    "transport": ("memory:", "transport", "memory:"),
    "ca_bundle": (str(CA), "ca_bundle", str(CA)),
    "disable": ("true", "disable", True),
    "spool": ("off", "spool", False),
    "block_on_start_timeout": ("2", "block_on_start_timeout", 2.0),
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def warnings(log: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in log.records if r.levelno == logging.WARNING]


def test_every_option_is_a_key_of_the_file() -> None:
    assert {option for _, option, _ in KEYS.values()} == set(CHECKS)


@pytest.mark.parametrize("key", sorted(KEYS))
def test_each_key_of_the_working_directorys_file(workdir: Path, key: str) -> None:
    text, option, expected = KEYS[key]
    write(workdir / "sqreen.ini", f"[sqreen]\n{key}: {text}\n")
    assert getattr(Config.resolve({}, environ={}), option) == expected


def test_both_spellings_of_a_line_any_case_and_the_prefix(
    workdir: Path, sqreen_log: pytest.LogCaptureFixture
) -> None:
    write(
        workdir / "sqreen.ini",
        """
        # as Sqreen's guide wrote it
        [sqreen]
        token: sqk_%token
        APP_NAME = shop
        sqreen_disable = 1
        endpoint =
        """,
    )
    config = Config.resolve({}, environ={})
    assert (config.token, config.app_name, config.disable) == ("sqk_%token", "shop", True)
    assert config.endpoint is None  # empty: unset
    assert warnings(sqreen_log) == []


def test_explicit_beats_framework_beats_environment_beats_file(workdir: Path) -> None:
    write(
        workdir / "sqreen.ini",
        """
        [sqreen]
        app_name = from-file
        token = sqk_file
        flush_interval = 7
        batch_size = 9
        """,
    )
    environ = {"SQREEN_TOKEN": "sqk_env", "SQREEN_FLUSH_INTERVAL": "3", "SQREEN_BATCH_SIZE": "4"}
    config = Config.resolve({"batch_size": 1}, {"flush_interval": 2}, environ)
    assert (config.batch_size, config.flush_interval) == (1, 2.0)  # explicit, framework
    assert (config.token, config.app_name) == ("sqk_env", "from-file")  # environment, file
    assert Config.resolve({}, environ={}).flush_interval == 7.0
    os.remove("sqreen.ini")
    assert Config.resolve({}, environ={}).flush_interval == 5.0  # the default


def test_the_file_sqreen_config_file_names_wins(
    workdir: Path, sqreen_log: pytest.LogCaptureFixture
) -> None:
    write(workdir / "sqreen.ini", "[sqreen]\napp_name: local\ntoken: sqk_local\n")
    named = write(workdir / "elsewhere.ini", "[sqreen]\napp_name: named\n")
    environ = {"SQREEN_CONFIG_FILE": str(named)}
    config = Config.resolve({}, environ=environ)
    assert (config.app_name, config.token) == ("named", None)  # one file, not merged
    # A path that does not exist: said, and the working directory's is read, as the agent did.
    environ = {"SQREEN_CONFIG_FILE": str(workdir / "missing.ini")}
    assert Config.resolve({}, environ=environ).app_name == "local"
    assert Config.resolve({}, environ=environ).app_name == "local"
    (message,) = warnings(sqreen_log)
    assert "SQREEN_CONFIG_FILE" in message and "missing.ini" in message


def test_start_reads_it(workdir: Path) -> None:
    write(workdir / "sqreen.ini", "[sqreen]\ntransport: memory:\napp_name: legacy-app\n")
    client = sqreen.start()
    assert client.config.app_name == "legacy-app"
    assert sqreen.track("from.ini")
    assert client.flush(5)
    assert [e["name"] for e in client.transport.events] == ["from.ini"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (
            "[sqreen]\nflush_interval: soon\napp_name: kept\n",
            "'flush_interval' in {path}: flush_interval must be a number of seconds"
            " (or 30s, 10m, 1h, 1d), not 'soon'",
        ),
        ("[sqreen]\nlog_level: WARNING\napp_name: kept\n", "'log_level' in {path}: unknown key"),
        (
            "[sqreen]\nip_header: X-Real-IP\nclient_ip_header: X-A\napp_name: kept\n",
            "'client_ip_header' in {path}: 'ip_header' sets client_ip_header already",
        ),
        (
            "[sqreen]\ntrusted_proxies: 10.0.0.0/33\napp_name: kept\n",
            "'trusted_proxies' in {path}: trusted_proxies",
        ),
        (
            "[sqreen]\ndisable: maybe\napp_name: kept\n",
            "'disable' in {path}: disable must be true or false",
        ),
    ],
    ids=["value", "unknown", "twice", "cidr", "flag"],
)
def test_a_bad_key_is_a_warning_naming_file_and_key(
    workdir: Path, sqreen_log: pytest.LogCaptureFixture, content: str, said: str
) -> None:
    path = write(workdir / "sqreen.ini", content)
    config = Config.resolve({}, environ={})
    assert config.app_name == "kept"  # the other keys are used
    assert (config.flush_interval, config.disable) == (5.0, False)
    (message,) = warnings(sqreen_log)
    assert said.format(path=path) in message
    Config.resolve({}, environ={})  # once for each version of the file
    assert len(warnings(sqreen_log)) == 1
    path.write_text(content + "token: sqk_changed\n")
    assert Config.resolve({}, environ={}).token == "sqk_changed"
    assert len(warnings(sqreen_log)) == 2


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"token: x\n", "cannot be parsed"),  # no section header
        (b"[sqreen]\ntoken x\n", "cannot be parsed"),
        (b"[sqreen]\ntoken: a\ntoken: b\n", "cannot be parsed"),
        (b"[other]\ntoken: x\n", "has no [sqreen] section"),
        (b"[sqreen]\napp_name: caf\xe9\n", "cannot be read"),  # Latin-1, not UTF-8
        (None, "cannot be read"),  # a directory
    ],
    ids=[
        "no-section-header",
        "no-separator",
        "duplicate",
        "no-sqreen-section",
        "encoding",
        "directory",
    ],
)
def test_a_file_that_cannot_be_used_is_a_warning_never_an_error(
    workdir: Path, sqreen_log: pytest.LogCaptureFixture, content: bytes | None, said: str
) -> None:
    path = workdir / "sqreen.ini"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    assert Config.resolve({}, environ={}) == Config()
    client = sqreen.init(transport="memory:")  # and the app starts
    assert sqreen.track("still.tracked") and client.flush(5)
    (message,) = warnings(sqreen_log)
    assert str(path) in message and said in message


def test_a_working_directory_gone_reads_no_file_and_raises_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqreen_log: pytest.LogCaptureFixture
) -> None:
    """A deploy that replaced the app's directory: os.getcwd() fails, and the search for
    ./sqreen.ini raised from every track() and every Starlette set-up."""
    gone = tmp_path / "release-41"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert from_file({}) == {}
    assert from_file({"SQREEN_CONFIG_FILE": "sqreen.ini"}) == {}
    assert any("the working directory is gone" in r.getMessage() for r in sqreen_log.records)
