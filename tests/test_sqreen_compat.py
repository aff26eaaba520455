"""Code written for Sqreen's Python agent (1.27) works unchanged, stored as the agent stored it.

Written from the agent's documented API (../shared/reference of the project: ``sqreen.start``,
``sqreen.track(event, options)``, ``identify``, ``auth_track``, ``signup_track``) and the
Sqreen guides' examples. Each call runs in production mode and in strict mode: what the agent
kept is stored the same in both; what had to be cut (a string over 4 KiB, a 17th property) is
kept and logged in production, and raises :class:`sqreen.InvalidEvent` in strict mode.
"""

from __future__ import annotations

import decimal
import enum
import logging
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

import sqreen
from sqreen import _event
from sqreen._context import RequestContext, current_request


def delivered(client: sqreen.Client) -> list[dict[str, Any]]:
    assert client.flush(timeout=10)
    return [e for e in client.transport.events if e["name"] != "sq.identify"]  # type: ignore[attr-defined]


@pytest.fixture(params=["production", "strict"])
def client(request: pytest.FixtureRequest) -> sqreen.Client:
    return sqreen.init(transport="memory:", strict=request.param == "strict")


class Role(str, enum.Enum):  # noqa: UP042 (the pre-3.11 spelling, whose str() is "Role.ADMIN")
    ADMIN = "admin"


class Level(enum.IntEnum):
    HIGH = 3


def test_the_documented_options_dict(client: sqreen.Client) -> None:
    assert sqreen.track(
        "app.login", {"properties": {"foo": "bar"}, "user_identifiers": {"uid": 42}}
    )
    (event,) = delivered(client)
    assert event["name"] == "app.login"
    assert event["properties"] == {"foo": "bar"}
    assert event["user"] == {"uid": "42"}


def test_options_as_a_keyword_and_a_past_timestamp_inside(
    client: sqreen.Client, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_event, "_naive_said", False)
    caplog.set_level(logging.INFO, logger="sqreen")
    when = datetime(2018, 3, 15, 14, 42, tzinfo=timezone(timedelta(hours=1)))  # the guide's
    assert sqreen.track("import.past", options={"properties": {"foo": "bar"}, "timestamp": when})
    assert sqreen.track("naive.past", {"timestamp": datetime(2018, 3, 15, 13, 42)})
    assert sqreen.track("naive.again", {"timestamp": datetime(2018, 3, 15, 13, 43)})
    first, second, _ = delivered(client)
    assert first["timestamp"] == second["timestamp"] == "2018-03-15T13:42:00.000000Z"
    assert first["properties"] == {"foo": "bar"}
    # As the agent did, a naive one is said at INFO (once a process: not a line an event).
    said = [r for r in caplog.records if "without a time zone" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO


def test_every_key_of_the_options_dict(client: sqreen.Client) -> None:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/pay", "REMOTE_ADDR": "203.0.113.9"}
    assert sqreen.track(
        "payment.refused",
        {
            "properties": {"amount": 12},
            "user_identifiers": {"email": "a@example.com"},
            "timestamp": datetime(2020, 1, 1, tzinfo=UTC),
            "collect_body": False,
            "request": environ,
            "target": {"id": "order-7", "type": "order"},
        },
    )
    (event,) = delivered(client)
    assert event["request"]["path"] == "/pay" and event["request"]["ip"] == "203.0.113.9"
    assert event["target"] == {"id": "order-7", "type": "order"}
    assert event["timestamp"].startswith("2020-01-01T00:00:00")


def test_names_sqreen_accepted(client: sqreen.Client) -> None:
    names = ["User Signed Up", "billing/plan changed", "connexion.réussie", "注册", "a" * 255]
    for name in names:
        assert sqreen.track(name)
    assert [e["name"] for e in delivered(client)] == names


def test_reserved_and_non_text_names_record_nothing(client: sqreen.Client) -> None:
    for bad in ("sq.internal", 42, ""):
        if client.config.strict:
            with pytest.raises(sqreen.InvalidEvent):
                sqreen.track(bad)  # type: ignore[arg-type]
        else:
            assert sqreen.track(bad) is False  # type: ignore[arg-type]
    assert delivered(client) == []


def test_values_the_agents_json_encoder_wrote(client: sqreen.Client) -> None:
    props = {
        "at": datetime(2021, 5, 4, 3, 2, 1, tzinfo=UTC),
        "on": date(2021, 5, 4),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "amount": decimal.Decimal("19.90"),
        "role": Role.ADMIN,
        "level": Level.HIGH,
        "raw": b"caf\xc3\xa9",
        "tags": ("a", "b"),
    }
    assert sqreen.track("typed.values", properties=props)
    (event,) = delivered(client)
    assert event["properties"] == {
        "at": "2021-05-04T03:02:01+00:00",
        "on": "2021-05-04",
        "id": "12345678-1234-5678-1234-567812345678",
        "amount": "19.90",
        "role": "admin",
        "level": 3,
        "raw": "café",
        "tags": ["a", "b"],
    }


def test_more_than_16_properties_keep_the_first_16_sorted_keys(client: sqreen.Client) -> None:
    props = {f"p{i:02d}": i for i in range(20, 0, -1)}
    if client.config.strict:
        with pytest.raises(sqreen.InvalidEvent) as info:
            sqreen.track("many", {"properties": props})
        assert (info.value.field, info.value.rule) == ("properties", "max_properties")
        return
    assert sqreen.track("many", {"properties": props})
    (event,) = delivered(client)
    assert list(event["properties"]) == [f"p{i:02d}" for i in range(1, 17)]


def test_a_long_string_is_truncated_not_dropped(client: sqreen.Client) -> None:
    if client.config.strict:
        with pytest.raises(sqreen.InvalidEvent) as info:
            sqreen.track("long", properties={"note": "x" * 5000})
        assert (info.value.field, info.value.rule) == ("properties.note", "value_too_long")
        return
    words = "a few words " * 500  # 6 000 characters
    assert sqreen.track("long", properties={"note": words, "blob": "x" * 5000})
    (event,) = delivered(client)
    note = event["properties"]["note"]
    # Cut at a word (the flusher scrubs after the cut: a secret cut in two no longer looked
    # like one); a single word cut goes whole.
    assert 4000 < len(note) <= 4096 and note.endswith("[truncated]")
    assert words.startswith(note.removesuffix("[truncated]"))
    assert event["properties"]["blob"] == "[truncated]"


def test_an_unknown_option_is_skipped_with_a_warning(
    client: sqreen.Client, sqreen_log: pytest.LogCaptureFixture
) -> None:
    options = {"properties": {"a": 1}, "user": {"uid": 1}}
    if client.config.strict:
        with pytest.raises(sqreen.InvalidEvent) as info:
            sqreen.track("x", options)
        assert info.value.rule == "unknown_key"
        return
    assert sqreen.track("x", options)
    (event,) = delivered(client)
    assert event["properties"] == {"a": 1} and event["user"] is None
    assert any("'user'" in r.getMessage() for r in sqreen_log.records)


def test_truthy_flags_and_identifiers_of_any_scalar_type(client: sqreen.Client) -> None:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/login", "REMOTE_ADDR": "127.0.0.1"}
    token = current_request.set(RequestContext(client, "wsgi", environ))
    try:
        assert sqreen.auth_track(1, user_id=42)
        assert sqreen.auth_track(0, user_id=uuid.UUID(int=7))
        assert sqreen.track("x", {"collect_body": 1, "user_identifiers": {"score": 1.5}})
        assert sqreen.signup_track(email="foobar@example.com")
    finally:
        current_request.reset(token)
    events = delivered(client)
    assert [(e["name"], e["user"]) for e in events] == [
        ("auth.login.success", {"user_id": "42"}),
        ("auth.login.failure", {"user_id": "00000000-0000-0000-0000-000000000007"}),
        ("x", {"score": "1.5"}),
        ("auth.signup", {"email": "foobar@example.com"}),
    ]


def test_the_guides_auth_track_calls(client: sqreen.Client) -> None:
    assert sqreen.auth_track(True, email="foobar@example.com")
    assert sqreen.auth_track(False, user_id=42)
    assert [(e["name"], e["user"]) for e in delivered(client)] == [
        ("auth.login.success", {"email": "foobar@example.com"}),
        ("auth.login.failure", {"user_id": "42"}),
    ]


def test_identify_binds_whatever_its_traits_hold(client: sqreen.Client) -> None:
    ctx = RequestContext(client, "wsgi", {"REQUEST_METHOD": "GET", "REMOTE_ADDR": "127.0.0.1"})
    token = current_request.set(ctx)
    try:
        traits = {"joined": datetime(2020, 1, 1, tzinfo=UTC), "plan": "pro"}
        sqreen.identify({"uid": "7"}, traits=traits)
        assert ctx.user == {"uid": "7"}
        sqreen.track("after.identify")
    finally:
        current_request.reset(token)
    (event,) = delivered(client)
    assert event["user"] == {"uid": "7"}
    records = [e for e in client.transport.events if e["name"] == "sq.identify"]  # type: ignore[attr-defined]
    assert [(r["user"], r["properties"]) for r in records] == [
        ({"uid": "7"}, {"joined": "2020-01-01T00:00:00+00:00", "plan": "pro"})
    ]


@pytest.mark.parametrize(
    ("traits", "rule", "said"),
    [
        ("pro", "type", "traits: must be a dict, not str"),
        ({f"t{i}": i for i in range(20)}, "max_properties", "traits: 20 traits, at most 16"),
        ({"raw": b"\xff"}, "bytes_not_utf8", "traits.raw: "),
    ],
)
def test_identify_names_its_traits_in_what_it_says_of_them(
    traits: object, rule: str, said: str, sqreen_log: pytest.LogCaptureFixture
) -> None:
    """identify() is no event: its log line says identify(), and its traits are ``traits``."""
    sqreen.init(transport="memory:", strict=True)
    with pytest.raises(sqreen.InvalidEvent) as info:
        sqreen.identify({"uid": "7"}, traits=traits)  # type: ignore[arg-type]
    assert (info.value.rule, str(info.value).startswith(said)) == (rule, True)
    sqreen.shutdown()
    sqreen.init(transport="memory:")
    sqreen.identify({"uid": "7"}, traits=traits)  # type: ignore[arg-type]
    sqreen.track("identify()", properties="pro")  # type: ignore[arg-type]
    said_lines = [r.getMessage() for r in sqreen_log.records if "kept, adjusted" in r.getMessage()]
    assert said_lines == [
        f"sqreen: identify() kept, adjusted: {info.value}",
        "sqreen: event 'identify()' kept, adjusted: properties: must be a dict, not str",
    ]


def test_a_successful_login_without_identifiers_is_said_of_auth_track(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    """The user of a success cannot be bound: the line names ``auth_track()``, the call the
    app made, not ``identify()``, which it never called; the login is still tracked."""
    client = sqreen.init(transport="memory:")
    sqreen.auth_track(True)
    (line,) = [
        r.getMessage() for r in sqreen_log.records if "needs an identifier" in r.getMessage()
    ]
    assert line.startswith("sqreen: auth_track() ") and "identify()" not in line
    assert "the login is tracked without one" in line
    assert [(e["name"], e["user"]) for e in delivered(client)] == [("auth.login.success", None)]
    sqreen.shutdown()
    sqreen.init(transport="memory:", strict=True)
    with pytest.raises(sqreen.InvalidEvent, match=r"auth_track\(\) needs an identifier"):
        sqreen.auth_track(True)


def test_start_is_the_agents_first_line_and_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQREEN_TRANSPORT", "memory:")
    monkeypatch.setenv("SQREEN_APP_NAME", "legacy")
    first = sqreen.start()
    assert sqreen.start() is first
    assert first.config.app_name == "legacy"
    assert sqreen.track("after.start")
    assert [e["name"] for e in delivered(first)] == ["after.start"]


def test_the_agents_ip_header_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQREEN_IP_HEADER", "X-Real-IP")
    client = sqreen.init(transport="memory:")
    assert client.config.client_ip_header == "X-Real-IP"


def test_properties_keep_their_names_secrets_go(client: sqreen.Client) -> None:
    props = {
        "auth_method": "password",
        "failed_password_attempts": 3,
        "token_type": "refresh",
        "otp_method": "sms",
        "session_length": 120,
        "password": "hunter2",
        "api_key": "k-123",
        "note": "card 4111 1111 1111 1111",
    }
    assert sqreen.track("login.detail", properties=props)
    (event,) = delivered(client)
    assert event["properties"] == {
        "auth_method": "password",
        "failed_password_attempts": 3,
        "token_type": "refresh",
        "otp_method": "sms",
        "session_length": 120,
        "password": "[redacted]",
        "api_key": "[redacted]",
        "note": "card [redacted]",
    }


def test_the_event_as_a_keyword(client: sqreen.Client) -> None:
    """The agent's signature is ``track(event, options=None)``: both by keyword too."""
    assert sqreen.track(event="kw.only")
    assert sqreen.track(event="kw.options", options={"properties": {"a": 1}})
    ctx = RequestContext(client, "wsgi", {"REQUEST_METHOD": "GET", "REMOTE_ADDR": "127.0.0.1"})
    assert ctx.track(event="kw.handle")
    assert sqreen.for_user({"uid": "3"}).track(event="kw.scope")
    events = delivered(client)
    assert [e["name"] for e in events] == ["kw.only", "kw.options", "kw.handle", "kw.scope"]
    assert events[1]["properties"] == {"a": 1}


def test_options_as_anything_dict_takes(client: sqreen.Client) -> None:
    """The agent copied the options with ``dict(options)``: pairs work as a dict does."""
    assert sqreen.track("pairs", [("properties", {"a": 1})])
    assert sqreen.track("generator", ((k, v) for k, v in [("user_identifiers", {"uid": 4})]))
    assert [(e["name"], e["properties"], e["user"]) for e in delivered(client)] == [
        ("pairs", {"a": 1}, None),
        ("generator", {}, {"uid": "4"}),
    ]


@pytest.mark.parametrize("options", [5, "properties", [("properties",)], [1, 2]])
def test_options_dict_cannot_take_are_refused(
    client: sqreen.Client, sqreen_log: pytest.LogCaptureFixture, options: object
) -> None:
    if client.config.strict:
        with pytest.raises(sqreen.InvalidEvent) as info:
            sqreen.track("x", options)  # type: ignore[arg-type]
        assert (info.value.field, info.value.rule) == ("options", "type")
        return
    assert sqreen.track("x", options)  # type: ignore[arg-type]
    assert [e["properties"] for e in delivered(client)] == [{}]
    assert any("options: must be a dict" in r.getMessage() for r in sqreen_log.records)


def test_more_than_16_keys_of_another_type_keep_the_agents_first_16(
    client: sqreen.Client,
) -> None:
    if client.config.strict:
        with pytest.raises(sqreen.InvalidEvent):
            sqreen.track("ints", {"properties": {i: i for i in range(20)}})
        return
    assert sqreen.track("ints", {"properties": {i: i for i in range(19, -1, -1)}})
    # Keys that cannot be compared with each other: by their text.
    mixed: dict[object, int] = {i: i for i in range(10, 20)}
    mixed.update({f"k{i}": i for i in range(10)})
    assert sqreen.track("mixed", {"properties": mixed})
    ints, mixed_event = delivered(client)
    assert list(ints["properties"]) == [str(i) for i in range(16)]  # sorted(items()): 2 < 10
    assert list(mixed_event["properties"]) == [str(i) for i in range(10, 20)] + [
        f"k{i}" for i in range(6)
    ]


def test_other_user_identifiers_than_identifys_are_warned_once_a_request(
    client: sqreen.Client, sqreen_log: pytest.LogCaptureFixture
) -> None:
    """As the agent: a warning (never an error, even in strict mode), once a request; the
    event goes with track()'s identifiers. ``for_user()`` and ``auth_track()`` mean another
    user, and an identifier of another type but the same text is the same user."""
    message = "sqreen.identify and sqreen.track have been called with different user_identifiers"

    def warnings() -> int:
        return sum(message in r.getMessage() for r in sqreen_log.records)

    def request() -> RequestContext:
        return RequestContext(client, "wsgi", {"REQUEST_METHOD": "GET", "REMOTE_ADDR": "::1"})

    token = current_request.set(request())
    try:
        sqreen.identify({"uid": 1})
        assert sqreen.track("same", {"user_identifiers": {"uid": "1"}})
        assert sqreen.for_user({"uid": 9}).track("scoped")
        assert sqreen.auth_track(False, uid=8)
        assert warnings() == 0
        assert sqreen.track("other", {"user_identifiers": {"uid": 2}})
        assert sqreen.track("other.again", user_identifiers={"email": "a@example.com"})
        assert warnings() == 1
    finally:
        current_request.reset(token)
    token = current_request.set(request())
    try:
        sqreen.identify({"uid": 1})
        assert sqreen.track("next.request", {"user_identifiers": {"uid": 3}})
    finally:
        current_request.reset(token)
    assert warnings() == 2
    assert sqreen.track("no.request", {"user_identifiers": {"uid": 4}})  # nothing identified
    assert warnings() == 2
    users = {e["name"]: e["user"] for e in delivered(client)}
    assert users["other"] == {"uid": "2"} and users["next.request"] == {"uid": "3"}


def test_identifiers_given_but_unreadable_are_nobody_s_not_the_identified_user_s(
    client: sqreen.Client,
) -> None:
    """A login form's missing field (``username=None``) or a list for an email: the failure
    is of nobody the SDK can name, not of the user identify() bound earlier in the request,
    whose per-user counts (and blocks) it would feed. None given at all is the request's
    user, as before."""
    token = current_request.set(
        RequestContext(client, "wsgi", {"REQUEST_METHOD": "POST", "REMOTE_ADDR": "::1"})
    )
    try:
        sqreen.identify({"username": "victim"})
        calls = [
            lambda: sqreen.auth_track(False, username=None),
            lambda: sqreen.signup_track(email=["a@example.com", "b@example.com"]),
            lambda: sqreen.track("app.thing", {"user_identifiers": {"uid": object()}}),
        ]
        for call in calls:
            if client.config.strict:
                with pytest.raises(sqreen.InvalidEvent) as raised:
                    call()
                assert raised.value.field.startswith("user_identifiers")
            else:
                assert call()
        assert sqreen.track("app.mine")
        assert sqreen.track("app.mine.too", {"user_identifiers": {}})
    finally:
        current_request.reset(token)
    users = {e["name"]: e["user"] for e in delivered(client)}
    if not client.config.strict:
        assert users["auth.login.failure"] is None
        assert users["auth.signup"] is None
        assert users["app.thing"] is None
    assert users["app.mine"] == users["app.mine.too"] == {"username": "victim"}


def test_a_login_refused_by_a_block_is_tracked_as_its_verdict_marked_blocked(
    client: sqreen.Client,
) -> None:
    """The right password from a blocked address, or for a blocked user, is still
    ``auth.login.success`` (it was used, from there: what impossible travel and the
    explorer should see), but the app answered 403: ``properties.blocked`` says no session
    began. Logins that pass carry no property of ours."""
    client.blocklist.apply(
        {
            "version": 1,
            "items": [
                {"id": "u", "type": "block_user", "user": {"username": "mallory"}},
                {"id": "i", "type": "block_ip", "ip": "198.51.100.9"},
            ],
        }
    )

    def served(ip: str, call: Any) -> str:
        ctx = RequestContext(client, "wsgi", {"REQUEST_METHOD": "POST", "REMOTE_ADDR": ip})
        token = current_request.set(ctx)
        try:
            call()
        except sqreen.Blocked:
            return "403"
        finally:
            current_request.reset(token)
        return "200"

    answers = [
        served("192.0.2.1", lambda: sqreen.auth_track(True, username="alice")),
        served("192.0.2.1", lambda: sqreen.auth_track(True, username="Mallory")),
        served("192.0.2.1", lambda: sqreen.auth_track(False, username="mallory")),
        served("198.51.100.9", lambda: sqreen.auth_track(True, username="alice")),
        served("198.51.100.9", lambda: sqreen.signup_track(username="carol")),
        served("192.0.2.1", lambda: sqreen.signup_track(username="mallory")),
    ]
    assert answers == ["200", "403", "403", "403", "403", "403"]
    sqreen.auth_track(True, username="mallory")  # outside a request: nothing refused
    assert [(e["name"], e["user"], e.get("properties")) for e in delivered(client)] == [
        ("auth.login.success", {"username": "alice"}, {}),
        ("auth.login.success", {"username": "Mallory"}, {"blocked": True}),
        ("auth.login.failure", {"username": "mallory"}, {"blocked": True}),
        ("auth.login.success", {"username": "alice"}, {"blocked": True}),
        ("auth.signup", {"username": "carol"}, {"blocked": True}),
        ("auth.signup", {"username": "mallory"}, {"blocked": True}),
        ("auth.login.success", {"username": "mallory"}, {}),
    ]
