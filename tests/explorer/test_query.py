"""Reading a view from its URL and writing it back; choosing the histogram's buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest

from sqreen.server.explorer._chart import bucketing, draw
from sqreen.server.explorer._query import parse_query
from sqreen.server.storage import EventFilter

NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)


def parse(url_query: str, api: bool = False) -> tuple[object, list[str]]:
    query, errors = parse_query(parse_qsl(url_query, keep_blank_values=True), NOW, api=api)
    return query, [str(e) for e in errors]


def test_a_full_view_round_trips() -> None:
    raw = (
        "name=auth.login.failure&user=uid%3D42&user=email%3Da%40b.c&ip=203.0.113.7"
        "&prop=reason%3Dlocked&app=shop&since=1h&until=2026-11-22T10:00&group=prop:reason"
        "&before=99"
    )
    query, errors = parse_query(parse_qsl(raw), NOW)
    assert errors == []
    assert query.filters == EventFilter(
        name="auth.login.failure",
        users=(("uid", "42"), ("email", "a@b.c")),
        properties=(("reason", "locked"),),
        ip="203.0.113.7",
        app="shop",
        since=NOW - timedelta(hours=1),
        until=datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
    )
    assert query.group_field == "properties.reason" and query.before == 99
    url = query.url("/e")
    assert parse_qsl(urlsplit(url).query) == parse_qsl(raw)  # canonical order, raw spellings
    assert query.url("/e", drop=[("user", "uid=42"), "before"]).count("user=") == 1
    assert query.filter_only().url("/api").endswith("until=2026-11-22T10%3A00")


def test_blank_and_unknown_parameters_are_ignored_and_values_trimmed() -> None:
    query, errors = parse_query(
        parse_qsl("name=&utm_source=x&ip=%20192.0.2.1%20&after=5", keep_blank_values=True), NOW
    )
    assert errors == []
    assert query.params == (("ip", "192.0.2.1"),) and query.after is None  # after: API only


def test_ipv4_mapped_addresses_are_unmapped_as_the_sdk_records_them() -> None:
    query, _ = parse_query([("ip", "::ffff:198.51.100.7")], NOW)
    assert query.filters.ip == "198.51.100.7"


def test_names_and_ip_fields_filter_as_events_store_them() -> None:
    """LiteSOC's other spellings are stored under the standard name (which the link then
    shows), countries as upper-case codes, kinds in lower case, ASNs in decimal."""
    query, errors = parse_query(
        [("name", "login.failure"), ("country", "gb"), ("kind", "Tor"), ("asn", "as20712")], NOW
    )
    assert errors == []
    assert query.filters == EventFilter(
        name="auth.login.failure", country="GB", kind="tor", asn="20712"
    )
    assert query.url("/e") == "/e?name=auth.login.failure&country=GB&kind=tor&asn=20712"
    assert parse("name=AUTH_LOGIN_FAILURE")[0] == parse("name=auth.login.failure")[0]
    assert parse_query([("name", "order.created")], NOW)[0].filters.name == "order.created"


KINDS = "tor, vpn, hosting, cdn, bot, private, loopback, reserved"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("since=1900-01-01", "since: must be between 1970 and 9000"),
        ("until=0001-01-01T00:00:00%2B01:00", "until: must be between 1970 and 9000"),
        ("since=2026-11-22T12:00&until=2026-11-22T11:00", "until: must be later than since"),
        (
            "group=user:",
            "group: must be name, ip, app, country, kind, asn, user:<key> or prop:<key>",
        ),
        ("country=Germany", "country: must be a two-letter country code (e.g. DE)"),
        ("kind=t0r", f"kind: must be a network kind: {KINDS}"),
        ("kind=tors", f"kind: must be a network kind: {KINDS}"),  # else: an empty list, said not
        ("asn=Google", "asn: must be an AS number (e.g. 15169 or AS15169)"),
        # No event has these: AS0 is reserved, an AS number is 32 bits, "ß" upper-cased is SS.
        ("asn=0", "asn: must be an AS number (e.g. 15169 or AS15169), from 1 to 4294967295"),
        (
            "asn=AS4294967296",
            "asn: must be an AS number (e.g. 15169 or AS15169), from 1 to 4294967295",
        ),
        ("country=%C3%9F", "country: must be a two-letter country code (e.g. DE)"),
        ("limit=0", None),  # the page ignores the API's limit
    ],
)
def test_bad_values_are_named(raw: str, error: str | None) -> None:
    _, errors = parse(raw)
    assert errors == ([error] if error else [])


def test_the_api_refuses_a_parameter_given_twice_with_two_values() -> None:
    """``kind=tor&kind=vpn`` answered the events of the last, as if filtered by both; the
    pages' own links replace a value (the last one wins), and ``user=``/``prop=`` repeat."""
    twice = "given twice: one value (user= and prop= repeat)"
    assert parse("kind=tor&kind=vpn", api=True)[1] == [f"kind: {twice}"]
    assert parse("country=GB&country=fr", api=True)[1] == [f"country: {twice}"]
    assert parse("country=GB&country=gb&kind=tor", api=True)[1] == []  # the same value
    assert parse("user=uid=1&user=email=a@b.c&prop=a=1&prop=b=2", api=True)[1] == []
    query, errors = parse("kind=tor&kind=vpn")
    assert errors == [] and query.filters.kind == "vpn"


def test_the_api_bounds_its_limit() -> None:
    assert parse("limit=0", api=True)[1] == ["limit: must be a number from 1 to 500"]
    assert parse("limit=500&after=7", api=True)[1] == []


@pytest.mark.parametrize(
    ("span", "per", "bars"),
    [
        (timedelta(seconds=40), "second", 40),
        (timedelta(hours=1), "minute", 60),
        (timedelta(hours=3), "5 minutes", 36),
        (timedelta(days=1), "30 minutes", 48),
        (timedelta(days=30), "12 hours", 60),
        (timedelta(days=300), "7 days", 43),
        (timedelta(days=3650), "61 days", 60),
        (timedelta(days=36500), "609 days", 60),
    ],
)
def test_buckets_are_round_and_few(span: timedelta, per: str, bars: int) -> None:
    start, count, step, name = bucketing(NOW - span, NOW, align=False)
    assert (name, count) == (per, bars)
    assert start + step * count >= NOW


def test_unaligned_buckets_start_on_a_whole_second() -> None:
    """A bar links to its bucket to the second: the events of the link are those it counts
    (``since=1h`` is an hour before a now with microseconds)."""
    since = NOW - timedelta(hours=1, microseconds=250_000)
    start, count, step, per = bucketing(since, NOW, align=False)
    assert per == "minute" and start == NOW - timedelta(hours=1, seconds=1)
    assert start + step * count >= NOW


def test_aligned_buckets_start_on_a_multiple_of_their_width() -> None:
    start, count, step, per = bucketing(NOW - timedelta(hours=2, minutes=7), NOW, align=True)
    assert per == "5 minutes" and start == datetime(2026, 11, 22, 8, 20, tzinfo=UTC)
    assert start + step * count >= NOW


def test_the_chart_scales_bars_and_links_each_to_its_bucket() -> None:
    points = [(NOW + timedelta(minutes=i), n) for i, n in enumerate([0, 4, 8, 2])]
    chart = draw(points, NOW + timedelta(minutes=4), "minute", lambda **kw: "?" + str(kw))
    assert chart.total == 14 and chart.peak == 8
    assert [b.height for b in chart.bars] == [0.0, 39.0, 78.0, 19.5]
    assert chart.bars[1].href == "?{'since': '2026-11-22T10:31:00', 'until': '2026-11-22T10:32:00'}"
    assert all(0 <= b.x < chart.view_width for b in chart.bars)


def test_an_alert_s_link_to_a_user_whose_folded_name_grew_is_read() -> None:
    """A username of 20 U+FDFA (each 18 characters once folded) is a group key of 360
    characters: the alert's link to its events was refused (at most 256); an identifier of
    the longest length an SDK sends, folded, is read too, and longer text still refused."""
    from urllib.parse import urlencode

    from sqreen.server.explorer._alerts import group_of
    from sqreen.server.playbooks._fields import user_key

    folded = user_key({"username": "\ufdfa" * 20})
    group = group_of("/explorer", "user", folded)
    assert group.href is not None
    query, errors = parse_query(parse_qsl(urlsplit(group.href).query), NOW)
    assert errors == []
    ((key, value),) = query.filters.users  # type: ignore[attr-defined]
    assert key == "username" and len(value) == 360
    longest = "\ufdfa" * 256
    assert parse(urlencode({"user": "username=" + longest}))[1] == []
    _, refused = parse(urlencode({"user": "username=" + "x" * (18 * 256 + 1)}))
    assert refused and refused[0].startswith("user:")
