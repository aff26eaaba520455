"""The Event Explorer in a real headless Chromium, against real servers.

``sqreen serve`` and the project's FastAPI example (``examples/fastapi_app.py``, "the shop"
below) run as subprocesses on 127.0.0.1; the example's SDK sends to the collector with a key
from ``sqreen keys create``, and the admin password is set with ``sqreen admin-password``.
The collector runs one playbook (:data:`PLAYBOOK`, in monitor mode: it raises an alert on the
password-guessing attack and blocks nobody, so the blocks below are the page's own).
Playwright drives Debian's ``chromium``. Screenshots of the main views land in
``test-artifacts/explorer/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx2 as httpx
import pytest

from tests.server.conftest import SQREEN, free_port

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "explorer"
PASSWORD = "browser-test-password"
XSS = "<script>alert(1)</script>"
USERS = {"alice": "correct horse", "bob": "hunter2hunter2"}
ATTACKER = "198.51.100.66"
PLAYBOOK = f"""\
[[playbook]]
id = "brute-force-ip"
description = "One IP failing logins quickly {XSS}"
events = ["auth.login.failure"]
group_by = "ip"
threshold = 5
window = "5m"
action = "block_ip"
duration = "1h"
mode = "monitor"
"""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(found):
        reason = "Debian's chromium is not installed (apt-get install chromium; make test does)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is a failure")
        pytest.skip(reason)
    return found


def cli(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [*SQREEN, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=clean_env(),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url}: the server exited with {proc.returncode}"
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not come up")


def eventually(check: Callable[[], bool], timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the runner's own SQREEN_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(collector URL, shop URL, database) on real servers."""
    folder = tmp_path_factory.mktemp("explorer-browser")
    db = str(folder / "sqreen.db")
    (folder / "playbooks.toml").write_text(PLAYBOOK)
    token = cli("keys", "create", "--name", "shop", "--db", db).strip()
    cli("admin-password", "--password-stdin", "--db", db, stdin=PASSWORD + "\n")
    collector_port, shop_port = free_port(), free_port()
    collector_url = f"http://127.0.0.1:{collector_port}"
    shop_url = f"http://127.0.0.1:{shop_port}"
    serve = [*SQREEN, "serve", "--db", db, "--port", str(collector_port), "--no-access-log"]
    serve += ["--playbooks", str(folder / "playbooks.toml")]
    shop_env = clean_env(
        SQREEN_ENDPOINT=collector_url,
        SQREEN_TOKEN=token,
        SQREEN_APP_NAME="shop",
        SQREEN_FLUSH_INTERVAL="0.2",
        SQREEN_HEARTBEAT_INTERVAL="0.5",
    )
    uvicorn = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app"]
    uvicorn += ["--port", str(shop_port), "--log-level", "warning"]
    uvicorn += ["--no-proxy-headers"]  # the SDK resolves the client IP itself
    started = []
    try:
        for argv, env, url in (
            (serve, clean_env(), collector_url + "/healthz"),
            (uvicorn, shop_env, shop_url + "/"),
        ):
            started.append(subprocess.Popen(argv, cwd=ROOT, env=env))
            wait_up(url, started[-1])
        yield collector_url, shop_url, db
    finally:
        for proc in reversed(started):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def as_ip(ip: str, **headers: str) -> dict[str, str]:
    # The test stands in front of the shop as a loopback proxy would: the SDK trusts it.
    return {"X-Forwarded-For": ip, "User-Agent": "browser-test/1.0", **headers}


def login_at_shop(shop: str, user: str, password: str, ip: str) -> httpx.Response:
    return httpx.post(
        shop + "/login", json={"username": user, "password": password}, headers=as_ip(ip)
    )


@pytest.fixture(scope="module")
def traffic(servers: tuple[str, str, str]) -> None:
    """What the example app tracked moments before the browser looks: two sign-ups, a
    password-guessing attack on alice from one IP, good logins, and exports (one asking for a
    script as its format)."""
    _, shop, db = servers
    for user, password in USERS.items():
        reply = httpx.post(
            shop + "/signup",
            json={"username": user, "password": password},
            headers=as_ip("192.0.2.10"),
        )
        assert reply.status_code == 201
    for guess in ("123456", "password", "qwerty", "letmein", "dragon"):
        assert login_at_shop(shop, "alice", guess, ATTACKER).status_code == 401
    assert login_at_shop(shop, "bob", USERS["bob"], "192.0.2.10").status_code == 200
    assert login_at_shop(shop, "alice", USERS["alice"], "192.0.2.20").status_code == 200
    for form in ("csv", XSS):
        reply = httpx.post(
            shop + "/export",
            json={"report": "q3-revenue", "format": form},
            headers=as_ip("192.0.2.20", **{"X-User": "alice"}),
        )
        assert reply.status_code == 202
    from sqreen.server.storage import open_storage

    storage = open_storage(db)
    try:
        eventually(lambda: len(storage.query_events(limit=20)) == 11, what="11 events stored")
    finally:
        storage.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium()
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def dialog_free_page(browser: Any, width: int = 1400) -> Iterator[Any]:
    """A page in a fresh browser context ``width`` wide; any dialog (alert, confirm...)
    fails the test."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    dialogs: list[str] = []
    page = context.new_page()
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert dialogs == [], f"a dialog opened: {dialogs}"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    yield from dialog_free_page(browser)


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def log_in(page: Any, collector: str) -> None:
    page.goto(collector + "/explorer/")
    assert "/explorer/login" in page.url
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(re.compile(r".*/explorer/events$"))


def row_names(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("#events tbody tr td:nth-child(2)").all_inner_texts()]


def test_walkthrough(servers: tuple[str, str, str], traffic: None, page: Any) -> None:
    collector, shop, _ = servers
    page.goto(collector + "/explorer/events")
    assert "/explorer/login" in page.url
    shot(page, "login")
    log_in(page, collector)

    # The events the shop tracked moments ago, newest first.
    names = row_names(page)
    assert names[:2] == ["data.export.requested", "data.export.requested"]
    assert names[-2:] == ["auth.signup", "auth.signup"]
    assert names.count("auth.login.failure") == 5 and "auth.login.success" in names
    # The script is text in its cell: no dialog opens (the page fixture checks).
    assert page.locator("#events td.props", has_text=XSS).count() == 1
    assert page.locator("figure.histogram svg rect.bar").count() >= 1
    shot(page, "events")

    # Filter by event name, then by a property (both kept in the URL).
    page.fill("input[name=name]", "auth.login.failure")
    page.click("button:has-text('Apply')")
    page.wait_for_url(re.compile(r".*name=auth\.login\.failure"))
    assert row_names(page) == ["auth.login.failure"] * 5
    page.fill("input[name=name]", "")
    page.fill("input[name=prop]", f"format={XSS}")
    page.click("button:has-text('Apply')")
    page.wait_for_url(re.compile(r".*prop=format"))
    assert row_names(page) == ["data.export.requested"]
    assert page.locator(".chips li", has_text=XSS).count() == 1
    shot(page, "events-filtered")

    # Group by IP: the attacker stands out.
    page.goto(collector + "/explorer/events")
    page.click(".groupby a:has-text('IP')")
    page.wait_for_url(re.compile(r".*group=ip"))
    first = page.locator(".groups tbody tr").first
    assert first.locator("td").nth(0).inner_text() == ATTACKER
    assert first.locator("td").nth(1).inner_text() == "5"
    shot(page, "group-by-ip")

    # One event's detail: request, user, properties, raw JSON.
    first.locator("a").click()
    page.wait_for_url(re.compile(r".*ip=198\.51\.100\.66$"))
    page.locator("#events td.time a").first.click()
    page.wait_for_url(re.compile(r".*/explorer/events/[^?]+\?seq=[0-9]+$"))
    assert page.locator("h1").inner_text() == "auth.login.failure"
    assert "/login" in page.locator("table.kv").last.inner_text()
    assert '"username": "alice"' in page.locator("pre.raw").inner_text()
    shot(page, "event-detail")

    # Block alice from the page: the shop refuses her, even with her password.
    page.click("text=Block this user…")
    page.wait_for_url(re.compile(r".*/explorer/blocks\?user=username%3Dalice"))
    assert page.locator("textarea[name=user]").input_value() == "username=alice"
    page.select_option("select[name=duration]", "1h")
    page.fill("input[name=reason]", f"password guessing from {ATTACKER}")
    page.click("button:has-text('Block')")
    assert "Block #1 created" in page.locator(".flash").inner_text()
    assert "username=alice" in page.locator("table.blocks").first.inner_text()
    shot(page, "blocks")
    eventually(
        lambda: login_at_shop(shop, "alice", USERS["alice"], "192.0.2.20").status_code == 403,
        what="the shop to refuse alice",
    )
    assert login_at_shop(shop, "bob", USERS["bob"], "192.0.2.10").status_code == 200

    # New events appear without a reload.
    page.goto(collector + "/explorer/events?name=auth.login.failure")
    before = page.locator("#events tbody tr").count()
    login_at_shop(shop, "bob", "wrong", "203.0.113.99")
    page.locator("#events tbody tr.new").first.wait_for(timeout=15_000)
    assert page.locator("#events tbody tr").count() == before + 1
    assert "203.0.113.99" in page.locator("#events tbody tr").first.inner_text()
    # Its cells link as the page's own rows do: the view narrowed by one value.
    new_row = page.locator("#events tbody tr.new").first
    assert new_row.locator("a:has-text('203.0.113.99')").get_attribute("href") == (
        "/explorer/events?name=auth.login.failure&ip=203.0.113.99"
    )
    assert new_row.locator("a:has-text('username=bob')").get_attribute("href") == (
        "/explorer/events?name=auth.login.failure&user=username%3Dbob"
    )
    assert new_row.locator("td.severity a").get_attribute("href") == (
        "/explorer/events?name=auth.login.failure&severity=warning"
    )
    # Later polls ask again from two polls back (late commits): still shown once.
    page.locator("#live", has_text=re.compile("^live$")).wait_for(timeout=15_000)
    page.wait_for_timeout(3500)
    assert page.locator("#events tbody tr").count() == before + 1

    # The shop's SDK process is there, heartbeats flowing, nothing dropped.
    page.click("nav >> text=Agents")
    page.wait_for_url(re.compile(r".*/explorer/agents$"))  # loaded, not just committed
    agents = page.locator("table.agents tbody tr")
    assert agents.count() == 1
    assert re.search(r"shop\s+127\.0\.0\.1|shop", agents.inner_text())
    assert "fastapi" in agents.inner_text() and "none" in agents.inner_text()  # no drops
    assert "1 SDK process reported: 1 sending heartbeats" in page.locator(".summary").inner_text()
    shot(page, "agents")

    # The block says who made it, and how often it refused alice: the SDK's heartbeats
    # count every refusal, its sampled security.blocked events stand for them.
    def hits() -> list[str]:
        page.goto(collector + "/explorer/blocks")
        return page.locator("#block-1 td.num").all_inner_texts()

    eventually(lambda: "0" not in hits(), what="the block's refusals on the blocks page")
    assert "by explorer" in page.locator("#block-1").inner_text()
    shot(page, "blocks-hits")

    # Unblock, then log out: every page leads back to the login.
    page.click("button:has-text('Unblock')")
    assert "Block #1 lifted." in page.locator(".flash").inner_text()
    page.click("button:has-text('Log out')")
    page.wait_for_url(re.compile(r".*/explorer/login$"))
    page.goto(collector + "/explorer/blocks")
    assert "/explorer/login" in page.url


def test_works_without_javascript(
    servers: tuple[str, str, str], traffic: None, browser: Any
) -> None:
    collector, _, _ = servers
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        log_in(page, collector)
        page.fill("input[name=user]", "username=alice")
        page.click("button:has-text('Apply')")
        page.wait_for_url(re.compile(r".*user=username%3Dalice"))
        names = row_names(page)
        assert names and set(names) <= {
            "auth.login.failure",
            "auth.login.success",
            "data.export.requested",
            "auth.signup",
            "security.blocked",  # her refused login, when the walkthrough ran first
        }
        assert page.locator("#live").inner_text() == ""  # no live update without JS
        page.click(".groupby a:has-text('name')")
        page.wait_for_url(re.compile(r".*group=name"))
        assert page.locator(".groups tbody tr").count() >= 2
    finally:
        context.close()


def test_alerts_and_playbooks(servers: tuple[str, str, str], traffic: None, page: Any) -> None:
    collector, _, _ = servers
    log_in(page, collector)

    # The attack raised an alert (monitor mode: no block); it leads to its events.
    page.click("nav >> text=Alerts")
    page.wait_for_url(re.compile(r".*/explorer/alerts$"))
    row = page.locator("table.alerts tbody tr").first
    cells = [t.strip() for t in row.locator("td").all_inner_texts()]
    assert cells[1] == "brute-force-ip" and cells[2] == f"ip {ATTACKER}"
    assert cells[3] == "5" and cells[5].startswith("monitor") and cells[6] == "none"
    shot(page, "alerts")
    row.locator("td.time a").click()
    page.wait_for_url(re.compile(r".*/explorer/alerts/\d+$"))
    events = page.locator("#alert-events tbody tr")
    assert events.count() == 5
    assert set(events.locator("td:nth-child(2)").all_inner_texts()) == {"auth.login.failure"}
    shot(page, "alert")
    page.click(f"a:has-text('{ATTACKER}')")
    page.wait_for_url(re.compile(r".*/explorer/events\?ip=198\.51\.100\.66$"))
    assert row_names(page).count("auth.login.failure") == 5
    page.go_back()
    events.first.locator("a").click()
    page.wait_for_url(re.compile(r".*/explorer/events/[^?]+\?seq=[0-9]+$"))
    assert page.locator("h1").inner_text() == "auth.login.failure"

    # The playbook in force, its description as text (no dialog), its alert counted.
    page.click("nav >> text=Playbooks")
    section = page.locator("#playbook-brute-force-ip")
    assert XSS in section.inner_text() and "5 events within 5 min" in section.inner_text()
    shot(page, "playbooks")
    section.locator("a:has-text('1 alert')").click()
    page.wait_for_url(re.compile(r".*/explorer/alerts\?playbook=brute-force-ip$"))
    assert page.locator("table.alerts tbody tr").count() == 1


@pytest.fixture
def poisoned(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(collector URL, ingest token): a collector of its own, on a database holding rows as
    collectors stored them before they checked times and text (year 9999, year 1, escaped
    lone surrogates)."""
    from sqreen.server.storage import open_storage
    from tests.server.poison import store_old_rows

    db = str(tmp_path / "sqreen.db")
    token = cli("keys", "create", "--name", "app-server", "--db", db).strip()
    cli("admin-password", "--password-stdin", "--db", db, stdin=PASSWORD + "\n")
    storage = open_storage(db)
    try:
        store_old_rows(storage._write, storage.now())  # type: ignore[attr-defined]
    finally:
        storage.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [*SQREEN, "serve", "--db", db, "--port", str(port), "--no-access-log"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=clean_env())
    try:
        wait_up(url + "/healthz", proc)
        yield url, token
    finally:
        proc.terminate()
        proc.wait(10)


def send(collector: str, token: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch as an attacker holding the key sends it (ASCII JSON: "\\ud800" escaped)."""
    from tests.server.conftest import envelope

    reply = httpx.post(
        collector + "/v1/events",
        content=json.dumps(envelope(events), ensure_ascii=True),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def test_poisoned_events_are_shown(poisoned: tuple[str, str], browser: Any) -> None:
    """Events no reader could show (far times, lone surrogates, terminal escapes, bidi
    overrides), sent through ingest and stored before it checked them, are listed, drawn,
    opened and updated live, without one console error."""
    from tests.server.conftest import wire_event
    from tests.server.poison import HOSTILE_IDS, OLD_IDS, hostile_events

    collector, token = poisoned
    reply = send(collector, token, hostile_events())

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page = context.new_page()
    page.on("console", lambda m: errors.append(console_error(m)) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(r.url) if r.status >= 400 else None)
    page.on("dialog", lambda d: (errors.append(d.message), d.dismiss()))
    page.set_default_timeout(10_000)
    try:
        log_in(page, collector)
        rows = page.locator("#events tbody tr")
        links = page.locator("#events td.time a").evaluate_all("as => as.map(a => a.href)")
        shown = {unquote(urlsplit(link).path.rpartition("/")[2]) for link in links}
        # Every row, the old one of year 1 included: retention goes by receipt, and it was
        # received just now (its time, repaired to 1970, does not make it expire).
        assert shown == {*OLD_IDS, *HOSTILE_IDS}
        assert page.locator("figure.histogram svg rect.bar").count() >= 1
        text = page.locator("#events").inner_text()
        assert "\ufffd" in text and "mallory\\x1b[2K\\r\\x1b[1A" in text
        assert "\u202e" not in text and "\\u202egnp.exe" in text
        shot(page, "poisoned-events")

        # New poisoned events arrive by the live update, built from the API, shown the same.
        live = wire_event(id="live", user={"username": "eve\u202e\x1b[1A\ud800"})
        assert send(collector, token, [live])["accepted"] == 1
        page.locator("#events tbody tr.new").first.wait_for(timeout=15_000)
        # (Quoted: not plain ASCII, so a lookalike of a space or an equals sign in it could
        # not make it read as more pairs.)
        assert 'username="eve\\u202e\\x1b[1A\ufffd"' in rows.first.inner_text()

        for event_id in ("lone-\ufffd", "forged", "year-1", "year-9999", "old-9999", "old-lone"):
            page.goto(f"{collector}/explorer/events/{quote(event_id, safe='')}")
            assert page.locator("h1").inner_text() == "auth.login.failure"
        assert "\ufffd" in page.locator("pre.raw").inner_text()
        for view in ("group=user:uid", "group=prop:note"):
            page.goto(f"{collector}/explorer/events?{view}")
            assert page.locator(".groups tbody tr").count() >= 1
        page.goto(f"{collector}/explorer/events?since=3650d")
        stamped_1970 = {"year-1", "year-1-east", "year-1969", "old-1"}
        assert rows.count() == len(shown - stamped_1970) + 1
        # A burst larger than a poll shows (an attack's): the gap is said, not skipped.
        burst = [wire_event(id=f"burst-{n}") for n in range(600)]
        assert send(collector, token, burst)["accepted"] == 600
        page.locator("#events tbody tr.gap").wait_for(timeout=15_000)
        # A later poll, with nothing new: still said.
        later = re.compile("^live · more arrived than shown: reload to see them all$")
        page.locator("#live", has_text=later).wait_for(timeout=15_000)
        assert "burst-599" in page.locator("#events td.time a").first.get_attribute("href")
        assert page.locator("#events tbody tr.gap").count() == 1
    finally:
        context.close()
    assert errors == []  # the icon included: the pages name theirs
    # Not one event was refused.
    assert reply["rejected"] == []
    assert reply["accepted"] == len(HOSTILE_IDS)


def console_error(message: Any) -> str:
    """A console error and where it came from."""
    return f"{message.text} {message.location.get('url', '')}"
