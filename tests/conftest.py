from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator

import pytest

import sqreen
from sqreen import _context, _hub
from tests.receiver import Receiver


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
    _context.current_request.set(None)  # a test that failed half-way may have left a request bound
    clients_before = set(_hub._clients)
    yield
    _context.current_request.set(None)
    clients = [c for c in _hub._clients if c not in clients_before]
    sqreen.shutdown(timeout=0.5)
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
