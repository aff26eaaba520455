"""The collector's HTTP API on a real uvicorn server, through httpx2."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from sqreen._wire import parse_event
from sqreen.server.app import create_app
from sqreen.server.auth import hash_token, new_token
from sqreen.server.storage import EventFilter, Storage
from tests.integrations._servers import UvicornThread

from .conftest import Collector, Switch, envelope, wait_for, wire_event

JSON = {"Content-Type": "application/json"}


def test_ingest_stores_events_and_replies_with_actions(collector: Collector) -> None:
    events = [wire_event(), wire_event(user={"uid": "7"})]
    reply = collector.post("/v1/events", envelope(events))
    assert reply.status_code == 200
    assert reply.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [],
        "actions": {"version": 0, "items": [], "watch": []},
    }
    stored = collector.storage.query_events()
    assert {e.id for e in stored} == {e["id"] for e in events}
    assert {(e.app, e.host) for e in stored} == {("shop", "web1")}
    assert stored[0].request is not None and stored[0].request["path"] == "/login"


def test_gzip_body(collector: Collector) -> None:
    body = gzip.compress(json.dumps(envelope([wire_event()])).encode())
    reply = collector.post("/v1/events", content=body, headers={**JSON, "Content-Encoding": "gzip"})
    assert reply.status_code == 200 and reply.json()["accepted"] == 1


def test_duplicates_are_ignored_and_counted(collector: Collector) -> None:
    events = [wire_event(), wire_event()]
    assert collector.post("/v1/events", envelope(events)).json()["accepted"] == 2
    again = collector.post("/v1/events", envelope([*events, wire_event()])).json()
    assert (again["accepted"], again["duplicates"]) == (1, 2)
    assert collector.storage.count_events() == 3


def test_mixed_batch_keeps_the_valid_events(collector: Collector) -> None:
    good = [wire_event(), wire_event()]
    bad_name = wire_event(name="sq.reserved")
    bad_props = wire_event(properties={"n": [[[[1]]]]})
    reply = collector.post(
        "/v1/events", envelope([good[0], bad_name, "not an event", good[1], bad_props])
    )
    assert reply.status_code == 200
    body = reply.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1, 2, 4]
    assert body["rejected"][0]["error"].startswith("name:")
    assert body["rejected"][1]["error"].startswith("event:")
    assert body["rejected"][2]["error"].startswith("properties.n")
    assert {e.id for e in collector.storage.query_events()} == {e["id"] for e in good}


def test_nan_and_infinities_in_events_are_null_and_the_batch_is_kept(
    collector: Collector,
) -> None:
    """Earlier SDK builds wrote a JSON body's ``NaN`` and ``Infinity`` as such: refusing the
    whole batch for them (400) let one request a batch hide every other event."""
    poisoned = wire_event()
    poisoned["request"]["params"] = {
        "password": "__NAN__",
        "n": ["__INF__", "__NINF__", 2],
        "pin": "__HUGE__",  # an SDK process with no limit on digits sent it as it came
    }
    good = wire_event(name="auth.login.success", user={"uid": "7"})
    text = json.dumps(envelope([poisoned, good]))
    text = text.replace('"__NAN__"', "NaN").replace('"__INF__"', "Infinity")
    body = text.replace('"__NINF__"', "-Infinity").replace('"__HUGE__"', "9" * 5000).encode()
    reply = collector.post("/v1/events", content=body, headers=JSON)
    assert reply.status_code == 200, reply.text
    assert (reply.json()["accepted"], reply.json()["rejected"]) == (2, [])
    stored = {e.id: e for e in collector.storage.query_events()}
    assert set(stored) == {poisoned["id"], good["id"]}
    request = stored[poisoned["id"]].request
    assert request is not None
    assert request["params"] == {"password": None, "n": [None, None, 2], "pin": None}
    # Elsewhere they stay refused: a block's expiry of NaN is no "never".
    assert collector.post("/v1/heartbeat", content=b'{"sdk": NaN}', headers=JSON).status_code == 400


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, None),
        (b"NaN", 400, "body"),
        (b"[" * 100_000 + b"]" * 100_000, 400, None),
        (b"\xff\xfe\x00", 400, None),
        (b"[]", 400, "body"),
        (b'{"events": {}}', 400, "events"),
        (b'{"events": [], "app": "shop"}', 400, "app"),
        (b'{"events": [], "sdk": {"name": ["x"]}}', 400, "sdk.name"),
        (json.dumps({"events": [wire_event()] * 1001}).encode(), 413, "events"),
    ],
    ids=[
        "malformed",
        "nan",
        "deep",
        "binary",
        "array",
        "events-type",
        "app-type",
        "sdk-value",
        "too-many",
    ],
)
def test_bad_bodies_are_400_and_store_nothing(
    collector: Collector, body: bytes, status: int, field: str | None
) -> None:
    reply = collector.post("/v1/events", content=body, headers=JSON)
    assert reply.status_code == status
    error = reply.json()
    assert error["error"]
    assert error.get("field") == field
    if field is None:
        assert error["error"].startswith("malformed JSON")
    assert collector.storage.count_events() == 0


def test_not_json_is_415(collector: Collector) -> None:
    body = json.dumps(envelope([wire_event()])).encode()
    for headers in ({"Content-Type": "text/plain"}, {}, {**JSON, "Content-Encoding": "br"}):
        reply = collector.post("/v1/events", content=body, headers=headers)
        assert reply.status_code == 415 and "error" in reply.json()
    assert collector.storage.count_events() == 0


def test_a_20_mb_body_is_413(collector: Collector) -> None:
    big = json.dumps(envelope([wire_event(properties={"p": "x" * 4000})] * 1)).encode()
    body = big[:-3] + b" " * (20 * 1024 * 1024) + big[-3:]
    reply = collector.post("/v1/events", content=body, headers=JSON)
    assert reply.status_code == 413
    assert "over" in reply.json()["error"]


def test_a_streamed_body_without_length_is_bounded(collector: Collector) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"events": ['
        for _ in range(12 * 1024):
            yield b" " * 1024

    try:
        reply = collector.post("/v1/events", content=chunks(), headers=JSON)
    except httpx.HTTPError:  # the server may close before the client finishes sending
        pass
    else:
        assert reply.status_code == 413
    assert collector.storage.count_events() == 0


def test_a_gzip_bomb_is_413(collector: Collector) -> None:
    bomb = gzip.compress(b'{"events": [' + b" " * (16 * 1024 * 1024) + b"]}", 9)
    assert len(bomb) < 40_000
    reply = collector.post("/v1/events", content=bomb, headers={**JSON, "Content-Encoding": "gzip"})
    assert reply.status_code == 413
    assert "inflates" in reply.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"not gzip at all",
        gzip.compress(b'{"events": []}', mtime=0)[:-4],
        gzip.compress(b"{}", mtime=0) + b"x",
    ],
    ids=["not gzip", "truncated", "trailing garbage"],
)
def test_broken_gzip_is_400(collector: Collector, body: bytes) -> None:
    reply = collector.post("/v1/events", content=body, headers={**JSON, "Content-Encoding": "gzip"})
    assert reply.status_code == 400 and "gzip" in reply.json()["error"]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer sqk_wrong", "Bearer " + "x" * 5000],
)
def test_missing_or_invalid_key_is_401(collector: Collector, authorization: str | None) -> None:
    headers = dict(JSON)
    if authorization is not None:
        headers["Authorization"] = authorization
    reply = httpx.post(
        collector.url + "/v1/events",
        content=json.dumps(envelope([wire_event()])),
        headers=headers,
    )
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert reply.json()["error"]
    assert collector.storage.count_events() == 0


def test_a_revoked_key_stops_working(collector: Collector) -> None:
    key_id, token = collector.new_key("to-revoke")
    headers = {"Authorization": f"Bearer {token}"}
    body = envelope([wire_event()])
    assert httpx.post(collector.url + "/v1/events", json=body, headers=headers).status_code == 200
    assert collector.storage.revoke_key(key_id)
    time.sleep(0.25)  # the test app caches valid keys for 0.2 s
    reply = httpx.post(collector.url + "/v1/events", json=envelope([wire_event()]), headers=headers)
    assert reply.status_code == 401
    assert collector.storage.count_events() == 1


def test_sql_metacharacters_everywhere_are_stored_verbatim(collector: Collector) -> None:
    evil = "'; DROP TABLE events; --\"`\\ OR 1=1 /* %s ? $1"
    event = wire_event(
        id="id-'; DROP TABLE events; --",
        name="x'--:;".replace(";", "").replace("'", ""),  # names allow only [A-Za-z0-9._:-]
        properties={evil: evil, "k": evil},
        user={evil: evil},
        target={"id": evil, "type": evil, "name": evil},
    )
    event["request"].update(path=evil, user_agent=evil, ip=evil, params={evil: evil})
    reply = collector.post("/v1/events", envelope([event], name=evil, host=evil))
    assert reply.status_code == 200 and reply.json()["accepted"] == 1
    stored = collector.storage.get_event(event["id"])
    assert stored is not None
    assert stored.properties == {evil: evil, "k": evil}
    assert stored.user == {evil: evil}
    assert stored.target == {"id": evil, "type": evil, "name": evil}
    assert stored.app == evil
    assert stored.ip is None  # not an address: none (playbooks and blocks act on it)
    assert stored.request is not None and stored.request["params"] == {evil: evil}
    found = collector.storage.query_events(EventFilter(users=((evil, evil),), app=evil))
    assert [e.id for e in found] == [event["id"]]


def test_heartbeat_is_stored_and_replies_with_actions(collector: Collector) -> None:
    stats = {
        "queue_depth": 3,
        "queue_bytes": 1200,
        "sent": 10,
        "tracked": 13,
        "dropped": {"queue_full": 0, "invalid": 1, "retry_expired": 0, "rejected": 0},
    }
    body = {"sdk": {"name": "sqreen-python", "version": "0.1"}, "app": envelope([])["app"]}
    reply = collector.post("/v1/heartbeat", {**body, "stats": stats})
    assert reply.status_code == 200
    assert reply.json() == {"actions": {"version": 0, "items": [], "watch": []}}
    (agent,) = collector.storage.agents()
    assert (agent.app, agent.host, agent.pid, agent.framework) == ("shop", "web1", 1234, "flask")
    assert (agent.sdk_name, agent.sdk_version) == ("sqreen-python", "0.1")
    assert agent.stats == stats


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stats": {"queue_depth": -1}}, "stats.queue_depth"),
        ({"stats": {"sent": 10**30}}, "stats.sent"),
        ({"stats": {"sent": 2**53}}, "stats.sent"),
        ({"stats": {"dropped": {"full": 10**30}}}, "stats.dropped.full"),
        ({"stats": {"dropped": {"x": "many"}}}, "stats.dropped.x"),
        ({"stats": []}, "stats"),
        ({"app": {"pid": "12"}}, "app.pid"),
        ({"app": {"name": {"x": 1}}}, "app.name"),
    ],
)
def test_bad_heartbeats_are_400(collector: Collector, body: dict, field: str) -> None:
    reply = collector.post("/v1/heartbeat", body)
    assert reply.status_code == 400 and reply.json()["field"] == field
    assert collector.storage.agents() == []


def test_a_heartbeat_is_a_small_body(collector: Collector) -> None:
    """A heartbeat is a few KB (stats, at most 30 blocks' refusals): one of megabytes (a
    gzip of a million tiny objects inflates to 10 MiB from 14 KB) held the ingest slot for
    its parse, outside the fair turns of event bodies. Past 64 KiB, inflated, it is 413."""
    stats = {"queue_depth": 1, "junk": ["x" * 100] * 700}  # about 70 KB
    body = {"sdk": {"name": "sqreen-python", "version": "0.1"}, "app": envelope([])["app"]}
    reply = collector.post("/v1/heartbeat", {**body, "stats": stats})
    assert reply.status_code == 413
    gz = gzip.compress(json.dumps({**body, "stats": stats}).encode())
    assert len(gz) < 4096
    reply = collector.post(
        "/v1/heartbeat",
        content=gz,
        headers={"content-encoding": "gzip", "content-type": "application/json"},
    )
    assert reply.status_code == 413
    assert collector.storage.agents() == []
    assert collector.post("/v1/heartbeat", {**body, "stats": {"sent": 1}}).status_code == 200


def test_blocks_api_and_action_versions(collector: Collector) -> None:
    reply = collector.post(
        "/v1/blocks",
        {"type": "block_user", "user": {"uid": "42"}, "duration": "1h", "reason": "brute force"},
        admin=True,
    )
    assert reply.status_code == 201
    user_block = reply.json()
    assert user_block["user"] == {"uid": "42"} and user_block["active"]
    assert 3590 < user_block["expires_in"] <= 3600
    ip_block = collector.post(
        "/v1/blocks", {"type": "block_ip", "ip": "203.0.113.77/24", "duration": 60}, admin=True
    ).json()
    assert ip_block["ip"] == "203.0.113.0/24"

    listed = collector.admin.get(collector.url + "/v1/blocks").json()
    assert listed["version"] == 2
    assert [b["id"] for b in listed["blocks"]] == [ip_block["id"], user_block["id"]]
    actions = collector.post("/v1/events", envelope([wire_event()])).json()["actions"]
    assert actions["version"] == 2
    assert {i["type"] for i in actions["items"]} == {"block_user", "block_ip"}

    deleted = collector.admin.delete(f"{collector.url}/v1/blocks/{user_block['id']}")
    assert deleted.status_code == 200 and deleted.json()["lifted_by"].startswith("api-key:")
    again = collector.admin.delete(f"{collector.url}/v1/blocks/{user_block['id']}")
    assert again.status_code == 404
    assert collector.admin.delete(collector.url + "/v1/blocks/abc").status_code == 404
    actions = collector.client.get(collector.url + "/v1/actions").json()["actions"]
    assert actions["version"] == 3 and [i["id"] for i in actions["items"]] == [ip_block["id"]]
    everything = collector.admin.get(collector.url + "/v1/blocks?all=1").json()["blocks"]
    assert len(everything) == 2


def test_listing_ended_blocks_is_bounded(collector: Collector) -> None:
    """The table keeps every block ever made (a playbook makes one an attacker): ``all=1``
    adds the ``limit`` newest ended ones to those in force, never the whole table."""
    specs = [{"type": "block_ip", "ip": f"192.0.2.{n}"} for n in range(5)]
    made = [collector.post("/v1/blocks", spec, admin=True).json()["id"] for spec in specs]
    for block_id in made[:4]:
        assert collector.admin.delete(f"{collector.url}/v1/blocks/{block_id}").status_code == 200
    listed = collector.admin.get(collector.url + "/v1/blocks?all=1&limit=2").json()["blocks"]
    assert [b["id"] for b in listed] == [made[4], made[3], made[2]]  # in force, then 2 ended
    assert len(collector.admin.get(collector.url + "/v1/blocks?all=1").json()["blocks"]) == 5
    for bad in ("0", "10001", "many"):
        reply = collector.admin.get(f"{collector.url}/v1/blocks?all=1&limit={bad}")
        assert reply.status_code == 400 and reply.json()["field"] == "limit"


def test_an_ingest_key_cannot_touch_blocks(collector: Collector) -> None:
    """The SDK's key sits on every app server: if one leaks, it must not lift the block that
    stops the attacker, nor block the app's users, nor list what is blocked."""
    block = collector.post(
        "/v1/blocks", {"type": "block_ip", "ip": "203.0.113.7", "duration": "1h"}, admin=True
    ).json()
    attempts = [
        collector.client.get(collector.url + "/v1/blocks"),
        collector.post("/v1/blocks", {"type": "block_user", "user": {"uid": "1"}}),
        collector.client.delete(f"{collector.url}/v1/blocks/{block['id']}"),
    ]
    for reply in attempts:
        assert reply.status_code == 403
        assert "--scope admin" in reply.json()["error"]
        assert reply.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
    (kept,) = collector.storage.list_blocks(ended=100)
    assert kept.id == int(block["id"]) and kept.lifted_at is None
    # ... while it still does all an SDK needs.
    assert collector.post("/v1/events", envelope([wire_event()])).json()["accepted"] == 1
    assert collector.client.get(collector.url + "/v1/actions").json()["actions"]["version"] == 1
    # An admin key is a superset: it may send events too.
    assert collector.post("/v1/events", envelope([wire_event()]), admin=True).status_code == 200


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "block_user", "user": {}}, "user"),
        ({"type": "block_user", "user": {"uid": ["42"]}}, "user.uid"),
        ({"type": "block_user"}, "user"),
        ({"type": "block_ip", "ip": "10.0.0.0/8"}, "ip"),
        ({"type": "block_ip", "ip": "2001:db8::/32"}, "ip"),
        ({"type": "block_ip", "ip": "not an ip"}, "ip"),
        ({"type": "block_ip", "ip": "127.0.0.1"}, "ip"),
        ({"type": "block_ip", "ip": "1.2.3.4", "duration": "forever"}, "duration"),
        ({"type": "block_ip", "ip": "1.2.3.4", "duration": -5}, "duration"),
        ({"type": "block_everyone"}, "type"),
        ({"type": "block_ip", "ip": "1.2.3.4", "extra": 1}, "body"),
        ([], "body"),
    ],
)
def test_invalid_blocks_are_400(collector: Collector, spec: object, field: str) -> None:
    reply = collector.post("/v1/blocks", spec, admin=True)
    assert reply.status_code == 400
    assert reply.json()["field"] == field
    assert collector.storage.list_blocks(ended=100) == []


def test_a_loopback_block_is_refused_with_the_reason(collector: Collector) -> None:
    reply = collector.post("/v1/blocks", {"type": "block_ip", "ip": "::1"}, admin=True)
    assert reply.status_code == 400
    assert reply.json() == {
        "error": "ip: ::1/128 covers loopback (::1/128): every SDK trusts loopback as a proxy "
        "by default and refuses such a block, so it would never be enforced",
        "field": "ip",
    }


def test_expired_blocks_leave_the_action_set(collector: Collector) -> None:
    collector.post(
        "/v1/blocks", {"type": "block_ip", "ip": "192.0.2.1", "duration": "10m"}, admin=True
    )
    collector.clock.advance(minutes=9)
    (item,) = collector.client.get(collector.url + "/v1/actions").json()["actions"]["items"]
    assert item["expires_in"] == pytest.approx(60, abs=1)
    collector.clock.advance(minutes=1)
    actions = collector.client.get(collector.url + "/v1/actions").json()["actions"]
    assert actions == {"version": 1, "items": [], "watch": []}
    (ended,) = collector.admin.get(collector.url + "/v1/blocks?all=1").json()["blocks"]
    assert not ended["active"] and ended["lifted_at"] is None


def test_unknown_routes_and_methods_answer_json(collector: Collector) -> None:
    missing = collector.client.get(collector.url + "/nope")
    assert missing.status_code == 404 and missing.json()["error"]
    wrong = collector.client.get(collector.url + "/v1/events")
    assert wrong.status_code == 405 and wrong.json()["error"]
    assert httpx.get(collector.url + "/healthz").json() == {"status": "ok"}


def test_the_app_purges_old_events_when_retention_is_set(sqlite_storage: Storage) -> None:
    old = parse_event(wire_event(timestamp="2001-01-01T00:00:00Z"))
    new = parse_event(wire_event(timestamp=datetime.now(UTC).isoformat()))
    sqlite_storage.insert_events([old], received_at=datetime(2001, 1, 1, 0, 0, 1, tzinfo=UTC))
    sqlite_storage.insert_events([new])
    app = create_app(sqlite_storage, retention_days=30, purge_every=0.05, explorer=False)
    server = UvicornThread(app, lifespan="on")
    try:
        deadline = time.monotonic() + 10
        while sqlite_storage.count_events() > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
    assert [e.id for e in sqlite_storage.query_events()] == [new["id"]]


@pytest.mark.parametrize("rebalance", [True, False])
def test_a_worker_with_a_backlog_asks_senders_to_reconnect(
    live_app: tuple[Switch, str], sqlite_storage: Storage, rebalance: bool
) -> None:
    """With ``rebalance`` (one of ``serve --workers N``), a reply sent while other bodies wait
    in this process says ``Connection: close``; every event is still stored exactly once.

    The first body's turn is held until the five others wait behind it: sent at once, they
    could all arrive before the first turn and share it, leaving no backlog to see."""
    switch, url = live_app
    token = new_token()
    sqlite_storage.create_key("test", hash_token(token))
    app = switch.app = create_app(sqlite_storage, key_cache_ttl=5, workers=2 if rebalance else 1)
    pipeline = app.state.pipeline
    ingest_many = pipeline.ingest_many
    turn_started = threading.Event()

    def held_first_turn(bodies: list[tuple[bytes, int]]) -> list[Any]:
        if not turn_started.is_set():
            turn_started.set()
            wait_for(lambda: app.state.ingest_queue.waiting >= 6)  # the 5 others in line
        return ingest_many(bodies)

    pipeline.ingest_many = held_first_turn
    batches = [[wire_event() for _ in range(1000)] for _ in range(6)]
    replies: list[httpx.Response] = []

    def send(events: list[dict[str, Any]]) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            replies.append(client.post(url + "/v1/events", json=envelope(events)))

    threads = [threading.Thread(target=send, args=(b,)) for b in batches]
    threads[0].start()
    assert turn_started.wait(30)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in replies] == [200] * 6
    assert sum(r.json()["accepted"] for r in replies) == 6000
    assert sqlite_storage.count_events() == 6000
    closes = [r.headers.get("connection") for r in replies].count("close")
    assert closes >= 1 if rebalance else closes == 0


def test_the_readmes_blocks_api_calls_do_what_it_says(collector: Collector) -> None:
    """Each ``curl`` of the README's blocks API block, sent as written (its body, method
    and path) with an admin key."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("ADMIN=$(sqreen keys create --name ops --scope admin)\n", 1)[1]
    block = block.split("```", 1)[0].replace("\\\n", " ")
    calls = [line.split("curl ", 1)[1] for line in block.splitlines() if "curl " in line]
    assert len(calls) == 4
    replies = []
    for call in calls:
        method = "POST" if "-X POST" in call else "DELETE" if "-X DELETE" in call else "GET"
        path = "/" + call.split("http://127.0.0.1:8000/", 1)[1].split()[0]
        body = call.split("-d '", 1)[1].split("'", 1)[0] if "-d '" in call else None
        reply = collector.admin.request(
            method, collector.url + path, content=body, headers=JSON if body else None
        )
        replies.append(reply)
    ip, user, listed, lifted = replies
    assert (ip.status_code, ip.json()["outcome"], ip.json()["ip"]) == (
        201,
        "created",
        "203.0.113.0/24",
    )
    assert 3590 <= ip.json()["expires_in"] <= 3600 and ip.json()["created_by"].startswith(
        "api-key:"
    )
    assert user.status_code == 201 and user.json()["user"] == {"username": "mallory"}
    assert [b["id"] for b in listed.json()["blocks"]] == [user.json()["id"], ip.json()["id"]]
    assert lifted.status_code == 200 and lifted.json()["id"] == "2" == user.json()["id"]
    # Without a duration: until lifted. Another key: refused, naming it.
    forever = collector.post("/v1/blocks", {"type": "block_ip", "ip": "198.51.100.9"}, admin=True)
    assert forever.status_code == 201 and forever.json()["expires_in"] is None
    odd = collector.post(
        "/v1/blocks", {"type": "block_ip", "ip": "198.51.100.9", "expires_in": 5}, admin=True
    )
    assert odd.status_code == 400 and "expires_in" in odd.json()["error"]
