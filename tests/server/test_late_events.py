"""Events that reach the playbooks through ingest older than a window count for nothing
there, as ever, but no longer silently: ``sqreen_playbook_late_events_total{playbook}`` and a
warning a minute on the ``sqreen.server`` logger. ``sqreen import`` (past events, old by
design) counts in neither."""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from sqreen._wire_time import format_timestamp
from sqreen.server.app import create_app
from sqreen.server.cli import main
from sqreen.server.playbooks import TEMPLATES, PlaybookSource, _late

from .conftest import Collector, envelope, wire_event

#: The templates that read login failures, with their windows.
FAILURES = {
    "brute-force-ip": "5m",
    "brute-force-account": "1h",
    "credential-stuffing": "15m",
    "password-spray": "1h",
    "account-takeover": "10m",  # its failures are what the success comes after
}


def late(playbook: str) -> float:
    value = REGISTRY.get_sample_value("sqreen_playbook_late_events_total", {"playbook": playbook})
    return value or 0.0


def counts() -> dict[str, float]:
    return {p: late(p) for p in [*FAILURES, "signup-abuse"]}


def added(before: dict[str, float]) -> dict[str, float]:
    return {p: n - before[p] for p, n in counts().items() if n != before[p]}


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "too late to count" in r.getMessage()]


@pytest.fixture
def armed(collector: Collector, live_app: Any, tmp_path: Path) -> Collector:
    switch, _ = live_app
    path = tmp_path / "playbooks.toml"
    path.write_text(TEMPLATES)
    switch.app = create_app(collector.storage, key_cache_ttl=0.2, playbooks=PlaybookSource(path))
    return collector


def failures(collector: Collector, n: int, **ago: float) -> list[dict[str, Any]]:
    at = format_timestamp(collector.clock() - timedelta(**ago))
    return [wire_event(timestamp=at, user={"uid": f"late{i}"}) for i in range(n)]


def test_late_events_are_counted_by_playbook_and_said_once_a_minute(
    armed: Collector, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, "sqreen.server")
    before = counts()
    # Seven minutes old: past brute-force-ip's window (5 minutes) only.
    armed.post("/v1/events", envelope(failures(armed, 3, minutes=7)))
    assert added(before) == {"brute-force-ip": 3}
    (line,) = lines(caplog)
    # No total: an event late for five playbooks was said as "5 events".
    assert line.startswith("sqreen: events reached playbooks too late to count (brute-force-ip: 3 ")
    # How late: the oldest's age when the playbooks ran (its seconds, on a slow machine).
    assert re.search(r"brute-force-ip: 3 older than its window \(5m\), up to 7m(0\ds)? old", line)
    # Two hours old: past every window of the failures' playbooks; said at the next line.
    before = counts()
    armed.post("/v1/events", envelope(failures(armed, 2, hours=2)))
    assert added(before) == {p: 2 for p in FAILURES}
    assert len(lines(caplog)) == 1  # within the minute: counted, not said again
    monkeypatch.setattr(_late, "LOG_EVERY", 0.0)
    armed.post("/v1/events", envelope(failures(armed, 1, hours=3)))
    last = lines(caplog)[-1]
    assert re.search(r"brute-force-ip: 3 older than its window \(5m\), up to 3h old", last)
    assert re.search(r"brute-force-account: 3 older than its window \(1h\), up to 3h ", last)
    assert "account-takeover: 3" in last and "signup-abuse" not in last
    # Events in their windows are not late.
    before = counts()
    armed.post("/v1/events", envelope(failures(armed, 2, seconds=10)))
    assert added(before) == {}


def test_an_import_of_past_events_is_not_late(
    armed: Collector, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """``sqreen import`` stores past events without the ingest pipeline's hooks, into the
    database a collector serves: the playbooks never see them, late or not."""
    caplog.set_level(logging.WARNING, "sqreen.server")
    before = counts()
    path = tmp_path / "past.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in failures(armed, 40, days=2)))
    db = armed.storage.path  # type: ignore[attr-defined]
    result = CliRunner().invoke(main, ["import", str(path), "--db", db])
    assert result.exit_code == 0, result.output
    assert "40 events stored" in result.output
    armed.post("/v1/events", envelope(failures(armed, 1, seconds=5)))  # the playbooks run
    assert added(before) == {} and lines(caplog) == []
    assert armed.storage.list_alerts() == []


def test_alerts_get_a_line_each_up_to_a_limit_a_playbook_a_minute(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An attack on many accounts logged a line an alert: 2 233 in 25 s."""
    now = [1000.0]
    monkeypatch.setattr(_late.time, "monotonic", lambda: now[0])
    lines = _late.AlertLines(per_minute=3)
    with caplog.at_level(logging.WARNING, logger="sqreen.server"):
        said = [lines.say("brute-force-account") for _ in range(6)]
        assert lines.say("brute-force-ip")  # each playbook its own
        now[0] += _late.LOG_EVERY
        again = lines.say("brute-force-account")
    assert said == [True, True, True, False, False, False] and again
    assert [r.getMessage() for r in caplog.records] == [
        "sqreen: playbook brute-force-account: 3 alerts within a minute: the rest of the "
        "minute's are not logged one by one (sqreen alerts lists them all)",
        # The next minute's first alert says how many the last one held back.
        "sqreen: playbook brute-force-account: 3 more of its alerts were not logged one by "
        "one in the minute that began 60 s ago (sqreen alerts lists them all)",
    ]
