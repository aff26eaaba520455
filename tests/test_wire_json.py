"""The wire's bytes are the same with the ``speedups`` extra's C encoder (``msgspec``) and
without it, for any value a wire dict can hold once scrubbed: hostile strings (control
characters, quotes, backslashes, DEL, U+2028, non-ASCII, lone surrogates), integers past 64
bits, floats in every notation, and the NaN and infinities a client's JSON body may hold
(written as null: the wire is strict JSON)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sqreen
from sqreen._context import RequestContext, current_request
from sqreen._json import ReprFloat, dumps_utf8, use_speedups, wire_bytes, wire_float
from sqreen._scrub import Scrubber
from sqreen.transports.base import NullTransport, Reply

pytest.importorskip("msgspec")

SCRUBBER = Scrubber((), ())


def _pure(value: Any) -> bytes:
    previous = use_speedups(False)
    try:
        return wire_bytes(value)
    finally:
        use_speedups(previous)


@pytest.fixture(autouse=True)
def _speedups_on() -> Iterator[None]:
    previous = use_speedups(True)
    yield
    use_speedups(previous)


# Every character class the two encoders could write differently, surrogates included.
HOSTILE = st.text(
    alphabet=st.one_of(
        st.characters(max_codepoint=0x7F),
        st.sampled_from('"\\/\x00\x1f\x7f\u2028\u2029\ufeff\ud800\udfff\U0001f600é'),
        st.characters(),
    ),
    max_size=30,
)
EDGES = [1e16, 9999999999999998.0, 1e-4, 9.999999999999999e-05, 1e-5, 1.5e-7, 1e22, 5e-324]
FLOATS = st.floats() | st.sampled_from(EDGES + [-x for x in EDGES] + [0.0, -0.0])
INTEGERS = st.integers() | st.integers(-(2**70), 2**70)
SCALARS = HOSTILE | INTEGERS | FLOATS | st.booleans() | st.none()
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=120, deadline=None)
@given(st.dictionaries(HOSTILE, VALUES, max_size=5))
def test_scrubbed_values_have_the_same_bytes_both_ways(value: dict[str, Any]) -> None:
    for scrubbed in (SCRUBBER.scrub(value), SCRUBBER.scrub_properties(value)):
        assert wire_bytes(scrubbed) == _pure(scrubbed)


@settings(max_examples=300, deadline=None)
@given(FLOATS)
def test_floats_the_c_encoder_writes_otherwise_are_marked(x: float) -> None:
    marked = wire_float(x)
    if not math.isfinite(x):  # JSON has no token for them: null, never NaN or Infinity
        assert marked is None
        return
    assert marked == x
    if type(marked) is float:  # left to the C encoder: written as Python writes it
        assert wire_bytes([marked]) == f"[{x!r}]".encode()
    else:
        assert type(marked) is ReprFloat
        assert wire_bytes([marked]) == _pure([x]) == dumps_utf8([x]).encode()


class Recorder(NullTransport):
    def __init__(self) -> None:
        self.events: list[bytes] = []

    def send(self, envelope: Any, events: list[bytes], timeout: float | None = None) -> Reply:
        self.events.extend(events)
        return Reply("ok")


class Body:
    def capture(self) -> tuple[tuple[bytes, ...], bool]:
        return (b'{"a": NaN, "b": [Infinity, 1e400, 1e16, 0.5]}',), False


@pytest.mark.parametrize("speedups", [True, False])
def test_floats_through_track_and_the_flusher(speedups: bool) -> None:
    """Through the real path (track, the queue, the flusher's encoding): every float as
    Python writes it, and the body's NaN and infinities as null. They were written as
    ``NaN`` and ``Infinity``, which the collector refused with the whole batch: one such
    request a batch hid every other event of the app from the playbooks."""
    use_speedups(speedups)
    recorder = Recorder()
    client = sqreen.init(transport=recorder)  # type: ignore[arg-type]
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/pay",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "192.0.2.1",
        "CONTENT_TYPE": "application/json",
    }
    token = current_request.set(RequestContext(client, "wsgi", environ, body=Body()))
    try:
        client.track("pay", properties={"amount": 1e16, "small": [1e-5, 0.25], "n": 2**70})
    finally:
        current_request.reset(token)
    assert client.flush(timeout=10)
    sqreen.shutdown(timeout=1)
    (data,) = recorder.events
    event = json.loads(data)
    assert b'"amount":1e+16,"small":[1e-05,0.25]' in data
    assert b'"params":{"a":null,"b":[null,null,1e+16,0.5]}' in data
    json.loads(data, parse_constant=_refused)  # strict JSON: what any collector reads
    assert event["properties"]["amount"] == 1e16


def _refused(name: str) -> None:
    raise AssertionError(f"{name} on the wire")
