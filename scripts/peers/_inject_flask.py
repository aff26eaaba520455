"""A pytest plugin for Flask's own test suite: ``Sqreen(app)`` in every app, a ``track()`` in
every request, and a check that the request bound at that moment is the request being served.

Loaded by ``scripts/peers/run.py`` with ``-p _inject_flask``; it writes what it saw to the
JSON file named by ``SQREEN_PEER_REPORT`` when the session ends.
"""

from __future__ import annotations

import os
from typing import Any

import flask
from _peer_report import write_report

import sqreen
from sqreen._context import current
from sqreen.integrations.flask import Sqreen
from sqreen.middleware.wsgi import ENVIRON_KEY

_seen = {"requests": 0, "bypassed": 0, "wrong_context": [], "tracked": 0, "unbound_after": 0}
_expected: dict[int, str] = {}
_original_init = flask.Flask.__init__
_original_dispatch = flask.Flask.dispatch_request


def _init(self: flask.Flask, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    Sqreen(self)


def _dispatch(self: flask.Flask, *args: Any, **kwargs: Any) -> Any:
    request = flask.request
    ctx = current()
    _seen["requests"] += 1
    handle = request.environ.get(ENVIRON_KEY)
    if handle is None:
        # A test that dispatches by hand (app.request_context() + full_dispatch_request())
        # never goes through app.wsgi_app: nothing to bind, nothing to check.
        _seen["bypassed"] += 1  # type: ignore[operator]
        return _original_dispatch(self, *args, **kwargs)
    if ctx is not handle:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
        _seen["wrong_context"].append(f"{test} {request.path}")  # type: ignore[attr-defined]
    seq = _seen["requests"]
    if not request.view_args:  # route parameters may be scrubbed out of the recorded path
        _expected[seq] = request.script_root + request.path
    if sqreen.track("peer.request", properties={"seq": seq}):
        _seen["tracked"] += 1
    return _original_dispatch(self, *args, **kwargs)


def pytest_configure(config: Any) -> None:
    flask.Flask.__init__ = _init  # type: ignore[method-assign]
    flask.Flask.dispatch_request = _dispatch  # type: ignore[method-assign]


def pytest_runtest_teardown(item: Any) -> None:
    if current() is not None:
        _seen["unbound_after"] += 1  # type: ignore[operator]


def pytest_sessionfinish(session: Any) -> None:
    write_report(_seen, _expected)
