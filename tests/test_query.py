"""The fast query-string parser and encoder give what urllib.parse gives, for any text."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from sqreen._query import encode_pairs, parse_pairs

#: Characters that matter to a query string, and any other.
PIECES = st.sampled_from(["&", "=", "+", "%", "%2", "%41", "%e9", "%C3%A9", "%ZZ", ";", "[", "]"])
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
