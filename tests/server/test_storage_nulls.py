"""Columns that are NULL for most events (no target, no enrichment, an address the data does
not place) and the text ``"0"``, which SQLite's insert binds apart (``nullif(?, 0)``: the
sqlite3 module binds ``None`` through its adapters, 0.2 µs a value), are read back as sent,
and filtered on as sent."""

from __future__ import annotations

import pytest

from sqreen.server.storage import EventFilter, Storage

from .conftest import wire_event


def test_absent_parts_are_null_and_zero_texts_stay_text(storage: Storage) -> None:
    bare = wire_event(user=None, target=None, request=None)
    storage.insert_events([bare], app=None, host=None)
    zero = wire_event(
        user={"id": "0"},
        target={"id": "0"},
        request={"ip": "0", "path": "/"},
        properties={"0": "0"},
    )
    storage.insert_events(
        [zero],
        app="0",
        host="0",
        enrichment=[{"ip_info": {"country": "0", "kind": "0", "asn": 0}}],
    )
    by_id = {e.id: e for e in storage.query_events(limit=10)}
    absent = by_id[bare["id"]]
    assert (absent.app, absent.host, absent.ip, absent.user, absent.target) == (None,) * 5
    assert (absent.request, absent.enrichment) == (None, {})
    zeros = by_id[zero["id"]]
    assert (zeros.app, zeros.host, zeros.ip) == ("0", "0", "0")
    assert (zeros.user, zeros.target, zeros.properties) == ({"id": "0"}, {"id": "0"}, {"0": "0"})
    assert zeros.enrichment == {"ip_info": {"country": "0", "kind": "0", "asn": 0}}
    # The indexed copies of ip_info are text "0", not NULL: the filters find the event.
    for field in ("country", "kind", "asn", "ip"):
        found = storage.query_events(EventFilter(**{field: "0"}))
        assert [e.id for e in found] == [zero["id"]], field


@pytest.mark.parametrize("events", [1, 3, 501, 1200])
def test_batches_of_every_size_keep_their_nulls_in_their_columns(
    storage: Storage, events: int
) -> None:
    """A batch mixes events with and without each part; the insert's statements (full
    chunks and the rest) keep each value in its own row and column."""
    batch = [
        wire_event(
            user=None if n % 2 else {"id": str(n)},
            target=None if n % 3 else {"id": str(n)},
            request=None if n % 5 == 0 else {"ip": f"198.51.100.{n % 250}", "path": "/"},
        )
        for n in range(events)
    ]
    enrichment = [{} if n % 4 else {"ip_info": {"country": "FR"}} for n in range(events)]
    storage.insert_events(batch, app="shop", host=None, enrichment=enrichment)
    stored = {e.id: e for e in storage.query_events(limit=events + 1)}
    assert len(stored) == events
    for n, sent in enumerate(batch):
        got = stored[sent["id"]]
        assert got.user == sent["user"] and got.target == sent["target"], n
        assert got.ip == (None if sent["request"] is None else sent["request"]["ip"]), n
        assert (got.app, got.host) == ("shop", None)
        assert got.enrichment == enrichment[n], n
    assert len(storage.query_events(EventFilter(country="FR"), limit=events + 1)) == len(
        [e for e in enrichment if e]
    )
