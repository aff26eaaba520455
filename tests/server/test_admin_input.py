"""Hostile admin input is a 400 naming the field, never a 500 nor a stored block: through
the shared rules (``block_request``), the block service on both back ends, the JSON API and
the CLI (the explorer's form: ``tests/explorer/test_block_input.py``)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sqreen.server.blocks import BlockRequest, BlockService, InvalidBlock, block_request
from sqreen.server.cli import main
from sqreen.server.storage import Storage, open_storage

from .conftest import Collector

#: (duration, what the message says): each once a 500, or a block that never ends or never
#: starts.
HOSTILE_DURATIONS: list[tuple[Any, str]] = [
    (int("9" * 400), "at most 3650 days"),  # float(int) overflowed: 500
    (10**15, "at most 3650 days"),
    (1e-9, "must be positive"),  # a zero timedelta, refused again inside the service: 500
    ("0.0000001s", "must be positive"),
    ("0.5s", "1 second at least"),
    ("9" * 400 + "s", "at most 12 digits"),
    ("\u0661h", "not a duration"),  # an Arabic-Indic digit: float() reads it, SDKs do not
    ("1h" + "9" * 400 + "m", "at most 12 digits"),
    ("30m1h", "not a duration"),  # units larger first, each once, as durations are shown
    ("1h1h", "not a duration"),
    ("1h30", "not a duration"),
    ("1" * 50_000 + "x", "not a duration"),
    (1e308, "at most 3650 days"),
]
#: (reason, why): printed in terminals and pages, sent to every SDK, stored in PostgreSQL.
HOSTILE_REASONS: list[tuple[str, str]] = [
    ("brute\x00force", "NUL: PostgreSQL refuses it (a 500)"),
    ("\x1b[2J\x1b[31mall clear", "a terminal escape for `sqreen blocks`"),
    ("line\nbreak", "a newline: one line of text"),
    ("\ud800", "a lone surrogate: no database stores it"),
    ("evil\u202etxt.exe", "a bidirectional override"),
    ("\x7f", "DEL"),
]


@pytest.mark.parametrize(("duration", "message"), HOSTILE_DURATIONS)
def test_hostile_durations_name_the_field(duration: Any, message: str) -> None:
    with pytest.raises(InvalidBlock) as exc:
        block_request("block_ip", ip="192.0.2.1", duration=duration)
    assert exc.value.field == "duration" and message in exc.value.message
    assert len(str(exc.value)) < 200  # the value is shortened, not echoed whole


@pytest.mark.parametrize(("reason", "why"), HOSTILE_REASONS)
def test_hostile_reasons_name_the_field(reason: str, why: str) -> None:
    with pytest.raises(InvalidBlock) as exc:
        block_request("block_ip", ip="192.0.2.1", reason=reason)
    assert exc.value.field == "reason" and "must be one line of text" in exc.value.message, why


def test_durations_of_several_units_read_as_they_are_shown() -> None:
    """``check`` and the explorer show 90 minutes as ``1h30m``; written so, it was refused."""
    for text, minutes in (("1h30m", 90), ("7m30s", 7.5), ("1d12h", 2160), ("1H 30M", 90)):
        request = block_request("block_ip", ip="192.0.2.1", duration=text)
        assert request.duration == timedelta(minutes=minutes), text


def test_plain_reasons_and_durations_still_pass() -> None:
    ok = block_request("block_ip", ip="192.0.2.1", duration="1s", reason="Brute force · 10 ✓")
    assert ok.reason == "Brute force · 10 ✓" and ok.duration is not None
    assert block_request("block_ip", ip="192.0.2.1", duration="3650d").duration is not None
    assert block_request("block_ip", ip="192.0.2.1", duration=1.5).duration is not None


def test_the_service_refuses_a_hand_built_request_on_both_back_ends(storage: Storage) -> None:
    """A request built by hand skips block_request: the service checks it again before any
    SQL (on PostgreSQL, a NUL in the reason was a database error)."""
    blocks = BlockService(storage)
    for request in (
        BlockRequest("block_ip", ip="192.0.2.1/32", reason="a\x00b"),
        BlockRequest("block_ip", ip="192.0.2.1/32", duration=timedelta(0)),
    ):
        with pytest.raises(InvalidBlock):
            blocks.apply(request, created_by="playbook:1")
    assert storage.list_blocks(ended=100) == []


# -- the JSON API ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        *({"type": "block_ip", "ip": "192.0.2.1", "duration": d} for d, _ in HOSTILE_DURATIONS),
        *({"type": "block_ip", "ip": "192.0.2.1", "reason": r} for r, _ in HOSTILE_REASONS),
    ],
    ids=[f"duration-{i}" for i in range(len(HOSTILE_DURATIONS))]
    + [f"reason-{i}" for i in range(len(HOSTILE_REASONS))],
)
def test_the_blocks_api_answers_400_naming_the_field(
    collector: Collector, body: dict[str, Any]
) -> None:
    raw = json.dumps(body).encode()  # ASCII: "\ud800" travels as JSON escapes it
    headers = {"Content-Type": "application/json"}
    reply = collector.post("/v1/blocks", admin=True, content=raw, headers=headers)
    assert reply.status_code == 400, reply.text
    field = "duration" if "duration" in body else "reason"
    assert reply.json()["field"] == field and reply.json()["error"].startswith(f"{field}: ")
    assert collector.storage.list_blocks(ended=100) == []


# -- the CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--for", "0.0000001s"], "Invalid value for --for: must be positive"),
        (["--for", "9" * 400 + "s"], "Invalid value for --for: at most 12 digits"),
        (["--for", "\u0661h"], "Invalid value for --for:"),
        (["--reason", "\x1b[2Jall clear"], "Invalid value for --reason: must be one line"),
        (["--reason", "a\tb"], "U+0009 (a control character)"),
        (["--reason", "evil\u202e"], "U+202E (a bidirectional control)"),
        (["--reason", "ad\u200bmin"], "U+200B (an invisible character)"),
        (["--reason", "one\u2028two"], "U+2028 (a line separator)"),
    ],
)
def test_the_cli_refuses_hostile_blocks_with_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    db = str(tmp_path / "cli.db")
    result = CliRunner().invoke(
        main, ["block", "ip", "192.0.2.1", *args, "--db", db], catch_exceptions=False
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    storage = open_storage(db)
    try:
        assert storage.list_blocks(ended=100) == []
    finally:
        storage.close()
