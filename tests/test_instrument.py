"""The warning for a Flask request that sqreen does not serve, and the opt-out's values
(sqreen._instrument); the servers are in tests/integrations/test_auto_instrument.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

import sqreen
from sqreen import _instrument
from sqreen.testing import CapturedEvents

flask = pytest.importorskip("flask")

HINT = "from sqreen.integrations.flask import Sqreen; Sqreen(app)"


def warnings(log: Any) -> list[str]:
    return [
        r.getMessage()
        for r in log.records
        if r.levelno == logging.WARNING and "sqreen does not serve" in r.getMessage()
    ]


def agent_app(name: str) -> Any:
    app = flask.Flask(name)

    @app.get("/login")
    def login() -> str:
        sqreen.auth_track(True, username="alice")
        sqreen.track("after.login")
        return "ok"

    return app


def test_a_flask_request_without_the_integration_is_said_once(
    sqreen_events: CapturedEvents, sqreen_log: Any
) -> None:
    app = agent_app("no_integration")
    assert app.test_client().get("/login").status_code == 200
    assert app.test_client().get("/login").status_code == 200
    (message,) = warnings(sqreen_log)
    assert "track() ran in a request of the Flask app 'no_integration'" in message
    assert HINT in message and "SQREEN_AUTO_INSTRUMENT=0" in message
    assert [e["request"] for e in sqreen_events] == [None] * 4  # what the warning is about


def test_no_warning_where_sqreen_serves_or_will(
    sqreen_events: CapturedEvents, sqreen_log: Any
) -> None:
    from sqreen.integrations.flask import Sqreen

    app = agent_app("set_up")
    Sqreen(app)
    with app.test_request_context("/login"):  # a view unit-tested: no request, on purpose
        sqreen.track("in.a.test")
        sqreen.identify({"uid": "1"})
    assert app.test_client().get("/login").status_code == 200
    sqreen.track("outside.any.request")
    sqreen.start()  # instruments: a request context without a request is a test's
    with agent_app("later").test_request_context("/login"):
        sqreen.track("in.a.test")
    assert warnings(sqreen_log) == []
    paths = {e["name"]: (e["request"] or {}).get("path") for e in sqreen_events}
    assert paths == {
        "in.a.test": None,
        "auth.login.success": "/login",
        "after.login": "/login",
        "outside.any.request": None,
    }


@pytest.mark.parametrize(
    ("value", "on"),
    [(None, True), ("", True), ("1", True), ("yes", True), ("0", False), ("Off", False)],
)
def test_the_opt_out_values(value: str | None, on: bool) -> None:
    environ = {} if value is None else {"SQREEN_AUTO_INSTRUMENT": value}
    assert _instrument.enabled(environ) is on


def test_a_wrong_opt_out_value() -> None:
    with pytest.raises(sqreen.ConfigError, match="SQREEN_AUTO_INSTRUMENT in the environment"):
        _instrument.enabled({"SQREEN_AUTO_INSTRUMENT": "later"})


def test_a_flask_subclass_with_its_own_call_is_served_from_its_second_request(
    sqreen_events: CapturedEvents, sqreen_log: Any
) -> None:
    """A subclass whose ``__call__`` goes to ``wsgi_app`` itself (as some wrappers do) is
    set up at its first request, which goes on as it came; the next ones carry the request."""

    class Own(flask.Flask):
        def __call__(self, environ: Any, start_response: Any) -> Any:
            return self.wsgi_app(environ, start_response)

    app = Own("own_call")

    @app.get("/login")
    def login() -> str:
        sqreen.track("own.login")
        return "ok"

    sqreen.start()
    client = app.test_client()
    assert [client.get("/login").status_code for _ in range(2)] == [200, 200]
    assert "sqreen" in app.extensions
    paths = [(e["request"] or {}).get("path") for e in sqreen_events if e["name"] == "own.login"]
    assert paths == [None, "/login"]


def test_sqreen_s_middleware_under_another_wrapper_is_found(
    sqreen_events: CapturedEvents,
) -> None:
    """``app.wsgi_app = Outer(SqreenWSGIMiddleware(app.wsgi_app))`` by hand, ``Outer``
    keeping its app as ``.application`` (as WhiteNoise does): not set up a second time."""
    from sqreen.middleware.wsgi import SqreenWSGIMiddleware

    class Outer:
        def __init__(self, application: Any) -> None:
            self.application = application

        def __call__(self, environ: Any, start_response: Any) -> Any:
            return self.application(environ, start_response)

    app = agent_app("wrapped_by_hand")
    app.wsgi_app = Outer(SqreenWSGIMiddleware(app.wsgi_app))  # type: ignore[method-assign]
    sqreen.start()
    assert app.test_client().get("/login").status_code == 200
    assert "sqreen" not in app.extensions  # no second layer
    assert [(e["request"] or {}).get("path") for e in sqreen_events] == ["/login"] * 2


@pytest.mark.parametrize("endpoint", ["async", "sync"])
def test_a_fastapi_app_without_the_middleware_is_said_once(
    sqreen_events: CapturedEvents,
    sqreen_log: Any,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
) -> None:
    """Code moved from an app of Sqreen's agent: ``start()`` sets Flask and Django up, not
    FastAPI, whose requests then track without a request, bind no user and block no one."""
    fastapi = pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    monkeypatch.setattr(_instrument, "asgi_middleware", False)  # none made in this process
    sqreen.start()
    app = fastapi.FastAPI()

    def login() -> str:
        sqreen.identify({"username": "mallory"})
        sqreen.track("after.login")
        return "ok"

    async def login_async() -> str:
        return login()

    app.get("/login")(login_async if endpoint == "async" else login)
    assert TestClient(app).get("/login").status_code == 200
    assert TestClient(app).get("/login").status_code == 200
    said = [r.getMessage() for r in sqreen_log.records if "no sqreen middleware" in r.getMessage()]
    assert said == [
        "sqreen: identify() ran in a Starlette or FastAPI app that no sqreen middleware serves: "
        "its events carry no request (client IP, path, parameters), identify() binds no user "
        "and no block is enforced (sqreen.start() does not set these frameworks up). Add the "
        "middleware: `from sqreen.integrations.fastapi import SqreenMiddleware; "
        "app.add_middleware(SqreenMiddleware)` (Starlette: sqreen.integrations.starlette)."
    ]
    assert [e["request"] for e in sqreen_events] == [None, None]


def test_no_fastapi_warning_where_the_middleware_serves_or_outside_an_app(
    sqreen_events: CapturedEvents, sqreen_log: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fastapi = pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from sqreen.integrations.fastapi import SqreenMiddleware

    monkeypatch.setattr(_instrument, "asgi_middleware", False)
    sqreen.track("a.script.s.own")  # Starlette loaded, but no event loop here: not an app's

    async def job() -> None:  # an async script (a worker) that imports the FastAPI app
        sqreen.track("a.job.s.own")

    asyncio.run(job())

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        sqreen.track("at.startup")  # in the loop, outside requests, of an app that has it
        yield

    app = fastapi.FastAPI(lifespan=lifespan)
    app.add_middleware(SqreenMiddleware)

    @app.get("/")
    async def index() -> str:
        sqreen.track("in.a.request")
        return "ok"

    with TestClient(app) as client:
        assert client.get("/").status_code == 200
    assert not [r for r in sqreen_log.records if "no sqreen middleware" in r.getMessage()]
    assert [(e["name"], e["request"] is None) for e in sqreen_events] == [
        ("a.script.s.own", True),
        ("a.job.s.own", True),
        ("at.startup", True),
        ("in.a.request", False),
    ]
