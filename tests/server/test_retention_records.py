"""Retention of what else names people: alerts, ended blocks, users' traits, export cursors
(`purge_records`, run by `--retention-days` and `sqreen purge --days`), on both back ends;
never a block in force nor its alert, and no SDK or process left enforcing a lifted block
whose row retention deleted."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from sqreen._wire import parse_event
from sqreen._wire_time import format_timestamp
from sqreen.server.action_cache import ActionCache
from sqreen.server.blocks import BlockService, ip_block, user_block
from sqreen.server.cli import main
from sqreen.server.storage import (
    BlockSpec,
    NewAlert,
    Storage,
    WindowWrite,
    open_storage,
)

from .conftest import Clock, wire_event


def raise_alert(storage: Storage, key: str, block: BlockSpec | None = None) -> int:
    now = storage.now()
    action = "alert" if block is None else block.type
    alert = NewAlert("pb", "ip", key, 1, now, now, 1, 1, (1,), "enforce", action, key, block)
    (stored,) = storage.update_windows(
        [("s", key)], [], [], lambda found, quiet: WindowWrite({}, [alert])
    )
    return stored.id


def ip_spec(ip: str, duration: timedelta | None) -> BlockSpec:
    return BlockSpec("block_ip", None, ip, duration, f"guessing from {ip}", "playbook:pb")


def test_old_alerts_go_unless_their_block_is_in_force(storage: Storage, clock: Clock) -> None:
    plain = raise_alert(storage, "198.51.100.1")
    enforced = raise_alert(storage, "198.51.100.2", ip_spec("198.51.100.2/32", None))
    ended = raise_alert(storage, "198.51.100.3", ip_spec("198.51.100.3/32", timedelta(days=1)))
    clock.advance(days=31)
    recent = raise_alert(storage, "198.51.100.4")
    purged = storage.purge_records(30)
    assert purged.alerts == 2
    left = {a.id for a in storage.list_alerts(limit=100)}
    assert left == {enforced, recent}
    assert {plain, ended}.isdisjoint(left)
    # ...and the block in force stays, with its alert.
    (active,) = storage.list_blocks()
    assert storage.get_alert(enforced) is not None
    assert storage.get_alert(enforced).block_id == active.id  # type: ignore[union-attr]


def test_blocks_that_ended_before_the_cutoff_go(storage: Storage, clock: Clock) -> None:
    service = BlockService(storage)
    forever = service.create(ip_block("192.0.2.1"), created_by="t")
    lifted_long_ago = service.create(user_block({"uid": "1"}), created_by="t")
    service.lift(lifted_long_ago.id, lifted_by="t")
    expired_long_ago = service.create(ip_block("192.0.2.3", duration=600), created_by="t")
    clock.advance(days=20)
    lifted_lately = service.create(user_block({"uid": "2"}), created_by="t")
    service.lift(lifted_lately.id, lifted_by="t")
    clock.advance(days=11)
    purged = storage.purge_records(30)
    assert purged.blocks == 2
    kept = {b.id for b in storage.list_blocks(ended=100)}
    assert kept == {forever.id, lifted_lately.id}
    assert {lifted_long_ago.id, expired_long_ago.id}.isdisjoint(kept)
    assert [b.id for b in storage.action_set().blocks] == [forever.id]


def test_users_traits_last_set_before_the_cutoff_go(storage: Storage, clock: Clock) -> None:
    def identify(uid: str) -> None:
        record = wire_event(
            name="sq.identify",
            user={"uid": uid},
            properties={"email": f"{uid}@example.com"},
            timestamp=format_timestamp(clock()),
        )
        storage.record_traits([parse_event(record)])

    identify("old")
    identify("again")
    clock.advance(days=31)
    identify("again")  # identified since: kept
    identify("new")
    assert storage.purge_records(30).users == 1
    assert storage.get_user({"uid": "old"}) is None
    assert storage.get_user({"uid": "again"}) is not None
    assert storage.get_user({"uid": "new"}) is not None


def test_export_cursors_of_a_destination_gone_go(storage: Storage, clock: Clock) -> None:
    def sent(destination: str, seq: int, release: bool = False) -> None:
        lease = f"lease {destination}"
        assert storage.take_export_lease(lease, 7, 30)
        assert storage.move_export_cursor(lease, 7, f"events {destination}", seq)
        assert storage.move_export_cursor(lease, 7, f"alerts {destination}", seq)
        if release:
            storage.release_export_lease(lease, 7)

    sent("gone", 10)
    sent("stopped", 20)
    clock.advance(days=31)
    sent("stopped", 30, release=True)  # a clean stop: its lease says 0, its cursors now
    sent("live", 40)
    assert storage.purge_records(30).export_cursors == 3
    assert storage.export_cursor("events gone") == 0
    assert storage.export_cursor("alerts gone") == 0
    assert storage.export_cursor("events stopped") == 30
    assert storage.export_cursor("events live") == 40
    assert storage.take_export_lease("lease gone", 8, 30)  # configured again: starts anew


def test_a_lift_retention_deleted_is_not_lost_to_a_diff(storage: Storage, clock: Clock) -> None:
    """A block's row is how a diff says it was lifted: a process, or an SDK, at a version
    before a lift whose row is gone gets the whole set, never a diff without the lift."""
    service = BlockService(storage)
    for n in range(4):
        service.create(ip_block(f"192.0.2.{n + 10}"), created_by="t")
    doomed = service.create(user_block({"uid": "9"}), created_by="t")
    cache = ActionCache(storage)
    held, _ = cache.encoded(None)  # an SDK (and this process) holding the block
    service.lift(doomed.id, lifted_by="t")
    clock.advance(days=31)
    assert storage.purge_records(30).blocks == 1
    assert not storage.action_changes(held).complete
    assert storage.action_changes(storage.action_version()).complete
    service.create(ip_block("192.0.2.99"), created_by="t")
    version, body = cache.encoded(held, diff=True)
    actions = json.loads(body)
    assert "items" in actions and "since" not in actions  # the whole set
    assert str(doomed.id) not in {item["id"] for item in actions["items"]}
    assert version == storage.action_version()
    assert cache.active() == 5


def test_sqreen_purge_deletes_them_and_says_so(tmp_path: Path) -> None:
    db = str(tmp_path / "records.db")
    storage = open_storage(db)
    try:
        raise_alert(storage, "203.0.113.9")
    finally:
        storage.close()
    result = CliRunner().invoke(main, ["purge", "--days", "0", "--yes", "--db", db])
    assert result.exit_code == 0, result.output
    assert "deleted 1 alert, 0 ended blocks, 0 users' traits and 0 export cursors" in (
        result.stdout
    )
    storage = open_storage(db)
    try:
        assert storage.list_alerts() == []
    finally:
        storage.close()
