"""What is particular to the Flask extension (the shared scenarios are in test_scenarios.py)."""

from __future__ import annotations

from typing import Any

import pytest

flask = pytest.importorskip("flask")

import sqreen  # noqa: E402
import sqreen._hub  # noqa: E402
from sqreen.integrations.flask import Sqreen  # noqa: E402
from sqreen.middleware.wsgi import SqreenWSGIMiddleware  # noqa: E402
from sqreen.testing import CapturedEvents  # noqa: E402
from tests.receiver import Receiver  # noqa: E402


def make_app(**config: Any) -> Any:
    app = flask.Flask(__name__)
    app.config.update(config)
    return app


def test_init_app_wraps_once_and_keeps_its_state_in_extensions(
    sqreen_events: CapturedEvents,
) -> None:
    app = make_app()
    ext = Sqreen()
    ext.init_app(app)
    ext.init_app(app)
    assert app.extensions["sqreen"] is ext
    assert isinstance(app.wsgi_app, SqreenWSGIMiddleware)
    assert not isinstance(app.wsgi_app.app, SqreenWSGIMiddleware)


def test_request_sqreen_everywhere_in_the_request(sqreen_events: CapturedEvents) -> None:
    app = make_app()
    seen: list[Any] = []

    @app.before_request
    def earlier_hook() -> None:  # registered before the extension: still sees the handle
        seen.append(flask.request.sqreen)

    Sqreen(app)

    @app.get("/items/<int:item>")
    async def item(item: int) -> Any:
        flask.request.sqreen.identify({"uid": "u1"})
        flask.request.sqreen.track("async.view", properties={"item": item})
        return {"item": item}

    @app.errorhandler(404)
    def not_found(error: Any) -> Any:
        flask.request.sqreen.track("not.found")
        return "nope", 404

    client = app.test_client()
    assert client.get("/items/7").json == {"item": 7}
    assert client.get("/missing").status_code == 404
    assert seen[0] is not None
    view, missing = sqreen_events
    assert view["request"]["route"] == "/items/<int:item>"
    assert view["user"] == {"uid": "u1"}
    assert missing["name"] == "not.found" and missing["request"]["route"] is None


def test_configured_from_app_config(receiver: Receiver) -> None:
    app = make_app(SQREEN_ENDPOINT=receiver.url, SQREEN_APP_NAME="flask-config-test")
    Sqreen(app)

    @app.get("/")
    def index() -> str:
        flask.request.sqreen.track("configured")
        return "ok"

    app.test_client().get("/")
    assert sqreen.flush(5.0)
    assert [e["name"] for e in receiver.events] == ["configured"]
    assert receiver.batches[0]["app"] == {
        **receiver.batches[0]["app"],
        "name": "flask-config-test",
        "framework": "flask",
    }


def test_an_unknown_config_key_is_named() -> None:
    with pytest.raises(sqreen.ConfigError, match="flush_intervall"):
        Sqreen(make_app(SQREEN_FLUSH_INTERVALL=1))


def test_init_takes_precedence_over_app_config(sqreen_events: CapturedEvents) -> None:
    app = make_app(SQREEN_ENDPOINT="http://127.0.0.1:9")
    Sqreen(app)
    assert sqreen._hub.active is sqreen_events.client  # init() was called: it stays in use


def test_a_response_dropped_unread_is_released(sqreen_events: CapturedEvents) -> None:
    app = make_app()
    Sqreen(app)

    @app.get("/")
    def index() -> str:
        return "ok"

    client = app.test_client()
    assert client.get("/").status_code == 200  # werkzeug leaves reading and closing to the test
    assert sqreen._context.current() is None


def test_the_whole_handle(sqreen_events: CapturedEvents) -> None:
    app = make_app()
    Sqreen(app)
    sqreen_events.block([{"id": "b", "type": "block_user", "user": {"uid": "mallory"}}])

    @app.post("/act")
    def act() -> Any:
        handle = flask.request.sqreen
        handle.signup_track(uid="new")
        handle.for_user({"uid": "admin"}).track("admin.action", target={"id": "7", "type": "x"})
        handle.track("after.signup")
        return {
            "mallory": handle.is_blocked({"uid": "mallory"}),
            "me": handle.is_blocked(),
        }

    assert app.test_client().post("/act").json == {"mallory": True, "me": False}
    signup, admin, after = sqreen_events
    assert signup["name"] == "auth.signup" and signup["user"] == {"uid": "new"}
    assert admin["user"] == {"uid": "admin"} and admin["request"]["path"] == "/act"
    assert after["user"] == {"uid": "new"}  # signup_track identified the new user
