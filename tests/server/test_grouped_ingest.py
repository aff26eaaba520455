"""Bodies that wait for the ingest slot are stored together (one transaction), each as if
alone: the storage's ``store_prepared``, the pipeline's ``ingest_many``, the HTTP queue."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import threading
import traceback
from collections.abc import Sequence
from typing import Any

import httpx2 as httpx
import pytest

from sqreen.server.app import create_app
from sqreen.server.auth import hash_token, new_token
from sqreen.server.errors import ApiError
from sqreen.server.pipeline import Batch, IngestPipeline
from sqreen.server.storage import EventFilter, InsertResult, Storage, StoredEvent

from .conftest import envelope, wire_event


def body(*events: Any) -> bytes:
    return json.dumps(envelope(list(events))).encode()


def prepared(storage: Storage, *events: Any, key_id: int = 0) -> Any:
    batch = IngestPipeline(storage).parse(body(*events))
    return storage.prepare_events(batch.events, app=batch.app, host=batch.host, key_id=key_id)


def test_batches_stored_together_give_what_each_alone_gives(storage: Storage) -> None:
    """Seqs in order across the batches, an id met again in a later batch of the same key a
    duplicate (and stored under another key), each event findable by its side rows."""
    a, b = wire_event(user={"uid": "1"}), wire_event(properties={"plan": "pro"})
    c = wire_event(user={"uid": "3"})
    batches = [
        prepared(storage, a, b),
        prepared(storage, b, c, c),  # b: stored by the batch before; c twice in one batch
        prepared(storage, a, key_id=7),  # another key: another event
        prepared(storage),  # nothing in it
    ]
    first, second, other, empty = storage.store_prepared(batches)
    assert isinstance(first, InsertResult) and isinstance(second, InsertResult)
    assert isinstance(other, InsertResult) and isinstance(empty, InsertResult)
    s1, s2 = first.seqs
    assert (first.stored, first.duplicates) == (2, 0)
    assert second.seqs[0] is None and second.seqs[2] is None
    assert (second.stored, second.duplicates) == (1, 2)
    (s3,) = other.seqs
    assert s1 is not None and s2 is not None and second.seqs[1] is not None and s3 is not None
    assert s1 < s2 < second.seqs[1] < s3  # in the order given
    assert (empty.stored, empty.duplicates, empty.seqs) == (0, 0, ())
    assert storage.count_events() == 4
    assert [e.seq for e in storage.query_events(EventFilter(users=(("uid", "1"),)))] == [s3, s1]
    assert [e.seq for e in storage.query_events(EventFilter(users=(("uid", "3"),)))] == [
        second.seqs[1]
    ]
    assert [e.id for e in storage.query_events(EventFilter(properties=(("plan", "pro"),)))] == [
        b["id"]
    ]
    # Stored again, together or alone: all duplicates.
    again = storage.store_prepared([prepared(storage, a, b), prepared(storage, c)])
    assert [r.duplicates for r in again if isinstance(r, InsertResult)] == [2, 1]


def test_a_batch_that_fails_in_a_group_fails_alone(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    """One batch breaks a constraint inside the shared transaction: the others are stored
    all the same, it gets its own error, and nothing of it is stored."""
    good, bad_event, later = wire_event(), wire_event(), wire_event()
    bad = prepared(storage, bad_event)
    props, users = bad.sides
    bad = dataclasses.replace(bad, sides=(props + props[:3], users))  # a side row twice
    with caplog.at_level(logging.WARNING, logger="sqreen.server"):
        results = storage.store_prepared([prepared(storage, good), bad, prepared(storage, later)])
    assert "3 batches failed to store together; storing each alone" in caplog.text
    first, failed, last = results
    assert isinstance(first, InsertResult) and first.stored == 1
    assert isinstance(failed, Exception) and "unique" in str(failed).lower()
    assert isinstance(last, InsertResult) and last.stored == 1
    assert {e.id for e in storage.query_events()} == {good["id"], later["id"]}
    # The batches that were stored were stored once (the failed transaction left nothing).
    assert storage.count_events() == 2


def test_a_group_meeting_a_full_disk_is_said_once_a_minute_without_a_traceback(
    storage: Storage, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk logged a traceback for each group that failed (nine in 20 s). The
    database away is said in one line once a minute; each batch is still tried alone (a
    connection cut passes then), and gets the error it meets (a 503, said by the app)."""
    tries: list[int] = []

    def full(cur: object, p: object) -> None:
        tries.append(1)
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(storage, "_store_rows", full)
    with caplog.at_level(logging.WARNING, logger="sqreen.server"):
        for _ in range(3):
            results = storage.store_prepared([prepared(storage, wire_event()) for _ in range(3)])
            assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert len(tries) == 3 * (1 + 3)  # together, then each alone
    assert [r.getMessage() for r in caplog.records] == [
        "sqreen: 3 batches failed to store together (database or disk is full); storing each "
        "alone (said once a minute at most)"
    ]
    assert caplog.records[0].exc_info is None


class Hooks:
    """A grouped hook (as the playbooks' is) and a plain one."""

    def __init__(self) -> None:
        self.groups: list[list[tuple[list[str], tuple[int | None, ...]]]] = []
        self.plain: list[list[str]] = []

    def stored_batches(self, stored: Sequence[tuple[Batch, InsertResult]]) -> None:
        self.groups.append([([e["id"] for e in b.events], r.seqs) for b, r in stored])

    def plain_hook(self, events: Sequence[StoredEvent]) -> None:
        self.plain.append([e.id for e in events])


def test_ingest_many_answers_each_body_as_if_alone(storage: Storage) -> None:
    hooks = Hooks()
    pipeline = IngestPipeline(storage, hooks=[hooks, hooks.plain_hook])
    a, b, c = wire_event(), wire_event(), wire_event()
    identify = wire_event(name="sq.identify", properties={"plan": "pro"})
    outcomes = pipeline.ingest_many(
        [
            (body(a, b), 0),
            (b"not json", 0),
            (body(b, c, "not an event"), 0),  # b: the first body stored it
            (body(identify), 0),
            (body(a), 0),  # nothing new
        ]
    )
    first, broken, mixed, traits, nothing = outcomes
    assert isinstance(broken, ApiError) and broken.status in (400, 415)
    replies = [o[0] for o in (first, mixed, traits, nothing) if isinstance(o, tuple)]
    assert [(r["accepted"], r["duplicates"]) for r in replies] == [(2, 0), (1, 1), (1, 0), (0, 1)]
    assert [x["index"] for x in replies[1]["rejected"]] == [2]
    assert storage.count_events() == 3
    traits_row = storage.get_user({"uid": "42"})
    assert traits_row is not None and traits_row.traits == {"plan": "pro"}
    # The grouped hook heard of the bodies that stored something, in one call; the plain
    # one batch by batch, only the events each stored.
    ((one, two),) = hooks.groups
    assert one[0] == [a["id"], b["id"]] and two[0] == [b["id"], c["id"]]
    assert two[1][0] is None and two[1][1] > one[1][1]  # in the order stored
    assert hooks.plain == [[a["id"], b["id"]], [c["id"]]]


def held_first() -> Any:
    """An enricher that holds the ingest slot with its first batch until the test says
    (``enrich.release.set()``): the bodies that arrive meanwhile wait, and go through
    together."""
    started, release = threading.Event(), threading.Event()

    def enrich(batch: Batch) -> None:
        if not started.is_set():
            started.set()
            release.wait(30)

    enrich.started = started  # type: ignore[attr-defined]
    enrich.release = release  # type: ignore[attr-defined]
    return enrich


def test_bodies_that_wait_go_through_together(sqlite_storage: Storage) -> None:
    """Through the HTTP app: six bodies posted while the first is being stored make one
    group (two turns of the slot), each answered with its own counts."""
    storage = sqlite_storage
    token = new_token()
    storage.create_key("sdk", hash_token(token))
    enrich = held_first()
    app = create_app(storage, enrichers=[enrich])
    events = [[wire_event() for _ in range(3)] for _ in range(7)]
    events[6] = [*events[5][:2], wire_event()]  # two already sent by the body before it

    async def run() -> tuple[list[httpx.Response], int]:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            first = asyncio.create_task(
                client.post("/v1/events", content=body(*events[0]), headers=headers)
            )
            for _ in range(500):  # until the first body holds the slot
                if enrich.started.is_set() or first.done():
                    break
                await asyncio.sleep(0.01)
            rest = [
                asyncio.create_task(client.post("/v1/events", content=body(*evs), headers=headers))
                for evs in events[1:]
            ]
            for _ in range(500):  # until all six wait behind the first
                if app.state.ingest_queue.waiting == 1 + 6:
                    break
                await asyncio.sleep(0.01)
            waited = app.state.ingest_queue.waiting
            enrich.release.set()
            return [await first, *await asyncio.gather(*rest)], waited

    responses, waited = asyncio.run(run())
    assert waited == 7  # the first body's turn, and six waiting behind it
    assert [r.status_code for r in responses] == [200] * 7
    counts = [(r.json()["accepted"], r.json()["duplicates"]) for r in responses]
    # The last two bodies share two events: whichever of them took its turn first.
    assert counts[0] == (3, 0) and sorted(counts[1:]) == [(1, 2)] + [(3, 0)] * 5
    assert all("actions" in r.json() for r in responses)
    queue = app.state.ingest_queue
    assert (queue.groups, queue.grouped, queue.pending) == (2, 7, 0)
    assert storage.count_events() == 19


def _frames(exc: BaseException | None) -> Any:
    """Every frame in ``exc``'s traceback and those of the exceptions it came from."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            yield tb.tb_frame
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__


@pytest.mark.parametrize(
    "junk",
    [
        b"[" + b",".join([b'{"a":1}'] * 200_000) + b"]",  # JSON, not a batch: 400
        json.dumps({"events": [{"a": 1}] * 50_000, "sdk": 7}).encode(),  # a bad envelope
    ],
)
def test_a_refused_body_keeps_nothing_of_what_was_parsed(storage: Storage, junk: bytes) -> None:
    """A body refused after its JSON was parsed kept that JSON alive: the error's traceback
    held the parser's frames (their locals), and through their ``f_back`` the caller's frame
    (the body itself), in a cycle that only a full collection breaks, which counts objects,
    not bytes, and so did not come: 14 KB gzipped bodies took a collector to 3 GB, and 40
    bodies of 10 MB refused one after another held 550 MB. A refusal keeps no frame."""
    pipeline = IngestPipeline(storage)
    (outcome,) = pipeline.ingest_many([(junk, 1)])
    assert isinstance(outcome, ApiError) and outcome.status == 400
    assert list(_frames(outcome)) == []


@pytest.mark.parametrize("where", ["preparing", "storing"])
def test_a_fault_while_storing_keeps_its_lines_for_the_log_and_no_frame(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A body's outcome that is a fault, not a refusal (preparing its rows, or the storage's
    error for its batch), keeps where it came from (one note, which a log shows), but no
    frame either."""

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    def failing(batches: Any) -> list[Exception]:
        try:
            broken()
        except RuntimeError as exc:
            return [exc for _ in batches]
        raise AssertionError

    pipeline = IngestPipeline(storage)
    if where == "preparing":
        monkeypatch.setattr(pipeline, "_prepare", broken)
    else:
        monkeypatch.setattr(storage, "store_prepared", failing)
    (outcome,) = pipeline.ingest_many([(json.dumps(envelope([wire_event()])).encode(), 1)])
    assert isinstance(outcome, RuntimeError) and list(_frames(outcome)) == []
    (note,) = outcome.__notes__
    assert "in broken" in note
    assert "in broken" in "".join(traceback.format_exception(outcome))
