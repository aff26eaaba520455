"""The C fast path of the pipeline's parse (server/fastparse.py) gives exactly what the usual
path gives: the same events, the same rejections with the same messages, the same refusals;
and it is taken for the events SDKs send."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqreen._wire import IDENTIFY
from sqreen._wire_time import format_timestamp
from sqreen.server.errors import ApiError
from sqreen.server.fastparse import parse_batch
from sqreen.server.pipeline import IngestPipeline

from .conftest import envelope, recent, wire_event

# parse and parse_slow need no storage.
PIPELINE = IngestPipeline.__new__(IngestPipeline)


def outcome(parse: Any, body: bytes) -> str:
    """Everything a parse gives (repr: 1 is not 1.0, -0.0 is not 0.0), or its refusal."""
    try:
        return repr(parse(body))
    except ApiError as exc:
        return f"ApiError({exc.status}, {exc.message!r}, {exc.field!r})"


def assert_same(body: bytes) -> None:
    assert outcome(PIPELINE.parse, body) == outcome(PIPELINE.parse_slow, body)


def encode(obj: Any, ascii_escapes: bool = True) -> bytes:
    """JSON of ``obj``: lone surrogates as escapes (``"\\ud800"``) or as raw bytes."""
    text = json.dumps(obj, ensure_ascii=ascii_escapes)
    return text.encode("utf-8", "surrogatepass")


def test_the_events_sdks_send_take_the_fast_path() -> None:
    events = [
        wire_event(),
        wire_event(name="AUTH_LOGIN_SUCCESS", target={"id": "7", "type": "doc"}),
        wire_event(name=IDENTIFY, user={"uid": "1"}, properties={"plan": "pro"}, request=None),
        wire_event(properties={"n": {"deep": [1, 2.5, {"x": None}]}, "é": "ü"}),
        wire_event(request={"params": {}, "body": {"content": "x", "truncated": False}}),
    ]
    body = encode({**envelope(events), "actions": {"version": 3, "diff": True}})
    assert parse_batch(body) is not None
    assert_same(body)


def sized(limit: int) -> st.SearchStrategy[str]:
    """Text around a limit: one under, at, one over (ASCII or not)."""
    return st.builds(
        lambda n, c: c * n, st.integers(limit - 1, limit + 1), st.sampled_from(["a", "é", "\n"])
    )


SURROGATE_TEXT = st.text(st.sampled_from(["a", "é", "\ud800", "\udfff", "\x00", '"']), max_size=6)
TEXT = st.one_of(SURROGATE_TEXT, st.text(max_size=8))


def json_values(
    text: st.SearchStrategy[str], integers: st.SearchStrategy[int], size: int
) -> tuple[st.SearchStrategy[Any], ...]:
    """Scalars, keys and any JSON value made of them."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        integers,
        st.floats(allow_nan=False, allow_infinity=False),
        text,
        sized(4096),
    )
    keys = st.one_of(text, sized(128))
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=size), st.dictionaries(keys, inner, max_size=size)
        ),
        max_leaves=3 * size,
    )
    return scalars, keys, values


SCALARS, KEYS, JSON = json_values(
    TEXT,
    st.one_of(
        st.integers(-(2**65), 2**65),
        st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**64)]),
    ),
    4,
)
PROPERTIES = st.one_of(
    st.none(),
    st.sampled_from([[], 0, "", {}]),
    st.dictionaries(KEYS, JSON, max_size=5),
    st.integers(15, 17).map(lambda n: {f"k{i}": i for i in range(n)}),
    st.integers(255, 257).map(lambda n: {"list": list(range(n))}),
)
IDENTIFIERS = st.one_of(st.integers(), st.booleans(), st.none(), TEXT, sized(256))
USERS = st.one_of(
    st.none(),
    st.just({}),
    st.dictionaries(KEYS, IDENTIFIERS, max_size=3),
    st.integers(15, 17).map(lambda n: {f"id{i}": str(i) for i in range(n)}),
    st.just("alice"),
)
TARGETS = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"id": st.one_of(TEXT, st.integers(), sized(256))},
        optional={"type": st.one_of(TEXT, st.none()), "name": TEXT, "other": TEXT},
    ),
    st.just([]),
)
BODIES = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"content": st.one_of(TEXT, st.integers())},
        optional={"truncated": st.one_of(st.booleans(), st.integers()), "extra": TEXT},
    ),
    st.just("text"),
)
REQUEST_FIELD = st.one_of(st.none(), TEXT, st.integers(), sized(8192))
REQUESTS = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "ip": REQUEST_FIELD,
            "user_agent": REQUEST_FIELD,
            "path": REQUEST_FIELD,
            "route": TEXT,
            "method": TEXT,
            "params": st.one_of(st.dictionaries(KEYS, JSON, max_size=3), st.none(), st.just([])),
            "body": BODIES,
            "cookies": TEXT,
        },
    ),
    st.just("GET /"),
)
TIMESTAMPS = st.one_of(
    st.just(recent()),
    st.sampled_from(
        [
            format_timestamp(0.0),
            "2024-01-01T00:00:00Z",
            "2024-02-30T00:00:00.000000Z",
            "2024-01-01T00:00:00.000000+01:00",
            "1969-12-31T23:59:59.000000Z",
            "yesterday",
            "",
        ]
    ),
    st.integers(),
    st.none(),
)
NAMES = st.one_of(
    st.sampled_from(
        ["auth.login.failure", "AUTH_LOGIN_SUCCESS", IDENTIFY, "sq.other", "", "a\x00b", "a" * 256]
    ),
    TEXT,
    st.integers(),
)
EVENTS = st.one_of(
    st.fixed_dictionaries(
        {
            "id": st.one_of(st.just("ev-1"), TEXT, sized(64), st.integers()),
            "name": NAMES,
            "timestamp": TIMESTAMPS,
        },
        optional={
            "properties": PROPERTIES,
            "user": USERS,
            "target": TARGETS,
            "request": REQUESTS,
            "extra": TEXT,
        },
    ),
    st.just("event"),
    st.just(None),
)
SENDERS = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["name", "host", "pid"]), st.one_of(SCALARS, sized(256))),
    st.just([]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(st.one_of(EVENTS, st.builds(wire_event)), max_size=4),
    sdk=SENDERS,
    app=SENDERS,
    actions=st.one_of(st.none(), st.fixed_dictionaries({"version": SCALARS, "diff": SCALARS})),
    extra=st.one_of(st.none(), TEXT),
    ascii_escapes=st.booleans(),
)
def test_fast_parse_gives_what_the_usual_parse_gives(
    events: list[Any], sdk: Any, app: Any, actions: Any, extra: Any, ascii_escapes: bool
) -> None:
    body: dict[str, Any] = {"events": events}
    for key, value in (("sdk", sdk), ("app", app), ("actions", actions), ("x", extra)):
        if value is not None:
            body[key] = value
    assert_same(encode(body, ascii_escapes))


# Mostly valid events, near the limits: the fast path's own bounds are what is tested here.
PLAIN_TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8)
_, PLAIN_KEYS, PLAIN_JSON = json_values(PLAIN_TEXT, st.integers(-(2**63), 2**63 - 1), 3)
PLAIN_EVENTS = st.builds(
    wire_event,
    name=st.sampled_from(["auth.login.failure", "AUTH_LOGIN_SUCCESS", IDENTIFY, "a\x00b"]),
    properties=st.one_of(
        st.dictionaries(PLAIN_KEYS, PLAIN_JSON, max_size=17), st.none(), st.just({})
    ),
    user=st.one_of(st.dictionaries(PLAIN_KEYS, st.one_of(PLAIN_TEXT, sized(256))), st.none()),
    target=st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {"id": st.one_of(PLAIN_TEXT, sized(256))},
            optional={"type": PLAIN_TEXT, "name": st.one_of(PLAIN_TEXT, sized(256))},
        ),
    ),
    request=st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {},
            optional={
                "ip": st.one_of(st.none(), PLAIN_TEXT),
                "user_agent": st.one_of(PLAIN_TEXT, sized(8192)),
                "path": PLAIN_TEXT,
                "params": st.dictionaries(PLAIN_KEYS, PLAIN_JSON, max_size=3),
                "body": st.one_of(
                    st.none(),
                    st.fixed_dictionaries(
                        {"content": PLAIN_TEXT},
                        optional={"truncated": st.booleans(), "extra": PLAIN_JSON},
                    ),
                ),
            },
        ),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(PLAIN_EVENTS, min_size=1, max_size=3), ascii_escapes=st.booleans())
def test_fast_parse_gives_what_the_usual_parse_gives_for_valid_events(
    events: list[Any], ascii_escapes: bool
) -> None:
    assert_same(encode(envelope(events), ascii_escapes))


NESTED = {"a": {"b": {"c": 1}}}
#: One change to a valid event at a time: each bound of the fast path, on both of its sides.
CHANGES: list[dict[str, Any]] = [
    {"id": ""},
    {"id": "i" * 64},
    {"id": "i" * 65},
    {"id": 1},
    {"name": "sq.other"},
    {"name": "a\x00b"},
    {"name": "n" * 256},
    {"name": "login\ud800"},
    {"timestamp": "2024-01-01T00:00:00Z"},
    {"timestamp": "2024-02-30T00:00:00.000000Z"},
    {"timestamp": 0},
    {"extra": 1},
    {"properties": {f"k{i}": i for i in range(16)}},
    {"properties": {f"k{i}": i for i in range(17)}},
    {"properties": {"": 1}},
    {"properties": {"k" * 128: 1}},
    {"properties": {"k" * 129: 1}},
    {"properties": {"k\ud800": 1}},
    {"properties": {"s": "v" * 4096}},
    {"properties": {"s": "v" * 4097}},
    {"properties": {"s": "\udfff"}},
    {"properties": {f"k{i}": "v" * 3000 for i in range(10)}},  # large: the exact checks
    # 16 000 characters by the estimate, 96 000 in JSON (each \x00 written \u0000)
    {"properties": {f"k{i}": "\x00" * 1000 for i in range(16)}},
    {"properties": {"i": 2**63 - 1, "j": -(2**63)}},
    {"properties": {"i": 2**63}},
    {"properties": {"i": 2**64 - 1}},
    {"properties": {"i": 2**64}},
    {"properties": {"i": -(2**64)}},
    {"properties": {"f": 1e308, "g": -0.0, "h": 1e16}},
    {"properties": {"d": NESTED}},
    {"properties": {"d": {"x": NESTED}}},
    {"properties": {"l": [[[1]]]}},
    {"properties": {"l": [[[[1]]]]}},
    {"properties": {"l": list(range(256))}},
    {"properties": {"l": list(range(257))}},
    {"properties": {"d": {"k" * 129: 1}}},
    {"properties": {"d": {"": 1}}},
    {"properties": {"d": ["v" * 4097]}},
    {"properties": []},
    {"properties": 0},
    {"properties": "p"},
    {"user": {}},
    {"user": {"": "x"}},
    {"user": {"a": ""}},
    {"user": {"a": "x" * 256}},
    {"user": {"a": "x" * 257}},
    {"user": {"a": "\ud800"}},
    {"user": {f"id{i}": "x" for i in range(16)}},
    {"user": {f"id{i}": "x" for i in range(17)}},
    {"user": {"a": 1, "b": True, "c": 1.5}},
    {"user": {"a": None}},
    {"name": IDENTIFY, "user": None},
    {"name": IDENTIFY, "user": {}},
    {"target": {"id": "t", "type": "doc", "name": "n" * 256}},
    {"target": {"id": ""}},
    {"target": {"id": 1}},
    {"target": {"id": "t", "other": 1}},
    {"target": {"type": "doc"}},
    {"target": {"id": "t", "type": None}},
    {"target": {"id": "t" * 257}},
    {"request": {}},
    {"request": {"cookies": "c"}},
    {"request": {"ip": 1}},
    {"request": {"user_agent": "u" * 8192}},
    {"request": {"user_agent": "u" * 8193}},
    {"request": {"path": "/\ud800"}},
    {"request": {"params": None}},
    {"request": {"params": []}},
    {"request": {"params": {"k\ud800": ["\ud800"]}}},
    {"request": {"body": {"content": 1}}},
    {"request": {"body": {"content": "x", "truncated": 1}}},
    {"request": {"body": {"content": "x", "extra": 1}}},
    {"request": {"body": "x"}},
    {"request": "GET /"},
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda change: repr(change)[:60])
@pytest.mark.parametrize("ascii_escapes", [True, False])
def test_fast_parse_gives_what_the_usual_parse_gives_for_each_change(
    change: dict[str, Any], ascii_escapes: bool
) -> None:
    assert_same(encode(envelope([wire_event(**change)]), ascii_escapes))
    assert_same(encode(envelope([wire_event(), wire_event(**change)]), ascii_escapes))


#: Whole bodies at the edges (their events carry a recent time: ids by position).
EDGES: list[bytes] = [
    b"[]",
    b'{"events": []}',
    b'{"events": [], "x": "\xff"}',  # msgspec skips an unknown field without reading it
    b'{"events": [], "x": "\xed\xa0\x80"}',
    b'\xef\xbb\xbf{"events": []}',
    b'{"events": [], "events": {}}',
    b'{"events": [{"id": "a", "id": "b", "name": "x", "timestamp": "%s"}]}' % recent().encode(),
    b'{"events": [{"id": "a", "name": "x", "timestamp": "%s", "properties": {"a": 1e400}}]}'
    % recent().encode(),
    encode(envelope([wire_event() for _ in range(1001)])),
    encode(envelope([wire_event(properties={"n": {"a": {"b": {"c": [1]}}}})])),
    encode(envelope([wire_event(properties={"n": [[[1]]], "m": [[[[1]]]]})])),
    encode(envelope([wire_event(properties={f"k{i}": "v" * 4096 for i in range(16)})])),
    encode(envelope([wire_event(properties={"l": [1] * 256, "m": [[1] * 256] * 40})])),
    encode(envelope([wire_event(request={"params": {"p": "x" * 300_000}})])),
]


@pytest.mark.parametrize("body", EDGES, ids=[f"edge{i}" for i in range(len(EDGES))])
def test_fast_parse_gives_what_the_usual_parse_gives_at_the_edges(body: bytes) -> None:
    assert_same(body)
