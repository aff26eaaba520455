"""Playbooks that can never fire with the collector's enrichment as started are said at start:
a detection switched off by an option (``--no-ip-intel``, ``--travel-speed 0``, no
``--geoip-db``) would otherwise pass for a quiet site."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqreen.server.playbooks import TEMPLATES, never_firing, parse_playbooks

from .test_serve_listen import said, serving

BY_COUNTRY = """
[[playbook]]
id = "tor-failures"
events = ["auth.login.failure"]
where = { "ip.kind" = ["tor"] }
group_by = "ip.country"
threshold = 5
window = "1h"
action = "alert"

[[playbook]]
id = "by-network"
events = ["auth.login.failure"]
group_by = "ip.asn"
threshold = 50
window = "1h"
action = "alert"

[[playbook]]
id = "travel"
events = ["security.impossible_travel"]
group_by = "user"
threshold = 1
window = "1h"
action = "block_user"
duration = "1h"
"""


def _said(
    ip_intel: bool,
    geoip: bool,
    travel: bool,
    text: str = BY_COUNTRY,
    gives: frozenset[str] = frozenset({"places", "asn"}),
) -> list[str]:
    books = parse_playbooks(text).playbooks
    return never_firing(books, ip_intel=ip_intel, geoip=geoip, travel=travel, gives=gives)


def test_everything_on_says_nothing() -> None:
    assert _said(True, True, True) == []
    assert _said(True, False, False, TEMPLATES) == []  # the templates read no ip.* field


def test_ip_intelligence_off_says_each_playbook_reading_ip_fields_and_travel() -> None:
    assert _said(False, False, True) == [
        "playbook 'tor-failures' reads ip.country, ip.kind, which no event holds with "
        "--no-ip-intel: it never fires",
        "playbook 'by-network' reads ip.asn, which no event holds with --no-ip-intel: it "
        "never fires",
        "playbook 'travel' acts on security.impossible_travel, which the collector does not "
        "raise here (--no-ip-intel): it never fires",
    ]


@pytest.mark.parametrize(
    ("geoip", "travel", "why"),
    [(False, True, "no --geoip-db: no login has a place"), (True, False, "--travel-speed 0")],
)
def test_travel_off_or_without_a_city_file_is_said(geoip: bool, travel: bool, why: str) -> None:
    said_lines = _said(True, geoip, travel)
    assert said_lines[-1] == (
        "playbook 'travel' acts on security.impossible_travel, which the collector does not "
        f"raise here ({why}): it never fires"
    )
    asn = "playbook 'by-network' reads ip.asn, which only a --geoip-db file with ASNs gives"
    assert any(line.startswith(asn) for line in said_lines) is not geoip


@pytest.mark.parametrize(
    ("database_type", "gives"),
    [
        ("GeoLite2-City", {"places"}),
        ("DBIP-City-Lite", {"places"}),
        ("GeoIP2-City", {"places"}),
        ("GeoLite2-ASN", {"asn"}),
        ("DBIP-ASN-Lite", {"asn"}),
        ("GeoLite2-Country", set()),
        ("DBIP-Country-Lite", set()),
        # Layouts not known here may give either: nothing is said of them.
        ("ipinfo_lite.mmdb", {"places", "asn"}),
        ("GeoIP2-Enterprise", {"places", "asn"}),
        ("My-Own", {"places", "asn"}),
    ],
)
def test_what_a_file_can_give_is_read_from_its_database_type(
    database_type: str, gives: set[str]
) -> None:
    from sqreen.server.intel._mmdb_paths import layout_gives

    assert layout_gives(database_type) == gives


def test_files_that_give_no_asn_or_no_place_are_said_too() -> None:
    """Files given, but none that gives what a playbook reads: an ASN file places no login,
    a City file gives no ASN."""
    asn_only = _said(True, True, True, gives=frozenset({"asn"}))
    assert asn_only == [
        "playbook 'travel' acts on security.impossible_travel, which the collector does not "
        "raise here (no --geoip-db file with coordinates, such as a City file: no login has "
        "a place): it never fires"
    ]
    city_only = _said(True, True, True, gives=frozenset({"places"}))
    assert city_only == [
        "playbook 'by-network' reads ip.asn, which only a --geoip-db file with ASNs gives, and "
        "none given has them: it never fires"
    ]
    assert len(_said(True, True, True, gives=frozenset())) == 2
    assert _said(True, True, True, gives=frozenset({"asn", "places"})) == []


def test_serve_says_what_its_files_cannot_give(tmp_path: Path) -> None:
    from .test_intel import asn_db

    book = tmp_path / "playbooks.toml"
    book.write_text(BY_COUNTRY)
    asn = asn_db(tmp_path / "GeoLite2-ASN.mmdb")
    with serving(tmp_path, "--port", "0", "--geoip-db", str(asn), "--playbooks", str(book)) as (
        proc,
        log,
    ):
        said(proc, log, "startup complete")
        text = log.read_text()
    assert "no --geoip-db file with coordinates, such as a City file" in text
    assert "reads ip.asn" not in text  # the ASN file gives them


def test_serve_says_it_at_start(tmp_path: Path) -> None:
    book = tmp_path / "playbooks.toml"
    book.write_text(BY_COUNTRY)
    with serving(tmp_path, "--port", "0", "--no-ip-intel", "--playbooks", str(book)) as (
        proc,
        log,
    ):
        said(proc, log, "startup complete")
        text = log.read_text()
    assert "3 playbooks loaded from" in text
    assert "playbook 'tor-failures' reads ip.country, ip.kind, which no event holds" in text
    assert "playbook 'travel' acts on security.impossible_travel" in text


def test_a_reload_says_it_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A playbook added to the file later, that can never fire either, is said as it is
    loaded (the collector set ``unreachable`` at start), at WARNING."""
    from sqreen.server.playbooks import PlaybookSource

    book = tmp_path / "playbooks.toml"
    book.write_text(TEMPLATES)
    source = PlaybookSource(book)
    source.unreachable = lambda found: never_firing(
        found.playbooks, ip_intel=False, geoip=False, travel=False
    )
    book.write_text(TEMPLATES + BY_COUNTRY.replace('id = "by-network"', 'id = "by-net"'))
    assert source.check(force=True)
    said_lines = [r for r in caplog.records if "never fires" in r.getMessage()]
    assert [r.levelname for r in said_lines] == ["WARNING"] * 3
    assert "playbook 'by-net' reads ip.asn" in said_lines[1].getMessage()


def test_a_name_close_to_a_standard_one_is_said_at_start_too() -> None:
    """``playbooks check`` said it; a collector started on the file said nothing, and the
    playbook went to production reading events nobody sends."""
    typo = BY_COUNTRY.replace('events = ["auth.login.failure"]', 'events = ["auth.login.failur"]')
    lines = _said(True, True, True, typo)
    assert lines == [
        "tor-failures reads 'auth.login.failur', which is not a standard event name: did you "
        "mean 'auth.login.failure'? (an app's own event names are fine; this one fires only "
        "if the app tracks it)",
        "by-network reads 'auth.login.failur', which is not a standard event name: did you "
        "mean 'auth.login.failure'? (an app's own event names are fine; this one fires only "
        "if the app tracks it)",
    ]
