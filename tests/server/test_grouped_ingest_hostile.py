"""Bodies stored together, pushed where it hurts: groups that mix API keys, broken bodies,
failing enrichers and hooks, requests that go away, more bodies than a group holds, a
collector stopped or its database locked, and playbooks and enrichers that must decide as
when the bodies went one at a time."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from sqreen.server.app import create_app
from sqreen.server.auth import hash_token, new_token
from sqreen.server.errors import ApiError
from sqreen.server.intel import IMPOSSIBLE_TRAVEL, ImpossibleTravel, IpIntel
from sqreen.server.pipeline import Batch, IngestPipeline
from sqreen.server.playbooks import TEMPLATES, PlaybookRunner, PlaybookSource
from sqreen.server.storage import EventFilter, Storage, StoredEvent, open_storage

from . import test_travel
from .conftest import ServeProcess, add_key, envelope, wait_for, wire_event
from .test_grouped_ingest import body, held_first
from .test_travel import LONDON_IP, SYDNEY_IP, login

city_mmdb = test_travel.city_mmdb  # the fixture: a City .mmdb of London, Sydney and Paris


def replies(outcomes: Sequence[Any]) -> list[Any]:
    """Each outcome as (accepted, duplicates, rejected) or the error's status."""
    out: list[Any] = []
    for o in outcomes:
        if isinstance(o, ApiError):
            out.append(o.status)
        elif isinstance(o, Exception):
            out.append(type(o).__name__)
        else:
            r = o[0]
            out.append((r["accepted"], r["duplicates"], len(r["rejected"])))
    return out


# -- ingest_many, both back ends ----------------------------------------------------------


def test_same_ids_under_two_keys_in_one_group_are_two_events(storage: Storage) -> None:
    pipeline = IngestPipeline(storage)
    a, b = wire_event(), wire_event()
    outcomes = pipeline.ingest_many(
        [(body(a, b), 1), (body(a, b), 2), (body(b, a), 1), (body(a), 2), (body(a, b), 3)]
    )
    assert replies(outcomes) == [(2, 0, 0), (2, 0, 0), (0, 2, 0), (0, 1, 0), (2, 0, 0)]
    assert storage.count_events() == 6
    # Stored again alone: every one a duplicate under its own key.
    for key in (1, 2, 3):
        reply, _ = pipeline.ingest(body(a, b), key_id=key)
        assert (reply["accepted"], reply["duplicates"]) == (0, 2)


def test_a_group_of_broken_huge_identify_only_and_copied_bodies(storage: Storage) -> None:
    pipeline = IngestPipeline(storage)
    a, b, c = wire_event(), wire_event(), wire_event()
    identify = wire_event(name="sq.identify", user={"uid": "7"}, properties={"plan": "pro"})
    huge = [wire_event() for _ in range(1001)]
    outcomes = pipeline.ingest_many(
        [
            (body(a, b), 0),
            (b'{"events": [', 0),  # cut short
            (body(*huge), 0),
            (body(identify), 0),
            (body(a, b), 0),  # a copy of the first
            (b"[]", 0),
            (body(c, {"name": "x"}), 0),  # one event good, one not
            (body(), 0),  # no events at all
        ]
    )
    got = replies(outcomes)
    assert got[0] == (2, 0, 0)
    assert got[1] == 400 and got[2] == 413 and got[5] == 400
    assert got[3] == (1, 0, 0)
    assert got[4] == (0, 2, 0)
    assert got[6] == (1, 0, 1)
    assert got[7] == (0, 0, 0)
    assert storage.count_events() == 3
    assert {e.id for e in storage.query_events()} == {a["id"], b["id"], c["id"]}
    user = storage.get_user({"uid": "7"})
    assert user is not None and user.traits == {"plan": "pro"}


def test_an_enricher_that_raises_or_adds_what_cannot_be_stored_harms_one_body(
    storage: Storage,
) -> None:
    def enrich(batch: Batch) -> None:
        props = batch.events[0]["properties"]
        if props.get("boom"):
            raise RuntimeError("enricher broke")
        for extra in batch.enrichment:
            extra["tag"] = object() if props.get("unstorable") else "ok"

    pipeline = IngestPipeline(storage, enrichers=[enrich])
    ok1 = wire_event(properties={"n": 1})
    boom = wire_event(properties={"boom": True})
    bad = wire_event(properties={"unstorable": True})
    ok2 = wire_event(properties={"n": 2})
    outcomes = pipeline.ingest_many(
        [(body(ok1), 0), (body(boom), 0), (body(bad), 0), (body(ok2), 0)]
    )
    assert replies(outcomes) == [(1, 0, 0)] * 4
    stored = {e.id: e for e in storage.query_events()}
    assert stored[ok1["id"]].enrichment == {"tag": "ok"}
    assert stored[ok2["id"]].enrichment == {"tag": "ok"}
    assert stored[boom["id"]].enrichment == {}
    assert stored[bad["id"]].enrichment == {}


def test_a_hook_that_raises_for_one_body_leaves_the_others_heard(storage: Storage) -> None:
    heard: list[list[str]] = []

    def fragile(events: Sequence[StoredEvent]) -> None:
        if any(e.properties.get("boom") for e in events):
            raise RuntimeError("hook broke")
        heard.append([e.id for e in events])

    class Grouped:
        calls: list[int] = []

        def stored_batches(self, stored: Sequence[tuple[Batch, Any]]) -> None:
            self.calls.append(len(stored))
            raise RuntimeError("grouped hook broke")

    grouped = Grouped()
    pipeline = IngestPipeline(storage, hooks=[fragile, grouped])
    a, boom, c = wire_event(), wire_event(properties={"boom": True}), wire_event()
    outcomes = pipeline.ingest_many([(body(a), 0), (body(boom), 0), (body(c), 0)])
    assert replies(outcomes) == [(1, 0, 0)] * 3
    assert heard == [[a["id"]], [c["id"]]]
    assert grouped.calls == [3, 1, 1, 1]  # the group, then each body alone
    assert storage.count_events() == 3


def test_travel_between_two_bodies_of_one_group_is_seen(storage: Storage, city_mmdb: str) -> None:
    """A user logs in from London, then from Sydney 30 minutes later, each login in its own
    body: one alert whether the bodies went one at a time or waited together."""
    start = datetime.now(UTC) - timedelta(hours=2)
    pipeline = IngestPipeline(
        storage, enrichers=[IpIntel.open([city_mmdb]), ImpossibleTravel(storage)]
    )
    london, sydney = login(LONDON_IP, start), login(SYDNEY_IP, start + timedelta(minutes=30))
    outcomes = pipeline.ingest_many([(body(london), 0), (body(sydney), 0)])
    assert replies(outcomes) == [(1, 0, 0), (1, 0, 0)]
    (travel,) = storage.query_events(EventFilter(name=IMPOSSIBLE_TRAVEL))
    assert travel.properties["from_event"] == london["id"]
    assert travel.properties["to_event"] == sydney["id"]
    # Copies of those bodies in a later group: nothing new, no second alert.
    again = pipeline.ingest_many([(body(london), 0), (body(sydney), 0)])
    assert replies(again) == [(0, 1, 0), (0, 1, 0)]
    assert len(storage.query_events(EventFilter(name=IMPOSSIBLE_TRAVEL))) == 1


def test_travel_in_one_group_is_what_one_at_a_time_gives(tmp_path: Path, city_mmdb: str) -> None:
    """Logins of three users, over several bodies: the same travel events either way."""
    start = datetime.now(UTC) - timedelta(hours=3)
    ips = [LONDON_IP, SYDNEY_IP, LONDON_IP, "2.3.4.5"]
    bodies = []
    for n in range(8):
        bodies.append(
            body(
                *(
                    login(ips[(n + u) % 4], start + timedelta(minutes=20 * n + u), uid=str(u))
                    for u in range(3)
                )
            )
        )

    def travels(group: bool, name: str) -> set[tuple[str, str]]:
        s = open_storage(str(tmp_path / name))
        try:
            p = IngestPipeline(s, enrichers=[IpIntel.open([city_mmdb]), ImpossibleTravel(s)])
            if group:
                p.ingest_many([(b, 0) for b in bodies])
            else:
                for b in bodies:
                    p.ingest(b)
            found = s.query_events(EventFilter(name=IMPOSSIBLE_TRAVEL), limit=100)
            return {(e.properties["from_event"], e.properties["to_event"]) for e in found}
        finally:
            s.close()

    alone = travels(False, "alone.db")
    assert alone  # the scenario has some
    assert travels(True, "grouped.db") == alone


# -- playbooks: grouped vs one at a time ----------------------------------------------------


def failure(ip: str, uid: str, **kw: Any) -> dict[str, Any]:
    event = wire_event(user={"uid": uid}, **kw)
    event["request"] = {**event["request"], "ip": ip}
    return event


def playbook_bodies() -> list[bytes]:
    """Brute force from two IPs, a spray, an account takeover whose success comes in a body
    of the same group as its failures (and another in the group after), sign-ups and
    credential stuffing: three events a body."""
    events: list[dict[str, Any]] = []
    for n in range(12):
        events.append(failure("198.51.100.1", "victim"))
        events.append(failure("198.51.100.2", f"sprayed{n}"))
        if n == 10:  # the takeover: in the same group of 8 bodies as the failures
            events.append(failure("198.51.100.3", "victim", name="auth.login.success"))
    events.append(failure("198.51.100.6", "victim", name="auth.login.success", properties={}))
    for n in range(6):
        events.append(failure("198.51.100.4", f"new{n}", name="auth.signup", properties={}))
    for n in range(20):
        events.append(failure("198.51.100.5", f"stuffed{n}"))
    return [body(*events[i : i + 3]) for i in range(0, len(events), 3)]


def alerts_and_blocks(
    tmp_path: Path, name: str, deliver: Callable[[IngestPipeline, list[bytes]], None]
) -> tuple[list[Any], list[Any]]:
    path = tmp_path / "playbooks.toml"
    path.write_text(TEMPLATES)
    s = open_storage(str(tmp_path / name))
    try:
        runner = PlaybookRunner(s, PlaybookSource(path))
        deliver(IngestPipeline(s, hooks=[runner]), playbook_bodies())
        # Which playbook fired for what: a turn evaluates more events at once (as a bigger
        # body would), so an alert's count may include events that came with the crossing.
        alerts = sorted((a.playbook, a.group_key) for a in s.list_alerts())
        blocks = sorted((b.type, b.ip, json.dumps(b.user), b.created_by) for b in s.list_blocks())
        return alerts, blocks
    finally:
        s.close()


def test_playbooks_fire_the_same_alerts_and_blocks_grouped_or_not(tmp_path: Path) -> None:
    def alone(p: IngestPipeline, bodies: list[bytes]) -> None:
        for b in bodies:
            p.ingest(b)

    def grouped(p: IngestPipeline, bodies: list[bytes]) -> None:
        for i in range(0, len(bodies), 8):
            p.ingest_many([(b, 0) for b in bodies[i : i + 8]])

    expected = alerts_and_blocks(tmp_path, "alone.db", alone)
    assert {a[0] for a in expected[0]} >= {"brute-force-ip", "account-takeover", "signup-abuse"}
    assert alerts_and_blocks(tmp_path, "grouped.db", grouped) == expected


def test_playbooks_failing_on_one_body_still_judge_the_others_of_its_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The playbooks' evaluation breaks on one body's events (injected: no event is known to
    break it): the other bodies of its group are judged all the same, as one at a time."""
    from sqreen.server.playbooks import _runner

    views = _runner.wire_views

    def fragile(events: Any, *args: Any) -> Any:
        if any(e["properties"].get("poison") for e in events):
            raise RuntimeError("the evaluation broke")
        return views(events, *args)

    monkeypatch.setattr(_runner, "wire_views", fragile)
    path = playbook_file = tmp_path / "playbooks.toml"
    playbook_file.write_text(TEMPLATES)
    s = open_storage(str(tmp_path / "p.db"))
    try:
        pipeline = IngestPipeline(s, hooks=[PlaybookRunner(s, PlaybookSource(path))])
        attack = [failure("198.51.100.1", "victim") for _ in range(5)]
        poison = failure("198.51.100.9", "x", properties={"poison": True})
        outcomes = pipeline.ingest_many([(body(*attack), 0), (body(poison), 0)])
        assert replies(outcomes) == [(5, 0, 0), (1, 0, 0)]
        assert [(a.playbook, a.group_key) for a in s.list_alerts()] == [
            ("brute-force-ip", "198.51.100.1")
        ]
        assert [b.ip for b in s.list_blocks()] == ["198.51.100.1/32"]
    finally:
        s.close()


# -- the HTTP queue, in process -----------------------------------------------------------


class App:
    def __init__(self, storage: Storage, enrichers: Sequence[Any] = ()) -> None:
        self.storage = storage
        self.token = new_token()
        storage.create_key("sdk", hash_token(self.token))
        self.app = create_app(storage, enrichers=list(enrichers))
        self.headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://c", timeout=30)

    @property
    def queue(self) -> Any:
        return self.app.state.ingest_queue


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_a_request_cancelled_while_it_waits_is_not_stored(sqlite_storage: Storage) -> None:
    enrich = held_first()
    app = App(sqlite_storage, [enrich])
    evs = [[wire_event() for _ in range(2)] for _ in range(4)]

    async def run() -> list[Any]:
        async with app.client() as client:
            post = lambda e: client.post("/v1/events", content=body(*e), headers=app.headers)  # noqa: E731
            first = asyncio.create_task(post(evs[0]))
            await until(enrich.started.is_set)
            rest = [asyncio.create_task(post(e)) for e in evs[1:]]
            await until(lambda: app.queue.pending == 4)
            rest[1].cancel()
            enrich.release.set()
            out = [await first]
            for t in rest:
                try:
                    out.append(await t)
                except asyncio.CancelledError:
                    out.append("cancelled")
            return out

    results = asyncio.run(run())
    assert results[2] == "cancelled"
    assert [r.status_code for r in results if r != "cancelled"] == [200, 200, 200]
    ids = {e.id for e in sqlite_storage.query_events()}
    assert ids == {e["id"] for n in (0, 1, 3) for e in evs[n]}
    assert app.queue.pending == 0 and app.queue.grouped == 3


def test_a_request_cancelled_while_its_group_runs_leaves_the_queue_working(
    sqlite_storage: Storage,
) -> None:
    """The group's transaction goes on (its events are committed): the other bodies of the
    group are answered, and so is a body sent afterwards."""
    gate = threading.Event()
    running = threading.Event()

    def enrich(batch: Batch) -> None:
        if batch.events and batch.events[0]["properties"].get("hold"):
            running.set()
            gate.wait(10)

    app = App(sqlite_storage, [enrich])
    held = [wire_event(properties={"hold": True})]
    evs = [[wire_event()] for _ in range(3)]

    async def run() -> list[Any]:
        async with app.client() as client:
            post = lambda e: client.post("/v1/events", content=body(*e), headers=app.headers)  # noqa: E731
            first = asyncio.create_task(post(evs[0]))
            await until(lambda: getattr(app.app.state, "ingest_queue", None) is not None)
            await until(lambda: app.queue.groups == 1)
            second = asyncio.create_task(post(held))
            third = asyncio.create_task(post(evs[1]))
            await until(lambda: running.is_set() or first.done())
            if not running.is_set():  # the first went alone: the next group holds
                await until(running.is_set)
            second.cancel()
            await until(second.done)
            gate.set()
            out: list[Any] = [await first]
            try:
                out.append(await second)
            except asyncio.CancelledError:
                out.append("cancelled")
            out.append(await third)
            out.append(await post(evs[2]))
            return out

    results = asyncio.run(run())
    assert results[1] == "cancelled"
    assert [r.status_code for r in results if r != "cancelled"] == [200, 200, 200]
    # The cancelled body was committed all the same (its turn had begun).
    assert {e.id for e in sqlite_storage.query_events()} == {held[0]["id"]} | {
        e[0]["id"] for e in evs
    }
    assert app.queue.pending == 0


def test_many_more_bodies_than_a_group_holds(sqlite_storage: Storage) -> None:
    from sqreen.server._ingest_queue import MAX_GROUP
    from sqreen.server.metrics import INGEST_GROUPS

    def sample(name: str) -> float:
        return (
            INGEST_GROUPS.collect()[0]
            .samples[[s.name for s in INGEST_GROUPS.collect()[0].samples].index(name)]
            .value
        )

    count0, sum0 = (
        sample("sqreen_ingest_group_bodies_count"),
        sample("sqreen_ingest_group_bodies_sum"),
    )
    enrich = held_first()
    app = App(sqlite_storage, [enrich])
    n = 3 * MAX_GROUP + 3
    evs = [[wire_event(), wire_event()] for _ in range(n)]
    # Every other body repeats one event of the body before it.
    for i in range(1, n, 2):
        evs[i][0] = evs[i - 1][0]

    async def run() -> list[httpx.Response]:
        async with app.client() as client:
            post = lambda e: client.post("/v1/events", content=body(*e), headers=app.headers)  # noqa: E731
            first = asyncio.create_task(post(evs[0]))
            await until(enrich.started.is_set)
            rest = [asyncio.create_task(post(e)) for e in evs[1:]]
            await until(lambda: app.queue.pending == n)
            enrich.release.set()
            return [await first, *[await r for r in rest]]

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * n
    assert sum(r.json()["accepted"] for r in responses) == sqlite_storage.count_events()
    assert sum(r.json()["duplicates"] for r in responses) == n // 2
    queue = app.queue
    assert queue.grouped == n and queue.groups == 1 + -(-(n - 1) // MAX_GROUP)
    assert sample("sqreen_ingest_group_bodies_count") - count0 == queue.groups
    assert sample("sqreen_ingest_group_bodies_sum") - sum0 == n


def test_a_group_answered_with_nothing_waiting_asks_no_sender_to_reconnect(
    sqlite_storage: Storage,
) -> None:
    """With several workers, ``Connection: close`` says this process has a backlog: the
    bodies of a group that are answered when nothing waits any more are no backlog."""
    storage = sqlite_storage
    token = new_token()
    storage.create_key("sdk", hash_token(token))
    enrich = held_first()
    app = create_app(storage, enrichers=[enrich], workers=2)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            post = lambda: client.post("/v1/events", content=body(wire_event()), headers=headers)  # noqa: E731
            first = asyncio.create_task(post())
            await until(enrich.started.is_set)
            rest = [asyncio.create_task(post()) for _ in range(3)]
            await until(lambda: app.state.ingest_queue.pending == 4)
            enrich.release.set()
            return [await first, *[await r for r in rest]]

    first, *group = asyncio.run(run())
    assert first.headers.get("connection") == "close"  # three bodies were waiting
    assert app.state.ingest_queue.groups == 2
    assert [r.headers.get("connection") for r in group] == [None, None, None]


def test_big_bodies_are_not_parsed_eight_at_a_time(sqlite_storage: Storage) -> None:
    """A turn holds its bodies parsed at once: eight bodies of 10 MB would take eight times
    the memory of one (measured: 29 -> 225 MB). Bodies this big go in smaller groups."""
    from sqreen.server._ingest_queue import MAX_GROUP_BYTES

    enrich = held_first()
    app = App(sqlite_storage, [enrich])

    def big(n: int) -> list[dict[str, Any]]:
        return [
            wire_event(properties={f"p{j}": f"{n}" * 200 for j in range(12)}) for _ in range(1000)
        ]

    bodies = [body(*big(n)) for n in range(5)]
    assert MAX_GROUP_BYTES < 2 * len(bodies[1]) <= 2 * MAX_GROUP_BYTES

    async def run() -> list[httpx.Response]:
        async with app.client() as client:
            post = lambda b: client.post("/v1/events", content=b, headers=app.headers)  # noqa: E731
            first = asyncio.create_task(post(bodies[0]))
            await until(enrich.started.is_set)
            rest = [asyncio.create_task(post(b)) for b in bodies[1:]]
            await until(lambda: app.queue.pending == 5)
            enrich.release.set()
            return [await first, *[await r for r in rest]]

    responses = asyncio.run(run())
    assert [r.json()["accepted"] for r in responses] == [1000] * 5
    assert app.queue.groups == 5  # each alone: no two fit together


# -- a locked database --------------------------------------------------------------------


def test_a_group_stopped_by_a_locked_database_fails_then_recovers(
    sqlite_storage: Storage, tmp_path: Path
) -> None:
    """Another connection holds the write lock beyond the busy timeout: every body of the
    group gets its error (none hangs, none half stored); once the lock goes, the same bodies
    are stored, once."""
    pipeline = IngestPipeline(sqlite_storage)
    evs = [[wire_event(), wire_event()] for _ in range(4)]
    bodies = [(body(*e), 0) for e in evs]
    blocker = sqlite3.connect(str(tmp_path / "sqreen.db"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    sqlite_storage._writer.execute("PRAGMA busy_timeout = 500")  # type: ignore[attr-defined]
    started = time.monotonic()
    try:
        failed = pipeline.ingest_many(bodies)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    took = time.monotonic() - started
    assert all(isinstance(o, sqlite3.OperationalError) for o in failed), failed
    assert sqlite_storage.count_events() == 0
    # One wait for the lock (0.5 s here, 10 s by default), not one for the group and then
    # one more for each body alone: a group of 8 would answer after 90 s.
    assert took < 1.4, took
    again = pipeline.ingest_many(bodies)
    assert replies(again) == [(2, 0, 0)] * 4
    assert sqlite_storage.count_events() == 8


# -- real servers -------------------------------------------------------------------------


def send_concurrently(url: str, token: str, senders: int, per_sender: int) -> tuple[int, int, int]:
    """Senders post bodies that overlap each other's (the same events sent by two senders,
    and again by the same sender): (accepted, duplicates, distinct events) over them all."""
    shared = [wire_event(properties={"n": i}) for i in range(per_sender * 10)]
    totals = [0, 0]
    errors: list[str] = []
    lock = threading.Lock()

    def send(s: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            for b in range(per_sender):
                own = [wire_event() for _ in range(20)]
                events = own + shared[b * 10 : b * 10 + 10] + shared[max(0, b - 1) * 10 :][:5]
                if s % 2:
                    events.reverse()
                r = client.post(url + "/v1/events", json=envelope(events))
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                with lock:
                    totals[0] += r.json()["accepted"]
                    totals[1] += r.json()["duplicates"]

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return totals[0], totals[1], senders * per_sender * 20 + per_sender * 10


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_senders_store_every_event_once(
    db_url: str, serve: Callable[..., ServeProcess], workers: int
) -> None:
    db = db_url
    token = add_key(db)
    proc = serve(db, None, "--workers", str(workers))
    accepted, duplicates, distinct = send_concurrently(proc.url, token, 6, 12)
    s = open_storage(db)
    try:
        assert s.count_events() == distinct
        assert accepted == distinct
        assert accepted + duplicates == 6 * 12 * 35
    finally:
        s.close()


#: More bodies of 1 000 events than a collector stores in its graceful shutdown's seconds.
N_BODIES = 120


@pytest.mark.slow
def test_sigterm_with_bodies_waiting_answers_or_drops_each_and_stores_whole_bodies(
    tmp_path: Path, serve: Callable[..., ServeProcess]
) -> None:
    """Stopped with more bodies waiting than it stores in its graceful shutdown: each request
    ends (a reply, a 500 or a dropped connection), a body answered 200 is stored, and no body
    is stored in part."""
    db = str(tmp_path / "t.db")
    token = add_key(db)
    proc = serve(db)
    bodies = [[wire_event(properties={"b": b}) for _ in range(1000)] for b in range(N_BODIES)]
    answered: dict[int, int] = {}
    failed: list[int] = []

    def send(b: int) -> None:
        try:
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
                answered[b] = c.post(proc.url + "/v1/events", json=envelope(bodies[b])).status_code
        except httpx.HTTPError:
            failed.append(b)

    threads = [threading.Thread(target=send, args=(b,), daemon=True) for b in range(N_BODIES)]
    for t in threads:
        t.start()
    wait_for(lambda: bool(answered or failed))  # busy: a first turn over, the rest waiting
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    proc.proc.wait(20)
    assert time.monotonic() - t0 < 10  # the graceful shutdown's 3 s, and the turn running
    for t in threads:
        t.join(20)
        assert not t.is_alive(), "a request hung"
    assert len(answered) + len(failed) == N_BODIES
    s = open_storage(db)
    try:
        per_body = {b: 0 for b in range(N_BODIES)}
        for e in s.query_events(limit=N_BODIES * 1000 + 1):
            per_body[e.properties["b"]] += 1
    finally:
        s.close()
    for b, status in answered.items():
        if status == 200:
            assert per_body[b] == 1000, b
    assert set(per_body.values()) <= {0, 1000}  # whole bodies, never part of one
