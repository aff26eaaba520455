"""What one API key may do to another's data: nothing. Event ids are deduplicated per key,
SDK processes are recorded per key, and the agents table stays bounded; on SQLite and on
PostgreSQL (the ``storage`` fixture runs each test on both), and through the HTTP API."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from sqreen._wire import parse_event
from sqreen.server.storage import (
    AGENT_TTL,
    Heartbeat,
    InsertResult,
    Storage,
    StoredEvent,
    _sql,
    new_events,
    open_storage,
)
from sqreen.server.storage.model import to_us

from .conftest import Clock, Collector, envelope, wire_event

KEY_A, KEY_B = 1, 2


def counts(result: InsertResult) -> tuple[int, int]:
    return result.stored, result.duplicates


def test_one_key_cannot_pre_empt_the_event_ids_of_another(storage: Storage) -> None:
    """Key B sends key A's ids first: A's events are still stored, once each."""
    theirs = [wire_event(name="auth.login.failure") for _ in range(3)]
    forged = [{**e, "name": "forged.by.b", "user": {"uid": "attacker"}} for e in theirs]
    assert counts(storage.insert_events([parse_event(e) for e in forged], key_id=KEY_B)) == (3, 0)
    result = storage.insert_events([parse_event(e) for e in theirs], key_id=KEY_A)
    assert counts(result) == (3, 0)
    assert None not in result.seqs
    assert storage.count_events() == 6
    # Each key's event is found by its id and seq, with the key that sent it.
    for event, seq in zip(theirs, result.seqs, strict=True):
        found = storage.get_event(event["id"], seq=seq)
        assert found is not None and found.name == "auth.login.failure" and found.key_id == KEY_A
    first = storage.get_event(theirs[0]["id"])  # without a seq: the first stored
    assert first is not None and first.name == "forged.by.b" and first.key_id == KEY_B
    assert storage.get_event(theirs[0]["id"], seq=10**9) is None


def test_a_retried_batch_on_the_same_key_is_stored_once(storage: Storage) -> None:
    batch = [parse_event(wire_event()) for _ in range(4)]
    first = storage.insert_events(batch, key_id=KEY_A)
    assert counts(first) == (4, 0)
    again = storage.insert_events(batch, key_id=KEY_A)
    assert counts(again) == (0, 4) and again.seqs == (None,) * 4
    assert new_events(batch, again, key_id=KEY_A) == []  # hooks hear of nothing twice
    # Repeated within one call, and mixed with new ids, under another key.
    c = parse_event(wire_event())
    mixed = storage.insert_events([batch[0], c, c, batch[0]], key_id=KEY_B)
    assert counts(mixed) == (2, 2) and mixed.seqs[2:] == (None, None)
    stored = new_events([batch[0], c, c, batch[0]], mixed, key_id=KEY_B)
    assert [(e.id, e.key_id) for e in stored] == [(batch[0]["id"], KEY_B), (c["id"], KEY_B)]
    assert stored == [_by_seq(storage, e.seq) for e in stored]  # as reading them back gives
    assert storage.count_events() == 6
    # Imports (no key) are their own namespace, idempotent too.
    assert counts(storage.insert_events(batch)) == (4, 0)
    assert counts(storage.insert_events(batch)) == (0, 4)


def _by_seq(storage: Storage, seq: int) -> StoredEvent:
    (event,) = storage.events_by_seq([seq])
    return event


def test_a_key_cannot_overwrite_the_agent_row_of_another(storage: Storage) -> None:
    mine = Heartbeat(
        "shop", "web1", 10, "flask", "sqreen-python", "1.0", {"queue_depth": 3}, key_id=KEY_A
    )
    storage.record_heartbeat(mine)
    forged = Heartbeat(
        "shop", "web1", 10, "flask", "sqreen-python", "6.6", {"refused": {"1": 9}}, key_id=KEY_B
    )
    storage.record_heartbeat(forged)
    agents = {a.key_id: a for a in storage.agents()}
    assert set(agents) == {KEY_A, KEY_B}
    assert agents[KEY_A].sdk_version == "1.0" and agents[KEY_A].stats == {"queue_depth": 3}
    assert agents[KEY_B].sdk_version == "6.6"
    # The same key's next heartbeat updates its own row.
    storage.record_heartbeat(replace(mine, stats={}))
    agents = {a.key_id: a for a in storage.agents()}
    assert len(agents) == 2 and agents[KEY_A].stats == {}


def test_agents_silent_for_a_week_are_forgotten(storage: Storage, clock: Clock) -> None:
    storage.record_heartbeat(Heartbeat("shop", "web1", 1, None, None, None, {}, key_id=KEY_A))
    clock.advance(days=3)
    storage.record_heartbeat(Heartbeat("shop", "web2", 2, None, None, None, {}, key_id=KEY_A))
    assert storage.purge_agents() == 0 and len(storage.agents()) == 2
    clock.advance(days=AGENT_TTL.days - 3, seconds=1)
    # Listed no more as soon as they expire; deleted by the next purge.
    assert [a.pid for a in storage.agents()] == [2]
    assert storage.purge_agents() == 1
    clock.advance(days=3)
    assert storage.agents() == [] and storage.purge_agents() == 1
    assert storage.purge_agents() == 0


def test_the_agents_of_a_key_are_bounded(
    storage: Storage, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key making up processes (a new pid a heartbeat) evicts its own least recently
    seen ones, never another key's."""
    monkeypatch.setattr(_sql, "MAX_AGENTS_PER_KEY", 3)
    storage.record_heartbeat(Heartbeat("shop", "web1", 1, None, None, None, {}, key_id=KEY_A))
    for pid in range(100, 110):
        clock.advance(seconds=1)
        storage.record_heartbeat(Heartbeat("x", "y", pid, None, None, None, {}, key_id=KEY_B))
    agents = storage.agents()
    assert sorted(a.pid for a in agents if a.key_id == KEY_B) == [107, 108, 109]
    assert [a.pid for a in agents if a.key_id == KEY_A] == [1]
    # A known process of a full key keeps its row.
    storage.record_heartbeat(Heartbeat("x", "y", 107, None, None, None, {}, key_id=KEY_B))
    assert sorted(a.pid for a in storage.agents() if a.key_id == KEY_B) == [107, 108, 109]


def test_upgrading_keeps_events_seqs_and_agents(db_url: str) -> None:
    """Migration 8 changes the events' unique constraint and the agents' key (SQLite copies
    both tables): nothing stored is lost, no purged seq is given again."""
    from sqreen.server.storage.postgres import PostgresStorage
    from sqreen.server.storage.sqlite import SQLiteStorage

    current = PostgresStorage if db_url.startswith("postgres") else SQLiteStorage
    version = 7  # the schema before migration 8 (later ones, of other branches, come after)
    before = type("Before", (current,), {"MIGRATIONS": current.MIGRATIONS[:version]})
    old = before(db_url.removeprefix("sqlite://"))
    with old._write() as cur:
        for seq, event_id in ((1, "old-1"), (2, "old-2"), (3, "purged")):
            cur.execute(
                "INSERT INTO events (seq, id, name, ts, received_at, properties_json, ip) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, event_id, "auth.signup", 0, 0, '{"k": "v"}', "203.0.113.7"),
            )
        cur.execute("DELETE FROM events WHERE seq = 3")
        cur.execute(
            "INSERT INTO agents (app, host, pid, stats_json, first_seen, last_seen) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            ("shop", "web1", 7, "{}", 0, to_us(datetime.now(UTC))),
        )
    if current is PostgresStorage:  # explicit seqs: move the identity past them, as inserts do
        with old._write() as cur:
            cur.execute("SELECT setval(pg_get_serial_sequence('events', 'seq'), 3)")
    old.close()
    upgraded = open_storage(db_url)
    try:
        assert [(e.id, e.seq, e.key_id) for e in upgraded.query_events()] == [
            ("old-2", 2, 0),
            ("old-1", 1, 0),
        ]
        (agent,) = upgraded.agents()
        assert (agent.app, agent.pid, agent.key_id) == ("shop", 7, 0)
        # Old events are key 0's (imports'): a key's events with those ids are new.
        old_ids = [wire_event(id="old-1"), wire_event(id="new-1")]
        result = upgraded.insert_events([parse_event(e) for e in old_ids], key_id=KEY_A)
        assert counts(result) == (2, 0)
        assert min(s for s in result.seqs if s is not None) > 3  # 3 was purged: never reused
        again = upgraded.insert_events([parse_event(wire_event(id="old-2"))])
        assert counts(again) == (0, 1)
        assert upgraded.count_events() == 4
    finally:
        upgraded.close()


# -- through the API -------------------------------------------------------------------


def test_over_http_a_key_cannot_suppress_the_events_of_another(collector: Collector) -> None:
    """An ingest key (leaked from one app server) sends another app's event ids first."""
    _, other = collector.new_key("other app")
    theirs = [wire_event() for _ in range(3)]
    forged = collector.client.post(
        collector.url + "/v1/events", json=envelope(theirs, name="evil"), timeout=30
    ).json()
    assert (forged["accepted"], forged["duplicates"]) == (3, 0)
    headers = {"Authorization": f"Bearer {other}"}
    reply = collector.client.post(
        collector.url + "/v1/events", json=envelope(theirs), headers=headers, timeout=30
    ).json()
    assert (reply["accepted"], reply["duplicates"]) == (3, 0)
    retried = collector.client.post(
        collector.url + "/v1/events", json=envelope(theirs), headers=headers, timeout=30
    ).json()
    assert (retried["accepted"], retried["duplicates"]) == (0, 3)
    assert collector.storage.count_events() == 6


def test_over_http_heartbeats_are_recorded_per_key(collector: Collector) -> None:
    other_id, other = collector.new_key("other app")
    sender = {"sdk": {"name": "sqreen-python", "version": "0.1"}, "app": envelope([])["app"]}
    body = {**sender, "stats": {"queue_depth": 1}}
    assert collector.post("/v1/heartbeat", body).status_code == 200
    forged = {**sender, "stats": {"queue_depth": 999, "refused": {"1": 10**6}}}
    headers = {"Authorization": f"Bearer {other}"}
    reply = collector.client.post(collector.url + "/v1/heartbeat", json=forged, headers=headers)
    assert reply.status_code == 200
    agents = {a.key_id: a.stats for a in collector.storage.agents()}
    (own_id,) = set(agents) - {other_id}
    assert agents[own_id] == {"queue_depth": 1}
    assert agents[other_id]["queue_depth"] == 999


def test_the_collector_forgets_silent_agents_by_itself(sqlite_storage: Storage) -> None:
    import time

    from sqreen.server.app import create_app
    from tests.integrations._servers import UvicornThread

    sqlite_storage.record_heartbeat(Heartbeat("shop", "web1", 1, None, None, None, {}))
    with sqlite_storage._write() as cur:  # type: ignore[attr-defined]
        cur.execute("UPDATE agents SET last_seen = 0")
    app = create_app(sqlite_storage, purge_every=0.05, explorer=False)
    server = UvicornThread(app, lifespan="on")
    try:
        deadline = time.monotonic() + 10
        while _rows(sqlite_storage) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
    assert _rows(sqlite_storage) == 0


def _rows(storage: Storage) -> int:
    """Agent rows, expired or not."""
    ((n,),) = storage._read("SELECT count(*) FROM agents")  # type: ignore[attr-defined]
    return int(n)
