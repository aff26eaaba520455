"""The alerts, alert, playbooks and blocks pages, and a user's traits on the event page: what
they show, their links, paging and filters, with and without a playbook file, and every
value a playbook, an alert or an SDK sent shown as text."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from sqreen._wire_time import format_timestamp
from sqreen.server.app import create_app
from sqreen.server.auth import hash_token, new_token
from sqreen.server.explorer import set_admin_password
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.playbooks import TEMPLATES, PlaybookRunner, PlaybookSource
from sqreen.server.storage import Alert, BlockSpec, Heartbeat, NewAlert, Storage, WindowWrite

from .conftest import PASSWORD, Clock, login, wire_event

XSS = "<script>alert(1)</script>"
SVG = '"><svg onload=alert(3)>'
ATTACKER = "198.51.100.7"
PLAYBOOKS = """\
webhook_secret = "signs the notify posts"

[[playbook]]
id = "brute-force-ip"
description = "One IP failing logins quickly."
events = ["auth.login.failure"]
where = { "request.path" = "/login" }
group_by = "ip"
threshold = 5
window = "5m"
action = "block_ip"
duration = "1h"
exempt_ips = ["10.0.0.0/8"]
notify = ["https://hooks.example.com/T000/B000/the-secret-part"]

[[playbook]]
id = "credential-stuffing"
events = ["auth.login.failure"]
group_by = "ip"
distinct = "user"
threshold = 15
window = "15m"
action = "block_ip"
duration = "6h"
mode = "monitor"
"""


def raise_alert(
    storage: Storage,
    playbook: str = "brute-force-ip",
    key: str = ATTACKER,
    *,
    group_by: str = "ip",
    seqs: Sequence[int] = (1,),
    total: int | None = None,
    mode: str = "enforce",
    action: str = "block_ip",
    block: BlockSpec | None = None,
) -> Alert:
    """An alert stored the way the playbooks' hook stores one (with its block, if any)."""
    now = storage.now()
    new = NewAlert(
        playbook=playbook,
        group_by=group_by,
        group_key=key,
        total=total or len(seqs),
        first_at=now - timedelta(minutes=2),
        last_at=now,
        first_seq=min(seqs),
        last_seq=max(seqs),
        seqs=tuple(seqs),
        mode=mode,
        action=action,
        summary=f"{playbook}: {total or len(seqs)} for {group_by}={key}",
        block=block,
    )
    stream = ("test", key)
    (alert,) = storage.update_windows([stream], [], [], lambda found, quiet: WindowWrite({}, [new]))
    return alert


def ip_block(
    ip: str = ATTACKER, by: str = "playbook:brute-force-ip", hours: float = 1
) -> BlockSpec:
    return BlockSpec("block_ip", None, ip, timedelta(hours=hours), "brute force", by)


def store(storage: Storage, *events: dict[str, Any]) -> list[int]:
    result = storage.insert_events(events, app="shop", host="web1")  # type: ignore[arg-type]
    return [seq for seq in result.seqs if seq is not None]


def failures(storage: Storage, n: int, ip: str = ATTACKER) -> list[int]:
    request = wire_event()["request"] | {"ip": ip}
    return store(storage, *(wire_event(request=request) for _ in range(n)))


def table_rows(page: str, table: str) -> list[str]:
    body = page.split(f'class="{table}"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr[ >].*?</tr>", body, re.S)


def no_markup_from(page: str) -> None:
    """Nothing an alert, a playbook or an SDK sent became markup."""
    assert "<script>" not in page.replace('<script src="/explorer/static/explorer.js"', "")
    assert "<svg onload" not in page


@pytest.fixture
def playbook_file(tmp_path: Path) -> Path:
    path = tmp_path / "playbooks.toml"
    path.write_text(PLAYBOOKS)
    return path


@pytest.fixture
def with_file(storage: Storage, playbook_file: Path) -> Iterator[TestClient]:
    """A logged-in client of a collector started with ``--playbooks``."""
    set_admin_password(storage, PASSWORD)
    app = create_app(storage, playbooks=PlaybookSource(playbook_file))
    with TestClient(app, base_url="http://testserver") as client:
        login(client)
        yield client


# -- alerts -----------------------------------------------------------------------------


def test_alerts_newest_first_with_their_links_and_block_states(
    client: TestClient, storage: Storage, clock: Clock
) -> None:
    seqs = failures(storage, 5)
    by_ip = raise_alert(storage, seqs=seqs, block=ip_block())
    user = json.dumps({"email": "a@b.c", "uid": "42"}, separators=(",", ":"))
    raise_alert(storage, "brute-force-account", user, group_by="user", total=12, action="alert")
    raise_alert(
        storage,
        "spray",
        "a@b.c",
        group_by="user.email",
        mode="monitor",
        block=None,
    )
    page = client.get("/explorer/alerts")
    assert page.status_code == 200
    rows = table_rows(page.text, "alerts")
    assert [re.search(r"#(\d+),", r)[1] for r in rows] == ["3", "2", "1"]  # type: ignore[index]
    spray, account, ip = rows
    # The group key: a link, clipped when long (its title holds all of it).
    assert (
        'user.email</span> <a href="/explorer/events?user=email%3Da%40b.c" class="clip" '
        'title="a@b.c">a@b.c</a>'
    ) in spray
    assert "monitor" in spray and ">none<" in spray
    assert (
        '<a href="/explorer/events?user=email%3Da%40b.c&amp;user=uid%3D42" class="clip" '
        'title="email=a@b.c uid=42">'
    ) in account
    assert "email=a@b.c uid=42" in account and ">12<" in account
    assert (
        '<a href="/explorer/events?ip=198.51.100.7" class="clip" title="198.51.100.7">'
        "198.51.100.7</a>"
    ) in ip
    assert '<a href="/explorer/playbooks#playbook-brute-force-ip">brute-force-ip</a>' in ip
    assert f'<a href="/explorer/alerts/{by_ip.id}">' in ip and ">5<" in ip and "2 min" in ip
    assert '<a href="/explorer/blocks#block-1">#1</a> <span class="state active">active' in ip
    assert 'id="block-1"' in client.get("/explorer/blocks").text  # where the link lands

    storage.lift_block(1, "cli:alice")
    assert '<span class="state lifted">lifted' in client.get("/explorer/alerts").text
    raise_alert(storage, key="203.0.113.9", block=ip_block("203.0.113.9"))
    clock.advance(hours=2)
    newest = table_rows(client.get("/explorer/alerts").text, "alerts")[0]
    assert '<span class="state expired">expired' in newest


def test_alerts_are_paged_by_id_and_filtered_by_playbook(
    client: TestClient, storage: Storage
) -> None:
    for n in range(120):
        raise_alert(storage, "a" if n % 3 else "b", f"192.0.2.{n}")
    first = client.get("/explorer/alerts").text
    assert len(table_rows(first, "alerts")) == 50
    assert "Newest alerts" in first and "← Newest" not in first
    older = html.unescape(re.search(r'href="([^"]+)" rel="next"', first)[1])  # type: ignore[index]
    assert older == "/explorer/alerts?before=71"
    second = client.get(older).text
    ids = [int(i) for i in re.findall(r"#(\d+), ", second)]
    assert ids == list(range(70, 20, -1)) and "Older alerts" in second and "← Newest" in second
    third = client.get(html.unescape(re.search(r'href="([^"]+)" rel="next"', second)[1])).text  # type: ignore[index]
    assert len(table_rows(third, "alerts")) == 20 and 'rel="next"' not in third

    only_b = client.get("/explorer/alerts?playbook=b").text
    assert len(table_rows(only_b, "alerts")) == 40 and 'rel="next"' not in only_b
    assert "playbook: b" in only_b and '<option value="b" selected>' in only_b
    assert "/explorer/playbooks#playbook-a" not in only_b
    paged = client.get("/explorer/alerts?playbook=a&before=10").text
    assert re.findall(r"#(\d+), ", paged) == ["9", "8", "6", "5", "3", "2"]
    assert 'href="/explorer/alerts?playbook=a">← Newest' in paged
    none = client.get("/explorer/alerts?playbook=nope").text
    assert "No alerts from playbook nope." in none

    # The form's "All playbooks" sends playbook=: one canonical URL.
    blank = client.get("/explorer/alerts?playbook=&before=", follow_redirects=False)
    assert blank.status_code == 303 and blank.headers["location"] == "/explorer/alerts"
    for bad, message in (("before=x1", "before: must be"), ("playbook=a%00b", "playbook: at most")):
        reply = client.get("/explorer/alerts?" + bad)
        assert reply.status_code == 400 and message in reply.text


def test_an_alert_and_the_events_behind_it(client: TestClient, storage: Storage) -> None:
    seqs = failures(storage, 3)
    other = failures(storage, 1, "192.0.2.1")
    alert = raise_alert(storage, seqs=[*seqs, 999_999], total=30, block=ip_block())
    page = client.get(f"/explorer/alerts/{alert.id}")
    assert page.status_code == 200
    text = page.text
    assert f"Alert #{alert.id}: brute-force-ip" in text
    assert "brute-force-ip: 30 for ip=198.51.100.7" in text  # the summary
    assert '<a href="/explorer/alerts?playbook=brute-force-ip">its alerts</a>' in text
    assert '<a href="/explorer/blocks#block-1">#1</a>' in text and "until " in text
    assert "The alert keeps 4 of the 30 events it counted" in text
    assert "No longer stored: 1 of them" in text  # a seq gone (retention)
    body = text.split('id="alert-events"')[1].split("<tbody>")[1].split("</tbody>")[0]
    rows = re.findall(r"<tr>.*?</tr>", body, re.S)
    events = storage.events_by_seq(seqs)
    assert [e.seq for e in events] == seqs  # oldest first
    assert len(rows) == 3  # the three still stored
    for row, event in zip(rows, events, strict=True):
        assert f'href="/explorer/events/{event.id}?seq={event.seq}"' in row and ATTACKER in row
    assert "192.0.2.1" not in body and other

    for path in ("/explorer/alerts/12345", "/explorer/alerts/x", "/explorer/alerts/" + "9" * 30):
        missing = client.get(path)
        assert missing.status_code == 404 and "no such alert" in missing.text


def test_a_takeover_alert_shows_the_success_with_the_attackers_ip(
    client: TestClient, storage: Storage, clock: Clock, tmp_path: Path
) -> None:
    """The built-in account takeover, raised by the playbooks' hook: its page lists the
    failures and then the success that fired it, from the attacker's address."""
    path = tmp_path / "templates.toml"
    path.write_text(TEMPLATES)
    pipeline = IngestPipeline(storage, hooks=[PlaybookRunner(storage, PlaybookSource(path))])
    carol = {"username": "carol"}

    def send(name: str, ip: str, minutes_ago: float) -> None:
        at = format_timestamp(clock() - timedelta(minutes=minutes_ago))
        request = wire_event()["request"] | {"ip": ip}
        event = wire_event(name=name, user=carol, request=request, timestamp=at)
        pipeline(json.dumps({"sdk": {"name": "t", "version": "1"}, "app": {"name": "shop"},
                             "events": [event]}).encode())  # fmt: skip

    for i in range(12):
        send("auth.login.failure", "198.51.100.3", 8 - i / 10)
    send("auth.login.success", "81.2.69.99", 0.9)
    (alert,) = storage.list_alerts(playbook="account-takeover")
    text = client.get(f"/explorer/alerts/{alert.id}").text
    assert "account-takeover: auth.login.success after 12 auth.login.failure in 10m" in text
    rows = table_rows(text.replace('id="alert-events"', 'class="alert-events"'), "alert-events")
    assert len(rows) == 13 and "The 13 events behind it." in text
    assert "auth.login.success" in rows[-1] and "81.2.69.99" in rows[-1]
    assert all("auth.login.failure" in r and "198.51.100.3" in r for r in rows[:-1])
    (success,) = storage.events_by_seq([alert.last_seq])
    assert f"to {success.timestamp:%Y-%m-%d %H:%M:%S}" in text


# -- playbooks --------------------------------------------------------------------------


def test_playbooks_page_without_a_playbook_file(client: TestClient, storage: Storage) -> None:
    raise_alert(storage, "old-playbook")
    page = client.get("/explorer/playbooks").text
    assert "No playbook file is loaded" in page
    assert "sqreen playbooks init &gt; playbooks.toml" in page
    assert "sqreen serve --playbooks playbooks.toml" in page
    # Alerts of playbooks no longer loaded stay reachable.
    assert "Alerts of playbooks no longer in force" in page
    assert '<a href="/explorer/alerts?playbook=old-playbook">old-playbook</a>' in page
    assert '<option value="old-playbook">' in client.get("/explorer/alerts").text
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', page, re.S)[1]  # type: ignore[index]
    assert re.findall(r">(\w+)</a>", nav) == ["Events", "Alerts", "Playbooks", "Blocks", "Agents"]
    assert 'href="/explorer/playbooks" aria-current="page"' in nav


def test_playbooks_page_shows_the_file_in_force(
    with_file: TestClient, storage: Storage, playbook_file: Path
) -> None:
    raise_alert(storage)
    raise_alert(storage, key="192.0.2.9")
    raise_alert(storage, "retired")
    page = with_file.get("/explorer/playbooks").text
    assert str(playbook_file) in page and "2 playbooks." in page
    brute = page.split('id="playbook-brute-force-ip"')[1].split("</section>")[0]
    for text in (
        "One IP failing logins quickly.",
        '<a href="/explorer/events?name=auth.login.failure">auth.login.failure</a>',
        "request.path = /login",
        "<dd>ip</dd>",
        "5 events within 5 min",
        "block_ip for 1 h",
        "10.0.0.0/8",
        "hooks.example.com",
        '<a href="/explorer/alerts?playbook=brute-force-ip">2 alerts</a>, the last',
        '<span class="mode enforce">enforce</span>',
    ):
        assert text in brute, text
    assert "the-secret-part" not in page  # a webhook's path is its secret
    assert "signs the notify posts" not in page  # nor is the file's webhook_secret
    stuffing = page.split('id="playbook-credential-stuffing"')[1].split("</section>")[0]
    assert "15 distinct values of user within 15 min" in stuffing
    assert "block_ip for 6 h" in stuffing and "monitor mode: alerts only" in stuffing
    assert "none yet" in stuffing
    assert '<a href="/explorer/alerts?playbook=retired">retired</a>' in page
    choices = re.findall(r'<option value="([^"]*)"', with_file.get("/explorer/alerts").text)
    assert choices == ["", "brute-force-ip", "credential-stuffing", "retired"]

    # The file in force, as ingest reads it: re-read when it changes (SIGHUP here, rather
    # than waiting for the once-a-second check).
    playbook_file.write_text("")
    source: PlaybookSource = with_file.app.state.playbooks  # type: ignore[attr-defined]
    source.reload_requested = True
    assert "It holds no playbook." in with_file.get("/explorer/playbooks").text


# -- blocks -----------------------------------------------------------------------------


def test_blocks_say_who_made_them_and_how_often_they_refused(
    client: TestClient, storage: Storage, clock: Clock
) -> None:
    made = {}
    for by in ("playbook:brute-force-ip", "cli:alice", "explorer:admin", "api-key:3:ops"):
        made[by] = storage.create_block(
            "block_ip", ip=f"192.0.2.{len(made) + 1}", duration=timedelta(hours=1), created_by=by
        ).id
    # An SDK process gone quiet: its count is no longer counted.
    storage.record_heartbeat(heartbeat(1, {"1": 100}))
    clock.advance(minutes=4)
    storage.record_heartbeat(heartbeat(2, {"1": 5, "2": 1, "99": 7, "x": "junk"}))
    storage.record_heartbeat(heartbeat(3, {"1": 2}))
    refusals = [("1", 3), ("2", 1)]
    store(
        storage,
        *(
            wire_event(
                name="security.blocked", properties={"block_id": b, "kind": "ip", "count": 4}
            )
            for b, n in refusals
            for _ in range(n)
        ),
    )
    page = client.get("/explorer/blocks").text
    rows = {int(re.search(r'id="block-(\d+)"', r)[1]): r for r in table_rows(page, "blocks")}  # type: ignore[index]
    assert (
        'by playbook: <a href="/explorer/playbooks#playbook-brute-force-ip">brute-force-ip</a>'
        in rows[1]
    )
    assert "by CLI (alice)" in rows[2]
    assert "by explorer</td>" in rows[3]
    assert "by API key #3 (ops)" in rows[4]
    assert nums(rows[1]) == ["7", "3"]  # 5 + 2 from the live processes; 3 events
    assert nums(rows[2]) == ["1", "1"]
    assert nums(rows[3]) == ["0", "0"]
    assert "the 2 SDK processes that sent a heartbeat in the last 3 min" in page
    assert "all 4 of them, since" in page

    storage.lift_block(2, "api-key:7:deploy")
    ended = client.get("/explorer/blocks").text.split("Recently ended")[1]
    assert "by API key #7 (deploy)" in ended and "by CLI (alice)" in ended
    assert nums(table_rows(ended, "blocks ended")[0]) == ["1", "1"]

    reply = client.get("/explorer/blocks", headers={"accept": "text/html"})
    assert reply.status_code == 200


def test_a_block_some_sdks_refuse_to_enforce_says_so(client: TestClient, storage: Storage) -> None:
    block = storage.create_block("block_ip", ip="10.1.2.3", created_by="cli:alice")
    why = {str(block.id): "10.1.2.3/32 covers a trusted proxy <script>alert(1)</script>"}
    for pid in (1, 2):
        beat = Heartbeat("shop", "web1", pid, "flask", "sqreen-python", "0.1", {})
        storage.record_heartbeat(replace(beat, stats={"refused_blocks": why}))
    storage.record_heartbeat(heartbeat(3, {}))  # one that enforces it
    page = client.get("/explorer/blocks").text
    (row,) = table_rows(page, "blocks")
    assert "Not enforced by 2 SDK processes: 10.1.2.3/32 covers a trusted proxy" in row
    assert "<script>alert" not in page and "&lt;script&gt;" in row


def heartbeat(pid: int, refused: dict[str, Any]) -> Heartbeat:
    return Heartbeat("shop", "web1", pid, "flask", "sqreen-python", "0.1", {"refused": refused})


def nums(row: str) -> list[str]:
    return re.findall(r'<td class="num">([^<]*)</td>', row)


def test_the_blocks_api_still_says_who_made_each_block(
    client: TestClient, storage: Storage
) -> None:
    token = new_token()
    storage.create_key("ops", hash_token(token), "admin")
    storage.create_block("block_ip", ip="192.0.2.1", created_by="playbook:brute-force-ip")
    reply = client.get("/v1/blocks", headers={"Authorization": f"Bearer {token}"})
    assert [b["created_by"] for b in reply.json()["blocks"]] == ["playbook:brute-force-ip"]


# -- traits -----------------------------------------------------------------------------


def test_the_event_page_shows_the_users_latest_traits(
    client: TestClient, storage: Storage, clock: Clock
) -> None:
    token = new_token()
    storage.create_key("sdk", hash_token(token))
    alice = {"uid": "42", "email": "alice@example.com"}
    first = wire_event(name="sq.identify", user=alice, properties={"plan": "free"}, request=None)
    later = wire_event(
        name="sq.identify",
        user=dict(reversed(alice.items())),  # the same user, identifiers in another order
        timestamp=at(clock, minutes=-1),
        properties={"plan": "pro", "seats": 3, "tags": ["beta"]},
        request=None,
    )
    login_event = wire_event(name="auth.login.success", user=alice)
    stranger = wire_event(name="auth.login.success", user={"uid": "7"})
    batch = {
        "sdk": {"name": "sqreen-python", "version": "test"},
        "app": {"name": "shop", "host": "web1"},
        "events": [first, login_event, later, stranger],
    }
    reply = client.post("/v1/events", json=batch, headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200 and reply.json()["accepted"] == 4
    assert [e.name for e in storage.query_events()] == ["auth.login.success"] * 2  # not events

    page = client.get(f"/explorer/events/{login_event['id']}").text
    traits = page.split("<h3>Traits</h3>")[1].split("</section>")[0]
    assert '<th scope="row">plan</th><td>pro</td>' in traits and "seats" in traits
    assert "&#34;beta&#34;" in traits and "free" not in traits
    assert "first seen" in traits and "last seen" in traits
    none = client.get(f"/explorer/events/{stranger['id']}").text
    assert "None recorded for these identifiers" in none
    assert "sq.identify" not in client.get("/explorer/events?group=name").text


def test_the_event_page_and_api_say_which_key_sent_each_event(
    client: TestClient, storage: Storage
) -> None:
    """After a key leaks, its holder can send events as any app and host: which key sent an
    event is what tells them apart."""
    sent = {}
    for name in ("shop", "leaked <b>"):
        token = new_token()
        key = storage.create_key(name, hash_token(token))
        event = wire_event(name="auth.login.success", user={"username": "ceo"})
        batch = {"app": {"name": "billing", "host": "billing-1"}, "events": [event]}
        reply = client.post("/v1/events", json=batch, headers={"Authorization": f"Bearer {token}"})
        assert reply.json()["accepted"] == 1
        sent[event["id"]] = key
    imported = wire_event(name="auth.login.success")
    store(storage, imported)
    storage.revoke_key(sent[next(reversed(sent))].id)

    for event_id, key in sent.items():
        page = client.get(f"/explorer/events/{event_id}").text
        said = page.split('<dd id="sent-with">')[1].split("</dd>")[0]
        assert said.startswith(f"API key #{key.id} ({html.escape(key.name, quote=False)})")
        assert ("revoked" in said) == (key.name != "shop")
    page = client.get(f"/explorer/events/{imported['id']}").text
    assert "no API key (imported" in page.split('<dd id="sent-with">')[1].split("</dd>")[0]
    listed = client.get("/explorer/api/events").json()["events"]
    assert {e["id"]: e["key_id"] for e in listed} == {
        **{event_id: key.id for event_id, key in sent.items()},
        imported["id"]: 0,
    }


def at(clock: Clock, **ago: float) -> str:
    return (clock() - timedelta(**ago)).isoformat().replace("+00:00", "Z")


# -- escaping ---------------------------------------------------------------------------


def test_hostile_playbook_ids_group_keys_and_traits_are_text(
    client: TestClient, storage: Storage
) -> None:
    seqs = store(storage, wire_event(user={"uid": XSS}, request=None))
    raise_alert(storage, XSS, SVG, seqs=seqs, block=ip_block(by="playbook:" + XSS))
    hostile_user = json.dumps({"uid": XSS, "email": SVG})
    raise_alert(storage, SVG, hostile_user, group_by="user", action="alert")
    raise_alert(storage, "p", XSS, group_by="properties." + SVG, action="alert")
    storage.record_traits(
        [wire_event(name="sq.identify", user={"uid": XSS}, properties={XSS: SVG})]
    )  # type: ignore[list-item]
    event = storage.query_events(limit=1)[0]
    pages = [
        client.get("/explorer/alerts").text,
        client.get("/explorer/alerts/1").text,
        client.get("/explorer/alerts/2").text,
        client.get("/explorer/alerts?playbook=" + XSS.replace("<", "%3C")).text,
        client.get("/explorer/playbooks").text,
        client.get("/explorer/blocks").text,
        client.get("/explorer/events/" + event.id).text,
    ]
    for page in pages:
        no_markup_from(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]
    assert "#playbook-%3Cscript%3Ealert%281%29%3C/script%3E" in pages[0]  # quoted in links
    assert "uid=&lt;script&gt;" in pages[2]  # a user group key, shown as pairs
    assert 'playbook: <a href="/explorer/playbooks#playbook-%3Cscript%3E' in pages[5]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</th><td>&#34;&gt;&lt;svg" in pages[6]
