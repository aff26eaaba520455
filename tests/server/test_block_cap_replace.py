"""At ``--max-blocks``, a playbook's new block takes the place of the playbook block in force
created longest ago, never of a block a person made: whoever can send events (an ingest
key) cannot switch blocking off by filling the cap with blocks of made-up addresses."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from sqreen._wire_time import format_timestamp
from sqreen.server.app import create_app
from sqreen.server.blocks import BlockLimitReached, BlockService, ip_block
from sqreen.server.cli import main
from sqreen.server.playbooks import TEMPLATES, PlaybookSource
from sqreen.server.storage import Block, BlockSpec, Storage, TooManyBlocks

from .conftest import Collector, envelope, wire_event


def serve_templates(collector: Collector, live_app: Any, tmp_path: Path, cap: int) -> None:
    switch, _ = live_app
    (tmp_path / "playbooks.toml").write_text(TEMPLATES)
    source = PlaybookSource(tmp_path / "playbooks.toml")
    switch.app = create_app(collector.storage, key_cache_ttl=0.2, playbooks=source, max_blocks=cap)


def fail(collector: Collector, ip: str, times: int = 5) -> None:
    """``times`` login failures from ``ip`` on one account, at the collector's time, in one
    batch: five cross brute-force-ip (alone: on five accounts, credential-stuffing too)."""
    at = format_timestamp(collector.clock().timestamp())
    events = []
    for _ in range(times):
        event = wire_event(name="auth.login.failure", user={"uid": f"{ip}-0"}, timestamp=at)
        event["request"] = {**event["request"], "ip": ip}
        events.append(event)
    assert collector.post("/v1/events", envelope(events)).status_code == 200


def in_force(storage: Storage) -> dict[str, Block]:
    return {str(b.ip): b for b in storage.list_blocks()}


def at_cap(outcome: str) -> float:
    value = REGISTRY.get_sample_value("sqreen_playbook_blocks_at_cap_total", {"outcome": outcome})
    return value or 0.0


def test_a_new_crossing_replaces_the_oldest_playbook_block(
    collector: Collector, live_app: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    serve_templates(collector, live_app, tmp_path, 3)
    for n in range(3):  # the cap filled with made-up addresses, a second apart
        fail(collector, f"192.0.2.{n + 10}")
        collector.clock.advance(seconds=1)
    first = in_force(collector.storage)["192.0.2.10/32"]
    replaced_before = at_cap("replaced")

    with caplog.at_level(logging.WARNING, "sqreen.server"):
        fail(collector, "198.51.100.23")  # the real attacker
        fail(collector, "198.51.100.24")  # and another, within the same minute
    blocks = in_force(collector.storage)
    assert sorted(blocks) == ["192.0.2.12/32", "198.51.100.23/32", "198.51.100.24/32"]
    new = blocks["198.51.100.23/32"]
    assert new.created_by == "playbook:brute-force-ip"

    (lifted,) = [b for b in collector.storage.list_blocks(ended=10) if b.id == first.id]
    assert lifted.lifted_at is not None
    assert lifted.lifted_by == f"--max-blocks: replaced by #{new.id}"
    alert = collector.storage.list_alerts(playbook="brute-force-ip")[1]
    assert alert.block_id == new.id
    assert f"its block replaced #{first.id} of playbook:brute-force-ip" in alert.summary

    db = str(tmp_path / "sqreen.db")  # (the collector fixture's database)
    listed = CliRunner().invoke(main, ["blocks", "--all", "--db", db])
    assert listed.exit_code == 0, listed.output
    assert f"by --max-blocks: replaced by #{new.id}" in listed.output

    loud = [r for r in caplog.records if "never replaced" in r.getMessage()]
    assert len(loud) == 1  # one line a minute, not one an alert
    assert loud[0].levelno == logging.WARNING and "(--max-blocks)" in loud[0].getMessage()
    assert at_cap("replaced") - replaced_before == 2
    scraped = collector.admin.get(collector.url + "/metrics").text
    assert "sqreen_blocks_max 3.0" in scraped
    assert 'sqreen_playbook_blocks_at_cap_total{outcome="replaced"}' in scraped


def test_the_blocks_people_made_are_never_replaced(
    collector: Collector, live_app: Any, tmp_path: Path
) -> None:
    serve_templates(collector, live_app, tmp_path, 3)
    made = collector.post("/v1/blocks", {"type": "block_ip", "ip": "192.0.2.1"}, admin=True)
    assert made.status_code == 201
    db = str(tmp_path / "sqreen.db")
    cli = CliRunner().invoke(main, ["block", "ip", "192.0.2.2", "--max-blocks", "3", "--db", db])
    assert cli.exit_code == 0, cli.output
    for n in range(4):  # each crossing replaces the playbook block before it
        fail(collector, f"203.0.113.{n}")
    assert sorted(in_force(collector.storage)) == ["192.0.2.1/32", "192.0.2.2/32", "203.0.113.3/32"]
    assert all(a.block_id is not None for a in collector.storage.list_alerts())

    # A person asking for the playbook's block makes it theirs: never replaced either. With
    # only people's blocks in force, a playbook's is refused, as before.
    kept = collector.post("/v1/blocks", {"type": "block_ip", "ip": "203.0.113.3"}, admin=True)
    assert kept.status_code in (200, 201), kept.text
    assert kept.json()["created_by"].startswith("api-key:")
    refused_before = at_cap("refused")
    fail(collector, "198.51.100.9")
    assert sorted(in_force(collector.storage)) == ["192.0.2.1/32", "192.0.2.2/32", "203.0.113.3/32"]
    newest = collector.storage.list_alerts(playbook="brute-force-ip")[0]
    assert newest.block_id is None and "no block" in newest.summary
    assert at_cap("refused") - refused_before == 1


def test_an_attacker_whose_block_was_replaced_is_blocked_again(
    collector: Collector, live_app: Any, tmp_path: Path
) -> None:
    # Else a flood just after an attacker's block would free them for the rest of its hour
    # (their playbook quiet while it would have lasted).
    serve_templates(collector, live_app, tmp_path, 1)
    fail(collector, "198.51.100.23")
    collector.clock.advance(seconds=1)
    fail(collector, "192.0.2.10")  # the flood replaces it
    assert sorted(in_force(collector.storage)) == ["192.0.2.10/32"]
    collector.clock.advance(seconds=1)
    fail(collector, "198.51.100.23", times=1)  # the attacker's next try, within the hour
    assert sorted(in_force(collector.storage)) == ["198.51.100.23/32"]
    assert len(collector.storage.list_alerts(playbook="brute-force-ip")) == 3


def place(storage: Storage, ip: str, by: str, minutes: float, cap: int = 3) -> Block:
    spec = BlockSpec("block_ip", None, ip, timedelta(minutes=minutes), "", by, cap)
    return storage.place_block(spec).block


def test_the_replacement_on_both_databases(storage: Storage) -> None:
    person = place(storage, "192.0.2.1/32", "cli:alice", 5)  # expires first, but a person's
    longer = place(storage, "192.0.2.2/32", "playbook:a", 60)
    sooner = place(storage, "192.0.2.3/32", "playbook:b", 30)
    with pytest.raises(TooManyBlocks):  # a person's new block: refused at the cap
        place(storage, "192.0.2.4/32", "cli:alice", 60)
    with pytest.raises(BlockLimitReached):
        BlockService(storage, max_active=3).create(ip_block("192.0.2.4"), created_by="t")
    new = place(storage, "192.0.2.5/32", "playbook:a", 1)  # shorter than all: still made
    # In place of the playbook block created longest ago, however long it had to run.
    assert {b.id for b in storage.list_blocks()} == {person.id, sooner.id, new.id}
    ended = storage.blocks_by_id([longer.id])[longer.id]
    assert ended.lifted_by == f"--max-blocks: replaced by #{new.id}"
    assert ended.changed_in == new.changed_in  # one change of the action set
    newer = place(storage, "192.0.2.6/32", "playbook:a", 60)  # replaces the older one
    assert {b.id for b in storage.list_blocks()} == {person.id, new.id, newer.id}

    # A person's request for a playbook's target makes the block theirs.
    mine = place(storage, "192.0.2.6/32", "cli:bob", 10)
    assert (mine.id, mine.created_by) == (newer.id, "cli:bob")
    assert mine.expires_at == newer.expires_at  # kept as long as it was
    last = place(storage, "192.0.2.7/32", "playbook:a", 60)
    assert {b.id for b in storage.list_blocks()} == {person.id, newer.id, last.id}
    place(storage, "192.0.2.7/32", "explorer:admin", 60)
    with pytest.raises(TooManyBlocks):  # every block in force a person's: refused
        place(storage, "192.0.2.8/32", "playbook:a", 60)
    assert {b.id for b in storage.list_blocks()} == {person.id, newer.id, last.id}
