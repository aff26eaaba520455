"""The Event Explorer's layout against hostile long strings, in a real headless Chromium: a
3 000-character property without a space, a 245-character event name, a 256-character host
and user identifier, at a desktop width and a phone's. No page may be wider than the window
(``document.documentElement.scrollWidth <= innerWidth``); at the desktop width no table needs
a scroll bar of its own either; the event's page still shows every character, and the nav
bar's last links stay on screen."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
import pytest

from tests.explorer import test_browser
from tests.explorer.test_browser import (
    PASSWORD,
    clean_env,
    cli,
    dialog_free_page,
    log_in,
    shot,
    wait_up,
)
from tests.server.conftest import SQREEN, envelope, free_port, wire_event

pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: The walkthrough's Chromium (Debian's chromium; any dialog fails the test).
browser = test_browser.browser

LONG_NAME = "app." + "verylongeventname" * 14 + "x" * 3  # 245 characters, no break
BLOB = "A" * 3000
HOST = "h" * 256
USER = "u" * 256
ZALGO = "a" + "\u0301" * 200  # combining marks, stacked above one letter
WIDTHS = (1280, 390)
PLAYBOOK = f"""\
[[playbook]]
id = "long-names"
events = ["{LONG_NAME}"]
group_by = "user"
threshold = 1
window = "10m"
action = "alert"
"""


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A collector holding a few ordinary events and the hostile ones, a heartbeat from a
    host of 256 characters, and an alert on the long-named event's user."""
    assert len(LONG_NAME) == 245
    folder = tmp_path_factory.mktemp("explorer-layout")
    db = str(folder / "sqreen.db")
    (folder / "playbooks.toml").write_text(PLAYBOOK)
    token = cli("keys", "create", "--name", "sdk", "--db", db).strip()
    cli("admin-password", "--password-stdin", "--db", db, stdin=PASSWORD + "\n")
    cli("block", "user", f"username={USER}", "--reason", "R" * 500, "--db", db)
    url = f"http://127.0.0.1:{free_port()}"
    argv = [*SQREEN, "serve", "--db", db, "--port", url.rsplit(":", 1)[1], "--no-access-log"]
    proc = subprocess.Popen([*argv, "--playbooks", str(folder / "playbooks.toml")], env=clean_env())
    try:
        wait_up(url + "/healthz", proc)
        auth = {"Authorization": f"Bearer {token}"}
        events = [wire_event(name="auth.login.failure") for _ in range(3)]
        properties = {"blob": BLOB, "k" * 128: "a long key"}
        events.append(wire_event(name="app.page", properties=properties))
        events.append(wire_event(name=LONG_NAME, user={"username": USER}))
        events.append(wire_event(name=ZALGO))
        body = envelope(events, host=HOST, name="shop")
        reply = httpx.post(url + "/v1/events", json=body, headers=auth)
        assert reply.json()["accepted"] == 6, reply.text
        stats = {"queue_depth": 0, "sent": 5, "tracked": 5}
        beat = {"sdk": {"name": "sqreen-python", "version": "0.1"}, "app": body["app"]}
        reply = httpx.post(url + "/v1/heartbeat", json={**beat, "stats": stats}, headers=auth)
        assert reply.status_code == 200, reply.text
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(params=WIDTHS, ids=lambda w: f"{w}px")
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    yield from dialog_free_page(browser, request.param)


def fits(page: Any, what: str) -> None:
    """The page is no wider than the window; at a desktop width, no table scrolls either."""
    width = page.evaluate("window.innerWidth")
    scroll = page.evaluate("document.documentElement.scrollWidth")
    if scroll > width + 1:
        wider = page.evaluate(
            "Array.from(document.querySelectorAll('body *')).filter(e => !e.closest('.wide'))"
            ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)"
            ".slice(0, 5).map(e => e.tagName + '.' + e.className + ': ' + "
            "Math.round(e.getBoundingClientRect().right))"
        )
        raise AssertionError(f"{what}: {scroll} px wide in a {width} px window: {wider}")
    if width >= 1000:
        wide = page.evaluate(
            "Array.from(document.querySelectorAll('.wide'))"
            ".filter(e => e.scrollWidth > e.clientWidth + 1).length"
        )
        assert wide == 0, f"{what}: a table needs its own scroll bar at {width} px"
    # The nav bar's last entries stay on screen.
    for selector in ("nav[aria-label=Main] a:has-text('Agents')", ".logout button"):
        box = page.locator(selector).bounding_box()
        assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= width + 1, (
            what,
            selector,
            box,
        )


def test_long_strings_keep_every_page_within_the_window(collector: str, page: Any) -> None:
    width = page.viewport_size["width"]
    log_in(page, collector)
    fits(page, "events")
    # The long name is cut short in the list, in full in its title; the next columns show.
    cell = page.locator("#events tbody a.clip", has_text="app.verylong").first
    assert cell.get_attribute("title") == LONG_NAME
    if width >= 1000:
        header = page.locator("#events thead th:has-text('Properties')").bounding_box()
        assert header is not None and header["x"] + header["width"] <= width
    shot(page, f"layout-events-{width}")

    page.goto(collector + "/explorer/events?group=name")
    fits(page, "events by name")
    assert page.locator(".groups a.clip", has_text="app.verylong").get_attribute("title") == (
        LONG_NAME
    )

    page.goto(collector + "/explorer/events?name=app.page")
    page.locator("#events tbody td.time a").first.click()
    page.wait_for_url(re.compile(r".*/explorer/events/[^?]+\?seq=[0-9]+$"))
    fits(page, "event with a 3 000-character property")
    assert BLOB in page.locator("main").inner_text().replace("\n", "")  # all of it, shown
    shot(page, f"layout-event-{width}")

    page.goto(collector + f"/explorer/events?name={LONG_NAME}")
    page.locator("#events tbody td.time a").first.click()
    page.wait_for_url(re.compile(r".*/explorer/events/[^?]+\?seq=[0-9]+$"))
    fits(page, "event with a long name and user")
    assert LONG_NAME in page.locator("h1").inner_text().replace("\n", "")

    # 200 combining marks over one letter: the heading stays within its own box (it drew
    # over the header and the nav, and widened the page to 4 378 px).
    page.goto(collector + "/explorer/events?name=" + quote(ZALGO))
    page.locator("#events tbody td.time a").first.click()
    page.wait_for_url(re.compile(r".*/explorer/events/[^?]+\?seq=[0-9]+$"))
    fits(page, "event with a name of stacked combining marks")
    assert page.locator("h1").evaluate("e => getComputedStyle(e).overflow") == "hidden"

    page.goto(collector + "/explorer/alerts")
    fits(page, "alerts")
    page.locator("table.alerts tbody td.time a").first.click()
    page.wait_for_url(re.compile(r".*/explorer/alerts/[0-9]+$"))  # (measured while it loads,
    page.wait_for_load_state()  # the page had no document yet)
    fits(page, "an alert")
    shot(page, f"layout-alert-{width}")

    page.goto(collector + "/explorer/agents")
    fits(page, "agents")
    assert HOST in page.locator("table.agents tbody").inner_text().replace("\n", "")  # wrapped
    shot(page, f"layout-agents-{width}")

    for path in ("/explorer/blocks", "/explorer/playbooks"):
        page.goto(collector + path)
        fits(page, path)
