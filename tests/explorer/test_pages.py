"""What the pages show: filters, grouping, paging, detail, blocks, agents, the JSON API; bad
input as a clear message; everything an event carries shown as text."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from starlette.testclient import TestClient

from sqreen.server.explorer import _events
from sqreen.server.storage import EventFilter, Heartbeat, Storage

from .conftest import Clock, csrf_of, wire_event

XSS = "<script>alert(1)</script>"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _now_is_now() -> None:
    """NOW is when each test starts, not when the module was imported: the explorer reads
    ``since=30m`` against the real time, and a test run 12 minutes after the import (the run
    starts with the longest files) found none of the 3 events stored 18-20 minutes before."""
    global NOW
    NOW = datetime.now(UTC).replace(microsecond=0)


def at(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")


def request_from(ip: str, **fields: Any) -> dict[str, Any]:
    return {
        "ip": ip,
        "user_agent": "curl/8.0",
        "path": "/login",
        "route": "/login",
        "method": "POST",
        "params": {},
        "body": None,
        **fields,
    }


def store(storage: Storage, *events: dict[str, Any], app: str = "shop") -> None:
    result = storage.insert_events(events, app=app, host="web1")  # type: ignore[arg-type]
    assert result.stored == len(events)


@pytest.fixture
def traffic(storage: Storage) -> Storage:
    """Logins from three IPs over the last hour: alice fails 6 times from an attacker."""
    events = []
    for i in range(6):
        events.append(
            wire_event(
                name="auth.login.failure",
                timestamp=at(50 - i),
                user={"uid": "1", "email": "alice@example.com"},
                properties={"reason": "bad_password" if i % 2 else "locked", "attempt": i},
                request=request_from("198.51.100.7"),
            )
        )
    for i, ip in enumerate(["192.0.2.1", "192.0.2.2", "192.0.2.1"]):
        events.append(
            wire_event(
                name="auth.login.success",
                timestamp=at(20 - i),
                user={"uid": str(2 + i)},
                properties={"plan": "pro"},
                request=request_from(ip),
            )
        )
    store(storage, *events)
    return storage


def rows(page: str) -> list[str]:
    """The event names of the rows of the events table, top to bottom."""
    table = page.split('id="events"', 1)[1].split("</table>", 1)[0]
    return re.findall(
        r'<td><a href="[^"]*"(?: class="clip" title="[^"]*")?>([a-z.]+)</a></td>', table
    )


def errors(page: str) -> list[str]:
    return [html.unescape(e) for e in re.findall(r'class="error" role="alert">([^<]*)<', page)]


def test_events_newest_first(client: TestClient, traffic: Storage) -> None:
    page = client.get("/explorer/events").text
    assert rows(page) == ["auth.login.success"] * 3 + ["auth.login.failure"] * 6
    assert "alice@example.com" in page and "198.51.100.7" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("name=auth.login.success", 3),
        ("user=uid%3D1", 6),
        ("user=email%3Dalice%40example.com&name=auth.login.failure", 6),
        ("ip=198.51.100.7", 6),
        ("ip=192.0.2.1", 2),
        ("prop=reason%3Dlocked", 3),
        ("prop=attempt%3D5", 1),
        ("prop=reason%3Dlocked&prop=attempt%3D2", 1),
        ("since=30m", 3),
        ("since=2h&until=30m", 6),
        pytest.param("since={48 minutes before NOW}&until=30m", 4, id="since-iso"),
        ("name=auth.signup", 0),
    ],
)
def test_filters(client: TestClient, traffic: Storage, query: str, expected: int) -> None:
    since = (NOW - timedelta(minutes=48)).isoformat()[:19]
    query = query.replace("{48 minutes before NOW}", since)
    reply = client.get("/explorer/events?" + query)
    assert reply.status_code == 200
    assert len(rows(reply.text)) == expected
    assert len(client.get("/explorer/api/events?" + query).json()["events"]) == expected


def test_filters_stay_in_the_url_and_blank_fields_are_dropped(
    client: TestClient, traffic: Storage
) -> None:
    reply = client.get(
        "/explorer/events?name=&user=uid%3D1&ip=&prop=&since=&until=&group=",
        follow_redirects=False,
    )
    assert reply.status_code == 303
    assert reply.headers["location"] == "/explorer/events?user=uid%3D1"
    page = client.get(reply.headers["location"]).text
    assert 'name="user" value="uid=1"' in page
    assert "Remove user uid=1" in page  # the filter as a removable chip


def test_group_by_ip_user_and_property(client: TestClient, traffic: Storage) -> None:
    page = client.get("/explorer/events?group=ip").text
    cell = r'<td><a href="([^"]*)"(?: class="clip" title="[^"]*")?>([^<]*)</a></td>'
    groups = re.findall(cell + r'\s*<td class="num">(\d+)', page)
    assert [(v, int(n)) for _, v, n in groups] == [
        ("198.51.100.7", 6),
        ("192.0.2.1", 2),
        ("192.0.2.2", 1),
    ]
    assert html.unescape(groups[0][0]) == "/explorer/events?ip=198.51.100.7"
    assert "Counted over all 9 matching events" in page
    page = client.get("/explorer/events?group=user:uid&name=auth.login.success").text
    assert re.findall(r'user=uid%3D(\d)"(?: class="clip" title="[^"]*")?>\1</a>', page) == [
        "2",
        "3",
        "4",
    ]
    page = client.get("/explorer/events?group=prop:reason").text
    assert "prop=reason%3Dbad_password" in page and "prop=reason%3Dlocked" in page


def test_histogram(client: TestClient, traffic: Storage) -> None:
    page = client.get("/explorer/events?since=1h").text
    svg = page.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert 'role="img"' in svg
    assert "9 events from" in svg and "one bar per minute" in svg
    bars = re.findall(r'<a href="([^"]*)"><rect class="bar"[^>]*><title>([^<]*)</title>', svg)
    assert len(bars) == 9  # one event a minute
    href, title = bars[0]
    assert title.endswith(": 1 event")
    assert "since=" in href and "until=" in href  # a bar zooms into its minute
    zoomed = client.get(html.unescape(href))
    assert zoomed.status_code == 200 and len(rows(zoomed.text)) == 1


def test_keyset_paging(client: TestClient, storage: Storage) -> None:
    store(storage, *(wire_event(timestamp=at(120 - i), properties={"n": i}) for i in range(120)))
    first = client.get("/explorer/events").text
    older = re.search(r'<a href="([^"]*)" rel="next">', first)
    assert older
    second = client.get(html.unescape(older[1])).text
    third = client.get(html.unescape(re.search(r'href="([^"]*)" rel="next"', second)[1])).text
    assert 'rel="next"' not in third
    assert [len(rows(p)) for p in (first, second, third)] == [50, 50, 20]
    numbers = re.findall(r"n=(\d+)</td>", first + second + third)
    assert [int(n) for n in numbers] == list(range(119, -1, -1))


def test_the_ip_filter_takes_a_network_as_the_cli_does(
    client: TestClient, traffic: Storage
) -> None:
    """``ip=192.0.2.0/24`` selects the events of its addresses (as ``sqreen events --ip``),
    and the field keeps the network as typed."""
    page = client.get("/explorer/events", params={"ip": "192.0.2.0/24"}).text
    assert sorted(re.findall(r">uid=(\d+)<", page)) == ["2", "3", "4"]
    assert 'name="ip" value="192.0.2.0/24"' in page
    api = client.get("/explorer/api/events", params={"ip": "192.0.2.0/30"}).json()
    assert sorted(e["request"]["ip"] for e in api["events"]) == [
        "192.0.2.1",
        "192.0.2.1",
        "192.0.2.2",
    ]
    one = client.get("/explorer/api/events", params={"ip": "198.51.100.7"}).json()
    assert {e["request"]["ip"] for e in one["events"]} == {"198.51.100.7"}


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("ip=not-an-ip", "ip", "is not an IP address"),
        ("ip=192.0.2.0/23", "ip", "holds 512 addresses"),
        ("since=yesterday", "since", "neither a duration"),
        ("since=1h&until=2h", "until", "later than since"),
        ("user=uid", "user", "is not key=value"),
        ("prop==x", "prop", "is not key=value"),
        ("name=" + "x" * 300, "name", "at most 255"),
        ("name=a%00b", "name", "control characters"),
        ("prop=k%3D" + "v" * 5000, "prop", "at most 4096"),
        ("group=color", "group", "must be name, ip"),
        ("before=-1", "before", "sequence number"),
        ("before=" + "9" * 30, "before", "sequence number"),
        ("user=a%3D1&user=b%3D2&user=c%3D3&user=d%3D4&user=e%3D5", "user", "at most 4"),
    ],
)
def test_bad_filters_are_a_clear_message_never_a_500(
    client: TestClient, traffic: Storage, query: str, field: str, message: str
) -> None:
    page = client.get("/explorer/events?" + query)
    assert page.status_code == 400
    assert any(e.startswith(f"{field}: ") and message in e for e in errors(page.text)), errors(
        page.text
    )
    api = client.get("/explorer/api/events?" + query)
    assert api.status_code == 400
    assert api.json()["field"] == field and message in api.json()["error"]


def test_the_api_polls_for_newer_events(client: TestClient, traffic: Storage) -> None:
    first = client.get("/explorer/api/events?name=auth.login.failure&limit=2").json()
    assert [e["name"] for e in first["events"]] == ["auth.login.failure"] * 2
    assert first["older"].startswith("/explorer/api/events?name=auth.login.failure")
    newest = first["newest_seq"]
    polled = client.get(f"/explorer/api/events?after={newest}&name=auth.login.failure").json()
    assert polled["events"] == [] and polled["newest_seq"] == newest
    store(traffic, wire_event(name="auth.login.failure", timestamp=at(0)))
    store(traffic, wire_event(name="auth.signup", timestamp=at(0)))
    new = client.get(f"/explorer/api/events?after={newest}&name=auth.login.failure").json()
    assert [e["seq"] for e in new["events"]] == [10]
    event = new["events"][0]
    assert event["display"]["url"] == f"/explorer/events/{event['id']}?seq={event['seq']}"
    assert event["display"]["user"] == "uid=42" and event["ip"] == "203.0.113.7"
    assert client.get("/explorer/api/events?limit=501").status_code == 400


def test_the_api_refuses_a_parameter_it_does_not_read(client: TestClient, traffic: Storage) -> None:
    """``?reason=locked`` (for ``prop=reason=locked``) answered every event, as if filtered;
    the pages still ignore parameters of nobody (``utm_source``...)."""
    for query, field in (("reason=locked", "reason"), ("name=x&Name=y", "Name")):
        api = client.get("/explorer/api/events?" + query)
        assert api.status_code == 400, query
        assert api.json()["field"] == field and "prop" in api.json()["error"]
    assert client.get("/explorer/api/events?prop=reason=locked").status_code == 200
    assert client.get("/explorer/events?utm_source=mail").status_code in (200, 303)


def test_event_detail(client: TestClient, storage: Storage) -> None:
    store(
        storage,
        wire_event(
            id="ev/with spaces",
            name="shop.order",
            properties={"total": 12.5, "items": ["a", "b"], "coupon": "SPRING"},
            target={"id": "o-1", "type": "order", "name": "Order 1"},
            request=request_from(
                "203.0.113.9",
                path="/orders/7",
                params={"ref": "mail"},
                body={"content": "qty=2", "truncated": True},
            ),
        ),
    )
    page = client.get("/explorer/events/ev%2Fwith%20spaces").text
    for text in ("shop.order", "SPRING", "Order 1", "/orders/7", "qty=2", "(truncated)", "o-1"):
        assert text in page
    assert "&#34;ref&#34;: &#34;mail&#34;" in page  # params, pretty JSON
    assert "block" in page.lower() and "/explorer/blocks?user=uid%3D42" in page
    assert "/explorer/blocks?ip=203.0.113.9" in page
    missing = client.get("/explorer/events/nope")
    assert missing.status_code == 404 and "no such event" in missing.text


@pytest.mark.parametrize(
    "user",
    [
        {"email": "user3@example.com,"},  # an attacker's typing, one comma more
        {"name": "Smith, John"},
        {"uid": "nl\nuser"},
        {"uid": " padded "},
        {"a=b": "c"},
    ],
)
def test_block_this_user_blocks_exactly_the_event_s_identifiers(
    client: TestClient, storage: Storage, user: dict[str, str]
) -> None:
    """The event page's "Block this user…" and the form it fills block the identifiers the
    event carries, whatever they hold. Written as key=value lines, ``user3@example.com,``
    became a block of ``user3@example.com``, the account's owner, and the attacker's
    spelling stayed unblocked; others could not be blocked at all."""
    store(storage, wire_event(id="ev-1", user=user))
    page = client.get("/explorer/events/ev-1").text
    link = re.search(r'<a href="([^"]+)">Block this user', page)
    assert link is not None
    form = client.get(html.unescape(link[1])).text
    typed = html.unescape(re.search(r'<textarea name="user"[^>]*>([^<]*)</textarea>', form)[1])
    token = csrf_of(client, "/explorer/blocks")
    reply = client.post(
        "/explorer/blocks",
        data={"csrf_token": token, "kind": "user", "user": typed, "duration": "1h"},
    )
    assert reply.status_code == 200 and "Block #1 created" in reply.text, reply.text
    (block,) = storage.list_blocks()
    assert block.user == user


def test_what_the_events_page_says_of_line_breaks_names_and_many_groups(
    client: TestClient, storage: Storage
) -> None:
    """A line break in an identifier is written out on one line (it showed as a space, as
    another identifier would); the name field suggests the standard names; a group by with
    more groups than shown says so (25 of 40 addresses were shown as if all)."""
    store(storage, wire_event(id="nl", user={"uid": "nl\nuser"}))
    for n in range(30):
        store(storage, wire_event(id=f"ip-{n}", request=request_from(f"198.51.100.{n + 1}")))
    page = client.get("/explorer/events").text
    assert 'uid="nl\\nuser"' in html.unescape(page)  # written out, and quoted
    assert '<datalist id="names">' in page and '<option value="auth.login.failure">' in page
    grouped = client.get("/explorer/events?group=ip").text
    assert "The 25 largest groups are shown; there may be more" in grouped
    few = client.get("/explorer/events?group=name").text
    assert "largest groups" not in few


def test_everything_an_event_carries_is_escaped(client: TestClient, storage: Storage) -> None:
    store(
        storage,
        wire_event(
            id="x<img src=x onerror=alert(2)>",
            properties={XSS: XSS, "nested": {"k": XSS}},
            user={"uid": XSS, "email": '"><svg onload=alert(3)>'},
            target={"id": XSS, "type": XSS, "name": XSS},
            request=request_from(
                "203.0.113.5",
                path="/<script>p</script>",
                user_agent=XSS,
                params={XSS: XSS},
                body={"content": XSS, "truncated": False},
            ),
        ),
        app=XSS,
    )
    event = storage.query_events(limit=1)[0]
    pages = [
        client.get("/explorer/events").text,
        client.get("/explorer/events?group=prop:" + XSS).text,
        client.get("/explorer/events?group=user:uid").text,
        client.get("/explorer/events/" + event.id.replace("<", "%3C").replace(">", "%3E")).text,
        client.get("/explorer/events?prop=a%3D" + XSS).text,
    ]
    for page in pages:
        assert "<script>" not in page.replace('<script src="/explorer/static/explorer.js"', "")
        assert "<svg onload" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[3]


def test_a_value_that_looks_like_more_pairs_is_quoted_on_rows_and_blocks(
    client: TestClient, storage: Storage
) -> None:
    """A value chosen by whoever sends the event (``bad_password mfa=passed``) read as two
    properties; an identifier with a space as two identifiers, on the events' rows and in
    the blocks' "Who"."""
    store(
        storage,
        wire_event(
            user={"email": "eve@evil.example uid=1"}, properties={"reason": "bad mfa=passed"}
        ),
    )
    page = html.unescape(client.get("/explorer/events").text)
    assert 'email="eve@evil.example uid=1"' in page
    assert 'reason="bad mfa=passed"' in page
    storage.create_block("block_user", user={"email": "eve@evil.example uid=1"})
    blocks = html.unescape(client.get("/explorer/blocks").text)
    assert 'email="eve@evil.example uid=1"' in blocks


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (
            "bad\u2800mfa\uff1dpassed",
            '"bad\\u2800mfa\uff1dpassed"',
        ),  # a braille blank, a fullwidth =
        ("x\u3164role\ua78aadmin", '"x\\u3164role\ua78aadmin"'),  # a Hangul filler, an = lookalike
        ("admin\U000e0020", '"admin\\U000e0020"'),  # a tag character: no glyph at all
        ("José", '"José"'),  # any text not plain ASCII is quoted
        ("a-b_c.d@e:f/g", "a-b_c.d@e:f/g"),  # plain ASCII words as they are
    ],
)
def test_lookalikes_of_spaces_and_equals_signs_are_quoted_and_written_out(
    client: TestClient, storage: Storage, value: str, shown: str
) -> None:
    store(storage, wire_event(user={"uid": value}))
    page = html.unescape(client.get("/explorer/events").text)
    assert f"uid={shown}" in page


def test_blocks_created_listed_and_lifted_from_the_page(
    client: TestClient, storage: Storage
) -> None:
    page = client.get("/explorer/blocks?user=uid%3D42&reason=" + XSS)
    assert "uid=42</textarea>" in page.text and "&lt;script&gt;" in page.text
    token = csrf_of(client, "/explorer/blocks")
    reply = client.post(
        "/explorer/blocks",
        data={
            "csrf_token": token,
            "kind": "user",
            "user": "uid=42\nemail=a@b.c",
            "duration": "1h",
            "reason": XSS,
        },
    )
    assert reply.status_code == 200 and "Block #1 created" in reply.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in reply.text and XSS not in reply.text
    client.post(
        "/explorer/blocks",
        data={
            "csrf_token": token,
            "kind": "ip",
            "ip": "203.0.113.0/24",
            "duration": "1h",
            "custom": "90m",
        },
    )
    actions = storage.action_set()
    assert [(b.type, b.user, b.ip) for b in actions.blocks] == [
        ("block_user", {"uid": "42", "email": "a@b.c"}, None),
        ("block_ip", None, "203.0.113.0/24"),
    ]
    assert {b.created_by for b in actions.blocks} == {"explorer:admin"}
    expires = actions.blocks[1].expires_at
    assert expires is not None and 89 <= (expires - datetime.now(UTC)).total_seconds() / 60 <= 90
    lifted = client.post("/explorer/blocks/1/unblock", data={"csrf_token": token})
    assert "Block #1 lifted." in lifted.text
    assert [b.id for b in storage.action_set().blocks] == [2]
    ended = lifted.text.split("Recently ended")[1]
    assert "lifted" in ended and "<br>by explorer</td>" in ended  # explorer:admin, for people
    again = client.post("/explorer/blocks/1/unblock", data={"csrf_token": token})
    assert "No active block #1" in again.text


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"kind": "user", "user": ""}, "user: a user block needs at least one identifier"),
        ({"kind": "user", "user": "uid"}, "user: 'uid' is not key=value"),
        ({"kind": "ip", "ip": "10.0.0.0/8"}, "ip: /8 is too wide"),
        ({"kind": "ip", "ip": "nope"}, "ip: 'nope' is not an IP address"),
        ({"kind": "ip", "ip": "127.0.0.53"}, "ip: 127.0.0.53/32 covers loopback (127.0.0.0/8)"),
        ({"kind": "ip", "ip": "1.2.3.4", "custom": "soon"}, "duration: 'soon' is not a duration"),
        ({"kind": "ip", "ip": "1.2.3.4", "reason": "r" * 600}, "reason: must be a string"),
        ({"kind": "else"}, "kind: choose a user or an IP"),
    ],
)
def test_bad_blocks_are_refused_with_the_collectors_rules(
    client: TestClient, storage: Storage, form: dict[str, str], message: str
) -> None:
    token = csrf_of(client, "/explorer/blocks")
    reply = client.post("/explorer/blocks", data={"csrf_token": token, "duration": "1h", **form})
    assert reply.status_code == 400
    assert any(e.startswith(message) for e in errors(reply.text)), errors(reply.text)
    assert storage.list_blocks(ended=100) == []


def test_agents(client: TestClient, storage: Storage) -> None:
    assert "No SDK has sent a heartbeat yet" in client.get("/explorer/agents").text
    stats = {
        "queue_depth": 17,
        "tracked": 900,
        "sent": 880,
        "dropped": {"queue_full": 3},
        "internal_errors": 0,
    }
    storage.record_heartbeat(
        Heartbeat("shop", "web1", 4242, "flask", "sqreen-python", "0.1", stats)
    )
    storage.record_heartbeat(
        Heartbeat(XSS, "web2", 7, "django", "sqreen-python", "0.1", {"queue_depth": 0})
    )
    page = client.get("/explorer/agents").text
    for text in ("web1 / 4242", "flask", "sqreen-python 0.1", ">17<", "900 / 880", "queue_full"):
        assert text in page
    assert "<strong>2</strong> sending heartbeats" in page
    assert '<strong class="bad">1</strong> dropping events' in page
    assert "&lt;script&gt;" in page and XSS not in page


def test_agents_without_heartbeats_for_a_while_are_stale(
    client: TestClient, storage: Storage, clock: Clock
) -> None:
    storage.record_heartbeat(Heartbeat("shop", "web1", 1, None, None, None, {}))
    assert 'class="stale"' not in client.get("/explorer/agents").text
    clock.advance(minutes=4)
    page = client.get("/explorer/agents").text
    assert '<strong class="bad">stale</strong>' in page and 'class="stale"' in page
    assert "4 min ago" in page


def test_an_agent_that_said_it_stopped_is_neither_live_nor_stale(
    client: TestClient, storage: Storage, clock: Clock
) -> None:
    storage.record_heartbeat(Heartbeat("shop", "web1", 1, None, None, None, {"tracked": 3}))
    storage.record_heartbeat(Heartbeat("shop", "web1", 2, None, None, None, {"stopped": 1}))
    page = client.get("/explorer/agents").text
    assert "<strong>1</strong> sending heartbeats" in page
    assert "<strong>1</strong> stopped" in page and "<strong>stopped</strong>" in page
    clock.advance(minutes=4)  # the stopped one stays stopped; the other goes stale
    page = client.get("/explorer/agents").text
    assert "<strong>0</strong> sending heartbeats" in page
    assert '<strong class="bad">1</strong> stale' in page
    assert page.count('<strong class="bad">stale</strong>') == 1


def test_events_of_an_app_and_the_app_filter(client: TestClient, storage: Storage) -> None:
    store(storage, wire_event(name="a.one"), app="one")
    store(storage, wire_event(name="a.two"), app="two")
    assert rows(client.get("/explorer/events?app=two").text) == ["a.two"]
    assert storage.count_events(EventFilter(app="one")) == 1


def test_the_apis_older_link_keeps_the_filters_and_the_limit(
    client: TestClient, traffic: Storage
) -> None:
    page = client.get("/explorer/api/events?limit=3&before=10").json()
    assert [e["seq"] for e in page["events"]] == [9, 8, 7]
    assert page["older"] == "/explorer/api/events?before=7&limit=3"
    older = client.get(page["older"]).json()
    assert [e["seq"] for e in older["events"]] == [6, 5, 4]
    failures = client.get("/explorer/api/events?name=auth.login.failure&limit=2&after=0").json()
    assert failures["older"] == "/explorer/api/events?name=auth.login.failure&before=5&limit=2"
    last = client.get(client.get(failures["older"]).json()["older"]).json()
    assert [e["seq"] for e in last["events"]] == [2, 1]
    assert [e["name"] for e in last["events"]] == ["auth.login.failure"] * 2


def test_an_older_page_of_events_links_back_to_the_newest(
    client: TestClient, traffic: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_events, "PAGE_SIZE", 2)
    first = client.get("/explorer/events?name=auth.login.failure").text
    assert "Newest events" in first and "← Newest" not in first
    older = html.unescape(re.search(r'<a href="([^"]+)" rel="next">Older events', first)[1])  # type: ignore[index]
    assert older == "/explorer/events?name=auth.login.failure&before=5"
    second = client.get(older).text
    assert "Older events" in second
    assert '<a href="/explorer/events?name=auth.login.failure">← Newest</a>' in second


def test_login_failures_by_country_keep_the_filters_of_the_view(
    client: TestClient, traffic: Storage
) -> None:
    """The shortcut narrows the view to login failures, grouped by country: a view of the
    last day stays the last day's (it showed all of history)."""
    page = client.get("/explorer/events?since=1d&ip=203.0.113.0%2F24&name=x&before=9").text
    (href,) = re.findall(r'<a href="([^"]*)" id="failures-by-country">', page)
    assert html.unescape(href) == (
        "/explorer/events?name=auth.login.failure&ip=203.0.113.0%2F24&since=1d&group=country"
    )


def test_group_by_shortcuts_offer_the_user_keys_the_events_carry(
    client: TestClient, storage: Storage
) -> None:
    def shortcuts() -> list[tuple[str, str]]:
        page = client.get("/explorer/events").text
        bar = page.split('<p class="groupby">', 1)[1].split("</p>", 1)[0]
        return [
            (unquote(html.unescape(href)), html.unescape(label))
            for href, label in re.findall(r'<a href="([^"]*)"[^>]*>([^<]*)</a>', bar)
            if "group=user" in html.unescape(href)
        ]

    assert shortcuts() == [("/explorer/events?group=user:uid", "user uid")]  # nothing stored
    store(
        storage,
        *(wire_event(user={"email": f"u{i}@example.com"}) for i in range(3)),
        wire_event(user={"username": "bob", XSS: "x"}),
    )
    found = shortcuts()
    assert found[0] == ("/explorer/events?group=user:email", "user email")  # most common
    assert {label for _, label in found} == {"user email", "user username", f"user {XSS}"}
    page = client.get("/explorer/events").text
    assert XSS not in page  # escaped like everything an event carries
    grouped = client.get("/explorer/events?group=user:email").text
    assert "u0@example.com" in grouped and "By user:email" in grouped
