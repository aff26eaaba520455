"""Default properties of the request: client IP (spoof-proof), params, scrubbing, body."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import sqreen
from sqreen import _ip_warnings
from sqreen._context import RequestContext, current_request
from sqreen._wire import parse_event
from tests.receiver import Receiver


class Body:
    """What the app read of its body (the middleware's tee provides this for real)."""

    def __init__(self, data: bytes, truncated: bool = False) -> None:
        self.chunks = (data[: len(data) // 2], data[len(data) // 2 :])
        self.truncated = truncated

    def capture(self) -> tuple[tuple[bytes, ...], bool]:
        return self.chunks, self.truncated


def environ(**extra: Any) -> dict[str, Any]:
    env = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/login",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_USER_AGENT": "Mozilla/5.0 test",
    }
    env.update(extra)
    return env


def track_in(
    client: sqreen._client.Client, env: dict[str, Any], body: Body | None = None, **kw: Any
) -> None:
    token = current_request.set(RequestContext(client, "wsgi", env, body=body))
    try:
        sqreen.track("auth.login.failure", **kw)
    finally:
        current_request.reset(token)


def delivered(client: sqreen._client.Client) -> list[dict[str, Any]]:
    """The events delivered, without identify()'s records of traits."""
    assert sqreen.flush(timeout=10)
    return [e for e in client.transport.events if e["name"] != "sq.identify"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("8.8.8.8", "1.2.3.4", None, "8.8.8.8"),  # a public peer cannot choose its IP
        ("127.0.0.1", "1.2.3.4", None, "1.2.3.4"),  # behind a loopback proxy
        ("10.1.2.3", "1.2.3.4", ["10.0.0.0/8"], "1.2.3.4"),  # behind a configured proxy
        ("10.1.2.3", "6.6.6.6, 1.2.3.4", ["10.0.0.0/8"], "1.2.3.4"),  # spoofed left-most hop
        ("127.0.0.1", "1.2.3.4", [], "127.0.0.1"),  # trust nobody
        ("::ffff:8.8.4.4", None, None, "8.8.4.4"),  # IPv4-mapped IPv6 peer
        ("127.0.0.1", "[2001:db8::1]:4711", None, "2001:db8::1"),
        ("127.0.0.1", "1.2.3.4:5678", None, "1.2.3.4"),
    ],
)
def test_client_ip_is_not_spoofable(
    peer: str, forwarded: str | None, trusted: list[str] | None, expected: str
) -> None:
    client = sqreen.init(transport="memory:", trusted_proxies=trusted)
    env = environ(REMOTE_ADDR=peer)
    if forwarded is not None:
        env["HTTP_X_FORWARDED_FOR"] = forwarded
    track_in(client, env)
    assert delivered(client)[0]["request"]["ip"] == expected


def test_no_warning_when_the_server_already_applied_the_header(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    # uvicorn (proxy_headers) rewrites scope["client"] to the forwarded address and leaves
    # the header in place: the peer we see is one of its hops, here a private one.
    _ip_warnings._reset_warning()
    client = sqreen.init(transport="memory:")
    track_in(client, environ(REMOTE_ADDR="192.168.1.20", HTTP_X_FORWARDED_FOR="192.168.1.20"))
    assert delivered(client)[0]["request"]["ip"] == "192.168.1.20"
    assert not [r for r in sqreen_log.records if "trusted" in r.getMessage().lower()]


def test_each_client_watches_its_own_peers(sqreen_log: pytest.LogCaptureFixture) -> None:
    # The flusher skips the peer checks for the same peer and header as the last event it
    # watched: only with the same proxies. A new client, after the warning was reset, with
    # an untrusted private peer that a first client had already seen, still warns.
    def warnings() -> list[logging.LogRecord]:
        return [r for r in sqreen_log.records if "TRUSTED_PROXIES" in r.getMessage()]

    env = environ(REMOTE_ADDR="172.17.0.9", HTTP_X_FORWARDED_FOR="1.2.3.4")
    for _ in range(2):
        _ip_warnings._reset_warning()
        sqreen_log.clear()
        client = sqreen.init(transport="memory:")
        for _ in range(2):
            track_in(client, env)
        assert len(delivered(client)) == 2
        assert len(warnings()) == 1


def test_configured_forwarded_header() -> None:
    client = sqreen.init(transport="memory:", client_ip_header="Forwarded")
    env = environ(
        HTTP_FORWARDED='for="[2001:db8::7]:4711";proto=https, for=127.0.0.1',
        HTTP_X_FORWARDED_FOR="6.6.6.6",
    )
    track_in(client, env)
    assert delivered(client)[0]["request"]["ip"] == "2001:db8::7"


def test_private_untrusted_peer_with_forwarded_header_warns_once(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    _ip_warnings._reset_warning()
    client = sqreen.init(transport="memory:")
    for _ in range(3):
        track_in(client, environ(REMOTE_ADDR="172.17.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4"))
    events = delivered(client)
    assert {e["request"]["ip"] for e in events} == {"172.17.0.1"}
    warnings = [
        r
        for r in sqreen_log.records
        if "trusted_proxies" in r.getMessage() or "TRUSTED_PROXIES" in r.getMessage()
    ]
    assert len(warnings) == 1


def test_request_properties_and_params() -> None:
    client = sqreen.init(transport="memory:")
    env = environ(
        QUERY_STRING="next=%2Fhome&tag=a&tag=b&page=2",
        CONTENT_TYPE="application/x-www-form-urlencoded",
    )
    track_in(client, env, Body(b"username=alice&remember=on"))
    req = delivered(client)[0]["request"]
    assert req["ip"] == "127.0.0.1"
    assert req["user_agent"] == "Mozilla/5.0 test"
    assert req["path"] == "/login" and req["method"] == "POST"
    assert req["params"] == {
        "next": "/home",
        "tag": ["a", "b"],
        "page": "2",
        "username": "alice",
        "remember": "on",
    }
    assert req["body"] is None  # only with collect_body=True


def test_collect_body_attaches_the_scrubbed_body_with_its_truncation_flag() -> None:
    client = sqreen.init(transport="memory:")
    body = json.dumps({"username": "alice", "password": "hunter2-secret"}).encode()
    track_in(
        client,
        environ(CONTENT_TYPE="application/json"),
        Body(body, truncated=False),
        collect_body=True,
    )
    track_in(
        client,
        environ(CONTENT_TYPE="text/plain"),
        Body(b"x" * 100, truncated=True),
        collect_body=True,
    )
    first, second = delivered(client)
    assert first["request"]["body"]["truncated"] is False
    assert "alice" in first["request"]["body"]["content"]
    assert "hunter2-secret" not in first["request"]["body"]["content"]
    assert second["request"]["body"] == {"content": "x" * 100, "truncated": True}


def test_identify_binds_the_user_and_track_overrides_it() -> None:
    client = sqreen.init(transport="memory:")
    token = current_request.set(RequestContext(client, "wsgi", environ()))
    try:
        sqreen.identify({"uid": "42"}, traits={"plan": "pro"})
        sqreen.track("a")
        sqreen.track("b", user_identifiers={"uid": "7"})
        sqreen.for_user({"uid": "9"}).track("c")
        sqreen.track("d")
    finally:
        current_request.reset(token)
    sqreen.track("outside")
    users = {e["name"]: e["user"] for e in delivered(client)}
    assert users == {
        "a": {"uid": "42"},
        "b": {"uid": "7"},
        "c": {"uid": "9"},
        "d": {"uid": "42"},
        "outside": None,
    }


def test_auth_and_signup_helpers() -> None:
    client = sqreen.init(transport="memory:")
    ctx = RequestContext(client, "wsgi", environ())
    token = current_request.set(ctx)
    try:
        assert sqreen.auth_track(False, uid="13")
        assert ctx.user is None  # a failure never identifies
        assert sqreen.auth_track(True, uid="42")
        assert ctx.user == {"uid": "42"}
        assert sqreen.signup_track(uid="43", email="new@example.com")
        assert ctx.user == {"uid": "43", "email": "new@example.com"}
    finally:
        current_request.reset(token)
    names = [(e["name"], e["user"]) for e in delivered(client)]
    assert names == [
        ("auth.login.failure", {"uid": "13"}),
        ("auth.login.success", {"uid": "42"}),
        ("auth.signup", {"uid": "43", "email": "new@example.com"}),
    ]


def test_blocked_user_raises_only_inside_a_request() -> None:
    client = sqreen.init(transport="memory:")
    client.blocklist.apply(
        {
            "version": 1,
            "items": [{"id": "b", "type": "block_user", "user": {"uid": "666"}, "expires_in": 60}],
        }
    )
    sqreen.identify({"uid": "666"})  # outside a request: nothing to refuse
    assert sqreen.auth_track(False, uid="666")  # nor for a failure
    assert sqreen.is_blocked({"uid": "666"})
    token = current_request.set(RequestContext(client, "wsgi", environ()))
    try:
        with pytest.raises(sqreen.Blocked):
            try:
                sqreen.auth_track(True, uid="666")
            except Exception:  # what a handler might do: cannot swallow Blocked
                pytest.fail("Blocked was caught by except Exception")
        sqreen.identify({"uid": "1"})  # other users unaffected
        assert sqreen.auth_track(False, uid="1")
        # A failure too: were only the right password refused, the 403 would say which it is.
        with pytest.raises(sqreen.Blocked):
            sqreen.auth_track(False, uid="666")
        assert current_request.get() is not None and current_request.get().user == {"uid": "1"}
    finally:
        current_request.reset(token)
    failures = [e["user"] for e in delivered(client) if e["name"] == "auth.login.failure"]
    assert failures == [{"uid": "666"}, {"uid": "1"}, {"uid": "666"}]  # tracked, then refused


def test_explicit_request_argument_accepts_environ_scope_and_framework_requests() -> None:
    client = sqreen.init(transport="memory:")

    class FlaskLike:
        environ = environ(PATH_INFO="/flask")

    class StarletteLike:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/starlette",
            "query_string": b"a=1",
            "headers": [(b"user-agent", b"ua")],
            "client": ("203.0.113.5", 1234),
        }

    sqreen.track("e1", request=environ(PATH_INFO="/environ"))
    sqreen.track("e2", request=FlaskLike())
    sqreen.track("e3", request=StarletteLike())
    sqreen.track("e4", request=StarletteLike.scope)
    paths = [(e["request"]["path"], e["request"]["ip"]) for e in delivered(client)]
    assert paths == [
        ("/environ", "127.0.0.1"),
        ("/flask", "127.0.0.1"),
        ("/starlette", "203.0.113.5"),
        ("/starlette", "203.0.113.5"),
    ]


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
SECRETS = [
    "hunter2-pass",
    "pwd-s3cr3t",
    "tok-abc123xyz",
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "378282246310005",
    JWT,
    "Bearer sk_live_abcdef0123456789",
    "deep-nested-secret",
    "api-key-value-77",
]
HARMLESS = [
    "discard_reason",
    "cardinality",
    "1732270000000",
    "4000123456",
    "ORD-2023-0001",
    "alice",
]


def _secret_request(client: sqreen._client.Client) -> None:
    query = "password=hunter2-pass&discard_reason=duplicate&order=4000123456&cardinality=3"
    env = environ(QUERY_STRING=query, CONTENT_TYPE="application/json")
    body = json.dumps(
        {
            "username": "alice",
            "pwd": "pwd-s3cr3t",
            "card": "4111 1111 1111 1111",
            "profile": {"settings": {"api_key": "api-key-value-77"}},
            "ts": 1732270000000,
        }
    ).encode()
    track_in(
        client,
        env,
        Body(body),
        collect_body=True,
        properties={
            "auth_token": "tok-abc123xyz",
            "note": "paid with 5500-0000-0000-0004 then 378282246310005",
            "jwt_seen": JWT,
            "header": "Bearer sk_live_abcdef0123456789",
            "nested": {"level2": {"password": "deep-nested-secret"}},
            "order_id": "ORD-2023-0001",
            "discard_reason": "duplicate",
            "cardinality": 3,
            "sent_at_ms": 1732270000000,
        },
    )


def test_secrets_never_reach_the_receiver(
    receiver: Receiver, sqreen_log: pytest.LogCaptureFixture
) -> None:
    client = sqreen.init(endpoint=receiver.url, flush_interval=0.1)
    _secret_request(client)
    assert sqreen.flush(timeout=10)
    sent = json.dumps(receiver.events)
    logs = "\n".join(r.getMessage() for r in sqreen_log.records)
    for secret in SECRETS:
        assert secret not in sent
        assert secret not in logs
    for harmless in HARMLESS:
        assert harmless in sent
    assert "[redacted]" in sent


def test_secrets_never_reach_the_json_lines_file(tmp_path: Any) -> None:
    path = tmp_path / "events.jsonl"
    client = sqreen.init(transport=f"file://{path}")
    _secret_request(client)
    assert sqreen.flush(timeout=10)
    written = path.read_text()
    for secret in SECRETS:
        assert secret not in written
    for harmless in HARMLESS:
        assert harmless in written
    json.loads(written.splitlines()[0])


def test_a_lone_surrogate_in_a_json_body_does_not_lose_the_event() -> None:
    client = sqreen.init(transport="memory:")
    body = b'{"username": "alice", "comment": "\\ud800 broken"}'
    track_in(client, environ(CONTENT_TYPE="application/json"), Body(body), collect_body=True)
    (event,) = delivered(client)
    assert event["request"]["params"]["username"] == "alice"
    assert client.stats()["dropped"]["invalid"] == 0


def test_lone_surrogates_are_delivered_as_u_fffd() -> None:
    """Text no encoding can write becomes U+FFFD, as the collector's parse_event makes it:
    in strict mode too, and in the request the SDK adds (a JSON body's "\\ud800")."""
    client = sqreen.init(transport="memory:", strict=True)
    body = b'{"username": "\\ud800", "n\\udfff": ["\\udbff"]}'
    track_in(
        client,
        environ(CONTENT_TYPE="application/json", HTTP_USER_AGENT="curl/8"),
        Body(body),
        properties={"k\ud800": "a\udfffb", "nested": {"l": ["\udbff"]}},
        user_identifiers={"uid": "4\ud8002"},
        collect_body=True,
    )
    (event,) = delivered(client)
    assert event["properties"] == {"k\ufffd": "a\ufffdb", "nested": {"l": ["\ufffd"]}}
    assert event["user"] == {"uid": "4\ufffd2"}
    assert event["request"]["params"] == {"username": "\ufffd", "n\ufffd": ["\ufffd"]}
    assert parse_event(event) == event  # the collector stores it as sent


def test_invalid_event_log_line_does_not_echo_values(sqreen_log: pytest.LogCaptureFixture) -> None:
    sqreen.init(transport="memory:")
    sqreen.track("x", properties={"password": "x" * 5000})
    logs = "\n".join(r.getMessage() for r in sqreen_log.records)
    assert "xxxx" not in logs
    assert logging.getLogger("sqreen").name == "sqreen"


def test_queued_events_share_the_request_strings_that_repeat() -> None:
    """A queued event keeps one shared copy of the method, peer, user agent, forwarded
    header and content type, not each request's own (memory per queued event), once the
    flusher has encoded an event that had them."""
    client = sqreen.init(transport="memory:")
    base = environ(HTTP_X_FORWARDED_FOR="203.0.113.7", CONTENT_TYPE="text/plain")
    track_in(client, {k: (v + ".")[:-1] for k, v in base.items()})
    assert len(delivered(client)) == 1
    first, second = (
        RequestContext(client, "wsgi", {k: (v + ".")[:-1] for k, v in base.items()}).snapshot()
        for _ in range(2)
    )
    for field in ("method", "peer", "user_agent", "forwarded", "content_type"):
        assert getattr(first, field) == base_value(base, field)
        assert getattr(first, field) is getattr(second, field), field


def base_value(env: dict[str, Any], field: str) -> str:
    keys = {
        "method": "REQUEST_METHOD",
        "peer": "REMOTE_ADDR",
        "user_agent": "HTTP_USER_AGENT",
        "forwarded": "HTTP_X_FORWARDED_FOR",
        "content_type": "CONTENT_TYPE",
    }
    value: str = env[keys[field]]
    return value
