"""Bad input to track(): a clear InvalidEvent in strict mode, else one log line and a count."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqreen


def _cycle() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["self"] = d
    return d


# (id, track kwargs, field in the message, rule): nothing to record, the event is dropped.
DROPPED: list[tuple[str, dict[str, Any], str, str]] = [
    ("name-type", {"event_name": 42}, "name", "type"),
    ("name-none", {"event_name": None}, "name", "type"),
    ("name-empty", {"event_name": ""}, "name", "empty"),
    ("name-reserved", {"event_name": "sq.internal"}, "name", "reserved"),
]

# Kept in production with the offending part fixed (and one log line); strict mode raises.
FIXED: list[tuple[str, dict[str, Any], str, str]] = [
    ("name-long", {"event_name": "a" * 256}, "name", "too_long"),
    ("name-control", {"event_name": "login\x00failed"}, "name", "charset"),
    ("name-bidi", {"event_name": "login\u202efailed"}, "name", "charset"),
    ("name-surrogate", {"event_name": "login\ud800"}, "name", "charset"),
    ("props-type", {"properties": ["a"]}, "properties", "type"),
    ("props-17", {"properties": {f"k{i}": i for i in range(17)}}, "properties", "max_properties"),
    ("props-object", {"properties": {"when": object()}}, "properties.when", "type"),
    ("props-bytes", {"properties": {"raw": b"\xff\xfe"}}, "properties.raw", "bytes_not_utf8"),
    ("props-nan", {"properties": {"score": math.nan}}, "properties.score", "not_finite"),
    ("props-inf", {"properties": {"score": math.inf}}, "properties.score", "not_finite"),
    ("props-huge-int", {"properties": {"n": 10**40}}, "properties.n", "int_too_large"),
    ("props-cycle", {"properties": {"loop": _cycle()}}, "properties.loop", "too_deep"),
    (
        "props-deep",
        {"properties": {"a": {"b": {"c": {"d": {"e": 1}}}}}},
        "properties.a.b.c.d",
        "too_deep",
    ),
    ("props-list-long", {"properties": {"l": list(range(300))}}, "properties.l", "too_many_items"),
    ("props-key-type", {"properties": {(1, 2): "x"}}, "properties", "key_type"),
    ("props-key-empty", {"properties": {"": "x"}}, "properties", "key_length"),
    ("props-key-long", {"properties": {"k" * 200: "x"}}, "properties", "key_length"),
    ("props-str-long", {"properties": {"s": "x" * 4097}}, "properties.s", "value_too_long"),
    (
        "props-oversize",
        {"properties": {f"k{i}": ["x" * 4000] * 2 for i in range(16)}},
        "properties",
        "event_too_large",
    ),
    ("user-type", {"user_identifiers": "42"}, "user_identifiers", "type"),
    ("user-none", {"user_identifiers": {"uid": None}}, "user_identifiers.uid", "value_type"),
    ("user-nested", {"user_identifiers": {"uid": {"a": 1}}}, "user_identifiers.uid", "value_type"),
    ("user-empty", {"user_identifiers": {"uid": ""}}, "user_identifiers.uid", "value_length"),
    ("ts-type", {"timestamp": "2018-03-15"}, "timestamp", "type"),
    ("ts-epoch", {"timestamp": 1521121320}, "timestamp", "type"),
    ("ts-range", {"timestamp": datetime(1969, 12, 31, tzinfo=UTC)}, "timestamp", "range"),
    ("ts-far", {"timestamp": datetime(9999, 1, 1)}, "timestamp", "range"),
    # Later than this host's clock by more than a few minutes: a local time passed as UTC.
    ("ts-future", {"timestamp": datetime.now(UTC) + timedelta(days=3650)}, "timestamp", "future"),
    ("target-type", {"target": "doc-1"}, "target", "type"),
    ("target-keys", {"target": {"id": "1", "owner": "x"}}, "target", "keys"),
    ("target-no-id", {"target": {"type": "doc"}}, "target.id", "missing"),
    ("request-type", {"request": 42}, "request", "type"),
    ("options-type", {"options": ["properties"]}, "options", "type"),
    ("options-key", {"options": {"propertys": {}}}, "options", "unknown_key"),
]

# Lossless conversions: the same event in both modes, nothing logged.
CONVERTED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # (id, track kwargs, expected subset of the wire event)
    ("props-set", {"properties": {"tags": {2, 1}}}, {"properties": {"tags": [1, 2]}}),
    ("props-bytes-utf8", {"properties": {"raw": b"x"}}, {"properties": {"raw": "x"}}),
    ("props-int-key", {"properties": {1: "x"}}, {"properties": {"1": "x"}}),
    # (JSON's spellings, as json.dumps writes a dict's keys: str(True) was "True")
    ("props-bool-key", {"properties": {True: "x"}}, {"properties": {"true": "x"}}),
    ("props-inf-key", {"properties": {math.inf: "x"}}, {"properties": {"Infinity": "x"}}),
    ("user-float", {"user_identifiers": {"uid": 4.2}}, {"user": {"uid": "4.2"}}),
    ("collect-body", {"collect_body": "yes"}, {}),
]


def _call(kwargs: dict[str, Any]) -> bool:
    kwargs = {"event_name": "my.event", **kwargs}
    return sqreen.track(kwargs.pop("event_name"), kwargs.pop("options", None), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [b[1:] for b in DROPPED + FIXED],
    ids=[b[0] for b in DROPPED + FIXED],
)
def test_strict_mode_raises_naming_field_and_rule(
    kwargs: dict[str, Any], field: str, rule: str
) -> None:
    sqreen.init(transport="memory:", strict=True)
    with pytest.raises(sqreen.InvalidEvent) as info:
        _call(kwargs)
    assert info.value.rule == rule
    assert str(info.value).startswith(field)
    assert info.value.field.startswith(field)


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"), [b[1:] for b in DROPPED], ids=[b[0] for b in DROPPED]
)
def test_production_mode_drops_what_it_cannot_name_logs_once_and_counts(
    kwargs: dict[str, Any], field: str, rule: str, sqreen_log: pytest.LogCaptureFixture
) -> None:
    client = sqreen.init(transport="memory:")
    for _ in range(3):
        assert _call(kwargs) is False
    assert sqreen.track("ok.event") is True
    assert sqreen.flush(timeout=5)
    logged = [r for r in sqreen_log.records if "dropped" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert field in logged[0].getMessage()
    stats = client.stats()
    assert stats["dropped"]["invalid"] == 3
    assert [e["name"] for e in client.transport.events] == ["ok.event"]


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"), [b[1:] for b in FIXED], ids=[b[0] for b in FIXED]
)
def test_production_mode_keeps_the_event_logs_once_and_counts(
    kwargs: dict[str, Any], field: str, rule: str, sqreen_log: pytest.LogCaptureFixture
) -> None:
    client = sqreen.init(transport="memory:")
    for _ in range(3):
        assert _call(kwargs) is True
    assert sqreen.flush(timeout=5)
    logged = [r for r in sqreen_log.records if "kept, adjusted" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert field in logged[0].getMessage()
    stats = client.stats()
    assert stats["adjusted"] == 3 and stats["sent"] == 3
    assert stats["dropped"]["invalid"] == 0
    from sqreen._wire import parse_event

    for event in client.transport.events:  # what was kept is what the collector accepts
        parse_event(event)


def test_each_argument_s_problem_is_logged_even_when_another_of_the_rule_was(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    """Logged once per (event, argument, rule): a wrong type for the properties does not hide
    one for the user's identifiers or the timestamp of the same event, nor identify()'s
    traits its identifiers; each is said once however often it repeats."""
    sqreen.init(transport="memory:")
    for _ in range(3):
        sqreen.identify({"username": "t"}, "traits")  # type: ignore[arg-type]
        sqreen.identify("bob")  # type: ignore[arg-type]
        sqreen.track("a.b", {"properties": "x"})
        sqreen.track("a.b", {"user_identifiers": "x"})
        sqreen.track("a.b", {"timestamp": "x"})
    said = [r.getMessage() for r in sqreen_log.records if r.name == "sqreen"]
    for field in ("traits", "user_identifiers", "properties", "timestamp"):
        assert sum(f" {field}: " in m or f" {field}." in m for m in said) >= 1, (field, said)
    assert len(said) == len(set(said)) == 5, said


@pytest.mark.parametrize(
    ("kwargs", "expected"), [c[1:] for c in CONVERTED], ids=[c[0] for c in CONVERTED]
)
@pytest.mark.parametrize("strict", [False, True])
def test_lossless_conversions_in_both_modes(
    kwargs: dict[str, Any], expected: dict[str, Any], strict: bool
) -> None:
    client = sqreen.init(transport="memory:", strict=strict)
    assert _call(kwargs) is True
    assert sqreen.flush(timeout=5)
    (event,) = client.transport.events
    for key, value in expected.items():
        assert event[key] == value
    assert client.stats()["adjusted"] == 0


def test_properties_are_copied_so_later_mutation_does_not_leak() -> None:
    client = sqreen.init(transport="memory:")
    props: dict[str, Any] = {"tags": ["a"], "nested": {"k": "v"}}
    sqreen.track("my.event", properties=props)
    props["tags"].append("b")
    props["nested"]["k"] = "changed"
    props["added"] = 1
    sqreen.flush(timeout=5)
    assert client.transport.events[0]["properties"] == {"tags": ["a"], "nested": {"k": "v"}}


def test_accepted_shapes() -> None:
    client = sqreen.init(transport="memory:", strict=True)
    past = datetime(2018, 3, 15, 14, 42, tzinfo=timezone(timedelta(hours=1)))
    assert sqreen.track(
        "auth.login.failure",
        properties={
            f"p{i}": v
            for i, v in enumerate(["s", 1, 2.5, True, None, [1, "a"], {"a": {"b": [1]}}] * 2)
        },
        user_identifiers={"uid": 42, "email": "a@example.com"},
        timestamp=past,
        target={"id": "doc-1", "type": "document", "name": "Q3"},
    )
    assert sqreen.track("naive.ts", timestamp=datetime(2018, 3, 15, 13, 42))
    sqreen.flush(timeout=5)
    first, second = client.transport.events
    assert first["timestamp"] == "2018-03-15T13:42:00.000000Z"
    assert second["timestamp"] == "2018-03-15T13:42:00.000000Z"  # naive is UTC
    assert first["user"] == {"uid": "42", "email": "a@example.com"}
    assert first["target"] == {"id": "doc-1", "type": "document", "name": "Q3"}
    assert len(first["properties"]) == 14


@pytest.mark.parametrize(
    ("ahead", "said"),
    [
        (timedelta(days=3650), "3650 days"),
        (timedelta(hours=3), "3 hours"),
        (timedelta(minutes=12), "12 minutes"),
        (timedelta(seconds=320), "320 seconds"),  # not "5 minutes": the slack is 5
    ],
)
def test_a_timestamp_ahead_of_the_clock_takes_the_current_time_and_says_by_how_much(
    ahead: timedelta, said: str, sqreen_log: pytest.LogCaptureFixture
) -> None:
    """The collector would store it at its arrival anyway: the SDK says so where it is
    tracked (a naive local time east of UTC is hours ahead), and raises in strict mode."""
    client = sqreen.init(transport="memory:")
    before = datetime.now(UTC)
    assert sqreen.track("late.ts", timestamp=datetime.now(UTC) + ahead)
    assert sqreen.track("in.slack", timestamp=before + timedelta(minutes=4))  # clocks differ
    sqreen.flush(timeout=5)
    late, in_slack = (datetime.fromisoformat(e["timestamp"]) for e in client.transport.events)
    assert before <= late <= datetime.now(UTC)
    assert in_slack == before + timedelta(minutes=4)
    (line,) = [r.getMessage() for r in sqreen_log.records if "kept, adjusted" in r.getMessage()]
    assert f"timestamp: {said} later than this host's clock" in line
    assert client.stats()["adjusted"] == 1


def test_default_timestamp_is_now() -> None:
    client = sqreen.init(transport="memory:")
    before = datetime.now(UTC)
    sqreen.track("x")
    sqreen.flush(timeout=5)
    ts = datetime.fromisoformat(client.transport.events[0]["timestamp"])
    assert abs((ts - before).total_seconds()) < 60


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=50),
    st.binary(max_size=5),
)
anything = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.one_of(st.text(max_size=300), st.integers(), st.none()),
    properties=st.one_of(
        st.none(), anything, st.dictionaries(st.text(max_size=130), anything, max_size=20)
    ),
    user=st.one_of(
        st.none(),
        anything,
        st.dictionaries(st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers())),
    ),
)
def test_fuzz_track_never_raises_in_production_and_only_invalid_event_in_strict(
    name: Any, properties: Any, user: Any
) -> None:
    client = sqreen.init(transport="memory:")
    accepted = client.track(name, None, properties, user)
    assert isinstance(accepted, bool)
    # Production drops an event only when its name leaves nothing to record.
    assert accepted == (isinstance(name, str) and bool(name) and not name.startswith("sq."))
    strict = sqreen.init(transport="memory:", strict=True)
    try:
        strict_accepted = strict.track(name, None, properties, user)
    except sqreen.InvalidEvent as exc:
        assert exc.field and exc.rule
        strict_accepted = False
    if strict_accepted:  # then nothing needed fixing, and production sent the same
        assert accepted
        assert client.flush(5) and strict.flush(5)
        mine, theirs = client.transport.events[0], strict.transport.events[0]
        assert (mine["properties"], mine["user"]) == (theirs["properties"], theirs["user"])
    stats = client.stats()
    assert stats["tracked"] == 1
    assert stats["dropped"]["invalid"] == (0 if accepted else 1)


def test_the_collector_stores_what_track_accepts_at_the_size_limit() -> None:
    """Sizes are counted in characters on both sides: non-ASCII text is not penalised by
    the collector for its escaped form (a 6x blow-up that once made it refuse such events)."""
    from sqreen._wire import parse_event

    client = sqreen.init(transport="memory:", strict=True)
    big = {f"k{i:02}": "é" * 3950 for i in range(16)}  # about 63 500 characters
    assert client.track("big.event", properties=big)
    with pytest.raises(sqreen.InvalidEvent) as exc:
        client.track("big.event", properties={k: "é" * 4096 for k in big})
    assert exc.value.rule == "event_too_large"
    assert client.flush()
    sent = client.transport.events  # type: ignore[attr-defined]
    assert [e["properties"] for e in sent] == [big]
    assert parse_event(sent[0])["properties"] == big
    over = {**sent[0], "properties": {k: "é" * 4096 for k in big}}  # 65 700 characters
    with pytest.raises(sqreen.InvalidEvent) as exc:
        parse_event(over)
    assert (exc.value.field, exc.value.rule) == ("properties", "event_too_large")
