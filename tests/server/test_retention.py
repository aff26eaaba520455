"""Retention by the time an event was received, never by its own time (which the sending
SDK's clock sets): on SQLite and PostgreSQL, in storage, the CLI and the running collector."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from sqreen._wire import parse_event
from sqreen.server.app import create_app
from sqreen.server.cli import main
from sqreen.server.storage import EventFilter, Purged, Storage, open_storage
from tests.integrations._servers import UvicornThread, wait_until

from .conftest import Clock, recent, wire_event

SKEWED = "2001-01-01T00:00:00Z"  # an SDK whose clock is decades behind


def test_a_skewed_clock_event_is_kept_and_an_old_received_one_purged(
    storage: Storage, clock: Clock
) -> None:
    on_time = wire_event(timestamp=recent(), properties={"k": "received long ago"})
    storage.insert_events([parse_event(on_time)])
    clock.advance(days=31)
    skewed = wire_event(timestamp=SKEWED, properties={"k": "just received"})
    result = storage.insert_events([parse_event(skewed)])
    assert result.stored == 1  # acknowledged to the SDK: it must not vanish at the next purge
    assert storage.purge_older_than(30) == 1
    assert [e.id for e in storage.query_events()] == [skewed["id"]]
    assert storage.count_by("properties.k") == [("just received", 1)]
    assert storage.count_events(EventFilter(until=datetime(2002, 1, 1, tzinfo=UTC))) == 1
    clock.advance(days=29)
    assert storage.purge_older_than(30) == 0
    clock.advance(days=1, seconds=1)
    assert storage.purge_older_than(30) == 1 and storage.count_events() == 0


def test_a_restarted_collector_keeps_what_it_just_acknowledged(sqlite_storage: Storage) -> None:
    """The collector purges at start: a batch of a skewed SDK, stored a moment before, stays
    (the issue: 23 200 acknowledged events lost at a restart)."""
    skewed = [parse_event(wire_event(timestamp=SKEWED)) for _ in range(50)]
    assert sqlite_storage.insert_events(skewed).stored == 50
    old = parse_event(wire_event(timestamp=recent()))
    sqlite_storage.insert_events([old], received_at=datetime.now(UTC) - timedelta(days=31))
    purges: list[int] = []
    purge = sqlite_storage.purge_older_than

    def counted(days: float) -> int:
        purges.append(purge(days))
        return purges[-1]

    sqlite_storage.purge_older_than = counted  # type: ignore[method-assign]
    app = create_app(sqlite_storage, retention_days=30, purge_every=0.05, explorer=False)
    server = UvicornThread(app, lifespan="on")
    try:
        deadline = time.monotonic() + 10
        while len(purges) < 4 and time.monotonic() < deadline:  # a few purges after the first
            time.sleep(0.05)
        assert len(purges) >= 4
    finally:
        server.stop()
    assert sqlite_storage.count_events() == 50
    assert sqlite_storage.get_event(old["id"]) is None


def test_purges_meeting_a_database_away_say_so_once_and_a_bug_is_named(
    sqlite_storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    """A purge that meets the database away (PostgreSQL stopped, a SQLite file locked) is
    said once a minute, naming the job, with no traceback (each worker's purges, run at its
    start, logged one a try, as ``<function create_app.<locals>.<lambda>>``); a purge that
    fails otherwise (a bug) is named, with its traceback."""
    tries: list[int] = []
    enough = threading.Event()  # a few tries after the first

    def away(days: float) -> int:
        tries.append(1)
        if len(tries) >= 4:
            enough.set()
        raise sqlite3.OperationalError("database is locked\x1b[2J")  # said visibly

    def bug() -> int:
        raise KeyError("a bug")

    def timed_out(days: float) -> list[int]:
        # A statement's own failure (psycopg's OperationalError subclasses: a timeout, a
        # deadlock) is no outage: a purge that always fails so must be an error.
        raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    sqlite_storage.purge_older_than = away  # type: ignore[method-assign]
    sqlite_storage.purge_agents = bug  # type: ignore[method-assign]
    sqlite_storage.purge_records = timed_out  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="sqreen.server")
    app = create_app(sqlite_storage, retention_days=30, purge_every=0.05, explorer=False)
    server = UvicornThread(app, lifespan="on")
    try:
        assert enough.wait(10)  # it went on trying
    finally:
        server.stop()
    records = [r for r in caplog.records if r.name == "sqreen.server"]
    locked = [r for r in records if "database is locked" in r.getMessage()]
    assert len(locked) == 1, [r.getMessage() for r in records]
    assert locked[0].levelno == logging.WARNING and locked[0].exc_info is None
    assert "purging events received over 30 days ago" in locked[0].getMessage()
    assert "\x1b" not in locked[0].getMessage()
    failed = [r for r in records if r.getMessage().startswith("sqreen: forgetting silent")]
    assert failed and all(r.exc_info is not None for r in failed)
    canceled = [r for r in records if r.getMessage().startswith("sqreen: purging alerts")]
    assert canceled and all(r.exc_info is not None for r in canceled)
    assert not [r for r in records if "QueryCanceled" in r.getMessage()]  # never "away"
    assert not [r for r in records if "<lambda>" in r.getMessage()]
    caplog.clear()  # the bug's tracebacks are this test's, not the suite's


def test_what_a_purge_of_records_removed_is_said_kind_by_kind(
    sqlite_storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    """One count for all the kinds read as alerts: "purged 1 alerts, ended blocks, ..." for
    an export lease released at a stop."""
    done = threading.Event()

    def purged(days: float) -> Purged:
        done.set()
        return Purged(alerts=0, blocks=2, users=0, export_cursors=1)

    sqlite_storage.purge_records = purged  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="sqreen.server")
    app = create_app(sqlite_storage, retention_days=30, purge_every=60, explorer=False)
    server = UvicornThread(app, lifespan="on")
    try:
        assert done.wait(10)
        wait_until(lambda: any("purged 2" in r.getMessage() for r in caplog.records))
    finally:
        server.stop()
    said = [r.getMessage() for r in caplog.records if "purged 2" in r.getMessage()]
    assert said == ["sqreen: purged 2 ended blocks, 1 export cursors or leases unused for 30 days"]


def _received_days_ago(db: str, days: float, *also: dict[str, object]) -> None:
    """Store an event received ``days`` ago in ``db``, and ``also`` received now."""
    storage = open_storage(db)
    try:
        if also:
            storage.insert_events([parse_event(e) for e in also])
        storage.insert_events(
            [parse_event(wire_event(timestamp=recent()))],
            received_at=datetime.now(UTC) - timedelta(days=days),
        )
    finally:
        storage.close()


def test_sqreen_purge_goes_by_receipt(tmp_path: Path) -> None:
    db = str(tmp_path / "purge.db")
    skewed = wire_event(timestamp=SKEWED)
    _received_days_ago(db, 40, skewed)
    result = CliRunner().invoke(main, ["purge", "--days", "30", "--db", db])
    assert result.exit_code == 0, result.output
    assert "deleted 1 event older than 30 days (received before then)" in result.output
    storage = open_storage(db)
    try:
        assert [e.id for e in storage.query_events()] == [skewed["id"]]
    finally:
        storage.close()


def test_days_that_no_date_can_be_counted_back_are_refused_naming_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``purge --days`` and ``serve --retention-days`` take 0 to 36 500 days, finite: ``inf``
    and ``1e9`` crashed the purge (no date is that long ago), and ``serve`` logged the same
    failure every hour, never purging."""
    from sqreen.server import _cli_serve

    def started(*_: object) -> None:
        raise AssertionError("serve started")

    monkeypatch.setattr(_cli_serve, "playbook_source", started)  # the first thing it does
    db = str(tmp_path / "days.db")
    open_storage(db).close()
    for value in ("inf", "-inf", "nan", "1e9", "800000", "36500.5", "-1"):
        for command, option in (("purge", "--days"), ("serve", "--retention-days")):
            result = CliRunner().invoke(main, [command, option, value, "--db", db])
            assert result.exit_code == 2, (command, value, result.output, result.exception)
            assert f"Invalid value for '{option}': " in result.output
            assert "0<=x<=36500" in result.output
    for value in ("nan", "inf", "-1", "2e6"):  # the same for the travel speed (km/h)
        result = CliRunner().invoke(main, ["serve", "--travel-speed", value, "--db", db])
        assert result.exit_code == 2, (value, result.output, result.exception)
        assert "Invalid value for '--travel-speed': " in result.output
        assert "0<=x<=1000000" in result.output
    for value in ("1e-300", "0.5"):  # above 0 but below a slow walk: every login an alert
        result = CliRunner().invoke(main, ["serve", "--travel-speed", value, "--db", db])
        assert result.exit_code == 2, (value, result.output, result.exception)
        assert f"'--travel-speed': {value} km/h is below a slow walk: 0 (off), or from 1 to" in (
            result.output
        )
    # nan passes every comparison of a range: a timeout of nan was no timeout at all (a
    # half-sent request held its connection, and SIGTERM no longer stopped the server).
    for option in ("--header-timeout", "--body-timeout"):
        for value in ("nan", "inf", "0", "3601"):
            result = CliRunner().invoke(main, ["serve", option, value, "--db", db])
            assert result.exit_code == 2, (option, value, result.output, result.exception)
            assert f"Invalid value for '{option}': " in result.output
            assert "0.1<=x<=3600" in result.output
    for command, option in (("purge", "--days"), ("serve", "--retention-days")):
        result = CliRunner().invoke(main, [command, option, "abc", "--db", db])
        assert result.exit_code == 2
        assert f"Invalid value for '{option}': 'abc' is not a number" in result.output
    result = CliRunner().invoke(main, ["purge", "--days", "36500", "--db", db])
    assert result.exit_code == 0 and "older than 36500 days" in result.output


def test_purge_says_one_day_and_one_event_in_the_singular(tmp_path: Path) -> None:
    db = str(tmp_path / "one.db")
    _received_days_ago(db, 2)
    result = CliRunner().invoke(main, ["purge", "--days", "1", "--db", db])
    assert result.exit_code == 0, result.output
    assert "deleted 1 event older than 1 day (received before then)" in result.output
    again = CliRunner().invoke(main, ["purge", "--days", "0.5", "--db", db])
    assert "deleted 0 events older than 0.5 days" in again.output
