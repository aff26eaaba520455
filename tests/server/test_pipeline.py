"""The ingest pipeline: parse -> enrich -> store -> after-store hooks, and its seams."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from sqreen.server.app import create_app
from sqreen.server.auth import hash_token, new_token
from sqreen.server.blocks import BlockService, ip_block
from sqreen.server.pipeline import Batch, IngestPipeline
from sqreen.server.storage import EventFilter, Storage, StoredEvent, open_storage

from .conftest import envelope, wire_event


def body(*events: Any, **app: Any) -> bytes:
    return json.dumps(envelope(list(events), **app)).encode()


class Recorder:
    """An after-store hook that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[list[StoredEvent]] = []

    def __call__(self, events: Sequence[StoredEvent]) -> None:
        self.calls.append(list(events))


def country(batch: Batch) -> None:
    """An enricher: a made-up country for each event's IP."""
    for event, fields in batch:
        ip = (event["request"] or {}).get("ip") or ""
        fields["geo"] = {"country": "FR" if ip.startswith("203.") else "US"}


def test_hooks_hear_of_exactly_the_newly_stored_events(storage: Storage) -> None:
    """With their seq, in the order sent, as reading them back gives them; a retried batch,
    or the duplicates in a mixed one, are not announced again."""
    hook = Recorder()
    pipeline = IngestPipeline(storage, hooks=[hook])
    a, b, c = wire_event(), wire_event(user={"uid": "7"}), wire_event(name="auth.signup")
    first = pipeline(body(a, "not an event", b))
    assert (first["accepted"], first["duplicates"]) == (2, 0)
    assert [r["index"] for r in first["rejected"]] == [1]
    (told,) = hook.calls
    assert [e.id for e in told] == [a["id"], b["id"]]
    assert told == sorted(storage.query_events(), key=lambda e: e.seq)  # seqs, fields, all
    assert pipeline(body(a, b))["duplicates"] == 2
    assert len(hook.calls) == 1  # nothing new: no call
    pipeline(body(b, c, c, a))
    assert [[e.id for e in call] for call in hook.calls[1:]] == [[c["id"]]]
    assert hook.calls[1][0].seq == storage.query_events(EventFilter(name="auth.signup"))[0].seq


def test_enrichers_add_fields_that_are_stored_with_each_event(storage: Storage) -> None:
    hook = Recorder()
    pipeline = IngestPipeline(storage, enrichers=[country], hooks=[hook])
    here, there = wire_event(), wire_event()
    there["request"]["ip"] = "198.51.100.1"
    pipeline(body(here, there))
    stored = {e.id: e for e in storage.query_events()}
    assert stored[here["id"]].enrichment == {"geo": {"country": "FR"}}
    assert stored[there["id"]].enrichment == {"geo": {"country": "US"}}
    assert stored[here["id"]].to_json()["enrichment"] == {"geo": {"country": "FR"}}
    assert [e.enrichment for e in hook.calls[0]] == [
        {"geo": {"country": "FR"}},
        {"geo": {"country": "US"}},
    ]
    # Without enrichers nothing is added, and the JSON form is what it always was.
    IngestPipeline(storage)(body(plain := wire_event()))
    event = storage.get_event(plain["id"])
    assert event is not None and event.enrichment == {} and "enrichment" not in event.to_json()


def test_a_failing_enricher_or_hook_never_fails_the_batch(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_enricher(batch: Batch) -> None:
        batch.enrichment[0]["partial"] = True
        raise RuntimeError("no data file")

    def broken_hook(events: Sequence[StoredEvent]) -> None:
        raise RuntimeError("playbook bug")

    later = Recorder()
    pipeline = IngestPipeline(
        storage, enrichers=[broken_enricher, country], hooks=[broken_hook, later]
    )
    with caplog.at_level(logging.ERROR, "sqreen.server"):
        reply = pipeline(body(e := wire_event()))
    assert reply["accepted"] == 1 and reply["rejected"] == []
    stored = storage.get_event(e["id"])
    assert stored is not None
    assert stored.enrichment == {"partial": True, "geo": {"country": "FR"}}
    assert [len(call) for call in later.calls] == [1]  # the hooks after the broken one ran
    messages = [r.getMessage() for r in caplog.records]
    assert any("enricher" in m and "broken_enricher" in m for m in messages)
    assert any("after-store hook" in m and "broken_hook" in m for m in messages)


@pytest.mark.parametrize(
    "bad",
    [
        lambda batch: batch.enrichment[0].update(when=datetime.now(UTC)),  # not JSON
        lambda batch: batch.enrichment.pop(),  # no longer one dict an event
    ],
    ids=["not-json", "misaligned"],
)
def test_enrichment_that_cannot_be_stored_is_dropped_not_the_events(
    storage: Storage, caplog: pytest.LogCaptureFixture, bad: Any
) -> None:
    hook = Recorder()
    pipeline = IngestPipeline(storage, enrichers=[country, bad], hooks=[hook])
    with caplog.at_level(logging.ERROR, "sqreen.server"):
        reply = pipeline(body(a := wire_event(), b := wire_event()))
    assert reply["accepted"] == 2
    assert [e.enrichment for e in storage.query_events()] == [{}, {}]
    assert [[e.id for e in call] for call in hook.calls] == [[a["id"], b["id"]]]
    assert any("enrichment not storable" in r.getMessage() for r in caplog.records)


def test_hooks_run_after_the_commit_outside_the_write_lock(db_url: str, storage: Storage) -> None:
    """A hook sees the batch from another connection (committed) and may write (a playbook
    blocking someone): were the write lock held, that would deadlock. The reply, built
    after the hooks, already carries the block."""
    other = open_storage(db_url)
    seen: list[int] = []

    def playbook(events: Sequence[StoredEvent]) -> None:
        seen.append(other.count_events())
        BlockService(storage).create(ip_block("203.0.113.7"), created_by="playbook:1")

    replies: list[dict[str, Any]] = []
    worker = threading.Thread(
        target=lambda: replies.append(
            IngestPipeline(storage, hooks=[playbook])(body(wire_event()))
        ),
        daemon=True,
    )
    try:
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), "the hook could not write: the write lock was held"
    finally:
        other.close()
    assert seen == [1]
    (reply,) = replies
    assert reply["actions"]["version"] == 1
    assert [i["ip"] for i in reply["actions"]["items"]] == ["203.0.113.7/32"]


def test_create_app_plugs_enrichers_and_hooks_into_ingest(sqlite_storage: Storage) -> None:
    token = new_token()
    sqlite_storage.create_key("sdk", hash_token(token))
    hook = Recorder()
    app = create_app(sqlite_storage, enrichers=[country], hooks=[hook], explorer=False)
    with TestClient(app) as client:
        reply = client.post(
            "/v1/events",
            content=body(e := wire_event()),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    assert reply.status_code == 200 and reply.json()["accepted"] == 1
    assert [[x.id for x in call] for call in hook.calls] == [[e["id"]]]
    stored = sqlite_storage.get_event(e["id"])
    assert stored is not None and stored.enrichment == {"geo": {"country": "FR"}}
