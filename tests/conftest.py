from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

import sqreen
from sqreen import _context, _hub
from tests.receiver import Receiver


@pytest.fixture(autouse=True)
def _isolated_sqreen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no client and no SQREEN_* settings, and fails on internal errors."""
    for key in list(os.environ):
        if key.startswith("SQREEN_"):
            monkeypatch.delenv(key)
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
