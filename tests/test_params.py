"""A request's parameters parsed and scrubbed in one pass are what parsing, then scrubbing,
gave: the same keys in the same order, the same values, the same redactions."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from sqreen._params import scrubbed_params
from sqreen._request import RequestSnapshot
from sqreen._scrub import Scrubber

FORM = "application/x-www-form-urlencoded"
KEYS = st.sampled_from(
    [
        "next",
        "lang",
        "username",
        "password",
        "api_key",
        "name",
        "value",
        "f[0][name]",
        "f[0][value]",
        "f.0.key",
        "f.0.value",
        "k" * 130,
        "",
        "a+b",
        "%70assword",
        "eyJhbGciOiJIUzI1NiJ9",
    ]
)
VALUES = st.sampled_from(
    [
        "",
        "alice",
        "password",
        "%2Fhome",
        "4111 1111 1111 1111",
        "4111+1111+1111+1111",
        "Bearer abc.def",
        "v" * 4100,
        "a=b",
        "%ZZ",
        "caf%C3%A9",
    ]
)
PAIRS = st.lists(st.tuples(KEYS, VALUES), max_size=8)
SCRUBBERS = (Scrubber(), Scrubber(["remember"], [r"ali\w+", "on"]))


def _text(pairs: list[tuple[str, str]], glue: str) -> str:
    return glue.join(f"{k}={v}" if v or k else k for k, v in pairs)


def _both(query: str, body: bytes, ctype: str, scrubber: Scrubber) -> None:
    snapshot = RequestSnapshot("POST", "/", query, None, None, None, ctype)
    want = scrubber.scrub(snapshot.params(body, ctype))
    got = scrubbed_params(snapshot, scrubber, body, ctype)
    assert list(got.items()) == list(want.items())


@settings(max_examples=300, deadline=None)
@given(query=PAIRS, form=PAIRS, glue=st.sampled_from(["&", "&&"]), which=st.sampled_from([0, 1]))
def test_one_pass_is_parse_then_scrub(
    query: list[tuple[str, str]], form: list[tuple[str, str]], glue: str, which: int
) -> None:
    qs, body = _text(query, glue), _text(form, glue).encode("utf-8")
    _both(qs, body, FORM, SCRUBBERS[which])
    _both(qs.encode("latin-1", "replace"), b"", FORM, SCRUBBERS[which])  # a query as bytes
    _both(qs, json.dumps(dict(form)).encode(), "application/json", SCRUBBERS[which])


def test_examples() -> None:
    scrubber = Scrubber()
    snapshot = RequestSnapshot("POST", "/", "next=%2Fhome&lang=en", None, None, None, FORM)
    body = b"username=alice&password=hunter2&remember=on&card=4111111111111111"
    assert scrubbed_params(snapshot, scrubber, body, FORM) == {
        "next": "/home",
        "lang": "en",
        "username": "alice",
        "password": "[redacted]",
        "remember": "on",
        "card": "[redacted]",
    }
    # A repeated key (a list) and a value naming a secret take the two steps: the same result.
    body = b"a=1&a=2&f[0][name]=password&f[0][value]=hunter2"
    assert scrubbed_params(snapshot, scrubber, body, FORM) == {
        "next": "/home",
        "lang": "en",
        "a": ["1", "2"],
        "f[0][name]": "password",
        "f[0][value]": "[redacted]",
    }
    many = "&".join(f"k{i}={i}" for i in range(70)).encode()
    assert len(scrubbed_params(snapshot, scrubber, many, FORM)) == 64
