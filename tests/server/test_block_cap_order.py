"""Which playbook block a new one replaces at ``--max-blocks``: the one created longest ago
(not the one expiring soonest, which a flood through the longest-lasting playbook could
steer onto an attacker's fresh block), and never one placed in the same transaction (its
alert, not stored yet, would leave its key quiet while free)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqreen.server.pipeline import IngestPipeline
from sqreen.server.playbooks import TEMPLATES, PlaybookRunner, PlaybookSource
from sqreen.server.storage import Storage

from .conftest import envelope, wire_event


class Site:
    """Login failures through an ingest pipeline whose playbooks (the templates) may keep
    at most ``cap`` blocks in force."""

    def __init__(self, storage: Storage, tmp_path: Path, cap: int) -> None:
        (tmp_path / "playbooks.toml").write_text(TEMPLATES)
        source = PlaybookSource(tmp_path / "playbooks.toml")
        runner = PlaybookRunner(storage, source, max_blocks=cap)
        self.pipeline = IngestPipeline(storage, hooks=[runner])
        self.storage = storage

    def fail(self, ip: str, user: str) -> dict[str, Any]:
        at = self.storage.now().isoformat().replace("+00:00", "Z")
        event = wire_event(user={"uid": user}, timestamp=at)
        event["request"] = {**event["request"], "ip": ip}
        return event

    def send(self, *events: dict[str, Any]) -> None:
        self.pipeline(json.dumps(envelope(list(events))).encode())

    def in_force(self) -> list[str]:
        return sorted(str(b.ip) for b in self.storage.list_blocks())


def test_a_block_is_not_replaced_in_its_own_transaction(storage: Storage, tmp_path: Path) -> None:
    site = Site(storage, tmp_path, 3)
    for k in range(3):  # the cap full of 6h blocks (credential stuffing: 15 accounts each)
        site.send(*[site.fail(f"198.51.100.{k}", f"v{k}-{n}") for n in range(15)])
    assert len(site.in_force()) == 3
    a, b = "203.0.113.1", "203.0.113.2"
    # One body: A crosses brute-force-ip, then B. B's block does not replace A's.
    site.send(
        *[site.fail(a, f"a{n}") for n in range(5)], *[site.fail(b, f"b{n}") for n in range(5)]
    )
    assert {a + "/32", b + "/32"} <= set(site.in_force())
    for alert in storage.list_alerts(playbook="brute-force-ip"):
        assert alert.block_id is not None, alert.summary


def test_the_oldest_playbook_block_is_replaced_first(storage: Storage, tmp_path: Path) -> None:
    site = Site(storage, tmp_path, 3)

    def flood(k: int) -> None:  # a 6h block (credential stuffing: 15 accounts)
        site.send(*[site.fail(f"198.51.100.{k}", f"v{k}-{n}") for n in range(15)])

    for k in range(3):
        flood(k)
    attacker = "203.0.113.9"
    site.send(*[site.fail(attacker, "a") for n in range(5)])  # a 1h block
    (block,) = [b for b in storage.list_blocks() if str(b.ip) == attacker + "/32"]
    assert block.expires_at is not None
    assert all(
        b.expires_at and b.expires_at > block.expires_at
        for b in storage.list_blocks()
        if b.id != block.id
    )
    # The flood's next blocks replace its own older ones, whatever their duration: the
    # attacker's block outlasts the next cap - 1 of them.
    for k in range(3, 5):
        flood(k)
        assert attacker + "/32" in site.in_force()
    flood(5)
    assert site.in_force() == ["198.51.100.3/32", "198.51.100.4/32", "198.51.100.5/32"]


def test_a_flood_at_the_cap_counts_and_sorts_the_blocks_once_a_transaction(
    storage: Storage, tmp_path: Path
) -> None:
    """An ingest key floods the cap with made-up addresses: one body crossing brute-force-ip
    for 100 new ones, with the cap's 120 blocks in force. Each new block replaces the oldest
    in turn (the body's own never), and the transaction counts the blocks in force and sorts
    them by age about once, not twice a block (10 ms a block at 10 000 blocks)."""
    site = Site(storage, tmp_path, 120)
    old = [f"198.51.{k // 200}.{k % 200}" for k in range(120)]
    for start in range(0, 120, 20):
        site.send(*[site.fail(ip, f"{ip}-{n}") for ip in old[start : start + 20] for n in range(5)])
    assert site.in_force() == sorted(ip + "/32" for ip in old)
    made = {str(b.ip): b.id for b in storage.list_blocks()}
    statements: list[str] = []
    writer = getattr(storage, "_writer", None)  # SQLite's: what ran is traced
    if writer is not None:
        writer.set_trace_callback(statements.append)
    new = [f"203.0.{k // 200}.{k % 200}" for k in range(100)]
    try:
        site.send(*[site.fail(ip, f"{ip}-{n}") for ip in new for n in range(5)])
    finally:
        if writer is not None:
            writer.set_trace_callback(None)
    kept = sorted(old, key=lambda ip: made[ip + "/32"])[100:]
    assert site.in_force() == sorted(ip + "/32" for ip in [*kept, *new])
    alerts = [
        a for a in storage.list_alerts(playbook="brute-force-ip", limit=500) if a.group_key in new
    ]
    assert len(alerts) == 100 and all(a.block_id is not None for a in alerts)
    if writer is not None:
        sorts = [s for s in statements if "ORDER BY b.created_at" in s]
        counts = [s for s in statements if "SELECT (SELECT count(*) FROM blocks" in s]
        assert 1 <= len(sorts) <= 2, len(sorts)  # 64 candidates a read
        assert 1 <= len(counts) <= 2, len(counts)
