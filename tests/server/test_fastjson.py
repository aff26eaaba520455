"""The collector's C JSON (server/fastjson.py) gives what the standard library gives: the same
values, the same refusals, and stored text that reads back as the same value."""

from __future__ import annotations

import json

import pytest

from sqreen._json import dumps_ascii as std_dumps_ascii
from sqreen._json import dumps_utf8 as std_dumps_utf8
from sqreen._wire import parse_event
from sqreen.server import fastjson
from sqreen.server.errors import ApiError
from sqreen.server.ingest import parse_json

BODIES = [
    b'{"events": [{"id": "a", "n": 1.5, "big": 123456789012345678901234567890}]}',
    b'{"a": "\\ud800 lone"}',  # msgspec refuses lone surrogate escapes: json.loads does not
    b'{"a": "\xed\xa0\x80"}',  # nor their UTF-8 bytes
    b'\xef\xbb\xbf{"bom": true}',
    b'{"a": 1, "a": 2}',
    b'{"a": "x\\u0000y", "b": "\\u00e9\xc3\xa9"}',
    b"[" * 500 + b"]" * 500,
    b' {"a": -0, "b": 1E2} ',
]
#: Bodies C refuses and json.loads too, with the messages the collector answered before.
REFUSED = [
    (b'{"a": NaN}', "malformed JSON: NaN is not JSON"),
    (b'{"a": Infinity}', "malformed JSON: Infinity is not JSON"),
    (b'{"a": 1} x', "malformed JSON: Extra data: line 1 column 10 (char 9)"),
    (b'{"a": "\xff"}', "malformed JSON: 'utf-8' codec can't decode byte 0xff in position 7"),
    (
        b"[" * 100_000 + b"]" * 100_000,
        "malformed JSON: nested too deeply to read (an event's properties nest 3 levels at "
        "most): no event of this body was stored",
    ),
    (b'{"a": ' + b"9" * 5000 + b"}", "malformed JSON: Exceeds the limit (4300 digits)"),
]


@pytest.mark.parametrize("body", BODIES)
def test_loads_gives_what_json_loads_gives(body: bytes) -> None:
    assert repr(fastjson.loads(body)) == repr(json.loads(body))


@pytest.mark.parametrize(("body", "message"), REFUSED)
def test_what_parse_json_refuses_it_still_refuses_with_the_same_message(
    body: bytes, message: str
) -> None:
    with pytest.raises(ApiError) as refused:
        parse_json(body)
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [True, False, None], "c": {"d": 'e\n\t"\\'}},
        {"float": 1e16, "small": 1e-7, "neg": -0.0, "int": 2**70},
        {"text": "é \u2028 \ud800 \x7f \x01"},
        {},
    ],
)
def test_dumps_ascii_is_ascii_json_of_the_same_value(value: object) -> None:
    text = fastjson.dumps_ascii(value)
    assert text.isascii()
    assert repr(json.loads(text)) == repr(value)
    if "text" in value:  # type: ignore[operator]
        assert text == std_dumps_ascii(value)  # not ASCII in C: the standard encoder


@pytest.mark.parametrize(
    "value",
    [
        {"ip": "10.0.0.1", "params": {"a": [1e16, 1e-7, 0.1, 100000.0]}},
        [{"k": "é"}, None, None],  # not ASCII: the standard text
        {"a": "\ud800"},  # a lone surrogate: the standard text
        {"floats": [1e16] * 20_000},  # long: the standard text
        {"floats": [1e16] * 2_000},
    ],
)
def test_measure_gives_the_verdicts_of_dumps_utf8(value: object) -> None:
    exact = std_dumps_utf8(value)
    text = fastjson.measure(value)
    assert text == exact or (text.isascii() and exact.isascii() and len(exact) < 8 * len(text))
    if len(text) * 8 > 64 * 1024 or not exact.isascii():
        assert text == exact


def test_a_request_over_the_size_limit_by_its_floats_is_cut_as_before() -> None:
    # Written by C, 5 characters a float (1e16): under the 256 KiB a request may take; by
    # json, 6 (1e+16): over it, so its largest parameter is replaced by a note of its size.
    raw = {
        "id": "x",
        "name": "signup",
        "timestamp": "2026-01-01T00:00:00.000000Z",
        "request": {"params": {"p": [1e16] * 48_000, "q": "kept"}},
    }
    event = parse_event(raw, fastjson.measure)
    assert event == parse_event(raw)
    assert event["request"] is not None and event["request"]["params"]["q"] == "kept"
    assert str(event["request"]["params"]["p"]).endswith("characters of JSON")
