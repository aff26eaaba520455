"""The fast query-string parser and encoder give what urllib.parse gives, for any text."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from sqreen._query import encode_pairs, parse_pairs
from sqreen._request import RequestSnapshot

#: Characters that matter to a query string, and any other.
PIECES = st.sampled_from(
    [
        "&",
        "=",
        "+",
        "%",
        "%2",
        "%41",
        "%e9",
        "%C3%A9",
        "%ZZ",
        ";",
        "[",
        "]",
        "\\",
        "\\x41",
        "%5C",
        "%C3",
    ]
)
QUERIES = st.lists(PIECES | st.text(max_size=4), max_size=20).map("".join)


@settings(max_examples=150, deadline=None)
@given(qs=QUERIES, limit=st.none() | st.integers(1, 5))
def test_parse_pairs_is_parse_qsl(qs: str, limit: int | None) -> None:
    expected = parse_qsl(qs, keep_blank_values=True, errors="replace")
    assert parse_pairs(qs, limit) == (expected if limit is None else expected[:limit])


@settings(max_examples=150, deadline=None)
@given(pairs=st.lists(st.tuples(QUERIES, QUERIES), max_size=6))
def test_encode_pairs_is_urlencode(pairs: list[tuple[str, str]]) -> None:
    try:
        expected = urlencode(pairs, safe="[]")
    except UnicodeEncodeError:  # a lone surrogate: the same error, from the same function
        return
    assert encode_pairs(pairs) == expected


def test_examples() -> None:
    assert parse_pairs("a=1&&b&c=x+y%21&=v") == [("a", "1"), ("b", ""), ("c", "x y!"), ("", "v")]
    assert encode_pairs([("f[0]", "a b"), ("k", "[redacted]"), ("é", "~")]) == (
        "f[0]=a+b&k=[redacted]&%C3%A9=~"
    )


def _reference_params(qs: str, form: str) -> dict[str, Any]:
    """What ``RequestSnapshot.params`` gave before its fast paths: every pair through one
    loop (keys cut to 128 characters, values to 4096, repeated keys as lists, 64 keys)."""

    def parse(text: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in parse_qsl(text, keep_blank_values=True, errors="replace")[:256]:
            key, value = key[:128], value[:4096]
            if key in out:
                prev = out[key]
                if isinstance(prev, list):
                    if len(prev) < 64:
                        prev.append(value)
                else:
                    out[key] = [prev, value]
            elif len(out) < 64:
                out[key] = value
        return out

    params = parse(qs)
    for key, value in parse(form).items() if form else ():
        if key not in params and len(params) < 64:
            params[key] = value
    return params


#: Short keys that repeat, keys past 128 characters, and runs of many pairs.
FORM_PIECES = PIECES | st.sampled_from(["&a=1", "&b=", "&" + "k" * 130 + "=v", "&x=1" * 40])
FORMS = st.lists(FORM_PIECES | st.text(max_size=3), max_size=30).map("".join)


@settings(max_examples=150, deadline=None)
@given(qs=FORMS, form=FORMS)
def test_request_params_are_as_one_loop_gave_them(qs: str, form: str) -> None:
    ctype = "application/x-www-form-urlencoded"
    snapshot = RequestSnapshot("POST", "/", qs, None, None, None, ctype)
    got = snapshot.params(form.encode("utf-8"), ctype)
    want = _reference_params(qs, form)
    assert list(got.items()) == list(want.items())
