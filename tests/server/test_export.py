"""Export: the ECS and OCSF mappings against docs/export.md's table, ``sqreen export``
streaming, and the live forwarder (``sqreen serve --export``) to a local OTLP/HTTP receiver
across a restart and an endpoint that is down for a while."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import httpx2 as httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from sqreen._wire import parse_event
from sqreen.events import STANDARD_EVENTS
from sqreen.server._cli_export import export_lines
from sqreen.server.export import (
    Forwarder,
    ecs_alert,
    ecs_event,
    export_lag,
    ocsf_alert,
    ocsf_event,
    parse_destination,
)
from sqreen.server.export.sinks import Record
from sqreen.server.storage import Alert, NewAlert, Storage, StoredEvent, WindowWrite, open_storage
from sqreen.server.storage._rows import event_record

from .conftest import (
    SQREEN,
    ServeProcess,
    add_key,
    envelope,
    free_port,
    recent,
    wait_for,
    wire_event,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"


# -- the mapping, against the documented table ------------------------------------------


def documented() -> dict[tuple[str, str], set[str]]:
    """docs/export.md's field table: (format, record) -> fields."""
    table: dict[tuple[str, str], set[str]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] not in ("ecs", "ocsf"):
            continue
        field = re.fullmatch(r"`([^`]+)`", cells[2])
        assert field, line
        for record in cells[1].split(","):
            table.setdefault((cells[0], record.strip()), set()).add(field.group(1))
    return table


def emitted(doc: Mapping[str, Any], fields: set[str], prefix: str = "") -> set[str]:
    """The dotted paths of ``doc``'s leaves, stopping at documented objects."""
    out: set[str] = set()
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and path not in fields:
            out |= emitted(value, fields, path + ".")
        else:
            out.add(path)
    return out


def full_event(name: str, **overrides: Any) -> dict[str, Any]:
    """A stored event's JSON with every field a mapping reads."""
    doc = {
        "seq": 7,
        "id": "ev-1",
        "name": name,
        "timestamp": "2026-01-02T03:04:05.000006Z",
        "received_at": "2026-01-02T03:04:06.000000Z",
        "app": "shop",
        "host": "web1",
        "properties": {"reason": "bad_password", "nested": {"a": 1}},
        "user": {"uid": "42", "username": "alice", "email": "alice@example.com"},
        "target": {"type": "account", "id": "9"},
        "request": {
            "ip": "203.0.113.7",
            "user_agent": "curl/8.0",
            "path": "/login",
            "route": "/login",
            "method": "POST",
        },
        "ip_info": {
            "country": "GB",
            "kind": "hosting",
            "provider": "Google",
            "city": "London",
            "latitude": 51.5,
            "longitude": -0.09,
            "accuracy_radius": 10,
            "asn": 15169,
            "score": 25,
            "reasons": ["hosting"],
        },
        "enrichment": {"travel": {"km": 900}},
    }
    doc.update(overrides)
    return doc


def alert_json(group_by: str = "ip", group_key: str = "203.0.113.7") -> dict[str, Any]:
    return {
        "id": 3,
        "playbook": "brute-force",
        "group_by": group_by,
        "group_key": group_key,
        "count": 12,
        "first_event_at": "2026-01-02T03:00:00.000000Z",
        "last_event_at": "2026-01-02T03:04:00.000000Z",
        "first_seq": 1,
        "last_seq": 12,
        "events": [12, 11],
        "mode": "enforce",
        "action": "block_ip",
        "block_id": 5,
        "summary": "12 failed logins from 203.0.113.7",
        "created_at": "2026-01-02T03:04:01.000000Z",
    }


MINIMAL = {"user": None, "request": None, "target": None, "app": None, "host": None}
BY_USER = alert_json("user", "username=alice")
CASES: list[tuple[str, str, Callable[[dict[str, Any]], dict[str, Any]], list[dict[str, Any]]]] = [
    ("ecs", "event", ecs_event, [full_event("auth.login.failure")]),
    ("ecs", "alert", ecs_alert, [alert_json(), BY_USER]),
    (
        "ocsf",
        "3002",
        ocsf_event,
        [full_event("auth.login.success"), full_event("auth.logout", **MINIMAL)],
    ),
    (
        "ocsf",
        "6003",
        ocsf_event,
        [
            full_event("admin.user.created"),
            full_event("custom.thing", user=None, request=None, ip_info=None),
            full_event("custom.thing", **MINIMAL, ip_info=None),
        ],
    ),
    ("ocsf", "2004", ocsf_alert, [alert_json(), BY_USER]),
]


@pytest.mark.parametrize(("format", "record", "mapper", "docs"), CASES)
def test_full_records_emit_exactly_the_documented_fields(
    format: str, record: str, mapper: Callable[[dict[str, Any]], dict[str, Any]], docs: Any
) -> None:
    """Every field emitted is documented, and every documented field is emitted (by an
    alert grouped by ip or one grouped by user)."""
    fields = documented()[format, record]
    assert set().union(*(emitted(mapper(doc), fields) for doc in docs)) == fields


@pytest.mark.parametrize(
    ("format", "record", "mapper", "doc"),
    [
        ("ecs", "event", ecs_event, full_event("auth.logout", **MINIMAL)),
        ("ecs", "event", ecs_event, full_event("custom.thing", ip_info=None, enrichment=None)),
        ("ecs", "alert", ecs_alert, BY_USER),
        ("ocsf", "3002", ocsf_event, full_event("auth.logout", **MINIMAL)),
        ("ocsf", "6003", ocsf_event, full_event("custom.thing", user={"x": "1"})),
        ("ocsf", "2004", ocsf_alert, BY_USER),
    ],
)
def test_a_sparse_record_emits_only_documented_fields(
    format: str, record: str, mapper: Callable[[dict[str, Any]], dict[str, Any]], doc: Any
) -> None:
    fields = documented()[format, record]
    assert emitted(mapper(doc), fields) <= fields


@pytest.mark.parametrize("name", ["admin.settings.changed", "custom.thing"])
def test_an_ocsf_api_activity_without_user_or_request_has_what_ocsf_requires(name: str) -> None:
    """API Activity (6003) requires ``actor``, ``api`` and ``src_endpoint``: an event tracked
    outside a request (a cron job) with no user was a record without ``actor`` or
    ``src_endpoint``, which OCSF validators (and Security Lake) refuse. The app that
    tracked it stands for both, by its name and host as the SDK gave them."""
    record = ocsf_event(full_event(name, user=None, request=None, ip_info=None))
    assert record["class_uid"] == 6003
    assert record["actor"] == {"app_name": "shop"}
    assert record["api"]["operation"] == name
    assert record["src_endpoint"] == {"hostname": "web1"}
    bare = ocsf_event(full_event(name, **MINIMAL, ip_info=None))
    assert bare["actor"] == {"app_name": "unknown"} and bare["src_endpoint"] == {"name": "unknown"}
    with_user = ocsf_event(full_event(name, request=None))
    assert with_user["actor"]["user"]["uid"] == "42" and "app_name" not in with_user["actor"]


def test_an_ocsf_authentication_without_user_has_an_unknown_user() -> None:
    """Authentication (3002) requires ``user``: one of unknown type stands for none."""
    record = ocsf_event(full_event("auth.logout", **MINIMAL))
    assert record["class_uid"] == 3002
    assert record["user"] == {"type_id": 0, "type": "Unknown"}


def test_ocsf_classes_activities_and_statuses() -> None:
    login = ocsf_event(full_event("auth.login.failure"))
    assert (login["class_uid"], login["activity_id"], login["status_id"]) == (3002, 1, 2)
    assert login["type_uid"] == 300201 and login["user"]["name"] == "alice"
    logout = ocsf_event(full_event("auth.logout"))
    assert (logout["class_uid"], logout["activity_id"], logout["type_uid"]) == (3002, 2, 300202)
    deleted = ocsf_event(full_event("admin.user.deleted"))
    assert (deleted["class_uid"], deleted["activity_id"]) == (6003, 4)
    assert deleted["actor"]["user"]["uid"] == "42" and deleted["api"]["operation"] == (
        "admin.user.deleted"
    )
    finding = ocsf_alert(alert_json())
    assert (finding["class_uid"], finding["type_uid"], finding["action_id"]) == (2004, 200401, 2)
    assert finding["time"] == 1767323041000  # 2026-01-02T03:04:01Z in ms
    ecs = ecs_event(full_event("auth.login.success"))
    assert ecs["event"]["outcome"] == "success" and ecs["event"]["category"] == ["authentication"]
    assert ecs["source"]["geo"]["location"] == {"lat": 51.5, "lon": -0.09}


#: ECS's expected event types for each category we use (ECS 8, "ECS Categorization Field:
#: event.category"): a (category, type) pair outside them is one Elastic's rules and
#: dashboards do not expect.
ECS_EXPECTED_TYPES: Final = {
    "authentication": {"start", "end", "info"},
    "configuration": {"access", "change", "creation", "deletion", "info"},
    "database": {"access", "change", "info", "error"},
    "iam": {"admin", "change", "creation", "deletion", "group", "info", "user"},
    "intrusion_detection": {"allowed", "denied", "info"},
    "web": {"access", "error", "info"},
}


@pytest.mark.parametrize(
    "name", [*STANDARD_EVENTS, "auth.password.reset", "admin.thing", "custom.thing", "x"]
)
def test_every_ecs_category_and_type_is_one_ecs_expects(name: str) -> None:
    """Each standard name (and a few others) as ECS expects it: every category allowed, and
    every type expected for each of its categories (``auth.signup`` was ``authentication``
    and ``creation``, which Elastic does not expect together)."""
    event = ecs_event(full_event(name))["event"]
    assert event["category"] and event["type"]
    for category in event["category"]:
        assert set(event["type"]) <= ECS_EXPECTED_TYPES[category], (category, event["type"])


# -- sqreen export -------------------------------------------------------------------------


def store(storage: Storage, count: int, **overrides: Any) -> None:
    for start in range(0, count, 500):
        batch = [parse_event(wire_event(**overrides)) for _ in range(min(500, count - start))]
        storage.insert_events(batch, app="shop", host="web1", key_id=1)


class CountingStorage:
    """A storage that counts the rows its scans return (the export's memory bound)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.pages: list[int] = []

    def scan_events(self, *args: Any, **kwargs: Any) -> list[StoredEvent]:
        found = self.storage.scan_events(*args, **kwargs)
        self.pages.append(len(found))
        return found


def test_export_streams_page_by_page(sqlite_storage: Storage) -> None:
    store(sqlite_storage, 2500)
    spy = CountingStorage(sqlite_storage)
    lines = export_lines(spy, "ecs")  # type: ignore[arg-type]
    first = next(lines)
    assert spy.pages == [1000]  # one page read for the first line, not the 2 500 events
    rest = list(lines)
    assert spy.pages == [1000, 1000, 500]
    ids = [json.loads(line)["event"]["id"] for _, line in [first, *rest]]
    assert len(ids) == len(set(ids)) == 2500


def test_sqreen_export_writes_the_range_in_each_format(tmp_path: Path) -> None:
    db = str(tmp_path / "sqreen.db")
    storage = open_storage(db)
    try:
        store(storage, 1500)
        store(storage, 20, timestamp=recent(days=10))  # outside --since 7d
        start = storage.now() - timedelta(days=7)
        for format, key in (("ecs", "event"), ("jsonl", "name")):
            docs = [json.loads(line) for _, line in export_lines(storage, format, since=start)]
            assert len(docs) == 1500 and all(key in d for d in docs)
    finally:
        storage.close()
    done = subprocess.run(
        [*SQREEN, "export", "--db", db, "--since", "7d", "--format", "ocsf"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    docs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(docs) == 1500 and {d["class_uid"] for d in docs} == {3002}
    # Not a terminal (a log): the total on a line of its own, no carriage returns.
    assert done.stderr == b"1500 events exported\n"
    none = subprocess.run(
        [*SQREEN, "export", "--db", db, "--alerts"], capture_output=True, check=True, timeout=60
    )
    assert none.stdout == b"" and b"0 alerts exported" in none.stderr


# -- the forwarder -----------------------------------------------------------------------


def raise_alert(storage: Storage, key: str) -> None:
    now = storage.now()
    now_us = int(now.timestamp() * 1_000_000)
    alert = NewAlert("x", "ip", key, 1, now, now, 1, 1, (1,), "monitor", "alert", "one", None)
    storage.update_windows(
        [("s", key)],
        [("s", key, now_us, 1, None)],
        [("s", key, now_us - 10, 1, False)],
        lambda found, quiet: WindowWrite({}, [alert]),
    )


class RecordingSink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def send(self, records: Sequence[Record]) -> None:
        self.records += records

    def close(self) -> None:
        pass


def test_one_forwarder_of_several_sends_each_record_once(storage: Storage) -> None:
    """Two collector processes' forwarders on one database (``--workers 2``): the lease lets
    one send; the other takes over when it stops, from the cursor."""
    destination = parse_destination("otlp+http://127.0.0.1:9/v1/logs")
    sinks = [RecordingSink(), RecordingSink()]
    forwarders = [Forwarder(storage, destination, sink=s, interval=0.05, batch=300) for s in sinks]
    store(storage, 700)
    raise_alert(storage, "203.0.113.9")
    for f in forwarders:
        f.start()
    try:
        wait_for(lambda: sum(len(s.records) for s in sinks) >= 701)
        assert export_lag(storage, destination.key).events == 0
        forwarders[0].close()  # whichever held the lease gives it up
        store(storage, 300)
        wait_for(lambda: sum(len(s.records) for s in sinks) >= 1001)
    finally:
        for f in forwarders:
            f.close()
    sent = Counter(
        (kind, r.seq if isinstance(r, StoredEvent) else r.id)
        for s in sinks
        for kind, r in s.records
    )
    assert len(sent) == 1001 and set(sent.values()) == {1}
    assert {kind for kind, _ in sent} == {"event", "alert"}
    assert export_lag(storage, destination.key).events == 0


@pytest.mark.postgres
def test_a_lower_seq_committed_late_is_sent_before_the_cursor_passes_it(
    postgres_db: str,
) -> None:
    """Two collectors on one PostgreSQL: batch A takes its seq, batch B a higher one and
    commits first. The forwarder waits for A (the export fence) instead of sending B and
    moving its cursor past A, which it would then never send; then sends both, in order."""
    storage, other = open_storage(postgres_db), open_storage(postgres_db)
    sink = RecordingSink()
    forwarder = Forwarder(
        storage, parse_destination("otlp+http://127.0.0.1:9/v1/logs"), sink=sink, interval=0.02
    )
    a = event_record(parse_event(wire_event(name="batch.a")), None, None, 0)
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    try:
        forwarder.start()
        with other._write() as cur:  # type: ignore[attr-defined]
            other._fence(cur)  # type: ignore[attr-defined]  # as insert_events does
            other._insert_events(cur, [a])  # type: ignore[attr-defined]
            storage.insert_events([parse_event(wire_event(name="batch.b"))])
            wait_for(lambda: storage._read(waiting)[0][0] > 0)  # type: ignore[attr-defined]
            assert sink.records == []
        wait_for(lambda: len(sink.records) >= 2)
        forwarder.close()
        assert [r.name for _, r in sink.records] == ["batch.a", "batch.b"]  # type: ignore[union-attr]
        assert export_lag(storage, forwarder.destination.key).events == 0
    finally:
        forwarder.close()
        other.close()
        storage.close()


class Receiver:
    """A local OTLP/HTTP logs endpoint: decodes each request with opentelemetry-proto and
    keeps the ``event.id`` of every log; answers ``status`` (503 while "down"), and can be
    closed and opened again on its port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self.ids: list[str] = []
        self.refused = 0
        self._server: ThreadingHTTPServer | None = None

    def open(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.status == 200:
                    request = ExportLogsServiceRequest.FromString(body)
                    for resource in request.resource_logs:
                        for scope in resource.scope_logs:
                            for log in scope.log_records:
                                attrs = {a.key: a.value for a in log.attributes}
                                receiver.ids.append(attrs["event.id"].string_value)
                else:
                    receiver.refused += 1
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.open()
    yield r
    r.close()


def test_serve_forwards_every_event_once_across_an_outage_and_a_restart(
    tmp_path: Path, serve: Callable[..., ServeProcess], receiver: Receiver
) -> None:
    db = str(tmp_path / "sqreen.db")
    token = add_key(db)
    export = ("--export", f"otlp+http://127.0.0.1:{receiver.port}/v1/logs")
    sent: list[str] = []

    def post(url: str, count: int) -> None:
        events = [wire_event() for _ in range(count)]
        reply = httpx.post(
            url + "/v1/events",
            json=envelope(events),
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        sent.extend(e["id"] for e in events)

    server = serve(db, None, *export)
    post(server.url, 300)
    wait_for(lambda: len(receiver.ids) >= 300)
    receiver.status = 503  # the endpoint fails...
    post(server.url, 200)
    wait_for(lambda: receiver.refused >= 2)
    server.stop()  # ...the collector restarts...
    receiver.close()  # ...and the endpoint is gone meanwhile
    log = tmp_path / "restarted.log"
    server = serve(db, None, *export, log=log)
    post(server.url, 200)
    wait_for(lambda: "failed" in log.read_text())  # it tried the closed port
    receiver.status = 200
    receiver.open()  # back: everything stored is sent, once
    wait_for(lambda: len(receiver.ids) >= len(sent), timeout=60)

    def lag() -> tuple[int, int]:
        storage = open_storage(db)
        try:
            behind = export_lag(storage, parse_destination(export[1]).key)
        finally:
            storage.close()
        return behind.events, behind.alerts

    # The cursor moves only after the receiver has recorded a batch: once it has caught up,
    # any duplicate has been recorded already.
    wait_for(lambda: lag() == (0, 0))
    assert Counter(receiver.ids) == Counter(set(sent))
    # What the log says of it: where it exports, at start, and that it works again.
    said = log.read_text()
    assert f"exporting events and alerts to otlp+http://127.0.0.1:{receiver.port}/v1/logs" in said
    wait_for(lambda: "export of events to" in log.read_text() and "works again" in log.read_text())


def test_a_bad_export_url_stops_serve(tmp_path: Path) -> None:
    done = subprocess.run(
        [*SQREEN, "serve", "--db", str(tmp_path / "x.db"), "--export", "http://host/v1/logs"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0 and b"otlp+http" in done.stderr


def test_destination_names_leave_credentials_out() -> None:
    d = parse_destination("jsonl+https://user:secret@siem.example:8443/in?token=x", "ocsf")
    assert d.name == "jsonl+https://siem.example:8443/in" and d.format == "ocsf"
    assert parse_destination("jsonl+tcp://10.0.0.1:5140").url == "10.0.0.1:5140"
    with pytest.raises(ValueError):
        parse_destination("jsonl+tcp://10.0.0.1")


@pytest.mark.parametrize(
    "url",
    [
        # Base64 passwords hold "/": the host then ends there, the password's start taken
        # for a host and a port (an http one started, and logged it at every retry).
        "jsonl+https://elastic:Zm9vYmFy/c2VjcmV0@127.0.0.1:25104/in",
        "jsonl+tcp://user:SECRET/PW@h:5140",
        "jsonl+tcp://u:SECRET#x@h:5140",
        "jsonl+http://u:SECRET?x@[::1/x",
        "jsonl+http://user:SECRET@host:badport/x",
        "otlp+https://SECRET:SECRET@host:99999999/v1/logs",
    ],
)
def test_a_url_whose_password_broke_it_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_destination(url)
    said = str(refused.value)
    assert "SECRET" not in said and "Zm9vYmFy" not in said and "c2VjcmV0" not in said, said
    assert "percent-encoded" in said or "no host" in said, said
    encoded = parse_destination("jsonl+https://elastic:Zm9vYmFy%2Fc2VjcmV0@127.0.0.1:25104/in")
    assert encoded.name == "jsonl+https://127.0.0.1:25104/in"


def test_two_tenants_of_one_endpoint_are_two_destinations(storage: Storage) -> None:
    """``?tenant=a`` and ``?tenant=b`` (or two users) shared one cursor and lease: one
    collector sent everything, the other nothing, its lag 0. Each now has its own, named
    without the query's text (a token there stays out of the database); a destination with
    a query goes on from the cursor it had under the name without it, not from the start."""
    a = parse_destination("jsonl+http://127.0.0.1:9/in?tenant=a&token=s3cret")
    b = parse_destination("jsonl+http://127.0.0.1:9/in?tenant=b&token=s3cret")
    plain = parse_destination("jsonl+http://127.0.0.1:9/in")
    assert a.name == b.name == plain.name == plain.key == "jsonl+http://127.0.0.1:9/in"
    assert len({a.key, b.key, plain.key}) == 3 and "s3cret" not in a.key + b.key
    assert (
        parse_destination("jsonl+http://alice:pw1@127.0.0.1:9/in").key
        == parse_destination("jsonl+http://alice:pw2@127.0.0.1:9/in").key
    )  # a new password: the same destination
    store(storage, 30)
    # A collector of the build before had sent 10 events to ?tenant=a, under the plain name.
    assert storage.take_export_lease("lease " + plain.name, 1, 30.0)
    assert storage.move_export_cursor("lease " + plain.name, 1, "events " + plain.name, 10)
    storage.release_export_lease("lease " + plain.name, 1)
    sinks = {a.key: RecordingSink(), b.key: RecordingSink()}
    forwarders = [
        Forwarder(storage, d, sink=sinks[d.key], interval=0.02, batch=100) for d in (a, b)
    ]
    for f in forwarders:
        f.start()
    try:
        wait_for(lambda: all(len(s.records) >= 20 for s in sinks.values()))
        wait_for(lambda: all(export_lag(storage, d.key).events == 0 for d in (a, b)))
    finally:
        for f in forwarders:
            f.close()
    seqs = {key: [r.seq for _, r in sink.records] for key, sink in sinks.items()}
    assert seqs[a.key] == seqs[b.key] == list(range(11, 31))  # each from the old cursor
    assert export_lag(storage, a.key).events == export_lag(storage, b.key).events == 0


def test_alert_documents_round_trip(storage: Storage) -> None:
    raise_alert(storage, "198.51.100.4")
    (alert,) = storage.scan_alerts()
    assert isinstance(alert, Alert)
    assert ecs_alert(alert.to_json())["source"]["ip"] == "198.51.100.4"
    assert storage.scan_alerts(after_id=alert.id) == []


def test_json_lines_over_tcp_and_http_carry_each_document(sqlite_storage: Storage) -> None:
    """jsonl+tcp:// writes a document a line on one connection; jsonl+http:// POSTs them."""
    store(sqlite_storage, 120)
    lines: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as stream:
            lines.extend(stream)

    threading.Thread(target=accept, daemon=True).start()
    posted: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            assert self.headers["Content-Type"] == "application/x-ndjson"
            posted.extend(self.rfile.read(int(self.headers["Content-Length"])).splitlines())
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    port = listener.getsockname()[1]
    targets = [
        (parse_destination(f"jsonl+tcp://127.0.0.1:{port}", "ocsf"), lines),
        (parse_destination(f"jsonl+http://127.0.0.1:{http.server_port}/in", "jsonl"), posted),
    ]
    try:
        for destination, received in targets:
            forwarder = Forwarder(sqlite_storage, destination, batch=50, interval=0.05)
            forwarder.start()
            try:
                name = destination.key
                wait_for(lambda: export_lag(sqlite_storage, name).events == 0)  # noqa: B023
            finally:
                forwarder.close()
            wait_for(lambda: len(received) >= 120)  # noqa: B023 (waited for here)
    finally:
        http.shutdown()
        http.server_close()
        listener.close()
    assert {json.loads(line)["class_uid"] for line in lines} == {3002} and len(lines) == 120
    assert len({json.loads(line)["id"] for line in posted}) == len(posted) == 120
