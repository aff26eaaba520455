"""``GET /metrics``: a real ``sqreen serve --workers 2`` after a known traffic pattern, read
with prometheus_client's own parser; who may read it; the Grafana dashboard's names."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sqreen._wire import parse_event
from sqreen.server.app import create_app
from sqreen.server.auth import hash_token, new_token
from sqreen.server.export import Forwarder, export_lag, parse_destination
from sqreen.server.export.sinks import Record
from sqreen.server.ingest import MAX_BODY_BYTES
from sqreen.server.playbooks import TEMPLATES
from sqreen.server.storage import Storage, open_storage
from tests.server.conftest import (
    Clock,
    Collector,
    ServeProcess,
    envelope,
    free_port,
    wait_for,
    wire_event,
)

pytestmark = pytest.mark.slow

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
METRICS_TOKEN = "metrics-" + "x" * 24
#: The first template alone (brute-force-ip: 5 login failures of an IP in 5 min block it).
PLAYBOOK = "[[playbook]]" + TEMPLATES.split("[[playbook]]")[1]
BATCHES, PER_BATCH = 6, 10

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, token: str = METRICS_TOKEN) -> tuple[Samples, set[str]]:
    """Every sample of ``/metrics`` by (name, labels), and the names of its families; a new
    connection each time, so that either worker may answer."""
    reply = httpx.get(
        url + "/metrics",
        headers={"Authorization": f"Bearer {token}", "Connection": "close"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    families = set()
    for family in text_string_to_metric_families(reply.text):
        families.add(family.name)
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return samples, families


def send_traffic(url: str, token: str, admin: str) -> None:
    """60 events accepted in 6 batches, 20 duplicates (two batches again), a batch of 3
    valid and 2 invalid events, one body of each refused status, a heartbeat, a block."""
    headers = {"Authorization": f"Bearer {token}", "Connection": "close"}
    with httpx.Client(headers=headers, timeout=30) as client:

        def post(body: Any, path: str = "/v1/events") -> dict[str, Any]:
            reply = client.post(url + path, json=body)
            assert reply.status_code == 200, reply.text
            return dict(reply.json())

        sent = [envelope([wire_event() for _ in range(PER_BATCH)]) for _ in range(BATCHES)]
        for body in sent:
            assert post(body)["accepted"] == PER_BATCH
        for body in sent[:2]:
            assert post(body)["duplicates"] == PER_BATCH
        mixed = [wire_event(), wire_event(name=""), wire_event(timestamp="yesterday")]
        reply = post(envelope([*mixed, wire_event(), wire_event()]))
        assert (reply["accepted"], len(reply["rejected"])) == (3, 2)
        post({**envelope([]), "stats": {"sent": 1}}, "/v1/heartbeat")
        bomb = gzip.compress(b" " * (MAX_BODY_BYTES + 1))
        refused = [
            ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, bomb, 413),
            ({"Content-Type": "text/plain"}, b"{}", 415),
            ({"Content-Type": "application/json"}, b"{", 400),
        ]
        for extra, content, status in refused:
            reply = client.post(url + "/v1/events", content=content, headers=extra)
            assert reply.status_code == status, reply.text
    block = httpx.post(
        url + "/v1/blocks",
        json={"type": "block_user", "user": {"uid": "mallory"}},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    assert block.status_code == 201, block.text


def keys(db: str) -> tuple[str, str]:
    ingest, admin = new_token(), new_token()
    storage = open_storage(db)
    try:
        storage.create_key("sdk", hash_token(ingest))
        storage.create_key("ops", hash_token(admin), "admin")
    finally:
        storage.close()
    return ingest, admin


def test_two_workers_report_exactly_the_traffic_sent(
    tmp_path: Path, serve: Callable[..., ServeProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "sqreen.db")
    ingest, admin = keys(db)
    playbooks = tmp_path / "playbooks.toml"
    playbooks.write_text(PLAYBOOK)
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(private))  # where serve makes its metrics directory
    down = f"jsonl+tcp://127.0.0.1:{free_port()}"  # an export destination that is down
    proc = serve(
        db,
        None,
        *("--workers", "2", "--metrics-token", METRICS_TOKEN, "--playbooks", playbooks),
        *("--export", down),
    )
    send_traffic(proc.url, ingest, admin)

    samples, families = scrape(proc.url)
    counters = {
        ("sqreen_events_accepted_total", ()): BATCHES * PER_BATCH + 3,
        ("sqreen_events_duplicates_total", ()): 2 * PER_BATCH,
        ("sqreen_events_rejected_total", (("reason", "empty"),)): 1,
        ("sqreen_events_rejected_total", (("reason", "format"),)): 1,
        ("sqreen_requests_refused_total", (("status", "400"),)): 1,
        ("sqreen_requests_refused_total", (("status", "413"),)): 1,
        ("sqreen_requests_refused_total", (("status", "415"),)): 1,
        ("sqreen_ingest_batch_seconds_count", ()): BATCHES + 2 + 1,
        # Every body the pipeline saw (the malformed one too), one at a time: groups of one.
        ("sqreen_ingest_group_bodies_count", ()): BATCHES + 2 + 1 + 1,
        ("sqreen_ingest_group_bodies_sum", ()): BATCHES + 2 + 1 + 1,
    }
    assert {k: samples.get(k) for k in counters} == counters
    assert not [k for k in samples if k[0] == "sqreen_events_rejected_total" and k not in counters]
    assert samples["sqreen_ingest_batch_seconds_bucket", (("le", "+Inf"),)] == BATCHES + 3
    # What the database holds, read at scrape time by the worker answering: once.
    blocks = {k[1]: v for k, v in samples.items() if k[0] == "sqreen_blocks_active"}
    assert blocks == {
        (("origin", "hand"), ("type", "ip")): 0,
        (("origin", "playbook"), ("type", "ip")): 1,  # 203.0.113.7 failed 5 logins
        (("origin", "hand"), ("type", "user")): 1,
        (("origin", "playbook"), ("type", "user")): 0,
    }
    assert samples["sqreen_alerts_total", (("playbook", "brute-force-ip"),)] == 1
    assert samples["sqreen_agents", (("state", "fresh"),)] == 1
    assert samples["sqreen_agents", (("state", "stale"),)] == 0
    assert samples["sqreen_database_up", ()] == 1
    assert samples["sqreen_database_bytes", ()] > 0
    assert 0 <= samples["sqreen_ingest_lag_seconds", ()] < 600
    assert samples["sqreen_export_lag_records", (("kind", "event"),)] >= BATCHES * PER_BATCH + 3
    assert samples["sqreen_export_lag_records", (("kind", "alert"),)] == 1
    # SQLite's write lock: both workers' turns summed (their files), held for every write.
    name = "sqreen_storage_write_lock_seconds_total"
    lock = {k[1]: v for k, v in samples.items() if k[0] == name}
    assert set(lock) == {(("phase", "held"),), (("phase", "waited"),)}
    assert 0 < lock[(("phase", "held"),)] < 60
    assert lock[(("phase", "waited"),)] >= 0

    # Whichever worker answers, the same set (the scrape is the only traffic now).
    for _ in range(6):
        again, _ = scrape(proc.url)
        assert {k: again.get(k) for k in counters} == counters

    assert_dashboard_names_exist(samples, families)

    # Who may read it: the token, an admin key; not an ingest key, nobody without one.
    assert httpx.get(proc.url + "/metrics").status_code == 401
    assert scrape(proc.url, admin)[0]["sqreen_database_up", ()] == 1
    for token, status in ((METRICS_TOKEN + "x", 401), (ingest, 403)):
        reply = httpx.get(proc.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == status

    # The counters lived in a private directory of serve's, removed when it stops.
    (made,) = private.glob("sqreen-metrics-*")
    assert list(made.glob("counter_*.db"))
    proc.stop()
    assert not list(private.glob("sqreen-metrics-*"))


def assert_dashboard_names_exist(samples: Samples, families: set[str]) -> None:
    """Every metric the sample Grafana dashboard queries is one /metrics serves."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bsqreen_[a-z_]+", e)}
    served = {name for name, _ in samples} | families
    assert len(used) >= 10
    assert used <= served, used - served


def test_metrics_in_one_process_and_its_keys(collector: Collector) -> None:
    """``create_app`` alone (no multiprocess directory): counts in memory; 401 without a
    key, 403 for an ingest key, 200 for an admin key."""
    url = collector.url
    assert httpx.get(url + "/metrics").status_code == 401
    assert collector.client.get(url + "/metrics").status_code == 403
    before, _ = scrape(url, collector.admin.headers["authorization"].split()[1])
    reply = collector.post("/v1/events", envelope([wire_event(), wire_event(name="")]))
    assert reply.status_code == 200
    after, _ = scrape(url, collector.admin.headers["authorization"].split()[1])

    def delta(name: str, *labels: tuple[str, str]) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    assert delta("sqreen_events_accepted_total") == 1
    assert delta("sqreen_events_rejected_total", ("reason", "empty")) == 1
    assert delta("sqreen_ingest_batch_seconds_count") == 1
    assert after["sqreen_ingest_lag_seconds", ()] >= 0


def test_the_database_size_and_its_newest_event(storage: Storage, clock: Clock) -> None:
    """What the scrape-time gauges read, on both back ends."""
    assert storage.newest_received_at() is None
    empty = storage.database_bytes()
    assert empty > 0
    first = storage.insert_events([parse_event(wire_event())])
    clock.advance(minutes=5)
    last = storage.insert_events([parse_event(wire_event()) for _ in range(2000)])
    assert last.received_at >= first.received_at + timedelta(minutes=5)
    assert storage.newest_received_at() == last.received_at
    assert storage.database_bytes() > empty


def test_the_export_lag_is_a_metric(
    live_app: tuple[Any, str], sqlite_storage: Storage, clock: Clock
) -> None:
    """With ``--export``, how many events and alerts the destination has not acknowledged:
    all of them while nothing was sent, none once the forwarder caught up."""
    switch, url = live_app
    admin = new_token()
    sqlite_storage.create_key("admin", hash_token(admin), "admin")
    sqlite_storage.insert_events([parse_event(wire_event()) for _ in range(7)])
    sent: list[Record] = []

    class Accepting:
        def send(self, records: Sequence[Record]) -> None:
            sent.extend(records)

        def close(self) -> None:
            pass

    destination = parse_destination("jsonl+tcp://127.0.0.1:9")
    forwarder = Forwarder(sqlite_storage, destination, sink=Accepting(), interval=0.05)
    switch.app = create_app(sqlite_storage, forwarder=forwarder)  # its lifespan is not run
    behind, _ = scrape(url, admin)
    assert behind["sqreen_export_lag_records", (("kind", "event"),)] == 7
    assert behind["sqreen_export_lag_records", (("kind", "alert"),)] == 0
    forwarder.start()
    try:
        wait_for(lambda: export_lag(sqlite_storage, destination.key).events == 0)
    finally:
        forwarder.close()
    assert len(sent) == 7
    caught_up, _ = scrape(url, admin)
    assert caught_up["sqreen_export_lag_records", (("kind", "event"),)] == 0
