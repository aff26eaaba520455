"""An event's link leads to that event, whatever its id: an id is the sender's text, and a
browser removes ``.`` and ``..`` path segments (``%2e`` spellings too) before it asks, so
``../blocks`` led to the blocks page and ``..`` to the list, never to the event."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx

from sqreen.server.explorer import set_admin_password
from sqreen.server.storage import open_storage
from tests.server.conftest import ServeProcess

from .conftest import PASSWORD, wire_event

HOSTILE_IDS = ["../blocks", "..", ".", "a/../../agents", "%2e%2e", ".%2E", "x/./y", "../../v1"]
_ROW_LINK = re.compile(r'<td class="time"><a href="([^"]+)">')
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def as_a_browser_asks(href: str) -> str:
    """The path and query a browser requests for ``href`` (absolute path), dot segments
    removed as the URL standard says (``.``/``%2e`` and ``..``/``.%2e``/``%2e.``/``%2e%2e``,
    any case)."""
    parts = urlsplit(html.unescape(href))
    out: list[str] = []
    segments = parts.path.split("/")[1:]
    for i, seg in enumerate(segments):
        low = seg.lower()
        last = i == len(segments) - 1
        if low in (".", "%2e"):
            if last:
                out.append("")
        elif low in ("..", ".%2e", "%2e.", "%2e%2e"):
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out) + ("?" + parts.query if parts.query else "")


def test_every_event_link_leads_to_its_event(tmp_path: Path) -> None:
    db = str(tmp_path / "sqreen.db")
    storage = open_storage(db)
    try:
        set_admin_password(storage, PASSWORD)
        events = [wire_event(id=i, name="custom.path") for i in HOSTILE_IDS]
        assert storage.insert_events(events, app="shop", host="web1").stored == len(events)
    finally:
        storage.close()
    # A real server: the test client decodes a path twice (``%252E`` arrives as ``.``).
    server = ServeProcess(db).start()
    try:
        shown = follow_every_link(server.url)
    finally:
        server.stop()
    assert shown == set(HOSTILE_IDS)


def follow_every_link(url: str) -> set[str]:
    """The ids the pages of the events' links show, logged in at ``url``."""
    with httpx.Client(base_url=url) as client:
        token = _CSRF.search(client.get("/explorer/login").text)
        assert token
        client.post("/explorer/login", data={"password": PASSWORD, "csrf_token": token[1]})
        links = _ROW_LINK.findall(client.get("/explorer/events?name=custom.path").text)
        assert len(links) == len(HOSTILE_IDS)
        api = client.get("/explorer/api/events?name=custom.path").json()["events"]
        links += [e["display"]["url"] for e in api]  # the live update's rows
        shown = set()
        for href in links:
            detail = client.get(as_a_browser_asks(href))
            assert detail.status_code == 200, (href, detail.status_code)
            found = re.search(r"<dt>Event id</dt><dd><code>([^<]*)</code>", detail.text)
            assert found, (href, detail.text[:300])
            shown.add(html.unescape(found[1]))
    return shown
