"""The storage suite: every test runs on SQLite and on PostgreSQL, with the same assertions."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sqreen._wire import parse_event
from sqreen.server.storage import EventFilter, Heartbeat, InsertResult, Storage, open_storage
from sqreen.server.storage._blocks import RENUMBER_GAP
from sqreen.server.storage.model import to_us

from .conftest import Clock, recent, wire_event


def stored(*events: dict[str, object]) -> list:
    return [parse_event(e) for e in events]


def ids(found: list) -> list[str]:
    return [e.id for e in found]


def counts(result: InsertResult) -> tuple[int, int]:
    return result.stored, result.duplicates


def test_insert_counts_duplicates_by_id(storage: Storage) -> None:
    a, b = wire_event(), wire_event()
    first = storage.insert_events(stored(a, b), app="shop", host="web1")
    assert counts(first) == (2, 0)
    # A retried batch, and a batch repeating an id within itself.
    assert counts(storage.insert_events(stored(a, b))) == (0, 2)
    c = wire_event()
    d = wire_event(user={"uid": "7"})
    assert counts(storage.insert_events(stored(a, c, c, d, b))) == (2, 3)
    assert storage.count_events() == 4
    # The side tables hold the stored events' rows once each, under the right seq.
    assert storage.count_by("user.uid") == [("42", 3), ("7", 1)]
    assert storage.count_by("properties.reason") == [("bad_password", 4)]
    assert [e.id for e in storage.query_events(EventFilter(users=(("uid", "7"),)))] == [d["id"]]
    assert counts(storage.insert_events([])) == (0, 0)


def test_insert_reports_the_seq_of_each_new_event(storage: Storage) -> None:
    """Aligned with the input: the seq each new event was stored under, None for every
    duplicate (stored before, or repeated earlier in the same call)."""
    a, b, c = wire_event(), wire_event(), wire_event()
    first = storage.insert_events(stored(a, b))
    seq_a, seq_b = first.seqs
    assert seq_a is not None and seq_b is not None and seq_a < seq_b
    again = storage.insert_events(stored(b, c, c, a))
    seq_c = again.seqs[1]
    assert again.seqs == (None, seq_c, None, None) and seq_c is not None and seq_c > seq_b
    assert {e.id: e.seq for e in storage.query_events()} == {
        a["id"]: seq_a,
        b["id"]: seq_b,
        c["id"]: seq_c,
    }
    assert again.new(["b", "c", "c again", "a"]) == [(seq_c, "c")]
    assert again.received_at == storage.query_events(limit=1)[0].received_at
    assert storage.insert_events(stored()).seqs == ()


def test_enrichment_is_stored_with_each_event(storage: Storage) -> None:
    a, b = wire_event(), wire_event()
    storage.insert_events(stored(a, b), enrichment=[{"asn": 64500, "geo": {"cc": "FR"}}, {}])
    got = {e.id: e.enrichment for e in storage.query_events()}
    assert got == {a["id"]: {"asn": 64500, "geo": {"cc": "FR"}}, b["id"]: {}}
    with pytest.raises(ValueError):  # one dict an event, or none at all
        storage.insert_events(stored(wire_event(), wire_event()), enrichment=[{}])


def test_event_round_trip(storage: Storage) -> None:
    e = wire_event(
        timestamp="2026-01-02T03:04:05.123456+02:00",
        properties={"n": 1, "f": 1.5, "ok": True, "none": None, "nested": {"a": [1, "b"]}},
        user={"uid": "7", "email": "a@example.com"},
        target={"id": "doc-1", "type": "document"},
    )
    storage.insert_events(stored(e), app="shop", host="web1")
    got = storage.get_event(e["id"])
    assert got is not None
    assert got.name == "auth.login.failure"
    assert got.timestamp == datetime(2026, 1, 2, 1, 4, 5, 123456, tzinfo=UTC)
    assert got.properties == e["properties"]
    assert got.user == e["user"]
    assert got.target == e["target"]
    assert got.request == parse_event(e)["request"]
    assert (got.app, got.host, got.ip) == ("shop", "web1", "203.0.113.7")
    assert got.to_json()["timestamp"] == "2026-01-02T01:04:05.123456Z"
    assert storage.get_event("nope") is None


def test_hostile_text_is_stored_verbatim_and_filterable(storage: Storage) -> None:
    nasty = "x'); DROP TABLE events; -- \" ? %s $1 \\ \u2603 \U0001f600"
    e = wire_event(
        properties={nasty: nasty, "nul": "a\x00b", "lone": "\ud800"},
        user={nasty: nasty},
        target={"id": nasty},
    )
    e["request"]["ip"] = nasty
    e["request"]["params"] = {nasty: [nasty]}
    assert counts(storage.insert_events(stored(e), app=nasty, host="\ud800\x00")) == (1, 0)
    got = storage.get_event(e["id"])
    assert got is not None
    # Verbatim but a lone surrogate, which no database or page can hold: U+FFFD (parse_event).
    assert got.properties == {nasty: nasty, "nul": "a\x00b", "lone": "\ufffd"}
    assert got.host == "\ufffd\ufffd"
    assert got.user == {nasty: nasty}
    assert got.request is not None and got.request["params"] == {nasty: [nasty]}
    assert ids(storage.query_events(EventFilter(properties=((nasty, nasty),)))) == [e["id"]]
    assert ids(storage.query_events(EventFilter(users=((nasty, nasty),)))) == [e["id"]]
    assert ids(storage.query_events(EventFilter(properties=(("nul", "a\x00b"),)))) == [e["id"]]
    assert ids(storage.query_events(EventFilter(app=nasty))) == [e["id"]]
    assert got.ip is None  # not an address (parse_event): none, and a filter on it finds none
    assert ids(storage.query_events(EventFilter(ip=nasty))) == []
    assert storage.count_by(f"properties.{nasty}") == [(nasty, 1)]
    assert storage.count_events() == 1  # the table is still there


def test_tabs_line_ends_and_backslashes_in_indexed_text_are_kept(storage: Storage) -> None:
    """Tabs, line ends and backslashes in indexed keys and values (COPY's text format on
    PostgreSQL escapes them) are stored and filtered as sent, beside plain rows."""
    special = "a\tb\nc\rd\\e\\.\\N"
    e = wire_event(properties={special: special, "plain": "x"}, user={special: special})
    plain = wire_event(properties={"plain": "\\"})
    assert counts(storage.insert_events(stored(e, plain))) == (2, 0)
    assert ids(storage.query_events(EventFilter(properties=((special, special),)))) == [e["id"]]
    assert ids(storage.query_events(EventFilter(users=((special, special),)))) == [e["id"]]
    assert storage.count_by(f"properties.{special}") == [(special, 1)]
    assert storage.count_by("properties.plain") == [("\\", 1), ("x", 1)]


def test_query_filters_and_paging(storage: Storage) -> None:
    events = []
    for i in range(30):
        events.append(
            wire_event(
                name="auth.login.success" if i % 3 == 0 else "auth.login.failure",
                timestamp=f"2026-01-01T00:{i:02d}:00Z",
                properties={"attempt": i % 5, "plan": "pro" if i % 2 else "free", "ok": i < 10},
                user={"uid": str(i % 4)},
            )
        )
        events[-1]["request"]["ip"] = f"198.51.100.{i % 3}"
    storage.insert_events(stored(*events), app="shop")
    newest_first = [e["id"] for e in reversed(events)]
    assert ids(storage.query_events(limit=5)) == newest_first[:5]

    page1 = storage.query_events(limit=10)
    page2 = storage.query_events(before_seq=page1[-1].seq, limit=10)
    assert ids(page1 + page2) == newest_first[:20]
    assert ids(storage.query_events(after_seq=page1[1].seq)) == newest_first[:1]

    def expect(f: EventFilter, keep: object) -> None:
        want = [e["id"] for e in reversed(events) if keep(e)]  # type: ignore[operator]
        assert ids(storage.query_events(f, limit=100)) == want
        assert storage.count_events(f) == len(want)

    expect(EventFilter(name="auth.login.success"), lambda e: e["name"] == "auth.login.success")
    expect(EventFilter(users=(("uid", "1"),)), lambda e: e["user"]["uid"] == "1")
    expect(EventFilter(properties=(("attempt", "3"),)), lambda e: e["properties"]["attempt"] == 3)
    expect(EventFilter(properties=(("ok", "true"),)), lambda e: e["properties"]["ok"])
    expect(
        EventFilter(users=(("uid", "2"),), properties=(("plan", "free"),)),
        lambda e: e["user"]["uid"] == "2" and e["properties"]["plan"] == "free",
    )
    expect(EventFilter(ip="198.51.100.2"), lambda e: e["request"]["ip"] == "198.51.100.2")
    expect(
        EventFilter(
            since=datetime(2026, 1, 1, 0, 10, tzinfo=UTC),
            until=datetime(2026, 1, 1, 0, 20, tzinfo=UTC),
            name="auth.login.failure",
        ),
        lambda e: "00:10" <= e["timestamp"][11:16] < "00:20" and e["name"].endswith("failure"),
    )
    expect(EventFilter(app="other"), lambda e: False)
    # Paging inside a property filter.
    f = EventFilter(properties=(("plan", "pro"),))
    first = storage.query_events(f, limit=4)
    rest = storage.query_events(f, before_seq=first[-1].seq, limit=100)
    assert len(first) == 4 and len(first) + len(rest) == 15
    assert not set(ids(first)) & set(ids(rest))


def test_a_walk_by_time_reads_each_event_once_in_time_then_seq_order(storage: Storage) -> None:
    """Events stored out of time order, seven of them at one time: pages of three (a page
    ending amid those seven) give every event in the range once, by time then seq."""
    minutes = [9, 3, 5, 5, 1, 5, 5, 5, 0, 5, 7, 5, 2]
    events = [wire_event(timestamp=f"2026-01-01T00:{m:02d}:00Z") for m in minutes]
    seqs = storage.insert_events(stored(*events)).seqs
    by_time = [e["id"] for _, _, e in sorted(zip(minutes, seqs, events, strict=True))]
    since = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)

    def walk(f: EventFilter) -> list[str]:
        found: list[str] = []
        after = None
        while page := storage.scan_events_by_time(f, after=after, limit=3):
            assert len(page) <= 3
            found += ids(page)
            after = (page[-1].timestamp, page[-1].seq)
        return found

    assert walk(EventFilter()) == by_time
    assert walk(EventFilter(since=since, until=since + timedelta(minutes=6))) == by_time[1:-2]


def test_a_bounded_scan_looks_at_the_newest_events_of_the_first_pair_only(
    storage: Storage,
) -> None:
    """``scan``: of a user's events, only the newest ``scan`` are looked at, the others
    filters then apply to those (a bounded read of a user with a long history)."""
    names = ["login", "view", "view", "login", "view", "view", "view"]
    events = [wire_event(name=n, user={"uid": "7"}) for n in names]
    storage.insert_events(stored(*events, wire_event(name="login", user={"uid": "8"})))
    user = EventFilter(name="login", users=(("uid", "7"),))
    assert ids(storage.query_events(user)) == [events[3]["id"], events[0]["id"]]
    assert ids(storage.query_events(user, scan=4)) == [events[3]["id"]]
    assert ids(storage.query_events(user, scan=3)) == []
    assert ids(storage.query_events(user, scan=7, limit=1)) == [events[3]["id"]]


def test_stored_ids_are_found_under_any_key(storage: Storage) -> None:
    first, second = wire_event(), wire_event(id="with\x00nul")
    storage.insert_events([parse_event(first)], key_id=3)
    storage.insert_events([parse_event(second)])
    asked = [first["id"], second["id"], "never-stored"]
    assert storage.stored_ids(asked) == {first["id"], second["id"]}
    assert storage.stored_ids([]) == set()
    with pytest.raises(ValueError, match="at most 1000"):
        storage.stored_ids([str(n) for n in range(1001)])


def test_count_by_and_histogram(storage: Storage) -> None:
    events = [
        wire_event(
            timestamp=f"2026-01-01T00:{i:02d}:30Z",
            user={"uid": "a" if i < 6 else "b"},
            properties={"plan": "pro" if i % 2 else "free"},
        )
        for i in range(10)
    ]
    storage.insert_events(stored(*events), app="shop")
    assert storage.count_by("user.uid") == [("a", 6), ("b", 4)]
    assert storage.count_by("properties.plan") == [("free", 5), ("pro", 5)]
    assert storage.count_by("name") == [("auth.login.failure", 10)]
    assert storage.count_by("ip", EventFilter(users=(("uid", "b"),))) == [("203.0.113.7", 4)]
    assert storage.count_by("user.uid", limit=1) == [("a", 6)]
    with pytest.raises(ValueError, match="cannot count by"):
        storage.count_by("id; DROP TABLE events")

    start = datetime(2026, 1, 1, tzinfo=UTC)
    hist = storage.histogram(
        EventFilter(since=start, until=start + timedelta(minutes=10)), buckets=5
    )
    assert [t for t, _ in hist] == [start + timedelta(minutes=2 * i) for i in range(5)]
    assert [n for _, n in hist] == [2, 2, 2, 2, 2]
    assert sum(n for _, n in storage.histogram(EventFilter(users=(("uid", "a"),)))) == 6
    # A sample's histogram (counted in Python from its times) is the SQL one's.
    for f in (EventFilter(), EventFilter(users=(("uid", "a"),)), EventFilter(name="x")):
        for begin, end in (
            (start, start + timedelta(minutes=10)),
            (None, start + timedelta(hours=2)),
        ):
            whole = storage.histogram(f, buckets=7, start=begin, end=end)
            assert storage.histogram(f, buckets=7, newest=100, start=begin, end=end) == whole


@pytest.mark.parametrize(
    "f",
    [
        EventFilter(),
        EventFilter(name="auth.login.failure"),
        EventFilter(ip="203.0.113.7"),
        EventFilter(users=(("uid", "a"),)),
        EventFilter(properties=(("plan", "pro"),)),
        EventFilter(since=datetime(2025, 1, 1, tzinfo=UTC)),
    ],
    ids=["none", "name", "ip", "user", "property", "time"],
)
def test_the_span_of_events_stored_out_of_time_order(storage: Storage, f: EventFilter) -> None:
    """Spools, imports and late senders store events out of time order: the span (where
    the explorer's chart starts) is the earliest and latest time of the sample, not the
    times of its lowest and highest seq, and a chart from it counts every event."""
    times = ["2026-01-03T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z"]
    times += ["2026-01-02T00:00:00Z"]
    events = [wire_event(timestamp=t, user={"uid": "a"}, properties={"plan": "pro"}) for t in times]
    for event in events:
        storage.insert_events(stored(event))
    count, oldest, latest = storage.span(f, newest=100)
    assert count == 4
    assert oldest == datetime(2026, 1, 1, tzinfo=UTC)
    assert latest == datetime(2026, 1, 5, tzinfo=UTC)
    hist = storage.histogram(
        f, buckets=10, newest=100, start=oldest, end=datetime(2026, 1, 6, tzinfo=UTC)
    )
    assert sum(n for _, n in hist) == 4


def test_purge_older_than(storage: Storage) -> None:
    """By the time an event was received (its own time is the SDK's clock's)."""
    old = wire_event(timestamp="2000-01-01T00:00:00Z", properties={"k": "v"})
    new = wire_event(timestamp=datetime.now(UTC).isoformat(), properties={"k": "v"})
    storage.insert_events(stored(old), received_at=datetime(2000, 1, 1, 0, 0, 1, tzinfo=UTC))
    storage.insert_events(stored(new))
    assert storage.purge_older_than(30) == 1
    assert ids(storage.query_events()) == [new["id"]]
    assert storage.count_by("properties.k") == [("v", 1)]
    assert storage.purge_older_than(30) == 0


def test_api_keys(storage: Storage) -> None:
    key = storage.create_key("ci", "a" * 64)
    found = storage.key_by_hash("a" * 64)
    assert found is not None and found[0].id == key.id and found[1] == "a" * 64
    assert storage.key_by_hash("b" * 64) is None
    assert storage.revoke_key(key.id)
    assert not storage.revoke_key(key.id)
    assert storage.key_by_hash("a" * 64) is None
    (listed,) = storage.list_keys()
    assert listed.name == "ci" and listed.revoked_at is not None
    assert key.scope == listed.scope == "ingest"


def test_api_key_scopes(storage: Storage) -> None:
    admin = storage.create_key("ops", "c" * 64, "admin")
    found = storage.key_by_hash("c" * 64)
    assert found is not None and found[0].scope == admin.scope == "admin"
    assert [k.scope for k in storage.list_keys()] == ["admin"]
    with pytest.raises(ValueError, match="scope must be one of ingest, admin"):
        storage.create_key("x", "d" * 64, "root")  # type: ignore[arg-type]
    assert len(storage.list_keys()) == 1


def test_blocks_and_the_versioned_action_set(storage: Storage) -> None:
    assert storage.action_set().to_json() == {"version": 0, "items": []}
    user = storage.create_block(
        "block_user", user={"uid": "42"}, duration=timedelta(hours=1), reason="brute force"
    )
    ip = storage.create_block("block_ip", ip="203.0.113.0/24", created_by="cli")
    actions = storage.action_set().to_json()
    assert actions["version"] == 2
    assert actions["items"][0] == {
        "id": str(user.id),
        "type": "block_user",
        "user": {"uid": "42"},
        "expires_in": pytest.approx(3600, abs=5),
        "reason": "brute force",
    }
    assert actions["items"][1] == {
        "id": str(ip.id),
        "type": "block_ip",
        "ip": "203.0.113.0/24",
        "expires_in": None,
        "reason": "",
    }
    lifted = storage.lift_block(user.id, "admin")
    assert lifted is not None and lifted.lifted_by == "admin"
    assert storage.lift_block(user.id) is None  # already lifted: no new version
    actions = storage.action_set().to_json()
    assert actions["version"] == 3 and [i["id"] for i in actions["items"]] == [str(ip.id)]
    assert [b.id for b in storage.list_blocks()] == [ip.id]
    assert [b.id for b in storage.list_blocks(ended=100)] == [ip.id, user.id]


def test_renumbering_takes_the_action_set_past_the_clock_and_diffs_from_before_whole(
    storage: Storage, clock: Clock
) -> None:
    """What ``sqreen serve`` does as it starts (a restored database counts on from its
    backup's version, which SDKs may hold with other blocks)."""
    block = storage.create_block("block_ip", ip="203.0.113.1")
    assert storage.action_version() == 1
    now_us = int(clock().timestamp() * 1_000_000)
    version = storage.renumber_actions()
    assert version == storage.action_version() >= now_us
    assert storage.action_set().to_json()["items"][0]["id"] == str(block.id)
    assert not storage.action_changes(1).complete  # a diff from before: the whole set
    assert storage.action_changes(version).complete
    later = storage.create_block("block_ip", ip="203.0.113.2")
    changes = storage.action_changes(version)
    assert changes.complete and changes.version == version + 1
    assert [b.id for b in changes.blocks] == [later.id]
    # Past the version held by the gap, whatever the clock says: a clock set back since the
    # last start (then a restore) would otherwise have left the version where SDKs hold it.
    clock.advance(hours=-2)
    assert storage.renumber_actions() == version + 1 + RENUMBER_GAP


def test_expired_blocks_leave_the_action_set(storage: Storage, clock: Clock) -> None:
    block = storage.create_block("block_user", user={"uid": "1"}, duration=timedelta(hours=1))
    assert block.expires_at == block.created_at + timedelta(hours=1)
    clock.advance(minutes=59)
    actions = storage.action_set().to_json()
    assert [i["id"] for i in actions["items"]] == [str(block.id)]
    assert actions["items"][0]["expires_in"] == pytest.approx(60, abs=1)
    clock.advance(minutes=1, seconds=1)
    assert storage.action_set().to_json() == {"version": 1, "items": []}
    assert storage.list_blocks() == []
    assert storage.lift_block(block.id) is None
    (ended,) = storage.list_blocks(ended=100)
    assert ended.lifted_at is None and not ended.is_active(storage.now())


def test_ended_blocks_are_the_latest_lifted_or_expired(storage: Storage, clock: Clock) -> None:
    """The explorer's blocks page reads the latest ended blocks, not every block ever made."""
    hour = timedelta(hours=1)
    made = [storage.create_block("block_ip", ip=f"192.0.2.{n}", duration=hour) for n in range(6)]
    forever = storage.create_block("block_user", user={"uid": "1"})
    assert storage.ended_blocks(10) == []
    storage.lift_block(made[1].id, "cli:test")
    storage.lift_block(made[4].id, "cli:test")
    assert [b.id for b in storage.ended_blocks(10)] == [made[4].id, made[1].id]
    clock.advance(hours=1, seconds=1)  # every timed block has expired; the other stays
    ended = storage.ended_blocks(3)
    assert [b.id for b in ended] == [made[5].id, made[4].id, made[3].id]
    assert forever.id not in {b.id for b in storage.ended_blocks(100)}
    assert [b.id for b in storage.list_blocks()] == [forever.id]


def test_the_clock_stamps_every_write(storage: Storage, clock: Clock) -> None:
    """received_at, key and block times and heartbeats come from the storage's clock."""
    clock.advance(days=400)
    start = storage.now()
    assert start - datetime.now(UTC) > timedelta(days=399)
    storage.insert_events(stored(wire_event()))
    (event,) = storage.query_events()
    assert event.received_at >= start
    assert storage.create_key("k", "f" * 64).created_at >= start
    assert storage.create_block("block_ip", ip="192.0.2.1").created_at >= start
    storage.record_heartbeat(Heartbeat("shop", "web1", 1, None, None, None, {}))
    (agent,) = storage.agents()
    assert agent.first_seen >= start and agent.last_seen >= start
    assert storage.action_set().now >= start


def test_retention_follows_the_clock(storage: Storage, clock: Clock) -> None:
    young = wire_event(timestamp=recent(days=1), properties={"k": "v"})
    storage.insert_events(stored(young))
    assert storage.purge_older_than(30) == 0
    clock.advance(days=30)
    assert storage.purge_older_than(30) == 1
    assert storage.count_events() == 0 and storage.count_by("properties.k") == []


def test_heartbeats_keep_the_latest_per_process(storage: Storage) -> None:
    hb = Heartbeat("shop", "web1", 10, "flask", "sqreen-python", "1.0", {"queue_depth": 3})
    storage.record_heartbeat(hb)
    storage.record_heartbeat(Heartbeat("shop", "web1", 11, None, None, None, {}))
    storage.record_heartbeat(
        Heartbeat("shop", "web1", 10, "flask", "sqreen-python", "1.1", {"queue_depth": 0})
    )
    agents = {a.pid: a for a in storage.agents()}
    assert set(agents) == {10, 11}
    assert agents[10].sdk_version == "1.1" and agents[10].stats == {"queue_depth": 0}
    assert agents[10].last_seen >= agents[10].first_seen


def test_settings(storage: Storage) -> None:
    assert storage.get_setting("admin_password") is None
    storage.set_setting("admin_password", "hash1")
    storage.set_setting("admin_password", "hash2")
    assert storage.get_setting("admin_password") == "hash2"


def test_reopening_keeps_data_and_schema(storage: Storage, db_url: str) -> None:
    storage.insert_events(stored(wire_event()))
    again = open_storage(db_url)
    try:
        assert again.count_events() == 1
        assert again.migrate() == len(again.MIGRATIONS)  # type: ignore[attr-defined]
    finally:
        again.close()


def test_upgrading_from_schema_2_makes_existing_keys_ingest_keys(db_url: str) -> None:
    from sqreen.server.storage.postgres import PostgresStorage
    from sqreen.server.storage.sqlite import SQLiteStorage

    current = PostgresStorage if db_url.startswith("postgres") else SQLiteStorage
    old_schema = type("OldSchema", (current,), {"MIGRATIONS": current.MIGRATIONS[:2]})
    old = old_schema(db_url.removeprefix("sqlite://"))
    assert old.migrate() == 2
    with old._write() as cur:
        cur.execute(
            "INSERT INTO api_keys (name, token_hash, created_at) VALUES (?, ?, ?)",
            ("before", "e" * 64, 0),
        )
        cur.execute(
            "INSERT INTO events (id, name, ts, received_at, properties_json) "
            "VALUES (?, ?, ?, ?, ?)",
            ("old-event", "auth.signup", 0, 0, "{}"),
        )
    old.close()
    upgraded = open_storage(db_url)
    try:
        found = upgraded.key_by_hash("e" * 64)
        assert found is not None and (found.key.name, found.key.scope) == ("before", "ingest")
        event = upgraded.get_event("old-event")
        assert event is not None and event.enrichment == {}
    finally:
        upgraded.close()


def test_refuses_a_newer_schema(storage: Storage, db_url: str) -> None:
    with storage._write() as cur:  # type: ignore[attr-defined]
        cur.execute("UPDATE schema_version SET version = 999")
    with pytest.raises(RuntimeError, match="newer than this sqreen"):
        open_storage(db_url)


def test_times_are_exact_microseconds() -> None:
    t = datetime(2026, 1, 1, 0, 0, 0, 123457, tzinfo=UTC)
    assert to_us(t) == 1767225600123457
    assert to_us(t.replace(tzinfo=None)) == to_us(t)


@pytest.mark.postgres
def test_a_postgres_connection_in_use_at_close_is_closed_as_it_returns(postgres_db: str) -> None:
    """A request or job thread that outlives the app gives its connection back after
    close(): it is closed then, not left open in a pool nobody closes."""
    storage = open_storage(postgres_db)
    started, finished = threading.Event(), threading.Event()
    held: list[Any] = []

    def slow_read() -> None:
        with storage._connection() as conn:  # type: ignore[attr-defined]
            held.append(conn)
            started.set()
            conn.execute("SELECT pg_sleep(0.3)")
        finished.set()

    thread = threading.Thread(target=slow_read)
    thread.start()
    assert started.wait(10)
    storage.close()
    thread.join(10)
    assert finished.is_set()
    (conn,) = held
    assert conn.closed
    assert storage.action_version() >= 0  # a straggler still gets an answer after close()
    assert storage._idle == []  # type: ignore[attr-defined]


def test_identical_batches_at_once_store_each_event_once(db_url: str) -> None:
    """Two collectors (two storages), two threads each, insert the same batches at the same
    moment (half of them in reverse order), as retries through a load balancer do: each event
    is stored once with its side rows once, and exactly one insert reports it new."""
    storages = [open_storage(db_url), open_storage(db_url)]
    batches = [
        stored(*(wire_event(properties={"n": b * 50 + i}) for i in range(50))) for b in range(8)
    ]
    barrier = threading.Barrier(4)
    new: list[int] = []
    errors: list[BaseException] = []

    def insert(storage: Storage, reverse: bool) -> None:
        try:
            for batch in batches:
                barrier.wait(30)
                result = storage.insert_events(batch[::-1] if reverse else batch)
                new.extend(seq for seq in result.seqs if seq is not None)
        except BaseException as exc:  # reported below, with the test's own assertions
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=insert, args=(s, reverse))
        for s in storages
        for reverse in (False, True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        total = sum(len(b) for b in batches)
        assert len(new) == len(set(new)) == total
        found = storages[0].query_events(limit=total + 1)
        assert sorted(e.properties["n"] for e in found) == list(range(total))
        assert sorted(e.seq for e in found) == sorted(new)
        assert storages[0].count_by("user.uid") == [("42", total)]
        assert storages[0].count_by("properties.n", limit=1) == [("0", 1)]
    finally:
        for s in storages:
            s.close()


@pytest.mark.postgres
def test_postgres_inserts_again_after_a_failed_transaction(
    postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first insert on a connection makes its staging table; when that transaction fails,
    the table goes with it, and the next insert on the connection makes it again."""
    from sqreen.server.storage.postgres import PostgresStorage

    storage = open_storage(postgres_db)
    assert isinstance(storage, PostgresStorage)
    a, b = wire_event(), wire_event()

    def fail(*args: object) -> None:
        raise RuntimeError("the database went away")

    with monkeypatch.context() as patch:
        patch.setattr(PostgresStorage, "_insert_index", fail)
        with pytest.raises(RuntimeError):
            storage.insert_events(stored(a))
    try:
        assert storage.count_events() == 0
        assert counts(storage.insert_events(stored(a, b))) == (2, 0)
        assert counts(storage.insert_events(stored(b))) == (0, 1)
        assert storage.count_by("user.uid") == [("42", 2)]
    finally:
        storage.close()


def test_a_new_sqlite_database_has_4_kib_pages_and_an_old_one_keeps_its_own(
    tmp_path: Any,
) -> None:
    """New databases get 4 KiB pages (fewer bytes written for each scattered index entry
    of a grown database); one created with the 8 KiB pages of earlier versions keeps them
    and goes on storing and filtering."""
    import sqlite3

    fresh = open_storage(str(tmp_path / "new.db"))
    try:
        (size,) = fresh._read("PRAGMA page_size")[0]  # type: ignore[attr-defined]
        assert size == 4096
    finally:
        fresh.close()
    old_path = str(tmp_path / "old.db")
    conn = sqlite3.connect(old_path)
    conn.execute("PRAGMA page_size=8192")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE before_sqreen (x INTEGER)")
    conn.close()
    old = open_storage(old_path)
    try:
        old.insert_events(stored(wire_event(id="kept", properties={"plan": "pro"})))
        (size,) = old._read("PRAGMA page_size")[0]  # type: ignore[attr-defined]
        assert size == 8192
        assert ids(old.query_events(EventFilter(properties=(("plan", "pro"),)))) == ["kept"]
    finally:
        old.close()
