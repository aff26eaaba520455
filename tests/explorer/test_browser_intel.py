"""IP intelligence in the Event Explorer, in a real headless Chromium: ``sqreen serve
--geoip-db`` (a ``.mmdb`` the test writes) on 127.0.0.1, events sent to it as an SDK sends
them, then country, network kind and score on the rows and the detail, and filters and groups
on them, clicked through."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest

from tests.explorer import test_browser
from tests.explorer.test_browser import PASSWORD, clean_env, cli, log_in, shot, wait_up
from tests.mmdb import write_mmdb
from tests.server.conftest import SQREEN, envelope, free_port, wire_event

pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TOR, GOOGLE, LONDON = "185.220.101.1", "8.8.8.8", "81.2.69.160"
#: The walkthrough's Chromium and pages (Debian's chromium; any dialog fails the test).
browser = test_browser.browser
page = test_browser.page


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A collector with a city ``.mmdb``, holding: 3 login failures from a Tor exit (DE),
    2 from Google's cloud (US), 1 success from a London home line (GB, with its city)."""
    folder = tmp_path_factory.mktemp("explorer-intel")
    db = str(folder / "sqreen.db")
    mmdb = write_mmdb(
        folder / "city.mmdb",
        {
            "81.2.69.0/24": {
                "city": {"names": {"en": "London"}},
                "country": {"iso_code": "GB"},
                "location": {"latitude": 51.5142, "longitude": -0.0931, "accuracy_radius": 10},
            }
        },
    )
    token = cli("keys", "create", "--name", "sdk", "--db", db).strip()
    cli("admin-password", "--password-stdin", "--db", db, stdin=PASSWORD + "\n")
    url = f"http://127.0.0.1:{free_port()}"
    argv = [*SQREEN, "serve", "--db", db, "--port", url.rsplit(":", 1)[1], "--no-access-log"]
    proc = subprocess.Popen([*argv, "--geoip-db", str(mmdb)], env=clean_env())
    try:
        wait_up(url + "/healthz", proc)
        events = []
        for ip, name, count in (
            (TOR, "auth.login.failure", 3),
            (GOOGLE, "auth.login.failure", 2),
            (LONDON, "auth.login.success", 1),
        ):
            for _ in range(count):
                event = wire_event(name=name)
                event["request"] = {**event["request"], "ip": ip}
                events.append(event)
        reply = httpx.post(
            url + "/v1/events",
            json=envelope(events),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert reply.json()["accepted"] == 6
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def network_cells(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("#events tbody td.network").all_inner_texts()]


def test_country_kind_and_score_on_rows_detail_filters_and_groups(
    collector: str, page: Any
) -> None:
    log_in(page, collector)
    cells = network_cells(page)
    assert sorted(cells) == sorted(["DE tor 60"] * 3 + ["US hosting 25"] * 2 + ["GB"])
    shot(page, "events-network")

    # A row's kind is a filter: only the Tor exit's events remain.
    page.locator("#events tbody td.network a:has-text('tor')").first.click()
    page.wait_for_url(re.compile(r".*/explorer/events\?kind=tor$"))
    assert network_cells(page) == ["DE tor 60"] * 3

    # The filter form: a country typed in lower case.
    page.goto(collector + "/explorer/events")
    page.fill("input[name=country]", "us")
    page.click("button:has-text('Apply')")
    page.wait_for_url(re.compile(r".*country=US"))
    assert network_cells(page) == ["US hosting 25"] * 2

    # Login failures by country: DE 3, US 2, GB none.
    page.goto(collector + "/explorer/events")
    page.click("#failures-by-country")
    page.wait_for_url(re.compile(r".*group=country"))
    rows = page.locator(".groups tbody tr")
    counts = [tuple(r.locator("td").all_inner_texts()[:2]) for r in rows.all()]
    assert counts == [("DE", "3"), ("US", "2")]
    rows.first.locator("a").click()
    page.wait_for_url(re.compile(r".*country=DE"))
    assert set(network_cells(page)) == {"DE tor 60"}

    # Group by network kind, from the group-by links.
    page.goto(collector + "/explorer/events")
    page.click(".groupby a:has-text('network kind')")
    kinds = {r.locator("td").first.inner_text() for r in page.locator(".groups tbody tr").all()}
    assert {"tor", "hosting"} <= kinds

    # Severity, from each name: on every row, and a filter.
    page.goto(collector + "/explorer/events")
    levels = [t.strip() for t in page.locator("#events tbody td.severity").all_inner_texts()]
    assert sorted(levels) == ["info"] + ["warning"] * 5
    page.select_option("select[name=severity]", "info")
    page.click("button:has-text('Apply')")
    page.wait_for_url(re.compile(r".*severity=info"))
    assert network_cells(page) == ["GB"]

    # The detail: city, coordinates and accuracy from the .mmdb.
    page.goto(collector + "/explorer/events?country=GB")
    page.locator("#events tbody td.time a").first.click()
    page.wait_for_url(re.compile(r".*/explorer/events/[^?]+\?seq=[0-9]+$"))
    detail = page.locator("#ip-info").inner_text()
    assert "GB" in detail and "London" in detail and "51.5142" in detail and "10 km" in detail
    assert "threat score 0" in detail
    assert page.locator("#severity").inner_text() == "info"
    shot(page, "event-network")
    page.goto(collector + "/explorer/events?kind=tor")
    page.locator("#events tbody td.time a").first.click()
    detail = page.locator("#ip-info").inner_text()
    assert "tor" in detail and "Tor" in detail and "threat score 60 (tor)" in detail


def test_a_bad_country_filter_is_named(collector: str, page: Any) -> None:
    log_in(page, collector)
    page.goto(collector + "/explorer/events?country=Germany")
    assert "country: must be a two-letter country code" in page.locator("main").inner_text()
