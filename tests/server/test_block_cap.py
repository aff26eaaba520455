"""The cap on blocks in force (``--max-blocks``): every SDK process holds them all, so past
it a new block is refused with a message naming the cap, by the API, the CLI and the block
service (on both databases, whatever runs at once), and, when every block in force is a
person's, playbooks alert without blocking (test_block_cap_replace.py: when some are a
playbook's)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sqreen._wire_time import format_timestamp
from sqreen.server.app import create_app
from sqreen.server.blocks import BlockLimitReached, BlockService, ip_block, user_block
from sqreen.server.cli import main
from sqreen.server.playbooks import TEMPLATES, PlaybookSource
from sqreen.server.storage import Storage, open_storage

from .conftest import Clock, Collector, envelope, wire_event


def test_past_the_cap_a_new_block_is_refused_until_one_ends(storage: Storage, clock: Clock) -> None:
    service = BlockService(storage, max_active=2)
    short = service.create(ip_block("192.0.2.1", duration=timedelta(minutes=5)), created_by="t")
    kept = service.create(user_block({"uid": "7"}), created_by="t")
    version = storage.action_version()
    with pytest.raises(BlockLimitReached) as refused:
        service.create(ip_block("192.0.2.2"), created_by="t")
    assert refused.value.field == "blocks"
    assert (
        "2 or more blocks are in force, and this collector allows 2 at most (--max-blocks"
        in str(refused.value)
    )
    assert storage.action_version() == version  # no SDK woken for nothing
    assert [b.id for b in storage.list_blocks()] == [kept.id, short.id]

    clock.advance(minutes=6)  # the short one expired: room for one
    third = service.create(ip_block("192.0.2.2"), created_by="t")
    with pytest.raises(BlockLimitReached):
        service.create(ip_block("192.0.2.3"), created_by="t")
    assert service.lift(kept.id, lifted_by="t") is not None
    service.create(ip_block("192.0.2.3"), created_by="t")
    assert {b.ip for b in storage.list_blocks()} == {third.ip, "192.0.2.3/32"}


def test_blocks_made_at_once_stop_at_the_cap(storage: Storage) -> None:
    """Eight writers racing for the last three places (PostgreSQL: eight connections)."""
    service = BlockService(storage, max_active=10)
    for n in range(7):
        service.create(ip_block(f"192.0.2.{n}"), created_by="t")
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def make(n: int) -> None:
        start.wait()
        try:
            service.create(ip_block(f"198.51.100.{n}"), created_by="t")
            outcomes.append("made")
        except BlockLimitReached:
            outcomes.append("refused")

    threads = [threading.Thread(target=make, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["made"] * 3 + ["refused"] * 5
    assert len(storage.list_blocks()) == 10


def test_identical_blocks_made_at_once_are_one_block(storage: Storage) -> None:
    """Eight writers placing the same blocks at once (PostgreSQL: eight connections; 30
    identical POST /v1/blocks at once made two blocks of one user): one block each, the
    others extend it or keep it."""
    service = BlockService(storage)
    outcomes: list[str] = []
    start = threading.Barrier(8)
    started = storage.now()

    def make(n: int) -> None:
        start.wait()
        for request in (
            user_block({"email": "racer@example.com"}, duration=timedelta(minutes=10 + n)),
            ip_block("203.0.113.9", duration=timedelta(minutes=10 + n)),
        ):
            outcomes.append(service.apply(request, created_by="t").outcome)

    threads = [threading.Thread(target=make, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    active = storage.list_blocks()
    assert sorted((b.type, b.ip or "") for b in active) == [
        ("block_ip", "203.0.113.9/32"),
        ("block_user", ""),
    ]
    assert outcomes.count("created") == 2
    longest = started + timedelta(minutes=17)
    assert all(b.expires_at and b.expires_at >= longest for b in active)  # the longest one won


def templates_at_cap(collector: Collector, live_app: Any, tmp_path: Path, cap: int) -> None:
    """The collector, serving the built-in playbooks with at most ``cap`` blocks in force."""
    switch, _ = live_app
    (tmp_path / "playbooks.toml").write_text(TEMPLATES)
    source = PlaybookSource(tmp_path / "playbooks.toml")
    switch.app = create_app(collector.storage, key_cache_ttl=0.2, playbooks=source, max_blocks=cap)


def test_the_api_the_cli_and_the_playbooks_at_the_cap(
    collector: Collector, live_app: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    templates_at_cap(collector, live_app, tmp_path, 2)
    made = collector.post("/v1/blocks", {"type": "block_ip", "ip": "192.0.2.1"}, admin=True)
    assert made.status_code == 201
    db = str(tmp_path / "sqreen.db")  # (the collector fixture's database)
    cli = CliRunner().invoke(main, ["block", "ip", "192.0.2.2", "--max-blocks", "2", "--db", db])
    assert cli.exit_code == 0, cli.output

    refused = collector.post("/v1/blocks", {"type": "block_ip", "ip": "192.0.2.3"}, admin=True)
    assert refused.status_code == 409
    assert refused.json()["field"] == "blocks"
    assert "2 or more blocks are in force" in refused.json()["error"]
    cli = CliRunner().invoke(main, ["block", "ip", "192.0.2.3", "--max-blocks", "2", "--db", db])
    assert cli.exit_code == 1
    assert "2 or more blocks are in force, and this collector allows 2 at most" in cli.output

    with caplog.at_level(logging.ERROR, "sqreen.server"):
        for attacker in ("198.51.100.23", "198.51.100.24"):
            for i in range(5):
                event = wire_event(name="auth.login.failure", user={"uid": f"u{i}"})
                event["request"] = {**event["request"], "ip": attacker}
                assert collector.post("/v1/events", envelope([event])).status_code == 200
    alerts = collector.storage.list_alerts(playbook="brute-force-ip")
    assert len(alerts) == 2 and all(a.block_id is None for a in alerts)
    (line,) = [r.getMessage() for r in caplog.records if "made no block" in r.getMessage()]
    assert "--max-blocks" in line
    assert len(collector.storage.list_blocks()) == 2
    storage = open_storage(db)  # a lifted block makes room again, for people and playbooks
    try:
        BlockService(storage).lift(made.json()["id"], lifted_by="t")
    finally:
        storage.close()
    again = collector.post("/v1/blocks", {"type": "block_ip", "ip": "192.0.2.3"}, admin=True)
    assert again.status_code == 201
    assert all("no block: the most blocks allowed are in force" in a.summary for a in alerts)


def test_a_playbook_refused_its_block_at_the_cap_asks_again_a_window_later(
    collector: Collector, live_app: Any, tmp_path: Path
) -> None:
    # Not quiet while the block it could not make would have lasted (an hour): an attacker
    # who found the cap full is blocked once there is room again.
    templates_at_cap(collector, live_app, tmp_path, 1)
    decoy = collector.post("/v1/blocks", {"type": "block_ip", "ip": "192.0.2.1"}, admin=True)

    def fail(times: int) -> None:  # the attacker goes on, on the collector's clock
        at = format_timestamp(collector.clock().timestamp())
        for n in range(times):
            event = wire_event(name="auth.login.failure", user={"uid": f"u{n}"}, timestamp=at)
            event["request"] = {**event["request"], "ip": "198.51.100.23"}
            assert collector.post("/v1/events", envelope([event])).status_code == 200

    fail(6)
    (alert,) = collector.storage.list_alerts(playbook="brute-force-ip")
    assert alert.block_id is None
    BlockService(collector.storage).lift(decoy.json()["id"], lifted_by="t")  # room again
    collector.clock.advance(seconds=290)
    fail(5)  # within its window (5 minutes): quiet, one alert a window at the cap
    assert len(collector.storage.list_alerts(playbook="brute-force-ip")) == 1
    collector.clock.advance(seconds=11)
    fail(1)  # 5 in the window, the first past the quiet time
    newest = collector.storage.list_alerts(playbook="brute-force-ip")[0]
    assert newest.id != alert.id and newest.block_id is not None
    (block,) = collector.storage.list_blocks()
    assert (block.ip, block.created_by) == ("198.51.100.23/32", "playbook:brute-force-ip")
