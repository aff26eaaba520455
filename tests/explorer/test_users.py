"""Users' traits and the reads behind the alerts pages, on both back ends: ``sq.identify``
records go to the ``users`` table through the ingest pipeline, never to the events."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest

from sqreen._wire_time import format_timestamp
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.storage import Storage, StoredEvent, open_storage
from tests.server.conftest import db_url, envelope  # noqa: F401 (db_url: each back end)

from .conftest import Clock, wire_event

ALICE = {"uid": "42", "email": "alice@example.com"}


@pytest.fixture
def storage(db_url: str, clock: Clock) -> Iterator[Storage]:  # noqa: F811 (each back end)
    s = open_storage(db_url, clock=clock)
    yield s
    s.close()


def identify(user: dict[str, str], traits: dict[str, Any], **ago: float) -> dict[str, Any]:
    """An ``sq.identify`` record as the SDK sends it, stamped ``ago`` before the real now."""
    record = wire_event(name="sq.identify", user=user, properties=traits, request=None)
    if ago:
        record["timestamp"] = format_timestamp(Clock()() - timedelta(**ago))
    return record


def test_the_latest_traits_win_and_first_seen_stays(storage: Storage, clock: Clock) -> None:
    assert storage.get_user(ALICE) is None
    assert storage.record_traits([identify(ALICE, {"plan": "free"})]) == 1  # type: ignore[list-item]
    first = storage.get_user(ALICE)
    assert first is not None and first.traits == {"plan": "free"} and first.user == ALICE
    assert first.first_seen == first.last_seen

    clock.advance(minutes=5)
    reordered = dict(reversed(ALICE.items()))  # the same identifiers: the same user
    storage.record_traits([identify(reordered, {"plan": "pro", "seats": 3}, minutes=-5)])  # type: ignore[list-item]
    now = storage.get_user(ALICE)
    assert now is not None and now.traits == {"plan": "pro", "seats": 3}
    assert now.first_seen == first.first_seen and now.last_seen > first.last_seen

    # A batch retried late: older traits do not come back, first seen moves back to them.
    storage.record_traits([identify(ALICE, {"plan": "trial"}, hours=2)])  # type: ignore[list-item]
    late = storage.get_user(ALICE)
    assert late is not None and late.traits == {"plan": "pro", "seats": 3}
    assert late.first_seen < first.first_seen and late.last_seen == now.last_seen

    # An SDK clock ahead of the collector's: never seen later than received.
    storage.record_traits([identify(ALICE, {"plan": "max"}, days=-3)])  # type: ignore[list-item]
    ahead = storage.get_user(ALICE)
    assert ahead is not None and ahead.traits == {"plan": "max"}
    assert ahead.last_seen <= storage.now()

    assert storage.get_user({"uid": "42"}) is None  # exactly these identifiers


def test_one_batch_with_a_user_twice_and_long_identifiers(storage: Storage) -> None:
    records = [
        identify(ALICE, {"v": 1}, minutes=3),
        identify({"uid": "7"}, {"v": "seven"}),
        identify(ALICE, {"v": 2}, minutes=1),
        identify(ALICE, {"v": 0}, minutes=9),
    ]
    assert storage.record_traits(records) == 2  # type: ignore[arg-type]
    alice = storage.get_user(ALICE)
    assert alice is not None and alice.traits == {"v": 2}
    assert alice.last_seen - alice.first_seen >= timedelta(minutes=7, seconds=59)

    # 16 identifiers of 256 characters, escaped: far beyond what an index entry may hold.
    huge = {f"k{i:02d}": "é\x00" * 128 for i in range(16)}
    storage.record_traits([identify(huge, {"big": True})])  # type: ignore[list-item]
    found = storage.get_user(huge)
    assert found is not None and found.traits == {"big": True}
    assert storage.record_traits([]) == 0


def body(*events: Any) -> bytes:
    return json.dumps(envelope(list(events))).encode()


def test_the_pipeline_stores_identify_records_as_traits_not_events(storage: Storage) -> None:
    told: list[list[StoredEvent]] = []

    def hook(events: Sequence[StoredEvent]) -> None:
        told.append(list(events))

    pipeline = IngestPipeline(storage, hooks=[hook])
    login = wire_event(name="auth.login.success", user=ALICE)
    record = identify(ALICE, {"plan": "pro"})
    reply = pipeline(body(record, login, {"name": "sq.identify"}))
    assert reply["accepted"] == 2 and reply["duplicates"] == 0
    assert [r["index"] for r in reply["rejected"]] == [2]  # sq.identify needs a user
    assert [e.name for e in storage.query_events()] == ["auth.login.success"]
    assert [[e.id for e in call] for call in told] == [[login["id"]]]
    alice = storage.get_user(ALICE)
    assert alice is not None and alice.traits == {"plan": "pro"}

    # Only traits: nothing stored as an event, no hook called; a retry changes nothing.
    only = identify({"uid": "7"}, {"plan": "free"})
    assert pipeline(body(only))["accepted"] == 1
    assert pipeline(body(only))["accepted"] == 1
    assert storage.count_events() == 1 and len(told) == 1
    seven = storage.get_user({"uid": "7"})
    assert seven is not None and seven.traits == {"plan": "free"}


def test_events_and_blocks_by_id_are_bounded_reads(storage: Storage) -> None:
    result = storage.insert_events([wire_event() for _ in range(3)])  # type: ignore[misc]
    seqs = [seq for seq in result.seqs if seq is not None]
    found = storage.events_by_seq([seqs[2], seqs[0], 10**9, seqs[0]])
    assert [e.seq for e in found] == [seqs[0], seqs[2]]  # oldest first, the missing skipped
    assert storage.events_by_seq([]) == []
    with pytest.raises(ValueError, match="at most 1000"):
        storage.events_by_seq(range(1001))

    block = storage.create_block("block_ip", ip="192.0.2.1", created_by="cli:alice")
    storage.lift_block(block.id, "explorer:admin")
    assert storage.blocks_by_id([block.id, 999]) == {block.id: storage.list_blocks(ended=100)[0]}
    assert storage.blocks_by_id([]) == {}
    with pytest.raises(ValueError, match="at most 1000"):
        storage.blocks_by_id(range(1001))
