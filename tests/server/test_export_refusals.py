"""The live forwarder against endpoints that refuse part of what it sends, and records it
cannot encode: no record stops the stream (the bad one is set aside, counted and logged),
alerts never wait behind events that keep failing, and an endpoint refusing everything has
nothing set aside. Real HTTP endpoints on 127.0.0.1; OTLP attributes decoded as sent."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from prometheus_client import REGISTRY

from sqreen._wire import parse_event
from sqreen.server.export import (
    ExportLag,
    Forwarder,
    ecs_event,
    export_lag,
    parse_destination,
    sinks,
)
from sqreen.server.export.otlp import encode_logs
from sqreen.server.storage import Storage

from .conftest import wait_for, wire_event
from .test_export import full_event, raise_alert

#: The status for a request, from the documents it holds (one a line).
Answer = Callable[[list[dict[str, Any]]], int]


def serve_posts(answer: Callable[[bytes], int]) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 answering each POST with the status ``answer`` gives its
    body (an empty reply)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            status = answer(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Endpoint:
    """A local ``jsonl+http`` endpoint: ``answer`` decides each request's status; the
    documents of the 2xx ones are kept, and every status answered is counted."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.documents: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.server = serve_posts(self._post)
        self.url = f"jsonl+http://alice:s3cret@127.0.0.1:{self.server.server_port}/in"

    def _post(self, body: bytes) -> int:
        docs = [json.loads(line) for line in body.splitlines()]
        status = self.answer(docs)
        if 200 <= status < 300:
            self.documents += docs
        self.statuses.append(status)
        return status

    def ids(self, kind: str = "event") -> list[str]:
        return (
            [d["id"] for d in self.documents if "seq" in d]
            if kind == "event"
            else [str(d["id"]) for d in self.documents if "playbook" in d]
        )


@pytest.fixture
def endpoints() -> Iterator[Callable[[Answer], Endpoint]]:
    made: list[Endpoint] = []

    def make(answer: Answer) -> Endpoint:
        made.append(Endpoint(answer))
        return made[-1]

    yield make
    for endpoint in made:
        endpoint.server.shutdown()
        endpoint.server.server_close()


def store(storage: Storage, events: list[dict[str, Any]]) -> list[str]:
    storage.insert_events([parse_event(e) for e in events], app="shop", host="web1", key_id=1)
    return [e["id"] for e in events]


def set_aside_count(kind: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value("sqreen_export_set_aside_total", {"kind": kind, "reason": reason})
        or 0.0
    )


@pytest.fixture
def forwarding(sqlite_storage: Storage) -> Iterator[Callable[..., Forwarder]]:
    started: list[Forwarder] = []

    def start(url: str, **options: Any) -> Forwarder:
        forwarder = Forwarder(
            sqlite_storage, parse_destination(url, "jsonl"), interval=0.02, **options
        )
        forwarder.start()
        started.append(forwarder)
        return forwarder

    yield start
    for forwarder in started:
        forwarder.close()


def test_a_record_too_large_alone_is_set_aside_and_the_rest_sent_in_halves(
    sqlite_storage: Storage,
    endpoints: Callable[[Answer], Endpoint],
    forwarding: Callable[..., Forwarder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """413 for a body over 8 kB: the batch of 40 is halved until each part fits; the one
    event of 12 kB, refused alone, is set aside (counted, one warning naming its seq and the
    destination without its password), and the stream goes on past it."""
    limit = 8_000
    endpoint = endpoints(lambda docs: 413 if len(json.dumps(docs)) > limit else 200)
    before = set_aside_count("event", "too_large")
    ids = store(sqlite_storage, [wire_event() for _ in range(20)])
    big = wire_event(properties={f"blob{i}": "x" * 4000 for i in range(3)})
    ids += store(sqlite_storage, [big, *(wire_event() for _ in range(19))])
    caplog.set_level(logging.WARNING, "sqreen.server")
    forwarder = forwarding(endpoint.url, batch=40)
    wait_for(lambda: export_lag(sqlite_storage, forwarder.destination.key).events == 0)
    assert sorted(endpoint.ids()) == sorted(set(ids) - {big["id"]})
    assert 413 in endpoint.statuses and forwarder.set_aside == 1
    assert set_aside_count("event", "too_large") == before + 1
    (seq,) = [e.seq for e in sqlite_storage.scan_events() if e.id == big["id"]]
    lines = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    assert len(lines) == 1 and f"event seq {seq} set aside" in lines[0]
    assert "127.0.0.1" in lines[0] and "s3cret" not in caplog.text


def test_a_record_refused_alone_is_set_aside_and_alerts_go_on(
    sqlite_storage: Storage,
    endpoints: Callable[[Answer], Endpoint],
    forwarding: Callable[..., Forwarder],
) -> None:
    """An endpoint refusing one record (HTTP 400, 422): the batch is split until that record
    is alone, every other is delivered, and the refused one set aside."""
    endpoint = endpoints(lambda docs: 422 if any(d.get("name") == "bad.one" for d in docs) else 200)
    before = set_aside_count("event", "refused")
    ids = store(sqlite_storage, [wire_event() for _ in range(13)])
    bad = wire_event(name="bad.one")
    ids += store(sqlite_storage, [bad, *(wire_event() for _ in range(17))])
    raise_alert(sqlite_storage, "203.0.113.9")
    forwarder = forwarding(endpoint.url, batch=500)
    name = forwarder.destination.key
    wait_for(lambda: export_lag(sqlite_storage, name) == ExportLag(0, 0))
    assert sorted(endpoint.ids()) == sorted(set(ids) - {bad["id"]})
    assert len(endpoint.ids("alert")) == 1
    assert set_aside_count("event", "refused") == before + 1


def test_an_endpoint_refusing_everything_has_nothing_set_aside(
    sqlite_storage: Storage,
    endpoints: Callable[[Answer], Endpoint],
    forwarding: Callable[..., Forwarder],
) -> None:
    """400 for every request (a wrong path, a wrong format): no record alone can be told
    bad, so none is set aside; the batch is sent again until the endpoint takes it."""
    status = [400]
    endpoint = endpoints(lambda docs: status[0])
    ids = store(sqlite_storage, [wire_event() for _ in range(6)])
    forwarder = forwarding(endpoint.url, max_backoff=0.2)
    wait_for(lambda: forwarder.failures >= 3)
    assert forwarder.set_aside == 0 and endpoint.documents == []
    assert export_lag(sqlite_storage, forwarder.destination.key).events == 6
    status[0] = 200  # fixed: everything is delivered
    wait_for(lambda: export_lag(sqlite_storage, forwarder.destination.key).events == 0)
    assert sorted(set(endpoint.ids())) == sorted(ids) and forwarder.set_aside == 0


def test_an_endpoint_that_starts_refusing_everything_has_one_record_set_aside(
    sqlite_storage: Storage,
    endpoints: Callable[[Answer], Endpoint],
    forwarding: Callable[..., Forwarder],
) -> None:
    """Right after the endpoint took a batch, it refuses everything: a batch of several,
    refused record by record with nothing taken, has nothing set aside; a record alone in
    its batch, refused right after a batch was taken, is set aside (it looks bad)."""
    status = [200]
    endpoint = endpoints(lambda docs: status[0])
    ids = store(sqlite_storage, [wire_event() for _ in range(3)])
    forwarder = forwarding(endpoint.url, max_backoff=0.2)
    name = forwarder.destination.key
    wait_for(lambda: export_lag(sqlite_storage, name).events == 0)
    status[0] = 400
    ids += store(sqlite_storage, [wire_event() for _ in range(5)])
    wait_for(lambda: forwarder.failures >= 3)
    assert forwarder.set_aside == 0 and export_lag(sqlite_storage, name).events == 5
    status[0] = 200
    wait_for(lambda: export_lag(sqlite_storage, name).events == 0)
    assert sorted(set(endpoint.ids())) == sorted(ids)
    status[0] = 400
    (lone,) = store(sqlite_storage, [wire_event()])
    wait_for(lambda: export_lag(sqlite_storage, name).events == 0)
    assert forwarder.set_aside == 1 and lone not in endpoint.ids()


def test_alerts_do_not_wait_behind_events_that_keep_failing(
    sqlite_storage: Storage,
    endpoints: Callable[[Answer], Endpoint],
    forwarding: Callable[..., Forwarder],
) -> None:
    """Events answered 503 for ever: the alerts, a lane of their own, are delivered."""
    endpoint = endpoints(lambda docs: 503 if any("seq" in d for d in docs) else 200)
    store(sqlite_storage, [wire_event() for _ in range(5)])
    raise_alert(sqlite_storage, "203.0.113.9")
    forwarder = forwarding(endpoint.url, max_backoff=0.2)
    wait_for(lambda: len(endpoint.ids("alert")) == 1)
    assert endpoint.ids() == [] and 503 in endpoint.statuses
    assert export_lag(sqlite_storage, forwarder.destination.key).alerts == 0


def test_a_record_that_cannot_be_encoded_is_set_aside(
    sqlite_storage: Storage,
    endpoints: Callable[[Answer], Endpoint],
    forwarding: Callable[..., Forwarder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mapping that raises for one record (any exception, not only OTLP's): the record is
    set aside at once, the others delivered."""
    bad = wire_event()
    mapped = sinks.document

    def document(kind: Any, record: Any, format: Any) -> dict[str, Any]:
        if getattr(record, "id", None) == bad["id"]:
            raise KeyError("a mapping's bug")
        return mapped(kind, record, format)

    monkeypatch.setattr(sinks, "document", document)
    endpoint = endpoints(lambda docs: 200)
    ids = store(sqlite_storage, [wire_event(), bad, wire_event()])
    forwarder = forwarding(endpoint.url)
    wait_for(lambda: export_lag(sqlite_storage, forwarder.destination.key).events == 0)
    assert sorted(endpoint.ids()) == sorted(set(ids) - {bad["id"]}) and forwarder.set_aside == 1


# -- OTLP: what int64 and homogeneous arrays cannot hold ----------------------------------


class OtlpEndpoint:
    def __init__(self) -> None:
        self.logs: list[dict[str, AnyValue]] = []
        self.server = serve_posts(self._post)
        self.url = f"otlp+http://127.0.0.1:{self.server.server_port}/v1/logs"

    def _post(self, body: bytes) -> int:
        self.logs += decoded(body)
        return 200


def decoded(body: bytes) -> list[dict[str, AnyValue]]:
    """Each log's attributes; a key sent twice fails (OTLP's keys are unique)."""
    out = []
    for resource in ExportLogsServiceRequest.FromString(body).resource_logs:
        for scope in resource.scope_logs:
            for log in scope.log_records:
                keys = [a.key for a in log.attributes]
                assert len(keys) == len(set(keys)), keys
                out.append({a.key: a.value for a in log.attributes})
    return out


def test_integers_outside_int64_go_as_their_decimal_text(sqlite_storage: Storage) -> None:
    """Ingest keeps integers up to 64 bits, unsigned ones included: those outside OTLP's
    signed int64 are sent as their exact text, and the events after them are sent too
    (the encoding raised, and the forwarder sent the same batch for ever)."""
    otlp = OtlpEndpoint()
    properties = {"top": 2**64 - 1, "low": -(2**63) - 1, "edge": 2**63 - 1, "neg": -(2**63)}
    ids = store(sqlite_storage, [wire_event(properties=properties), wire_event()])
    forwarder = Forwarder(sqlite_storage, parse_destination(otlp.url), interval=0.02)
    forwarder.start()
    try:
        wait_for(lambda: len(otlp.logs) >= 2)
    finally:
        forwarder.close()
        otlp.server.shutdown()
        otlp.server.server_close()
    assert [log["event.id"].string_value for log in otlp.logs] == ids
    attributes = otlp.logs[0]
    assert attributes["sqreen.properties.top"].string_value == "18446744073709551615"
    assert attributes["sqreen.properties.low"].string_value == "-9223372036854775809"
    assert attributes["sqreen.properties.edge"].int_value == 2**63 - 1
    assert attributes["sqreen.properties.neg"].int_value == -(2**63)
    assert forwarder.set_aside == 0


def test_otlp_attributes_have_unique_keys_and_homogeneous_arrays() -> None:
    """``"a.b"`` beside ``"a": {"b": ...}``: the smallest object holding both is one
    attribute, its JSON text. A mixed list is its JSON text; a list of one type an array."""
    properties = {
        "x": {"a.b": 1, "a": {"b": 2}},
        "y": 3,
        "mixed": [1, "x", 2.5],
        "ints": [1, 2],
        "wide": [1, 2**64 - 1],
        "names": ["a", "b"],
    }
    doc = full_event("custom.thing", properties=properties)
    (log,) = decoded(encode_logs([("event", ecs_event(doc))]))
    assert json.loads(log["sqreen.properties.x"].string_value) == properties["x"]
    assert "sqreen.properties.x.a.b" not in log and log["sqreen.properties.y"].int_value == 3
    assert log["sqreen.properties.mixed"].string_value == '[1,"x",2.5]'
    assert log["sqreen.properties.wide"].string_value == "[1,18446744073709551615]"
    assert [v.int_value for v in log["sqreen.properties.ints"].array_value.values] == [1, 2]
    assert [v.string_value for v in log["sqreen.properties.names"].array_value.values] == [
        "a",
        "b",
    ]


class CountingSink:
    """A sink answering each batch by ``answer`` (a status refuses it, None takes it),
    counting the batches."""

    def __init__(self, answer: Callable[[list[int]], int | None]) -> None:
        self.answer = answer
        self.sent = 0
        self.taken: list[int] = []

    def send(self, records: Any) -> None:
        self.sent += 1
        seqs = [record.seq for _, record in records]
        status = self.answer(seqs)
        if status is not None:
            raise sinks.Refused(status)
        self.taken += seqs

    def close(self) -> None:
        pass


class _Seq:
    """A record's stand-in: what :class:`CountingSink` reads of it."""

    def __init__(self, seq: int) -> None:
        self.seq = seq


def test_a_batch_to_an_endpoint_refusing_everything_is_a_few_posts_not_one_a_record() -> None:
    """Split down to single records and each refused, a batch of 500 was 999 posts a try
    (two million bytes in 20 s); the split now stops once 16 records were refused alone with
    none taken. Bad records among good ones are still found and set aside, all of them."""
    from sqreen.server.export.delivery import MAX_UNTOLD, deliver

    records = [("event", _Seq(seq)) for seq in range(500)]
    everything = CountingSink(lambda seqs: 400)
    done = deliver(everything, records)  # type: ignore[arg-type]
    assert done.settled == 0 and done.set_aside == [] and done.error is not None
    assert everything.sent <= 9 + 2 * MAX_UNTOLD, everything.sent
    bad = {0, 7, 250, 499}
    some = CountingSink(lambda seqs: 400 if bad & set(seqs) else None)
    done = deliver(some, records)  # type: ignore[arg-type]
    assert done.error is None and done.settled == 500
    assert sorted(a.index for a in done.set_aside) == sorted(bad)
    assert len(some.taken) == 496


def test_a_receiver_slower_than_the_timeout_is_waited_for_longer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An endpoint answering after 1.5 s with a 1 s timeout: the first post times out and
    the timeout doubles (up to MAX_TIMEOUT), so the batch goes through the next time (it
    was sent again and again, never caught up)."""
    import time

    monkeypatch.setattr(sinks, "TIMEOUT", 1.0)
    monkeypatch.setattr(sinks, "MAX_TIMEOUT", 1.7)

    def slow(body: bytes) -> int:
        time.sleep(1.5)
        return 200

    server = serve_posts(slow)
    try:
        url = f"jsonl+http://127.0.0.1:{server.server_port}/in"
        sink = sinks.open_sink(parse_destination(url))
        sink.body = lambda records: (b"{}\n", "application/x-ndjson")  # type: ignore[attr-defined]
        with pytest.raises(sinks.SinkError, match="Timeout"):
            sink.send([])
        assert sink.timeout == 1.7  # type: ignore[attr-defined]  # doubled, capped
        sink.send([])
        sink.close()
    finally:
        server.shutdown()
        server.server_close()
