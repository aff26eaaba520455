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


def test_the_app_config_outlives_a_shutdown(receiver: Receiver) -> None:
    """After ``sqreen.shutdown()`` (the ``sqreen_events`` fixture ends with one), the next
    event goes where the app's settings say, scrubbed as they say: not to the default file,
    with the app's scrubbing dropped."""
    app = make_app(SQREEN_ENDPOINT=receiver.url, SQREEN_SCRUB_KEYS=["email"])
    Sqreen(app)

    @app.post("/")
    def index() -> str:
        flask.request.sqreen.track("after.shutdown", properties={"email": "b@x.io"})
        return "ok"

    sqreen.init(transport="memory:", strict=True)  # as the fixture does, then ends
    assert sqreen.shutdown(1.0)
    Sqreen(make_app())  # then a second app, of no settings: the first's stay
    app.test_client().post("/")
    assert sqreen.flush(5.0)
    (event,) = receiver.events
    assert event["name"] == "after.shutdown"
    assert event["properties"]["email"] != "b@x.io"  # the app's scrub_keys apply
    assert sqreen._hub.get_client().config.endpoint == receiver.url


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


def test_init_keywords_and_app_config_merge_option_by_option(receiver: Receiver) -> None:
    """init() before the extension used to switch ``app.config`` off entirely (the endpoint
    was lost, events went to ./sqreen-events.jsonl); each option is merged, init() winning
    where both set one."""
    sqreen.init(app_name="from-init", flush_interval=0.2)
    app = make_app(SQREEN_ENDPOINT=receiver.url, SQREEN_APP_NAME="from-config")
    Sqreen(app)

    @app.get("/")
    def index() -> str:
        flask.request.sqreen.track("merged")
        return "ok"

    app.test_client().get("/")
    assert sqreen.flush(5.0)
    assert [e["name"] for e in receiver.events] == ["merged"]
    assert receiver.batches[0]["app"]["name"] == "from-init"
    assert receiver.batches[0]["app"]["framework"] == "flask"


def test_app_config_then_init_merge_option_by_option(receiver: Receiver) -> None:
    Sqreen(make_app(SQREEN_ENDPOINT=receiver.url, SQREEN_APP_NAME="from-config"))
    client = sqreen.init(app_name="from-init")
    assert (client.config.endpoint, client.config.app_name) == (receiver.url, "from-init")
    assert client.framework == "flask"


@pytest.mark.parametrize(("value", "disabled"), [("false", False), ("0", False), ("on", True)])
def test_disable_from_app_config_is_parsed(value: str, disabled: bool) -> None:
    """``SQREEN_DISABLE = "false"`` disabled the SDK (``bool("false")``)."""
    Sqreen(make_app(SQREEN_DISABLE=value, SQREEN_TRANSPORT="memory:"))
    assert sqreen._hub.active is not None and sqreen._hub.active.disabled is disabled


@pytest.mark.parametrize("value", ["maybe", 2, None, b"0", "0\x00"])
def test_a_bad_boolean_in_app_config_is_named(value: object) -> None:
    with pytest.raises(sqreen.ConfigError, match="disable"):
        Sqreen(make_app(SQREEN_DISABLE=value))


def test_a_bad_transport_in_app_config_is_a_config_error() -> None:
    with pytest.raises(sqreen.ConfigError, match="transport"):
        Sqreen(make_app(SQREEN_TRANSPORT="ftp://x"))


def test_the_agents_ip_header_in_app_config() -> None:
    Sqreen(make_app(SQREEN_IP_HEADER="X-Real-IP", SQREEN_TRANSPORT="memory:"))
    assert sqreen._hub.active is not None
    assert sqreen._hub.active.config.client_ip_header == "X-Real-IP"


def test_the_fixture_follows_a_client_that_completes_its_options(
    sqreen_events: CapturedEvents,
) -> None:
    """An app set up after the fixture, with a configuration of its own: its options complete
    the fixture's (which win: events stay in memory, strict mode), and the fixture follows."""
    first = sqreen_events.client
    app = make_app(SQREEN_ENDPOINT="http://127.0.0.1:9", SQREEN_SCRUB_KEYS=["nickname"])
    Sqreen(app)

    @app.get("/")
    def index() -> str:
        flask.request.sqreen.track("followed")
        return "ok"

    app.test_client().get("/")
    assert sqreen_events.names() == ["followed"]
    config = sqreen_events.client.config
    assert config.scrub_keys == ("nickname",) and config.strict is True
    assert sqreen_events.clients == [first, sqreen_events.client] and first.closed


def test_a_view_tested_in_a_request_context_tracks_without_a_request(
    sqreen_events: CapturedEvents,
) -> None:
    """The reported bug: ``request.sqreen`` was None in ``app.test_request_context()``."""
    app = make_app()
    Sqreen(app)
    with app.test_request_context("/login", method="POST", data={"username": "alice"}):
        handle = flask.request.sqreen
        handle.identify({"uid": "u1"})  # binds nothing, raises nothing
        assert handle.track("unit.view", properties={"n": 1}) is True
        assert handle.user is None and not handle.is_blocked()
    (event,) = sqreen_events
    assert (event["name"], event["user"], event["request"]) == ("unit.view", None, None)


# The README's Flask recipes, as written there: an app factory, a user blocked while their
# session is open (identify() in before_request), and an IP block in Flask's test client.
sqreen_ext = Sqreen()


def create_app() -> Any:
    app = flask.Flask(__name__)
    app.secret_key = "test"
    sqreen_ext.init_app(app)

    @app.before_request
    def sqreen_identify() -> None:
        if "username" in flask.session:  # a logged-in user, every request
            flask.request.sqreen.identify({"username": flask.session["username"]})

    @app.post("/login")
    def login() -> Any:
        flask.session["username"] = flask.request.form["username"]
        flask.request.sqreen.auth_track(True, username=flask.session["username"])
        return "welcome"

    @app.get("/account")
    def account() -> Any:
        return "your account"

    return app


def test_the_readme_recipes_for_an_app_factory(sqreen_events: CapturedEvents) -> None:
    client = create_app().test_client()
    assert client.post("/login", data={"username": "alice"}).status_code == 200
    assert client.get("/account").status_code == 200
    sqreen_events.block([{"type": "block_user", "user": {"username": "ALICE"}}])
    assert client.get("/account").status_code == 403  # the session is still open
    sqreen_events.block([{"type": "block_ip", "ip": "203.0.113.0/24"}])
    other = create_app().test_client()
    assert other.get("/account").status_code == 200
    from_there = {"REMOTE_ADDR": "203.0.113.5"}
    assert other.get("/account", environ_base=from_there).status_code == 403


def test_a_refusal_s_event_names_the_route_it_was_refused_on(
    sqreen_events: CapturedEvents,
) -> None:
    """A blocked user refused in a view or in ``before_request``: its ``security.blocked``
    event named no route (recorded once the app returned, when Flask had taken its request
    out of the environ), where FastAPI's named it."""
    app = make_app()
    Sqreen(app)
    sqreen_events.block(
        [
            {"id": "b", "type": "block_user", "user": {"uid": "mallory"}},
            {"id": "c", "type": "block_user", "user": {"uid": "eve"}},  # a refusal event each
        ]
    )

    @app.before_request
    def session_user() -> None:
        if flask.request.headers.get("X-User"):
            flask.request.sqreen.identify({"uid": flask.request.headers["X-User"]})

    @app.post("/login/<kind>")
    def login(kind: str) -> Any:
        flask.request.sqreen.auth_track(True, uid="mallory")
        return "in"

    @app.get("/me")
    def me() -> Any:
        return "me"

    client = app.test_client()
    assert client.post("/login/password").status_code == 403
    assert client.get("/me", headers={"X-User": "eve"}).status_code == 403
    refusals = [e for e in sqreen_events if e["name"] == "security.blocked"]
    assert [(e["request"]["path"], e["request"]["route"]) for e in refusals] == [
        ("/login/password", "/login/<kind>"),
        ("/me", "/me"),
    ]
