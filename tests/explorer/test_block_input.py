"""The explorer's block form under hostile input (a 400 naming the field, nothing stored),
a block asked twice (the active one extended, and the page says so), and the agents page's
keys (SDK processes are recorded per API key)."""

from __future__ import annotations

import html
import re

import pytest
from starlette.testclient import TestClient

from sqreen.server.storage import Heartbeat, Storage

from .conftest import Clock, csrf_of


def errors(page: str) -> list[str]:
    return [html.unescape(e) for e in re.findall(r'class="error" role="alert">([^<]*)<', page)]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"kind": "ip", "ip": "192.0.2.1", "custom": "0.0000001s"}, "duration: must be positive"),
        ({"kind": "ip", "ip": "192.0.2.1", "custom": "9" * 400 + "d"}, "duration: at most 12"),
        ({"kind": "ip", "ip": "192.0.2.1", "reason": "brute\x00force"}, "reason: must be one"),
        ({"kind": "ip", "ip": "192.0.2.1", "reason": "\x1b[2Jok"}, "reason: must be one line"),
        ({"kind": "user", "user": "uid = 42"}, "user: 'uid = 42' has spaces around '='"),
        ({"kind": "user", "user": "uid=42\nuid=43"}, "user: 'uid' is given twice"),
        ({"kind": "user", "user": "uid=42, uid=42"}, "user: 'uid' is given twice"),
    ],
)
def test_hostile_blocks_are_400_naming_the_field(
    client: TestClient, storage: Storage, form: dict[str, str], message: str
) -> None:
    token = csrf_of(client, "/explorer/blocks")
    reply = client.post("/explorer/blocks", data={"csrf_token": token, "duration": "1h", **form})
    assert reply.status_code == 400
    assert any(e.startswith(message) for e in errors(reply.text)), errors(reply.text)
    assert storage.list_blocks(ended=100) == []


def test_a_block_asked_twice_extends_the_active_one(
    client: TestClient, storage: Storage, clock: Clock
) -> None:
    token = csrf_of(client, "/explorer/blocks")
    form = {"csrf_token": token, "kind": "ip", "ip": "192.0.2.1", "duration": "1h"}
    assert "Block #1 created" in client.post("/explorer/blocks", data=form).text
    clock.advance(minutes=30)
    again = client.post("/explorer/blocks", data=form).text  # the same block, 30 min later
    assert "Already blocked by #1: extended to the duration asked." in again
    shorter = client.post("/explorer/blocks", data={**form, "duration": "15m"}).text
    assert "Already blocked by #1, for at least as long: unchanged." in shorter
    (block,) = storage.list_blocks(ended=100)
    assert block.expires_at is not None
    assert (block.expires_at - storage.now()).total_seconds() == pytest.approx(3600, abs=5)
    assert storage.action_set().version == 2  # created, extended; the unchanged one: no bump


def test_the_agents_page_shows_the_key_of_each_process(
    client: TestClient, storage: Storage
) -> None:
    for key_id in (3, 4):
        storage.record_heartbeat(
            Heartbeat("shop", "web1", 7, "flask", "sqreen-python", "0.1", {}, key_id=key_id)
        )
    page = client.get("/explorer/agents").text
    assert "<td>#3</td>" in page and "<td>#4</td>" in page
    assert page.count("web1 / 7") == 2
    assert "forgotten after 7 days without a heartbeat" in page


def test_the_agents_page_shows_the_blocks_each_process_refuses(
    client: TestClient, storage: Storage
) -> None:
    why = {"12": "10.0.0.7/32 covers a trusted proxy <b>", "3": "10.0.0.0/8 is too wide"}
    storage.record_heartbeat(
        Heartbeat("shop", "web1", 7, "flask", "sqreen-python", "0.1", {"refused_blocks": why})
    )
    storage.record_heartbeat(Heartbeat("shop", "web2", 8, "flask", "sqreen-python", "0.1", {}))
    page = client.get("/explorer/agents").text
    assert '<strong class="bad">1</strong> refusing blocks.' in page
    rows = page.split("<tr")[2:]
    (refusing,) = (row for row in rows if "web1 / 7" in row)
    (enforcing,) = (row for row in rows if "web2 / 8" in row)
    # By block id, numerically; each reason escaped.
    items = re.findall(r"<li>(.*?)</li>", refusing.split("</ul>")[-2])
    assert [re.sub(r"<[^>]+>", "", html.unescape(i)) for i in items] == [
        "#3: 10.0.0.0/8 is too wide",
        "#12: 10.0.0.7/32 covers a trusted proxy ",
    ]
    assert "&lt;b&gt;" in refusing
    assert "none</td>\n    </tr>" in enforcing


def test_the_form_warns_of_private_networks(client: TestClient, storage: Storage) -> None:
    page = client.get("/explorer/blocks").text
    assert "Loopback is refused: every SDK trusts it as a proxy." in page
    assert "A private network (10/8, 172.16/12, 192.168/16, fc00::/7...)" in page
    token = csrf_of(client, "/explorer/blocks")
    form = {"csrf_token": token, "kind": "ip", "ip": "10.1.2.0/24", "duration": "1h"}
    flash = client.post("/explorer/blocks", data=form).text
    assert "Block #1 created: SDKs apply it within seconds. Warning: 10.1.2.0/24 is in " in flash
    public = client.post("/explorer/blocks", data={**form, "ip": "203.0.113.0/24"}).text
    assert "Block #2 created" in public and "Warning" not in public.split('class="flash"')[1][:300]


#: An identifier an attacker chose so that it reads otherwise: a right-to-left override, a
#: zero-width space and a zero-width joiner.
HIDDEN = "\u202eevil\u202c admin\u200b\u200dx"


def _field(page: str, pattern: str) -> str:
    found = re.search(pattern, page, re.DOTALL)
    assert found is not None, pattern
    return html.unescape(found[1])


def test_block_this_user_blocks_the_identifier_itself_not_how_it_is_shown(
    client: TestClient, storage: Storage
) -> None:
    """The page writes hidden characters out (``\\u202e``); the form must hold and send the
    characters themselves, or the block names a user nobody is (and the attacker who chose
    the name cannot be blocked in one click)."""
    from tests.server.conftest import wire_event

    stored = storage.insert_events([wire_event(user={"username": HIDDEN})], app="a", host="h")
    assert stored.stored == 1
    (event,) = storage.query_events(limit=1)
    page = client.get(f"/explorer/events/{event.id}?seq={event.seq}").text
    assert "\\u202eevil\\u202c admin\\u200b\\u200dx" in html.unescape(page)  # shown written out
    assert HIDDEN not in html.unescape(page)
    link = _field(page, r'<a href="([^"]+)">Block this user')
    form_page = client.get(link).text
    user = _field(form_page, r'<textarea name="user"[^>]*>(.*?)</textarea>')
    assert user == f"username={HIDDEN}"
    token = csrf_of(client, "/explorer/blocks")
    form = {"csrf_token": token, "kind": "user", "user": user, "duration": "1h"}
    assert "Block #1 created" in client.post("/explorer/blocks", data=form).text
    (block,) = storage.list_blocks()
    assert block.user == {"username": HIDDEN}
    listing = html.unescape(client.get("/explorer/blocks").text)
    assert 'username="\\u202eevil' in listing and HIDDEN not in listing


def test_filter_fields_send_back_what_they_filter_on(client: TestClient) -> None:
    """A filter's field holds the value filtered on, not its written-out form: submitting
    the form again (to add another filter) keeps the same filter."""
    page = client.get("/explorer/events", params={"user": f"username={HIDDEN}"}).text
    assert _field(page, r'<input name="user" value="([^"]*)"') == f"username={HIDDEN}"
    page = client.get("/explorer/events", params={"prop": "reason=a\u202eb", "name": "x\u200by"})
    assert _field(page.text, r'<input name="prop" value="([^"]*)"') == "reason=a\u202eb"
    assert _field(page.text, r'<input name="name" value="([^"]*)"') == "x\u200by"
