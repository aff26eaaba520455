"""The wire form: what the SDK encodes, the collector's parse_event accepts unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import sqreen
from sqreen._config import Config
from sqreen._event import InvalidEvent, QueuedEvent, validate_properties
from sqreen._request import snapshot_wsgi
from sqreen._wire import MAX_REQUEST_BYTES, encode_event, parse_event

CONFIG = Config.resolve({}, environ={})

names = st.from_regex(r"[a-z][a-z0-9._:-]{0,40}", fullmatch=True).filter(
    lambda n: not n.startswith("sq.")
)
text = st.text(max_size=60)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=4),
    ),
    max_leaves=12,
)
properties = st.dictionaries(st.text(min_size=1, max_size=20), values, max_size=16)
users = st.none() | st.dictionaries(
    st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=40), min_size=1, max_size=4
)
targets = st.none() | st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=30)},
    optional={"type": st.text(min_size=1, max_size=20), "name": st.text(min_size=1, max_size=20)},
)


@st.composite
def snapshots(draw: Any) -> Any:
    if draw(st.booleans()):
        return None
    body = draw(st.binary(max_size=300) | st.just(b'{"user": "a", "password": "x"}'))
    environ = {
        "REQUEST_METHOD": draw(st.sampled_from(["GET", "POST", "PUT"])),
        "PATH_INFO": draw(st.text(max_size=40)).encode("utf-8", "replace").decode("latin-1"),
        "QUERY_STRING": draw(st.text(max_size=60)),
        "REMOTE_ADDR": draw(st.sampled_from(["127.0.0.1", "203.0.113.7", "::1", "junk"])),
        "HTTP_USER_AGENT": draw(text),
        "HTTP_X_FORWARDED_FOR": draw(st.sampled_from(["", "198.51.100.1", "a, b, 10.0.0.1"])),
        "CONTENT_TYPE": draw(
            st.sampled_from(
                ["", "application/json", "application/x-www-form-urlencoded", "multipart/form-data"]
            )
        ),
    }

    class Body:
        def capture(self) -> tuple[tuple[bytes, ...], bool]:
            return (body,), False

    return snapshot_wsgi(environ, "HTTP_X_FORWARDED_FOR", None, Body())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=names,
    props=properties,
    user=users,
    target=targets,
    snapshot=snapshots(),
    ts=st.floats(0, 2**33),
    collect_body=st.booleans(),
)
def test_parse_event_accepts_what_encode_event_builds(
    name: str, props: Any, user: Any, target: Any, snapshot: Any, ts: float, collect_body: bool
) -> None:
    try:
        copied, size = validate_properties(props)
    except InvalidEvent:
        reject()  # track() would have refused it: not a wire event
    event = QueuedEvent(1, name, ts, copied, user, target, snapshot, collect_body, size)
    wire = encode_event(event, "p-1", CONFIG)
    sent = json.loads(json.dumps(wire))  # what crosses the network
    parsed = parse_event(sent)
    assert parsed["id"] == "p-1" and parsed["name"] == name
    assert parsed["timestamp"] == wire["timestamp"]
    assert parsed["properties"] == sent["properties"]
    scrubbed = (
        None if target is None else {k: CONFIG.scrubber.scrub_value(v) for k, v in target.items()}
    )
    assert parsed["user"] == user and parsed["target"] == scrubbed
    assert parsed["request"] == sent["request"]


def test_the_encoded_request_is_scrubbed_and_resolved() -> None:
    client = sqreen.init(transport="memory:", trusted_proxies=["10.0.0.0/8"])
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/login",
        "QUERY_STRING": "next=/home&token=abc",
        "REMOTE_ADDR": "10.0.0.2",
        "HTTP_X_FORWARDED_FOR": "198.51.100.9",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
    }

    class Body:
        def capture(self) -> tuple[tuple[bytes, ...], bool]:
            return (b"username=alice&password=hunter2",), False

    snapshot = snapshot_wsgi(environ, "HTTP_X_FORWARDED_FOR", None, Body())
    event = QueuedEvent(1, "auth.login.failure", 0.0, {}, None, None, snapshot, True, 0)
    wire = encode_event(event, "x-1", client.config)
    request = wire["request"]
    assert request is not None
    assert request["ip"] == "198.51.100.9"
    assert request["params"] == {
        "next": "/home",
        "token": "[redacted]",
        "username": "alice",
        "password": "[redacted]",
    }
    assert request["body"] is not None and "hunter2" not in request["body"]["content"]
    assert wire["timestamp"] == "1970-01-01T00:00:00.000000Z"


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


def test_the_user_agent_and_the_target_are_scrubbed_as_every_value() -> None:
    """An app's own client may put its token in its User-Agent, and a target's id may be a
    card number: both left the process as sent, the configured patterns not applied."""
    config = Config.resolve({"scrub_values": [r"ACME-\d{6}"]}, environ={})
    agent = f"MyApp/1.0 (token={JWT}; card 4111 1111 1111 1111; "
    agent += "Bearer abcdefghijklmnopqrstuvwxyz012345; ACME-654321)"
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_USER_AGENT": agent}
    snapshot = snapshot_wsgi(environ, "HTTP_X_FORWARDED_FOR", None, None)
    target = {"type": "card", "id": "4111111111111111", "name": "ACME-123456 Bearer " + "x" * 30}
    event = QueuedEvent(1, "payment.refused", 0.0, {}, None, target, snapshot, False, 0)
    for _ in range(2):  # the second from the scrubber's memory of User-Agents
        wire = encode_event(event, "x-1", config)
        assert wire["request"] is not None
        sent = json.dumps(wire)
        for secret in (JWT, "4111 1111 1111 1111", "abcdefghijklmnopqrstuvwxyz012345"):
            assert secret not in sent
        assert "ACME-654321" not in sent and "ACME-123456" not in sent
        assert "4111111111111111" not in sent
        assert wire["request"]["user_agent"].startswith("MyApp/1.0 (token=[redacted]")
        assert wire["target"] == {
            "type": "card",
            "id": "[redacted]",
            "name": wire["target"]["name"],
        }
        assert "[redacted]" in wire["target"]["name"]


SECRETS = {  # what the scrubber redacts whole, and the piece a cut must not leave
    "4111 1111 1111 1111": "4111 1111 1111",
    "https://alice:SuperSecretPassw0rd@host/": "SuperSecret",
    "ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8": "ghp_a1B2c3D4e5",
    "ACME-654321": "ACME-6543",
    JWT: JWT[:40],
}


@pytest.mark.parametrize("secret", list(SECRETS))
def test_a_secret_across_a_cut_leaves_no_piece_of_itself(secret: str) -> None:
    """The User-Agent, a target's value and a long property were cut before they were
    scrubbed: a secret across the cut was no longer one to the scrubber, and its first part
    went out (15 digits of a card, a URL's whole password, half a key)."""
    from sqreen._event import validate_target
    from sqreen._limits import LIMITS

    config = Config.resolve({"scrub_values": [r"ACME-\d{6}"]}, environ={})
    piece = SECRETS[secret]
    for at in range(3, len(secret) - 1, 3):  # every place of the cut within the secret

        def around(limit: int, at: int = at) -> str:  # the cut at ``limit``, ``at`` in
            return ("x " * limit)[: limit - at - 1] + " " + secret

        agent = around(2048)
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_USER_AGENT": agent}
        snapshot = snapshot_wsgi(environ, "HTTP_X_FORWARDED_FOR", None, None)
        target = validate_target({"id": around(LIMITS.target_field_max)}, [])
        props, size = validate_properties({"note": around(4096 - 11)}, [])
        event = QueuedEvent(1, "e", 0.0, props, None, target, snapshot, False, size)
        for wire in (
            encode_event(event, "x-1", config),
            encode_event(
                QueuedEvent(1, "e", 0.0, props, None, target, snapshot.slimmed(512), False, 0),
                "x-2",
                config,
            ),
        ):
            sent = json.dumps(wire, ensure_ascii=False)
            assert piece not in sent, (secret, at)


def test_the_user_agents_a_scrubber_remembers_are_bounded() -> None:
    from sqreen._scrub import AGENTS_KEPT, Scrubber

    scrubber = Scrubber()
    for n in range(AGENTS_KEPT * 3):
        assert scrubber.scrub_agent(f"client/{n}") == f"client/{n}"
    assert len(scrubber._agents) <= AGENTS_KEPT
    assert scrubber.scrub_agent(f"x Bearer {'y' * 30}") == "x Bearer [redacted]"


def test_times_no_reader_can_use_are_brought_within_1970_to_9000() -> None:
    """One range, 1970 to 9000. track() in strict mode refuses a time outside it (in
    production the event takes the current time); the collector stores the event at the
    nearest time within it, offsets that overflow a datetime included (never an unexpected
    error: the collector logged a traceback for each, or refused the event)."""
    from datetime import UTC, datetime, timedelta, timezone

    from sqreen._event import validate_timestamp

    for sent, when, stored in (
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "9000"),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC), "1970"),
        ("1969-12-31T23:59:59Z", datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), "1970"),
        ("9000-01-01T00:00:00.000001Z", datetime(9000, 1, 1, 0, 0, 0, 1, tzinfo=UTC), "9000"),
        (
            "0001-01-01T00:00:00+01:00",
            datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
            "1970",
        ),
        (
            "9999-12-31T23:59:59-01:00",
            datetime(9999, 12, 31, tzinfo=timezone(-timedelta(hours=1))),
            "9000",
        ),
    ):
        with pytest.raises(InvalidEvent) as sdk:
            validate_timestamp(when)
        assert str(sdk.value) == (
            "timestamp: must be between 1970 and 9000: the current time is used"
        )
        parsed = parse_event({"id": "x", "name": "n", "timestamp": sent})
        assert parsed["timestamp"] == f"{stored}-01-01T00:00:00.000000Z", sent
    for sent, kept in (
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000000Z"),
        ("9000-01-01T00:00:00Z", "9000-01-01T00:00:00.000000Z"),
        ("2026-01-01T00:00:00+14:00", "2025-12-31T10:00:00.000000Z"),
    ):
        assert parse_event({"id": "x", "name": "n", "timestamp": sent})["timestamp"] == kept


def test_an_over_long_request_is_cut_not_refused() -> None:
    """What the collector receives is cut as the SDK cuts its own request: a string field to
    8 KiB, the largest parameters and then the body to fit 256 KiB, and as a last resort the
    parameters as one note; the event is kept, with every other part as sent."""
    long = {
        "ip": "203.0.113.7",
        "user_agent": "A" * 10_000,
        "path": "/" + "p" * 9000,
        "method": "POST",
        "params": {"username": "alice", "huge": "h" * 300_000},
        "body": {"content": "x" * 100_000, "truncated": False},
    }
    request = parse_event({"id": "x", "name": "n", "timestamp": "2026-01-01T00:00:00Z",
                           "request": long})["request"]  # fmt: skip
    assert request is not None
    assert len(json.dumps(request)) <= MAX_REQUEST_BYTES
    assert (request["ip"], request["method"]) == ("203.0.113.7", "POST")
    assert request["user_agent"] == "A" * 8192 and request["path"] == "/" + "p" * 8191
    assert request["params"]["username"] == "alice"
    assert request["params"]["huge"].startswith("[truncated] 300002 characters")
    assert request["body"] == {"content": "x" * 100_000, "truncated": False}  # it fits now

    many = {"params": {f"p{i}": i for i in range(40_000)}, "body": None}
    request = parse_event({"id": "x", "name": "n", "timestamp": "2026-01-01T00:00:00Z",
                           "request": many})["request"]  # fmt: skip
    assert request is not None and list(request["params"]) == ["[truncated]"]
    assert request["params"]["[truncated]"].startswith("40000 parameters, ")


@settings(max_examples=300, deadline=None)
@given(
    ts=st.floats(0, 221_845_391_999.999)
    | st.integers(0, 2**33).map(lambda s: s + 0.9999995)
    | st.integers(0, 2**33).map(lambda s: s + 0.0000005)
)
def test_posix_times_are_formatted_as_datetime_formats_them(ts: float) -> None:
    """The flusher's formatter of POSIX times (no datetime made, the second's text reused)
    writes what datetime.fromtimestamp(...).isoformat() writes, its rounding included."""
    from datetime import UTC, datetime

    from sqreen._wire_time import format_timestamp

    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")
    assert format_timestamp(ts) == expected.replace("+00:00", "Z")
    assert format_timestamp(ts) == expected.replace("+00:00", "Z")  # from the second's text
