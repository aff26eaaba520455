"""``sqreen.start()`` instruments Flask and Django as Sqreen's agent did (sqreen._instrument).

Apps written for the agent (``tests/integrations/apps/auto_flask.py``, ``apps/auto_django``:
``sqreen.start()``, the module functions in the views, no integration set up) served by real
servers on 127.0.0.1, sending to a receiver: their events carry the request, their logins
bind the user, the collector's blocks are enforced; set up by hand as well, once; and with
``SQREEN_AUTO_INSTRUMENT=0``, not at all, which the log says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.receiver import Receiver

from ._servers import ROOT, Gunicorn, Response, http_request, wait_until

pytestmark = pytest.mark.slow

FLASK_APP = "tests.integrations.apps.auto_flask:app"
DJANGO_WSGI = "tests.integrations.apps.auto_django.wsgi:application"
DJANGO_ASGI = "tests.integrations.apps.auto_django.asgi:application"
OURS = "sqreen.integrations.django.SqreenMiddleware"
#: The client's own address: loopback, but not the default 127.0.0.1.
SOURCE = "127.0.0.2"
FORM = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "agent-era/1.0"}


class Server:
    def __init__(self, app: str, receiver: Receiver, worker: str = "sync", **env: str) -> None:
        pytest.importorskip("gunicorn")
        pytest.importorskip("flask" if "flask" in app else "django")
        self.receiver = receiver
        full_env = {
            "SQREEN_ENDPOINT": receiver.url,
            "SQREEN_FLUSH_INTERVAL": "0.2",
            "SQREEN_HEARTBEAT_INTERVAL": "0.2",
            "SQREEN_APP_NAME": "auto-instrumented",
            "SQREEN_TRUSTED_PROXIES": "none",  # no proxy in front: the peer can be blocked
            # The project's own, whatever another test module left in this process's
            # environment (the site's wsgi.py only sets it when unset).
            "DJANGO_SETTINGS_MODULE": "tests.integrations.apps.auto_django.settings",
            **env,
        }
        self.proc = Gunicorn(app, full_env, worker)

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Response:
        return http_request(self.proc.port, method, path, body, headers, SOURCE)

    def login(self, username: str, password: str) -> Response:
        body = f"username={username}&password={password}".encode()
        return self.request("POST", "/login?next=/home", body, FORM)

    def events(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        return self.receiver.wait_for(count, timeout=15.0, name=name)

    def marked(self, name: str, *markers: str) -> list[dict[str, Any]]:
        """The events ``name`` with these markers, in the order sent, once the last marker's
        is in (one worker delivers its events in order: one refused before it is never sent)."""

        def found() -> list[dict[str, Any]]:
            return [
                e
                for e in list(self.receiver.events)
                if e["name"] == name and e["properties"].get("marker") in markers
            ]

        wait_until(lambda: any(e["properties"]["marker"] == markers[-1] for e in found()), 15.0)
        return found()


@pytest.fixture
def serve(receiver: Receiver) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(app: str, worker: str = "sync", **env: str) -> Server:
        server = Server(app, receiver, worker, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.proc.stop()


def check_agent_app(server: Server) -> None:
    """What an app written for Sqreen's agent gets from ``sqreen.start()`` alone."""
    assert server.login("alice", "nope").status == 401
    assert server.login("alice", "wonderland").status == 200
    failure = server.events("auth.login.failure")[0]
    request = failure["request"]
    assert request is not None, "the event carries no request: nothing instrumented the app"
    assert request["ip"] == SOURCE and request["user_agent"] == "agent-era/1.0"
    assert request["path"] == "/login" and request["method"] == "POST"
    assert request["params"] == {"next": "/home", "username": "alice", "password": "[redacted]"}
    assert failure["user"] == {"username": "alice"}
    # auth_track(True) identified alice: the event tracked after it in the view is hers.
    forms = server.events("login.form", 2)
    assert [(e["properties"]["ok"], e["user"]) for e in forms] == [
        (False, None),
        (True, {"username": "alice"}),
    ]
    assert server.request("GET", "/identify?uid=u1&marker=m1").status == 200
    (identified,) = server.events("identified")
    assert identified["user"] == {"uid": "u1"}
    assert identified["request"]["params"] == {"uid": "u1", "marker": "m1"}

    # A block from the collector is enforced: identify() of mallory answers 403.
    server.receiver.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])
    assert wait_until(lambda: server.request("GET", "/identify?uid=mallory").status == 403, 15.0)
    refused = server.request("GET", "/identify?uid=mallory&marker=m2")
    assert refused.status == 403 and json.loads(refused.body)["error"] == "forbidden"
    assert server.request("GET", "/identify?uid=u2&marker=m3").status == 200
    # (The polls before the block arrived were served: their events have no marker.)
    assert [e["user"] for e in server.marked("identified", "m2", "m3")] == [{"uid": "u2"}]
    server.receiver.block([{"id": "b2", "type": "block_ip", "ip": SOURCE}])
    assert wait_until(lambda: server.request("GET", "/identify?uid=u3").status == 403, 15.0)


@pytest.mark.parametrize("order", ["start-first", "app-first"])
def test_a_flask_app_with_only_sqreen_start(serve: Callable[..., Server], order: str) -> None:
    server = serve(FLASK_APP, AUTO_TEST_ORDER=order)
    check_agent_app(server)
    assert "Traceback" not in server.proc.output()


def test_flask_set_up_by_hand_too_is_wrapped_once(serve: Callable[..., Server]) -> None:
    server = serve(FLASK_APP, AUTO_TEST_EXPLICIT="1")
    assert server.request("GET", "/layers").json()["layers"] == 1
    assert server.request("GET", "/identify?uid=u1&marker=once").status == 200
    assert server.request("GET", "/layers").json()["layers"] == 1
    server.receiver.block([{"id": "b1", "type": "block_user", "user": {"uid": "mallory"}}])
    assert wait_until(lambda: server.request("GET", "/identify?uid=mallory").status == 403, 15.0)
    assert server.request("GET", "/identify?uid=u2&marker=twice").status == 200
    # One event per track(), each with its request, and one refusal per refused request.
    events = server.marked("identified", "once", "twice")
    assert [e["properties"]["marker"] for e in events] == ["once", "twice"]
    assert all(e["request"]["path"] == "/identify" for e in events)
    assert len(server.receiver.events) == len({e["id"] for e in server.receiver.events})


def test_flask_opted_out_is_not_instrumented_and_says_so(serve: Callable[..., Server]) -> None:
    server = serve(FLASK_APP, SQREEN_AUTO_INSTRUMENT="0")
    assert server.request("GET", "/identify?uid=u1&marker=a").status == 200
    assert server.request("GET", "/identify?uid=u2&marker=b").status == 200
    assert server.request("GET", "/layers").json()["layers"] == 0
    events = server.events("identified", 2)
    assert [(e["request"], e["user"]) for e in events] == [(None, None), (None, None)]
    assert wait_until(lambda: "sqreen does not serve" in server.proc.output(), 15.0)
    output = server.proc.output()
    assert output.count("sqreen does not serve") == 1, output  # once per process
    assert "identify() ran in a request of the Flask app" in output
    assert "from sqreen.integrations.flask import Sqreen; Sqreen(app)" in output


@pytest.mark.parametrize("worker", ["sync", "asgi"])
def test_a_django_project_with_only_sqreen_start(serve: Callable[..., Server], worker: str) -> None:
    server = serve(DJANGO_WSGI if worker == "sync" else DJANGO_ASGI, worker)
    layers = server.request("GET", "/layers").json()
    assert layers["middleware"] == [OURS, "django.middleware.common.CommonMiddleware"]
    check_agent_app(server)


def test_django_set_up_by_hand_too_is_listed_once(serve: Callable[..., Server]) -> None:
    server = serve(DJANGO_WSGI, AUTO_TEST_EXPLICIT="1")
    # Listed by hand (second: the system check's W001 says so): not listed again.
    assert server.request("GET", "/layers").json()["middleware"] == [
        "django.middleware.common.CommonMiddleware",
        OURS,
    ]
    assert server.request("GET", "/identify?uid=u1&marker=once").status == 200
    (event,) = server.events("identified")
    assert event["request"]["path"] == "/identify" and event["user"] == {"uid": "u1"}


def test_django_opted_out_is_not_instrumented(serve: Callable[..., Server]) -> None:
    server = serve(DJANGO_WSGI, SQREEN_AUTO_INSTRUMENT="off")
    assert server.request("GET", "/layers").json()["middleware"] == [
        "django.middleware.common.CommonMiddleware"
    ]
    assert server.request("GET", "/identify?uid=u1").status == 200
    (event,) = server.events("identified")
    assert (event["request"], event["user"]) == (None, None)


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    full_env.update(PYTHONPATH=ROOT, SQREEN_TRANSPORT="memory:", **env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_start_imports_no_framework_and_patches_the_ones_imported_later() -> None:
    proc = run(
        """
        import sys, sqreen
        from sqreen.integrations import _auto
        sqreen.start(); sqreen.start()
        print(sorted(m for m in ("flask", "django", "werkzeug") if m in sys.modules))
        import flask
        print(_auto.installed(), "flask" in sys.modules)
        import django.core.handlers.base
        print(_auto.installed())
        print(flask.__loader__.__class__.__name__, flask.__spec__.loader.__class__.__name__)
        print(sum(type(f).__name__ == "_Finder" for f in sys.meta_path))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:5] == [
        "[]",
        "['flask'] True",
        "['django', 'flask']",
        "SourceFileLoader SourceFileLoader",
        "0",
    ]


@pytest.mark.parametrize(
    ("env", "installed"),
    [
        ({}, "['flask']"),
        ({"SQREEN_AUTO_INSTRUMENT": "no"}, "[]"),
        # Disabled, the app is set up all the same, its middleware a pass-through: its views
        # may read request.sqreen (tests/test_disable.py).
        ({"SQREEN_DISABLE": "1"}, "['flask']"),
    ],
)
def test_what_start_instruments(env: dict[str, str], installed: str) -> None:
    """Only start() instruments (never init() or a track()), unless opted out; an app set
    up by the flask test client gets the extension at its first request."""
    proc = run(
        """
        import flask, sqreen
        from sqreen.integrations import _auto
        app = flask.Flask("x")
        app.get("/")(lambda: {"ext": "sqreen" in app.extensions})
        sqreen.init(); sqreen.track("x")
        before = _auto.installed()
        sqreen.start()
        print(before, _auto.installed(), app.test_client().get("/").json["ext"])
        """,
        **env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"[] {installed} {installed != '[]'}"


def test_a_wrong_opt_out_value_is_a_config_error() -> None:
    proc = run("import sqreen; sqreen.start()", SQREEN_AUTO_INSTRUMENT="maybe")
    assert proc.returncode == 1
    assert "ConfigError: SQREEN_AUTO_INSTRUMENT in the environment must be" in proc.stderr


def test_an_app_already_behind_the_wsgi_middleware_is_left_alone() -> None:
    """``SqreenWSGIMiddleware(app)`` around the Flask app, or around its ``wsgi_app`` by
    hand: sqreen serves it already, and start() adds no second layer."""
    proc = run(
        """
        import flask, sqreen
        from sqreen.middleware.wsgi import SqreenWSGIMiddleware
        from werkzeug.test import Client
        sqreen.start()
        outer, inner = flask.Flask("outer"), flask.Flask("inner")
        inner.wsgi_app = SqreenWSGIMiddleware(inner.wsgi_app)
        for app in (outer, inner):
            app.get("/")(lambda: {"bound": sqreen._context.current() is not None})
        print(Client(SqreenWSGIMiddleware(outer)).get("/").json, Client(inner).get("/").json)
        print("sqreen" in outer.extensions, "sqreen" in inner.extensions)
        print(isinstance(inner.wsgi_app, SqreenWSGIMiddleware))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == [
        "{'bound': True} {'bound': True}",
        "False False",
        "True",
    ]
