"""`sqreen import` reads the collector's own JSON lines (`sqreen events --json`, `sqreen
export --format jsonl`) back, field by field, into a fresh database; other input with the
collector's keys is refused as before."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sqreen._wire import parse_event
from sqreen.server.cli import main
from sqreen.server.storage import StoredEvent, open_storage

from .conftest import wire_event

#: Not what IP intelligence says of 203.0.113.5 today (a documentation address: reserved):
#: an import that enriched again would write something else.
STORED_INFO = {
    "country": "FR",
    "kind": "hosting",
    "asn": 64500,
    "score": 25,
    "reasons": ["hosting"],
}


def run(*args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def all_events(db: str) -> dict[str, StoredEvent]:
    storage = open_storage(db)
    try:
        return {e.id: e for e in storage.query_events(limit=1000)}
    finally:
        storage.close()


def source_db(path: Path) -> str:
    """A database of events from two apps and hosts, with stored intelligence and another
    enricher's field, received 40 days ago and now."""
    db = str(path / "source.db")
    storage = open_storage(db)
    try:
        long_ago = datetime.now(UTC) - timedelta(days=40)
        storage.insert_events(
            [parse_event(wire_event(target={"id": "doc-1", "type": "doc"})) for _ in range(3)],
            app="shop",
            host="web-1",
            received_at=long_ago,
            enrichment=[{"ip_info": STORED_INFO, "travel": {"km": 9000}}] * 3,
        )
        storage.insert_events(
            [parse_event(wire_event(name="custom.thing", request=None)) for _ in range(2)],
            app="admin",
            host=None,
        )
        storage.insert_events([parse_event(wire_event())], app=None, host="worker")
    finally:
        storage.close()
    return db


@pytest.mark.parametrize(
    "dump", [["events", "--json", "--limit", "1000"], ["export", "--format", "jsonl"]]
)
def test_an_export_imports_back_field_by_field(tmp_path: Path, dump: list[str]) -> None:
    db = source_db(tmp_path)
    exported = tmp_path / "dump.jsonl"
    exported.write_text(run(*dump, "--db", db).stdout)
    assert exported.read_text().count("\n") == 6
    fresh = str(tmp_path / "fresh.db")
    before = datetime.now(UTC)
    out = run("import", str(exported), "--db", fresh).stdout
    assert "6 lines: 6 events stored, 0 already stored, 0 bad" in out
    source, copied = all_events(db), all_events(fresh)
    assert source.keys() == copied.keys()
    for id_, original in source.items():
        copy = copied[id_]
        for field in ("name", "timestamp", "app", "host", "ip", "user", "properties"):
            assert getattr(copy, field) == getattr(original, field), field
        assert (copy.target, copy.request) == (original.target, original.request)
        assert copy.enrichment == original.enrichment  # stored intelligence, not today's
        assert copy.key_id == 0
        # Received when imported: retention counts from the import.
        assert copy.received_at >= before
    # seq renumbered in the new database, from 1.
    assert sorted(e.seq for e in copied.values()) == [1, 2, 3, 4, 5, 6]
    assert {e.enrichment.get("ip_info", {}).get("country") for e in copied.values()} >= {"FR"}
    # Imported again: nothing twice.
    assert "0 events stored, 6 already stored" in run("import", str(exported), "--db", fresh).stdout


def test_the_receipt_times_are_kept_when_asked(tmp_path: Path) -> None:
    db = source_db(tmp_path)
    exported = tmp_path / "dump.jsonl"
    exported.write_text(run("export", "--format", "jsonl", "--db", db).stdout)
    fresh = str(tmp_path / "fresh.db")
    run("import", str(exported), "--keep-received", "--db", fresh)
    source, copied = all_events(db), all_events(fresh)
    assert {i: e.received_at for i, e in copied.items()} == {
        i: e.received_at for i, e in source.items()
    }
    # ...and retention then goes by them: the three received 40 days ago leave.
    assert "deleted 3 events" in run("purge", "--days", "30", "--db", fresh).stdout


def test_an_app_given_names_only_the_events_without_one(tmp_path: Path) -> None:
    db = source_db(tmp_path)
    exported = tmp_path / "dump.jsonl"
    exported.write_text(run("export", "--format", "jsonl", "--db", db).stdout)
    fresh = str(tmp_path / "fresh.db")
    run("import", str(exported), "--app", "legacy", "--db", fresh)
    assert sorted(e.app for e in all_events(fresh).values()) == [
        "admin",
        "admin",
        "legacy",
        "shop",
        "shop",
        "shop",
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"app": "shop"}, "event: unknown keys ['app']"),  # not the collector's form
        ({"ip_info": {}, "host": "h"}, "event: unknown keys ['host', 'ip_info']"),
        ({"seq": 1}, "event: unknown keys ['seq']"),  # seq alone: not the collector's
        ({"seq": 1, "received_at": "2026-01-01T00:00:00Z", "bogus": 1}, "unknown keys ['bogus']"),
        ({"seq": "1", "received_at": "2026-01-01T00:00:00Z"}, "seq: must be an integer"),
        ({"seq": 1, "received_at": "yesterday"}, "received_at: 'yesterday' is not ISO 8601"),
        ({"seq": 1, "received_at": "2026-01-01T00:00:00Z", "app": 3}, "app: must be a string"),
        (
            {"seq": 1, "received_at": "2026-01-01T00:00:00Z", "host": "h" * 257},
            "host: must be a string",
        ),
        (
            {"seq": 1, "received_at": "2026-01-01T00:00:00Z", "ip_info": "FR"},
            "ip_info: must be an object",
        ),
        (
            {"seq": 1, "received_at": "2026-01-01T00:00:00Z", "enrichment": []},
            "enrichment: must be an object",
        ),
        # What no lookup of the collector gives, which the explorer, the playbooks and the
        # exports would read as its own (a list of reasons that is text broke the events page).
        *(
            (
                {"seq": 1, "received_at": "2026-01-01T00:00:00Z", "ip_info": info},
                message,
            )
            for info, message in (
                ({"country": "Germany"}, "ip_info.country: must be a two-letter country code"),
                ({"country": "gb"}, "ip_info.country: must be a two-letter country code"),
                ({"kind": "residential"}, "ip_info.kind: must be one of tor, vpn, hosting"),
                ({"score": 10**30}, "ip_info.score: must be a whole number from 0 to 100"),
                ({"score": "high"}, "ip_info.score: must be a whole number from 0 to 100"),
                ({"score": True}, "ip_info.score: must be a whole number from 0 to 100"),
                ({"score": 5, "reasons": "tor"}, "ip_info.reasons: must be a list of distinct"),
                ({"reasons": ["tor", "tor"]}, "ip_info.reasons: must be a list of distinct"),
                ({"asn": "x"}, "ip_info.asn: must be an AS number"),
                ({"asn": 0}, "ip_info.asn: must be an AS number"),
                ({"latitude": 999, "longitude": 0}, "ip_info.latitude: must be a number from"),
                ({"latitude": 1.5}, "ip_info: latitude and longitude go together"),
                ({"latitude": float("nan"), "longitude": 0}, "ip_info.latitude: must be"),
                ({"city": 7}, "ip_info.city: must be text of at most 128 characters"),
                ({"city": "x" * 129}, "ip_info.city: must be text of at most 128 characters"),
                ({"accuracy_radius": -1}, "ip_info.accuracy_radius: must be a whole number"),
                ({"colour": "red"}, "ip_info: unknown key 'colour': country, kind"),
            )
        ),
    ],
)
def test_other_input_with_the_collectors_keys_is_refused(
    tmp_path: Path, extra: dict[str, object], message: str
) -> None:
    file = tmp_path / "events.jsonl"
    file.write_text(json.dumps({**wire_event(), **extra}) + "\n")
    db = str(tmp_path / "fresh.db")
    result = run("import", str(file), "--db", db, ok=False)
    assert result.exit_code == 1
    assert "0 events stored, 0 already stored, 1 bad" in result.stdout
    assert message in result.stderr


def test_ip_info_as_the_enricher_stores_it_imports_back(tmp_path: Path) -> None:
    """A file's city is stripped and cut, not otherwise checked; a range list's provider may
    be empty: the check must take what this collector itself stores."""
    info = {"city": "Foo\u00a0Bar", "provider": "ACME\u200bNet", "kind": "vpn", "score": 35}
    line = {**wire_event(), "seq": 1, "received_at": "2026-01-01T00:00:00Z", "ip_info": info}
    file = tmp_path / "events.jsonl"
    file.write_text(json.dumps(line) + "\n")
    db = str(tmp_path / "fresh.db")
    run("import", str(file), "--db", db)
    (stored,) = all_events(db).values()
    assert stored.enrichment["ip_info"] == info
