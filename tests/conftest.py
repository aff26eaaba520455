from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator

import pytest

import sqreen
from sqreen import _context, _hub, _instrument
from tests.receiver import Receiver

#: The test files that take longest, longest first (``--durations`` of a clean-clone run, 2
#: cores, -n 2; seconds are their slowest phases summed). ``scripts/pytest.sh`` hands whole
#: files to its workers (three) in collection order (``--dist loadfile``), so these start first
#: and the run ends on short files instead of one worker finishing a minute-long test alone.
#: Only the order changes: every test still runs. A file missing here runs after them.
LONGEST_FIRST = (
    # By --durations=0 of a run with -n 2 (seconds of one worker), except the first two: on a
    # clean clone they build a virtualenv (Flask's suite x2, Django's; the demo's).
    "tests/peers/test_framework_suites.py",  # 44 s, 97 s on a clean clone
    "tests/test_demo.py",  # 7 s, 44 s on a clean clone
    "tests/integrations/test_django_auth.py",  # 61 s (gunicorn, Django's login views)
    "tests/servers/test_shutdown.py",  # 55 s
    "tests/explorer/test_browser.py",  # 39 s
    "tests/integrations/test_scenarios.py",  # 35 s
    "tests/server/test_travel.py",  # 29 s
    "tests/server/test_serve_signals.py",  # 23 s
    "tests/server/test_grouped_ingest_hostile.py",  # 23 s
    "tests/server/test_playbooks.py",  # 22 s
    "tests/server/test_action_set.py",  # 22 s
    "tests/server/test_export.py",  # 21 s
    "tests/integrations/test_fastapi.py",  # 17 s
    "tests/server/test_resilience.py",  # 17 s
    "tests/explorer/test_login_attacks.py",  # 16 s
    "tests/test_restarts.py",  # 15 s
    "tests/test_playbook_replay.py",  # 15 s
    "tests/explorer/test_browser_layout.py",  # 14 s
    "tests/server/test_fair_ingest.py",  # 14 s
    "tests/test_transport_http.py",  # 14 s
    "tests/server/test_intel.py",  # 13 s
    "tests/server/test_api.py",  # 12 s
    "tests/test_delivery.py",  # 12 s
    "tests/integrations/test_auto_instrument.py",  # 11 s
    "tests/server/test_window_log_hostile.py",  # 11 s
    "tests/test_wire_time.py",  # 11 s
    "tests/server/test_cli.py",  # 10 s
    "tests/server/test_worker_outage.py",  # 10 s (a collector on PostgreSQL, two outages)
    "tests/server/test_connections.py",  # 10 s
    "tests/server/test_watch_change.py",  # 9 s
    "tests/explorer/test_browser_intel.py",  # 9 s
    "tests/server/test_restore_served.py",  # 8 s
    "tests/middleware/test_asgi.py",  # 8 s
    "tests/middleware/test_wsgi.py",  # 8 s
    "tests/server/test_serve_listen.py",  # 8 s
    "tests/server/test_probes.py",  # 8 s
    "tests/server/test_playbook_marks.py",  # 8 s
    "tests/explorer/test_pages.py",  # 8 s
    "tests/test_fork_exit.py",  # 7 s
    "tests/server/test_intel_paths_hostile.py",  # 7 s
    "tests/server/test_webhook_lanes.py",  # 6 s
    "tests/server/test_user_runs.py",  # 6 s
)


@pytest.hookimpl(trylast=True)  # after pytest's own ordering by fixture scope, within files
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(autouse=True)
def _isolated_sqreen(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Each test starts with no client and no SQREEN_* settings, and fails on internal errors.

    Its temporary directory is its own (TMPDIR, for the subprocesses it starts too), so that
    spools (undelivered batches and action sets kept per app name) never cross tests."""
    for key in list(os.environ):
        if key.startswith("SQREEN_"):
            monkeypatch.delenv(key)
    tmp = str(tmp_path_factory.mktemp("tmpdir"))
    monkeypatch.setenv("TMPDIR", tmp)
    monkeypatch.setattr(tempfile, "tempdir", tmp)
    sqreen.shutdown(timeout=0.5)
    _hub.forget()
    _context.current_request.set(None)  # a test that failed half-way may have left a request bound
    clients_before = set(_hub._clients)
    yield
    _context.current_request.set(None)
    clients = [c for c in _hub._clients if c not in clients_before]
    sqreen.shutdown(timeout=0.5)
    _hub.forget()  # the apps this test built are gone with it
    _instrument.undo()  # sqreen.start() patched Flask and Django: not for the next tests
    for client in clients:
        if not client.closed:
            client.shutdown(timeout=0.5)
    errors = sum(c.internal_errors for c in clients)
    assert errors == 0, f"sqreen logged {errors} internal error(s): see the log output"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def sqreen_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="sqreen")
    return caplog
