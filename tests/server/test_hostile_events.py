"""An attacker holding an ingest key (the key on every app server) cannot blind the operator.

Events stamped at year 9999 or year 1, text no encoding can write (lone surrogates, which
``json.loads`` makes from ``"\\ud800"``) and terminal escapes go through the real ingest
endpoint, then every reader lists them: the events page and its histogram, the JSON API, the
event page, ``sqreen events`` (table and JSON lines), and retention. Rows stored before the
collector checked these (written here as it wrote them) are read the same way, and migration 7
repairs them. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from sqreen._blocking import fold_identifier
from sqreen.server.app import create_app
from sqreen.server.auth import hash_token, new_token
from sqreen.server.cli import main
from sqreen.server.explorer import _secrets, set_admin_password
from sqreen.server.playbooks import PlaybookSource
from sqreen.server.storage import Storage, open_storage
from sqreen.server.storage.model import to_us

from .conftest import Clock, envelope, recent, wire_event
from .poison import (
    CONTROLS,
    ESCAPES,
    FORGED,
    HOSTILE_IDS,
    LONE,
    OLD_IDS,
    STORED_AT,
    hostile_events,
    store_old_rows,
)

PASSWORD = "correct horse battery"


class Explorer:
    """The collector app over one storage: an SDK's key for ingest, a logged-in explorer."""

    def __init__(self, storage: Storage, playbooks: PlaybookSource | None = None) -> None:
        self.storage = storage
        self.token = new_token()
        storage.create_key("app-server", hash_token(self.token))
        set_admin_password(storage, PASSWORD)
        app = create_app(storage, playbooks=playbooks)
        self.client = TestClient(app, base_url="http://testserver")

    def ingest(self, events: list[dict[str, Any]], **app: Any) -> dict[str, Any]:
        # As an attacker sends it: ASCII JSON, so "\ud800" crosses as an escape.
        body = json.dumps(envelope(events, **app), ensure_ascii=True)
        reply = self.client.post(
            "/v1/events",
            content=body,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    def login(self) -> None:
        page = self.client.get("/explorer/login").text
        csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        reply = self.client.post(
            "/explorer/login",
            data={"password": PASSWORD, "csrf_token": csrf},
            follow_redirects=False,
        )
        assert reply.status_code == 303, reply.text

    def get(self, path: str) -> str:
        reply = self.client.get(path)
        assert reply.status_code == 200, (path, reply.status_code, reply.text[-2000:])
        return reply.text


@pytest.fixture
def explorer(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> Iterator[Explorer]:
    monkeypatch.setattr(_secrets, "LOG2_N", 10)  # the cheapest scrypt a stored hash may carry
    found = Explorer(storage)
    with found.client:
        found.login()
        yield found


def cli(db_url: str, command: str, *args: str) -> str:
    # color: as on a terminal, where click strips no escape sequence.
    result = CliRunner().invoke(
        main, [command, "--db", db_url, *args], catch_exceptions=False, color=True
    )
    assert result.exit_code == 0, result.output
    return result.output


def events_cli(db_url: str, *args: str) -> str:
    return cli(db_url, "events", *args)


def assert_readable(explorer: Explorer, db_url: str, ids: list[str]) -> dict[str, Any]:
    """Every reader shows the events of ``ids`` (and the rest): the page, its histogram and
    groups, the JSON API, each event's page, ``sqreen events`` as a table and as JSON lines.
    Return the API's events by id."""
    page = explorer.get("/explorer/events")
    assert 'class="bar"' in page  # the histogram is drawn
    for view in ("since=1h", "since=3650d", "group=user:uid", "group=prop:note", "group=app"):
        explorer.get(f"/explorer/events?{view}")
    api = json.loads(explorer.get("/explorer/api/events?limit=500"))
    by_id = {e["id"]: e for e in api["events"]}
    assert set(ids) <= set(by_id)
    for event_id in ids:
        assert event_id in by_id
        explorer.get("/explorer/events/" + quote(event_id, safe=""))
    table = events_cli(db_url, "--limit", "500")
    lines = events_cli(db_url, "--limit", "500", "--json").splitlines()
    assert {json.loads(line)["id"] for line in lines} >= set(ids)
    for text in (page, table, "\n".join(lines)):
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    return by_id


# -- through ingest ---------------------------------------------------------------------


def test_poisoned_events_through_ingest(explorer: Explorer, db_url: str, clock: Clock) -> None:
    before = explorer.storage.now()
    sent = recent(seconds=5)  # and an honest event: the skew rule leaves its time alone
    honest = wire_event(id="honest", timestamp=sent)
    reply = explorer.ingest([*hostile_events(), honest], name=f"shop{LONE}", host="web\udfff")
    # Not one refused: each is stored and counted, whatever its time, text or size.
    assert reply["rejected"] == []
    assert reply["accepted"] == len(HOSTILE_IDS) + 1
    after = explorer.storage.now()

    by_id = assert_readable(explorer, db_url, HOSTILE_IDS)
    by_id = assert_readable(explorer, db_url, ["ahead", "lone-\ufffd", "forged"])
    # Text that no encoding can write is stored as U+FFFD, everywhere.
    lone = by_id["lone-\ufffd"]
    assert lone["properties"] == {
        "note": "a\ufffdb",
        "key\ufffd": 1,
        "nested": {"list": ["\ufffd", {"\ufffd": "\ufffd"}]},
    }
    assert lone["user"] == {"uid": "4\ufffd2", "name\ufffd": "x"}
    assert lone["target"] == {"id": "\ufffd", "type": "doc", "name": "\ufffd"}
    request = lone["request"]
    assert (request["user_agent"], request["path"], request["route"]) == (
        "curl/\ufffd",
        "/login/\ufffd",
        "/login/\ufffd",
    )
    assert request["params"] == {"username": "\ufffd", "q\ufffd": ["\ufffd", {"k": "\ufffd"}]}
    assert request["body"]["content"] == "username=\ufffd"
    assert (lone["app"], lone["host"]) == ("shop\ufffd", "web\ufffd")
    # And it is found by what the page shows.
    assert [
        e["id"]
        for e in explorer.client.get("/explorer/api/events?user=uid=4\ufffd2").json()["events"]
    ] == ["lone-\ufffd"]

    # A time later than its receipt (year 9999 among them) is stored as the time of
    # receipt; one before 1970 (year 1 among them) as 1970.
    for event_id, stored in STORED_AT.items():
        event = by_id[event_id]
        expected = event["received_at"] if stored == "received" else stored
        assert event["timestamp"] == expected, event_id
    assert by_id["honest"]["timestamp"] == sent
    received = datetime.fromisoformat(by_id["ahead"]["received_at"])
    assert before <= received <= after

    # An over-long request part is cut, as the SDK cuts its own, rather than refused.
    request = by_id["long-request"]["request"]
    assert request["user_agent"] == "A" * 8192
    assert request["body"]["truncated"] is True
    assert request["body"]["content"].endswith("[truncated]")
    assert list(request["params"]) == ["[truncated]"]
    assert request["params"]["[truncated]"].startswith("30000 parameters")
    assert len(json.dumps(request)) <= 256 * 1024

    # Retention removes them with the others received then.
    clock.advance(days=2)
    assert explorer.storage.purge_older_than(1) == len(HOSTILE_IDS) + 1
    assert explorer.storage.count_events() == 0


def test_keys_that_store_as_the_same_text_do_not_fail_the_batch(explorer: Explorer) -> None:
    """NUL and a lone surrogate are both stored as U+FFFD: ``a\\x00``, ``a\\ud800`` and
    ``a\\ufffd`` are three keys of one event and would be one key of its side table, unique
    per event. The batch is stored (it was refused whole, then sent again forever), each
    event whole, the first of the keys indexed."""
    clash = wire_event(
        id="clash",
        properties={"a\x00": "first", "a" + LONE: "second", "a\ufffd": "third", "b": 1},
        user={"uid\x00": "u1", "uid\ufffd": "u2"},
    )
    reply = explorer.ingest([clash, wire_event(id="after")])
    assert reply["accepted"] == 2 and reply["rejected"] == []
    stored = explorer.storage.get_event("clash")
    # The event as sent, read back with U+FFFD for the surrogate (the later "a\ufffd" wins).
    assert stored is not None
    assert stored.properties == {"a\x00": "first", "a\ufffd": "third", "b": 1}
    found = json.loads(explorer.get("/explorer/api/events?prop=a\ufffd=first"))["events"]
    assert [e["id"] for e in found] == ["clash"]
    found = json.loads(explorer.get("/explorer/api/events?user=uid\ufffd=u1"))["events"]
    assert [e["id"] for e in found] == ["clash"]


def test_terminal_escapes_are_printed_escaped(explorer: Explorer, db_url: str) -> None:
    explorer.ingest([e for e in hostile_events() if e["id"] == "forged"])
    for output in (events_cli(db_url), events_cli(db_url, "--json")):
        assert not any(c in output for c in CONTROLS), repr(output)
        assert output.count("\n") == 1  # one event, one line: nothing drawn over it
    table = events_cli(db_url)
    # Escaped, and cut at 32 characters of the name (the rest of the line keeps its place):
    # the forged line shows as text up to the cut, which says that more follows.
    # (Quoted: a carriage return is a space between words, and a value with one would read
    # as two.)
    assert 'user=username="mallory\\x1b[2K\\r\\x1b[1A2026-… ip=' in table
    assert "\\x7f\\x9b\\u202e\\u2066\\u202egnp.exe" in table
    line = json.loads(events_cli(db_url, "--json"))
    assert line["user"] == {"username": f"mallory{FORGED}"}  # JSON keeps the data exact
    assert line["properties"]["reason"] == "".join(CONTROLS) + "\u202egnp.exe"


GUESSING = """\
[[playbook]]
id = "guessing"
events = ["auth.login.failure"]
group_by = "user"
threshold = 3
window = "5m"
action = "block_user"
duration = "1h"
"""


def test_a_hostile_username_is_counted_and_printed_escaped(
    storage: Storage, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A playbook counts the failures of a username no database could hold (it used to fail
    on it, and block nobody), and its alert and block print escaped."""
    monkeypatch.setattr(_secrets, "LOG2_N", 10)
    (tmp_path / "playbooks.toml").write_text(GUESSING)
    explorer = Explorer(storage, PlaybookSource(tmp_path / "playbooks.toml"))
    username = f"mallory{LONE}\u202e{FORGED}"
    with explorer.client:
        reply = explorer.ingest([wire_event(user={"username": username}) for _ in range(3)])
    assert reply["accepted"] == 3
    (alert,) = storage.list_alerts()
    (block,) = storage.list_blocks()
    # The block is on the account, all its spellings: its folded identifier (lower case).
    assert block.user == {"username": fold_identifier(f"mallory\ufffd\u202e{FORGED}")}
    alerts, blocks = cli(db_url, "alerts"), cli(db_url, "blocks")
    for output in (alerts, blocks):
        assert not any(c in output for c in CONTROLS), repr(output)
    # (The alert's summary names the user as JSON, which escapes C0 controls its own way.)
    assert "mallory\ufffd\\u202e\\u001b[2k\\r\\u001b[1a2026-12-01" in alerts
    assert "mallory\ufffd\\u202e\\x1b[2k\\r\\x1b[1a2026-12-01" in blocks
    for output in (cli(db_url, "alerts", "--json"), cli(db_url, "blocks", "--json")):
        assert not any(c in output for c in CONTROLS), repr(output)
    assert alert.block_id == block.id


def test_the_explorer_shows_control_characters_visibly(explorer: Explorer) -> None:
    explorer.ingest([e for e in hostile_events() if e["id"] == "forged"])
    pages = [
        explorer.get("/explorer/events"),
        explorer.get("/explorer/events/forged"),
        explorer.get("/explorer/events?group=user:username"),
    ]
    for page in pages:
        assert not any(c in page for c in CONTROLS), [c for c in CONTROLS if c in page]
        assert "mallory\\x1b[2K" in page
    assert "\\u202egnp.exe" in pages[1]
    # The live update builds its rows from the API's display fields: escaped the same way.
    (event,) = explorer.client.get("/explorer/api/events").json()["events"]
    assert event["display"]["user"].startswith('username="mallory\\x1b[2K\\r\\x1b[1A')
    assert "\\u202egnp.exe" in event["display"]["summary"]


# -- rows stored before ----------------------------------------------------------------


def test_rows_stored_before_are_readable(explorer: Explorer, db_url: str) -> None:
    store_old_rows(explorer.storage._write, explorer.storage.now())  # type: ignore[attr-defined]
    by_id = assert_readable(explorer, db_url, OLD_IDS)
    assert by_id["old-lone"]["properties"] == {"note": "\ufffd", "nested": {"k": ["\ufffd"]}}
    assert by_id["old-lone"]["request"]["params"] == {"\ufffd": 1}
    # Times are read as migration 7 repairs them: never later than their receipt, never
    # before 1970.
    assert by_id["old-9999"]["timestamp"] == by_id["old-9999"]["received_at"]
    assert by_id["old-ahead"]["timestamp"] == by_id["old-ahead"]["received_at"]
    assert by_id["old-1"]["timestamp"] == "1970-01-01T00:00:00.000000Z"
    page = explorer.get("/explorer/events/old-9999")  # with the user's traits
    assert "plan" in page and "\ufffd" in page


def test_migration_7_repairs_the_times_of_a_schema_6_database(db_url: str, clock: Clock) -> None:
    from sqreen.server.storage.postgres import PostgresStorage
    from sqreen.server.storage.sqlite import SQLiteStorage

    current = PostgresStorage if db_url.startswith("postgres") else SQLiteStorage
    schema_6 = type("Schema6", (current,), {"MIGRATIONS": current.MIGRATIONS[:6]})
    old = schema_6(db_url.removeprefix("sqlite://"))
    assert old.migrate() == 6
    received = clock() - timedelta(days=10)
    store_old_rows(old._write, received)
    with old._write() as cur:  # and a recent event, which stays
        cur.execute(
            "INSERT INTO events (id, name, ts, received_at, properties_json) "
            "VALUES (?, ?, ?, ?, ?)",
            ("fresh", "auth.signup", to_us(clock()), to_us(clock()), "{}"),
        )
    old.close()

    upgraded = open_storage(db_url, clock=clock)
    try:
        assert upgraded.migrate() == len(current.MIGRATIONS)  # type: ignore[attr-defined]
        times = {e.id: e.timestamp for e in upgraded.query_events(limit=10)}
        # Never later than its receipt; never before 1970.
        assert times["old-9999"] == times["old-ahead"] == received
        assert times["old-1"] == datetime(1970, 1, 1, tzinfo=UTC)
        traits = upgraded.get_user({"uid": "7"})
        assert traits is not None and traits.first_seen == datetime(1970, 1, 1, tzinfo=UTC)
        assert traits.traits == {"plan": "\ufffd"}
        # Retention now removes every old row by its time.
        assert upgraded.purge_older_than(1) == 4
        assert [e.id for e in upgraded.query_events()] == ["fresh"]
    finally:
        upgraded.close()


def test_sqreen_import_prints_bad_lines_escaped(tmp_path: Path) -> None:
    """A bad line's message names the key at fault, which the file's writer chose: printed
    with its control characters written out, as ``sqreen events`` prints them."""
    file = tmp_path / "hostile.jsonl"
    bad = [
        wire_event(user={"\x1b]0;pwned\x07": {"a": 1}}),  # sets the terminal's title
        wire_event(properties={f"{ESCAPES}{''.join(CONTROLS)}": "x" * 5000}),
    ]
    file.write_text("".join(json.dumps(e) + "\n" for e in bad))
    result = CliRunner().invoke(
        main, ["import", str(file), "--db", str(tmp_path / "import.db")], color=True
    )
    assert result.exit_code == 1 and "2 bad" in result.stdout
    assert not any(c in result.stderr for c in CONTROLS), repr(result.stderr)
    assert f"{file}:1: user.\\x1b]0;pwned\\x07: values must be" in result.stderr
    written = "\\x1b[2K\\r\\x1b[1A\\x1b\\r\\x07\\x7f\\x9b\\u202e\\u2066"
    assert f"{file}:2: properties.{written}: string of 5000 characters" in result.stderr
