"""A request's parameters parsed and scrubbed in one pass are what parsing, then scrubbing,
gave: the same keys in the same order, the same values, the same redactions."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqreen._config import Config
from sqreen._params import scrubbed_params
from sqreen._request import RequestSnapshot
from sqreen._scrub import Scrubber
from sqreen._wire import encode_request

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


# -- multipart: text fields as a form's, bounded, on hostile bodies ------------------------------

MP = "multipart/form-data; boundary=b"


def _part(name: bytes, value: bytes, extra: bytes = b"") -> bytes:
    return (
        b'--b\r\nContent-Disposition: form-data; name="'
        + name
        + b'"'
        + extra
        + b"\r\n\r\n"
        + value
        + b"\r\n"
    )


def test_multipart_text_fields_are_kept_and_files_never() -> None:
    from sqreen._request_params import parse_body

    body = (
        _part(b"username", b"alice")
        + _part(b"avatar", b"\x00SECRET-FILE", b'; filename="me.png"\r\nContent-Type: image/png')
        + _part(b"note", b"plain", b"\r\nContent-Type: text/plain; charset=utf-8")
        + _part(b"blob", b"{}", b"\r\nContent-Type: application/json")
        + _part(b"tag", b"a")
        + _part(b"tag", b"b")
        + b"--b--\r\n"
    )
    assert parse_body(body, MP, False) == {
        "username": "alice",
        "avatar": "[multipart]",
        "note": "plain",
        "blob": "[multipart]",
        "tag": ["a", "b"],
    }


def test_multipart_fields_are_scrubbed_like_form_fields() -> None:
    from sqreen._config import Config
    from sqreen._request import RequestSnapshot

    body = (
        _part(b"password", b"hunter2")
        + _part(b"comment", b"token=sk_live_abcdefghijklmnop1234")
        + b"--b--"
    )
    snapshot = RequestSnapshot("POST", "/", b"", None, None, None, MP, body_chunks=(body,))
    config = Config.resolve({})
    params = config.scrubber.scrub(snapshot.params(body, MP))
    assert params["password"] == "[redacted]"
    assert "sk_live_abcdefghijklmnop1234" not in str(params)


def test_multipart_hostile_bodies_stay_bounded() -> None:
    import time

    from sqreen._request_params import MAX_PARAMS, parse_body

    started = time.perf_counter()
    many = b"".join(_part(f"f{i}".encode(), b"v") for i in range(10_000)) + b"--b--"
    parsed = parse_body(many, MP, False)
    assert len(parsed) == MAX_PARAMS  # 256 parts read at most, 64 names kept
    same = b"".join(_part(b"x", b"v") for i in range(10_000))
    assert len(parse_body(same, MP, False)["x"]) == MAX_PARAMS
    huge = "multipart/form-data; boundary=" + "b" * 10_000
    assert parse_body(_part(b"user", b"alice"), huge, False) == {"user": "[multipart]"}
    assert parse_body(_part(b"user", b"alice"), "multipart/form-data", False) == {
        "user": "[multipart]"  # names only, as before, when the boundary is missing
    }
    endless = b'--b\r\nContent-Disposition: form-data; name="h"\r\n' + b"X: y\r\n" * 20_000
    assert parse_body(endless, MP, False) == {"h": "[multipart]"}  # headers never end: names
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"no delimiter at all", {}),
        (b"--b\r\n\r\nno headers\r\n--b--", {}),
        (b"--b\r\nContent-Type: text/plain\r\n\r\nno disposition\r\n--b--", {}),
        (_part(b"\xff\xfename", b"v") + b"--b--", {"\ufffd\ufffdname": "v"}),
        (_part(b"n", b"caf\xe9") + b"--b--", {"n": "caf\xe9"}),  # latin-1 when not UTF-8
        (_part(b"a;b", b"v") + b"--b--", {"a;b": "v"}),
        (_part(b"n", b"x" * 5000) + b"--b--", {"n": "[multipart]"}),  # longer than a field
        (_part(b"n", b"v") + _part(b"cut", b"half a val"), {"n": "v", "cut": "[truncated]"}),
        (
            _part(
                b"outer",
                b'--c\r\nContent-Disposition: form-data; name="inner"\r\n\r\nx\r\n--c--',
                b"\r\nContent-Type: multipart/mixed; boundary=c",
            )
            + b"--b--",
            {"outer": "[multipart]"},  # nested: never parsed
        ),
        (
            b'--b\r\nContent-Disposition: attachment; name="n"\r\n\r\nv\r\n--b--',
            {},  # not form-data
        ),
    ],
)
def test_multipart_malformed_parts(body: bytes, expected: dict[str, Any]) -> None:
    from sqreen._request_params import parse_body

    got = parse_body(body, MP, False)
    assert got == expected or (not got and not expected)


def test_a_json_body_nested_deeper_than_python_reads_keeps_its_event() -> None:
    """json.loads raises RecursionError (not ValueError) past the interpreter's limit, which
    the flusher's own frames lower: the event keeps its request, with no parameters."""
    body = ('{"a":' * 300 + "1" + "}" * 300).encode()
    snapshot = RequestSnapshot(
        "POST", "/p", "", "1.2.3.4", "ua", None, "application/json", body_chunks=(body,)
    )

    def deep(frames: int) -> Any:
        if frames:
            return deep(frames - 1)
        return encode_request(snapshot, Config(), True)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)  # 300 levels of JSON do not fit above 200 frames
    try:
        request = deep(200)
    finally:
        sys.setrecursionlimit(limit)
    assert request["params"] == {} and request["path"] == "/p"


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=----WebKitFormBoundaryX3eRtYz9aBcD",  # Chrome, Safari
        "Multipart/Form-Data; BOUNDARY=----WebKitFormBoundaryX3eRtYz9aBcD",
        'multipart/form-data; boundary="----WebKitFormBoundaryX3eRtYz9aBcD"',
    ],
)
def test_a_multipart_boundary_is_matched_as_sent_whatever_its_case(content_type: str) -> None:
    """The type is case-insensitive, the boundary is not (RFC 2046): lowered with the rest
    of the header, it matched nothing and every text field was recorded as ``[multipart]``."""
    boundary = b"----WebKitFormBoundaryX3eRtYz9aBcD"
    body = (
        b"".join(
            b"--"
            + boundary
            + b'\r\nContent-Disposition: form-data; name="'
            + name
            + b'"\r\n\r\n'
            + value
            + b"\r\n"
            for name, value in (
                (b"username", b"alice"),
                (b"password", b"hunter2"),
                (b"note", b"hi"),
            )
        )
        + b"--"
        + boundary
        + b"--\r\n"
    )
    snapshot = RequestSnapshot(
        "POST",
        "/login",
        b"",
        "198.51.100.1",
        None,
        None,
        content_type.encode(),
        body_chunks=(body,),
    )
    wire = encode_request(snapshot, Config.resolve({}), collect_body=True)
    assert wire["params"] == {"username": "alice", "password": "[redacted]", "note": "hi"}
    assert wire["body"] is not None
    assert wire["body"]["content"] == "[multipart: username, password, note]"
