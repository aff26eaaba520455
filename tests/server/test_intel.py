"""IP intelligence at ingest: real data from the installed packages (``iptocc``,
``iporigin``), ``.mmdb`` files the tests write themselves, read by ``maxminddb``'s C
extension, and ``ip_info`` in every read of an event."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from sqreen.server.app import create_app
from sqreen.server.auth import hash_token, new_token
from sqreen.server.blocks import BlockService, ip_block, user_block
from sqreen.server.cli import main
from sqreen.server.explorer import set_admin_password
from sqreen.server.intel import Countries, GeoIpError, IpIntel, Reputation, _score, open_geoip
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.playbooks import PlaybookSource
from sqreen.server.storage import (
    NO_FILTER,
    EventFilter,
    NewAlert,
    Storage,
    WindowWrite,
    open_storage,
)
from tests.explorer.conftest import login
from tests.mmdb import write_mmdb

from .conftest import ServeProcess, add_key, envelope, wire_event

LONDON = {
    "city": {"names": {"en": "London"}},
    "country": {"iso_code": "GB"},
    "location": {"latitude": 51.5142, "longitude": -0.0931, "accuracy_radius": 10},
}
SYDNEY = {
    "city": {"names": {"en": "Sydney"}},
    "country": {"iso_code": "AU"},
    "location": {"latitude": -33.8688, "longitude": 151.2093, "accuracy_radius": 20},
}


def city_db(path: Path) -> Path:
    return write_mmdb(
        path, {"81.2.69.0/24": LONDON, "1.128.0.0/16": SYDNEY}, database_type="GeoLite2-City"
    )


def asn_db(path: Path) -> Path:
    return write_mmdb(
        path,
        {
            "81.2.69.0/24": {
                "autonomous_system_number": 20712,
                "autonomous_system_organization": "Andrews & Arnold Ltd",
            }
        },
        database_type="GeoLite2-ASN",
    )


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        # A public resolver's range: Google's published feed says hosting.
        ("8.8.8.8", {"country": "US", "kind": "hosting", "provider": "Google"}),
        ("2001:4860:4860::8888", {"country": "US", "kind": "hosting", "provider": "Google"}),
        # A Tor exit from the list iporigin ships.
        ("185.220.101.1", {"country": "DE", "kind": "tor", "provider": "Tor"}),
        # An IPv4-mapped IPv6 address is its IPv4 address.
        ("::ffff:8.8.8.8", {"country": "US", "kind": "hosting", "provider": "Google"}),
        # Registered in Great Britain, in no range list: a country and nothing else.
        ("81.2.69.160", {"country": "GB"}),
    ],
)
def test_known_addresses_resolve_through_the_installed_data(
    ip: str, expected: dict[str, Any]
) -> None:
    info = IpIntel().info(ip)
    assert info is not None
    assert {k: v for k, v in info.items() if k not in ("score", "reasons")} == expected


@pytest.mark.parametrize(
    ("ip", "kind"),
    [
        ("198.51.100.66", "reserved"),  # documentation (TEST-NET-2)
        ("203.0.113.7", "reserved"),
        ("2001:db8::1", "reserved"),
        ("224.0.0.1", "reserved"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("fe80::1%eth0", "private"),
        ("fd00::1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
    ],
)
def test_special_addresses_are_labelled_and_looked_up_nowhere(
    ip: str, kind: str, tmp_path: Path
) -> None:
    class Nowhere:
        def __call__(self, address: Any) -> Any:
            raise AssertionError(f"{address} looked up")

        def describe(self) -> None:
            return None

    intel = IpIntel(countries=Nowhere(), kinds=Nowhere())  # type: ignore[arg-type]
    assert intel.info(ip) == {"kind": kind, "score": 0, "reasons": []}


@pytest.mark.parametrize(
    ("ip", "as_ipv4", "kind"),
    [
        ("2002:b9dc:6501::1", "185.220.101.1", "tor"),  # 6to4 of a Tor exit
        ("2001::4623:9afe", "185.220.101.1", "tor"),  # Teredo: its client's address, inverted
        ("64:ff9b::185.220.101.1", "185.220.101.1", "tor"),  # NAT64's well-known prefix
        ("2002:808:808::1", "8.8.8.8", "hosting"),
        ("2002:a00:1::1", "10.0.0.1", "private"),
        ("64:ff9b::c633:6442", "198.51.100.66", "reserved"),  # a documentation address
    ],
)
def test_an_ipv6_address_carrying_an_ipv4_client_is_labelled_as_that_client(
    ip: str, as_ipv4: str, kind: str
) -> None:
    """Blocks and playbooks count a 6to4, Teredo or NAT64 address as its IPv4 client; so
    does IP intelligence, or a Tor exit reaching the app over 6to4 would be "reserved"."""
    intel = IpIntel()
    info = intel.info(ip)
    assert info is not None and info.get("kind") == kind
    assert info == intel.info(as_ipv4)


def test_an_ipv6_address_of_a_translator_s_local_prefix_is_not_taken_for_a_client() -> None:
    """``64:ff9b:1::/48`` places the IPv4 address by its operator's prefix length: unknown
    here, so the address is not read as one."""
    assert IpIntel().info("64:ff9b:1::b9dc:6501") == {"kind": "reserved", "score": 0, "reasons": []}


def test_the_kinds_filters_and_playbooks_take_are_those_ip_intelligence_stores() -> None:
    """A kind they took and no event has would find nothing, said nowhere."""
    from typing import get_args

    from sqreen.server.intel import SpecialKind
    from sqreen.server.intel._sources import KINDS
    from sqreen.server.storage.model import IP_KINDS, MAX_SCORE

    assert set(IP_KINDS) == KINDS | set(get_args(SpecialKind))
    assert max(_score.threat_score("tor", True, True)[0], *_score.KIND_POINTS.values()) == (
        MAX_SCORE
    )


def test_an_address_no_data_covers_has_unknown_enrichment() -> None:
    """2d00::/8 is inside the global unicast block but allocated to no registry yet."""
    assert IpIntel().info("2d00::1") == {"score": 0, "reasons": []}
    for not_an_address in (
        *("", "1", "0x7f.1", " 8.8.8.8", "8.8.8.8\x00", "example.com", None, 7),
        *("010.1.1.1", "1.1.1.01", "1.1.1", "1.1.1.1.1", "256.1.1.1", "::ffff:1.1.1.01"),
    ):
        assert IpIntel().info(not_an_address) is None


def test_the_threat_score_adds_the_kind_and_the_collectors_own_memory(storage: Storage) -> None:
    """Tor scores 60; an IP block made this week over the address adds 30, on both back ends
    (the storage's reads of recent blocks)."""
    intel = IpIntel(reputation=Reputation(storage))
    assert intel.info("185.220.101.1") == {
        "country": "DE",
        "kind": "tor",
        "provider": "Tor",
        "score": 60,
        "reasons": ["tor"],
    }
    BlockService(storage).create(ip_block("185.220.101.0/24"), created_by="admin")
    intel = IpIntel(reputation=Reputation(storage))
    intel.reputation.refresh()  # type: ignore[union-attr]
    info = intel.info("185.220.101.1")
    assert info is not None
    assert (info["score"], info["reasons"]) == (90, ["tor", "blocked_recently"])
    assert intel.info("185.220.102.1") != info  # outside the block


def test_user_blocks_and_user_alerts_push_no_ip_block_or_ip_alert_out_of_the_score(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The score reads the newest IP blocks and alerts grouped by IP: blocks of users and
    alerts of other groups made since, however many, are not among them (both back ends)."""
    monkeypatch.setattr(_score, "MAX_READ", 3)  # stands for 5 000 (a flood of user blocks)
    service = BlockService(storage)
    service.create(ip_block("185.220.101.0/24"), created_by="admin")
    raise_alert(storage, "ip", "198.51.100.7")
    for n in range(5):
        service.create(user_block({"uid": f"u{n}"}, duration=600), created_by="playbook:x")
        raise_alert(storage, "user", json.dumps({"uid": f"u{n}"}))
    since = storage.now() - timedelta(days=1)
    assert storage.recent_ip_blocks(since, 3) == ["185.220.101.0/24"]
    assert storage.recent_alert_ips(since, 3) == ["198.51.100.7"]
    assert storage.recent_ip_blocks(storage.now() + timedelta(seconds=1), 3) == []
    intel = IpIntel(reputation=Reputation(storage))
    intel.reputation.refresh()  # type: ignore[union-attr]
    assert intel.info("185.220.101.1")["reasons"] == ["tor", "blocked_recently"]  # type: ignore[index]
    assert intel.info("198.51.100.7")["reasons"] == ["playbook_alert"]  # type: ignore[index]


class _Recent:
    """A reputation source whose recent blocks and alerts the test sets."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.alerts: list[str] = []

    def now(self) -> datetime:
        return datetime.now(UTC)

    def recent_ip_blocks(self, since: datetime, limit: int) -> list[str]:
        return list(self.blocks)

    def recent_alert_ips(self, since: datetime, limit: int) -> list[str]:
        return list(self.alerts)


@pytest.mark.parametrize("first_seen", ["holding nothing", "holding another block"])
@pytest.mark.parametrize(
    ("ip", "blocks", "alerts", "reasons"),
    [
        # A NAT64 address, as playbooks block and alert on it, or its IPv4 client's block.
        ("64:ff9b::b9dc:6503", ["64:ff9b::b9dc:6503/128"], [], ["tor", "blocked_recently"]),
        ("64:ff9b::b9dc:6503", [], ["64:ff9b::b9dc:6503"], ["tor", "playbook_alert"]),
        ("64:ff9b::b9dc:6503", ["185.220.101.3/32"], [], ["tor", "blocked_recently"]),
        ("2002:b9dc:6503::1", ["185.220.101.3/32"], [], ["tor", "blocked_recently"]),
        ("2001::4623:9afc", ["185.220.101.3/32"], [], ["tor", "blocked_recently"]),
        ("::ffff:185.220.101.3", ["185.220.101.3/32"], [], ["tor", "blocked_recently"]),
        ("64:ff9b::b9dc:6503", ["8.8.8.8/32"], [], ["tor"]),
    ],
)
def test_an_address_s_score_is_the_same_whatever_the_collector_held_when_first_seen(
    ip: str, blocks: list[str], alerts: list[str], reasons: list[str], first_seen: str
) -> None:
    """The score counted a block on a NAT64 address, or ignored it, depending on whether the
    collector held anything when the address was first seen (it kept the IPv4 client then,
    the address itself otherwise); and a block of the IPv4 client never counted for it."""
    recent = _Recent()
    clock = [0.0]
    intel = IpIntel(reputation=Reputation(recent, monotonic=lambda: clock[0]))
    if first_seen == "holding another block":
        recent.blocks = ["203.0.113.0/24"]
    intel.reputation.refresh()  # type: ignore[union-attr]
    assert intel.info(ip)["reasons"] == ["tor"]  # type: ignore[index]
    recent.blocks, recent.alerts = [*blocks, "203.0.113.0/24"], alerts
    clock[0] += 60
    intel.reputation.refresh()  # type: ignore[union-attr]
    assert intel.info(ip)["reasons"] == reasons  # type: ignore[index]


def raise_alert(storage: Storage, group_by: str, key: str) -> None:
    now = storage.now()
    alert = NewAlert("x", group_by, key, 1, now, now, 1, 1, (1,), "monitor", "alert", "", None)
    storage.update_windows([("s", key)], [], [], lambda found, quiet: WindowWrite({}, [alert]))


def test_a_self_written_mmdb_gives_city_coordinates_and_asn(tmp_path: Path) -> None:
    city, asn = city_db(tmp_path / "city.mmdb"), asn_db(tmp_path / "asn.mmdb")
    intel = IpIntel.open([str(city), str(asn)])
    try:
        assert all(db.in_c for db in intel.geoip)  # maxminddb's C extension reads them
        assert intel.info("81.2.69.160") == {
            "country": "GB",
            "provider": "Andrews & Arnold Ltd",
            "city": "London",
            "latitude": 51.5142,
            "longitude": -0.0931,
            "accuracy_radius": 10,
            "asn": 20712,
            "score": 0,
            "reasons": [],
        }
        # Not in the files: the packages still answer.
        info = intel.info("8.8.8.8")
        assert info is not None and "city" not in info and info["kind"] == "hosting"
        files = intel.sources()["geoip"]
        assert [f["file"] for f in files] == ["city.mmdb", "asn.mmdb"]
        assert files[0]["type"] == "GeoLite2-City"
    finally:
        intel.close()


def _bad_files(tmp_path: Path) -> list[tuple[str, str]]:
    (tmp_path / "empty.mmdb").write_bytes(b"")
    (tmp_path / "text.mmdb").write_text("country,ip\nGB,81.2.69.160\n")
    good = city_db(tmp_path / "good.mmdb").read_bytes()
    (tmp_path / "cut.mmdb").write_bytes(good[:20] + good[-200:])
    (tmp_path / "dir.mmdb").mkdir()
    os.mkfifo(tmp_path / "fifo.mmdb")  # opened for reading, it waits for a writer
    return [
        (str(tmp_path / "fifo.mmdb"), "not a regular file (a pipe or a device)"),
        (str(tmp_path / "missing.mmdb"), "no such file"),
        (str(tmp_path / "empty.mmdb"), "the file is empty"),
        (str(tmp_path / "text.mmdb"), "not a MaxMind DB (.mmdb) file"),
        (str(tmp_path / "cut.mmdb"), "MaxMind DB"),
        (str(tmp_path / "dir.mmdb"), "directory"),
    ]


def test_a_bad_geoip_db_stops_serve_at_start_with_a_clear_message(tmp_path: Path) -> None:
    db = str(tmp_path / "sqreen.db")
    add_key(db)
    good = str(city_db(tmp_path / "ok.mmdb"))
    for path, reason in _bad_files(tmp_path):
        with pytest.raises(GeoIpError, match=re.escape(reason)):
            open_geoip(path)
        result = CliRunner().invoke(
            main, ["serve", "--db", db, "--geoip-db", good, "--geoip-db", path]
        )
        assert result.exit_code != 0, result.output  # 2 where click checks it first
        assert "--geoip-db" in result.output and path in result.output
        assert reason in result.output
        assert "Traceback" not in result.output


def test_a_geoip_db_given_twice_stops_serve_at_start(tmp_path: Path) -> None:
    """Under another spelling too: its answers would never be the second's."""
    db = str(tmp_path / "sqreen.db")
    add_key(db)
    good = city_db(tmp_path / "ok.mmdb")
    (tmp_path / "link.mmdb").symlink_to(good)
    for again in (str(good), str(tmp_path / "." / "ok.mmdb"), str(tmp_path / "link.mmdb")):
        result = CliRunner().invoke(
            main, ["serve", "--db", db, "--geoip-db", str(good), "--geoip-db", again]
        )
        assert result.exit_code == 1, result.output
        assert f"--geoip-db {again}: given twice (first as {good})" in result.output


def test_an_unreadable_geoip_db_stops_serve_at_start(tmp_path: Path) -> None:
    """A file that exists but cannot be read: without the permission, or, for root (who
    reads anything), ``/proc/self/mem``, whose first page no process can read."""
    if hasattr(os, "getuid") and os.getuid() != 0:
        path = str(city_db(tmp_path / "locked.mmdb"))
        os.chmod(path, 0)
    elif Path("/proc/self/mem").exists():
        path = "/proc/self/mem"
    else:
        pytest.skip("no unreadable file on this system")
    with pytest.raises(GeoIpError, match="cannot read it"):
        open_geoip(path)
    db = str(tmp_path / "sqreen.db")
    add_key(db)
    result = CliRunner().invoke(main, ["serve", "--db", db, "--geoip-db", path])
    assert result.exit_code != 0, result.output
    assert "--geoip-db" in result.output and "cannot read it" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_serve_enriches_each_stored_event_and_every_read_shows_ip_info(
    tmp_path: Path, serve: Any
) -> None:
    """``sqreen serve --geoip-db`` (a real process): events stored with ``ip_info``, shown by
    ``sqreen events --json``; the files' versions in ``/healthz?verbose=1``."""
    db = str(tmp_path / "sqreen.db")
    token = add_key(db)
    city = city_db(tmp_path / "city.mmdb")
    proc: ServeProcess = serve(db, None, "--geoip-db", str(city))
    ips = ["81.2.69.160", "185.220.101.1", "10.0.0.8", "2d00::1", "not-an-ip"]
    events = [wire_event(request={**wire_event()["request"], "ip": ip}) for ip in ips]
    reply = httpx.post(
        proc.url + "/v1/events",
        json=envelope(events),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["accepted"] == len(ips)  # stored, with what is known
    assert httpx.get(proc.url + "/healthz?verbose=1").status_code == 401  # the data: a key's
    health = httpx.get(
        proc.url + "/healthz?verbose=1", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert health["ip_intel"]["geoip"][0]["file"] == "city.mmdb"
    assert health["ip_intel"]["country"]["package"] == "iptocc"
    assert httpx.get(proc.url + "/healthz").json() == {"status": "ok"}
    proc.stop()

    out = CliRunner().invoke(main, ["events", "--json", "--db", db])
    assert out.exit_code == 0, out.output
    by_ip = {e["request"]["ip"]: e for e in map(json.loads, out.output.splitlines())}
    assert by_ip["81.2.69.160"]["ip_info"] == {
        "country": "GB",
        "city": "London",
        "latitude": 51.5142,
        "longitude": -0.0931,
        "accuracy_radius": 10,
        "score": 0,
        "reasons": [],
    }
    assert by_ip["185.220.101.1"]["ip_info"]["kind"] == "tor"
    assert by_ip["10.0.0.8"]["ip_info"] == {"kind": "private", "score": 0, "reasons": []}
    assert by_ip["2d00::1"]["ip_info"] == {"score": 0, "reasons": []}
    assert "ip_info" not in by_ip[None]  # "not-an-ip": stored with no address, nothing to say
    assert all("enrichment" not in e for e in by_ip.values())


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_no_ip_intel_stores_events_without_ip_info(
    tmp_path: Path, serve: Any, workers: str
) -> None:
    """``sqreen serve --no-ip-intel``: events stored as sent, no ``ip_info`` on any read, no
    data in ``/healthz?verbose=1`` (one process, and each of ``--workers 2``)."""
    db = str(tmp_path / "sqreen.db")
    token = add_key(db)
    proc: ServeProcess = serve(db, None, "--no-ip-intel", "--workers", workers)
    ips = ["8.8.8.8", "185.220.101.1", "10.0.0.8"]
    auth = {"Authorization": f"Bearer {token}"}
    for ip in ips:  # one batch each: with two workers, both are likely to store some
        event = wire_event(request={**wire_event()["request"], "ip": ip})
        reply = httpx.post(proc.url + "/v1/events", json=envelope([event]), headers=auth)
        assert reply.status_code == 200 and reply.json()["accepted"] == 1, reply.text
    health = httpx.get(proc.url + "/healthz?verbose=1", headers=auth).json()
    assert health == {"status": "ok"}
    proc.stop()
    out = CliRunner().invoke(main, ["events", "--json", "--db", db])
    assert out.exit_code == 0, out.output
    stored = [json.loads(line) for line in out.output.splitlines()]
    assert sorted(e["request"]["ip"] for e in stored) == sorted(ips)
    assert all("ip_info" not in e for e in stored)


def test_serve_refuses_geoip_db_without_ip_intel(tmp_path: Path) -> None:
    city = city_db(tmp_path / "city.mmdb")
    db = str(tmp_path / "sqreen.db")
    result = CliRunner().invoke(
        main, ["serve", "--db", db, "--no-ip-intel", "--geoip-db", str(city)]
    )
    assert result.exit_code == 2
    assert "--geoip-db" in result.output and "--no-ip-intel" in result.output
    assert not Path(db).exists()  # refused before anything is opened


def test_serve_refuses_travel_speed_without_ip_intel(tmp_path: Path) -> None:
    """Impossible travel places logins with IP intelligence: a speed given with it off
    would silently detect nothing."""
    db = str(tmp_path / "sqreen.db")
    result = CliRunner().invoke(
        main, ["serve", "--db", db, "--no-ip-intel", "--travel-speed", "500"]
    )
    assert result.exit_code == 2
    assert "--travel-speed" in result.output and "--no-ip-intel" in result.output
    assert not Path(db).exists()
    # (Its default goes with --no-ip-intel: test_serve_no_ip_intel_stores_events_without_...)


@pytest.mark.parametrize(
    ("epoch", "built"),
    [
        (1_700_000_000, "2023-11-14"),
        (1_700_000_000_000, "unknown"),  # milliseconds, a writer's mistake
        (2**63, "unknown"),
        (2**64 - 1, "unknown"),
    ],
)
def test_a_file_s_build_date_no_calendar_holds_is_said_unknown(
    tmp_path: Path, epoch: int, built: str
) -> None:
    """The file reads as well; what ``/healthz?verbose=1`` and the agents page say of it
    (``describe()``) is "unknown" where it raised, and they answered 500."""
    path = write_mmdb(
        tmp_path / "city.mmdb",
        {"81.2.69.0/24": LONDON},
        database_type="GeoLite2-City",
        build_epoch=epoch,
    )
    intel = IpIntel.open([str(path)])
    assert intel.sources()["geoip"][0]["built"] == built
    assert intel.info("81.2.69.160")["city"] == "London"  # type: ignore[index]
    intel.close()


def test_enrichment_is_stored_so_a_data_update_does_not_rewrite_history(
    storage: Storage,
) -> None:
    """What an event was labelled with when it arrived is what it reads as later, whatever
    the data says now."""

    class Renamed(Countries):  # a newer data set
        def many(self, addresses: Any) -> list[str | None]:
            return ["FR" for _ in addresses]

    event = wire_event(request={**wire_event()["request"], "ip": "8.8.8.8"})
    IngestPipeline(storage, enrichers=[IpIntel()])(json.dumps(envelope([event])).encode())
    stored = storage.get_event(event["id"])
    assert stored is not None and stored.to_json()["ip_info"]["country"] == "US"
    assert IpIntel(countries=Renamed()).info("8.8.8.8") == {
        "country": "FR",
        "kind": "hosting",
        "provider": "Google",
        "score": 25,
        "reasons": ["hosting"],
    }
    again = storage.get_event(event["id"])
    assert again is not None and again.to_json()["ip_info"]["country"] == "US"


def test_the_explorer_api_and_detail_show_ip_info(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "sqreen.db"))
    try:
        token = new_token()
        storage.create_key("sdk", hash_token(token))
        set_admin_password(storage, "correct horse battery")
        with TestClient(create_app(storage), base_url="http://testserver") as client:
            event = wire_event(request={**wire_event()["request"], "ip": "185.220.101.1"})
            reply = client.post(
                "/v1/events",
                json=envelope([event]),
                headers={"Authorization": f"Bearer {token}"},
            )
            assert reply.status_code == 200
            login(client, "correct horse battery")
            (row,) = client.get("/explorer/api/events").json()["events"]
            assert row["ip_info"]["kind"] == "tor"
            assert row["ip_info"]["country"] == "DE"
            detail = client.get(f"/explorer/events/{event['id']}").text
            agents = client.get("/explorer/agents").text
            assert "IP intelligence data" in agents and "iptocc" in agents
            assert "&#34;kind&#34;: &#34;tor&#34;" in detail or '"kind": "tor"' in detail
    finally:
        storage.close()


def test_the_storage_filters_and_counts_on_country_kind_and_asn(
    storage: Storage, tmp_path: Path
) -> None:
    """On both back ends: ``EventFilter(country=, kind=, asn=)`` and ``count_by("ip.country")``
    read what was stored with each event; events without an address have none."""
    intel = IpIntel.open([str(asn_db(tmp_path / "asn.mmdb"))])
    pipeline = IngestPipeline(storage, enrichers=[intel])
    ips = ["185.220.101.1"] * 3 + ["8.8.8.8"] * 2 + ["81.2.69.160", "10.0.0.1"]
    events = [wire_event(request={**wire_event()["request"], "ip": ip}) for ip in ips]
    events.append(wire_event(request=None))
    pipeline(json.dumps(envelope(events)).encode())

    def ips_of(**f: str) -> list[str | None]:
        return sorted(e.ip or "" for e in storage.query_events(EventFilter(**f), limit=100))

    assert ips_of(country="DE") == ["185.220.101.1"] * 3
    assert ips_of(kind="hosting") == ["8.8.8.8"] * 2
    assert ips_of(kind="private") == ["10.0.0.1"]
    assert ips_of(asn="20712") == ["81.2.69.160"]
    assert ips_of(country="US", kind="tor") == []
    by_country = dict(storage.count_by("ip.country", NO_FILTER, 10))
    assert by_country == {"DE": 3, "US": 2, None: 2, "GB": 1}
    by_kind = dict(storage.count_by("ip.kind", NO_FILTER, 10, newest=100))
    assert by_kind == {"tor": 3, "hosting": 2, "private": 1, None: 2}
    assert storage.count_events(EventFilter(country="DE", name="auth.login.failure")) == 3


def test_litesoc_spellings_are_stored_under_the_standard_name_and_filter_by_severity(
    storage: Storage,
) -> None:
    """On both back ends: ``AUTH_LOGIN_FAILURE`` and ``Auth-Login-Failure`` (any case, any
    separator) are stored as ``auth.login.failure``; ``EventFilter(severity=)`` selects by
    the name's severity."""
    sent = ["AUTH_LOGIN_FAILURE", "Auth-Login-Failure", "security.suspicious.activity"]
    sent += ["order.created", "auth.login.success"]
    events = [wire_event(name=name) for name in sent]
    IngestPipeline(storage)(json.dumps(envelope(events)).encode())
    stored = {e.id: e.name for e in storage.query_events(limit=10)}
    assert [stored[e["id"]] for e in events] == [
        "auth.login.failure",
        "auth.login.failure",
        "security.suspicious.activity",
        "order.created",
        "auth.login.success",
    ]

    def names(level: str) -> list[str]:
        return sorted(e.name for e in storage.query_events(EventFilter(severity=level)))

    assert names("critical") == ["security.suspicious.activity"]
    assert names("warning") == ["auth.login.failure"] * 2
    assert names("info") == ["auth.login.success", "order.created"]
    assert storage.count_events(EventFilter(severity="warning")) == 2


def test_playbooks_and_sqreen_events_read_other_spellings_as_stored(
    sqlite_storage: Storage, tmp_path: Path
) -> None:
    """A playbook naming ``login.failure`` and a country ``de`` blocks the Tor exit that
    fails as ``AUTH_LOGIN_FAILURE`` (stored as ``auth.login.failure``, from ``DE``); the
    SDK's reply names the standard name to send at once; ``sqreen events --name`` finds the
    events under any spelling."""
    rules = tmp_path / "playbooks.toml"
    rules.write_text(
        '[[playbook]]\nid = "tor-failure"\nevents = ["login.failure"]\n'
        'where = { "ip.country" = "de" }\ngroup_by = "ip"\nthreshold = 1\nwindow = "1h"\n'
        'action = "block_ip"\nduration = "1h"\n'
    )
    token = new_token()
    sqlite_storage.create_key("sdk", hash_token(token))
    app = create_app(sqlite_storage, playbooks=PlaybookSource(rules))
    event = wire_event(name="AUTH_LOGIN_FAILURE")
    event["request"] = {**event["request"], "ip": "185.220.101.1"}
    with TestClient(app) as client:
        reply = client.post(
            "/v1/events", json=envelope([event]), headers={"Authorization": f"Bearer {token}"}
        ).json()
    assert reply["actions"]["watch"] == ["auth.login.failure"]
    (block,) = reply["actions"]["items"]
    assert block["ip"] == "185.220.101.1/32"
    db = sqlite_storage.path  # type: ignore[attr-defined]
    spellings = ["login.failure", "AUTH_LOGIN_FAILURE", "auth.login.failure"]
    spellings += ["Auth.Login.Failure", "auth-login-failure", "Auth.login.FAILURE"]
    for spelling in spellings:
        out = CliRunner().invoke(main, ["events", "--json", "--name", spelling, "--db", db])
        assert [json.loads(line)["id"] for line in out.output.splitlines()] == [event["id"]]
    # The explorer's filter too (it found no event in another case: the storage's own
    # spelling was not the filter's).
    set_admin_password(sqlite_storage, "correct horse battery")
    with TestClient(app, base_url="http://testserver") as client:
        login(client, "correct horse battery")
        for spelling in spellings:
            found = client.get("/explorer/api/events", params={"name": spelling}).json()
            assert [e["id"] for e in found["events"]] == [event["id"]], spelling


def test_sqreen_events_filters_by_severity_country_kind_and_asn(sqlite_storage: Storage) -> None:
    """As the explorer filters: a Tor exit's failure (DE, tor, warning), a resolver's order
    (US, hosting, info); values in any case, and a value no event can have refused."""
    failure = wire_event(name="Auth-Login-Failure")
    failure["request"] = {**failure["request"], "ip": "185.220.101.1"}
    order = wire_event(name="order.created")
    order["request"] = {**order["request"], "ip": "8.8.8.8"}
    IngestPipeline(sqlite_storage, enrichers=[IpIntel()])(
        json.dumps(envelope([failure, order])).encode()
    )
    db = sqlite_storage.path  # type: ignore[attr-defined]

    def ids(*options: str) -> list[str]:
        out = CliRunner().invoke(main, ["events", "--json", *options, "--db", db])
        assert out.exit_code == 0, out.output
        return [json.loads(line)["id"] for line in out.output.splitlines()]

    assert ids("--severity", "WARNING") == ids("--country", "de") == [failure["id"]]
    assert ids("--kind", "Tor") == ids("--severity", "warning", "--kind", "tor") == [failure["id"]]
    assert ids("--kind", "hosting") == ids("--severity", "info") == [order["id"]]
    assert ids("--country", "fr") == ids("--severity", "critical") == []
    # The lines show them too: the severity after the name, the place after the address.
    lines = CliRunner().invoke(main, ["events", "--db", db]).output.splitlines()
    by_name = {line.split()[2]: line for line in lines}
    assert by_name["auth.login.failure"].split()[3] == "warning"
    assert by_name["auth.login.failure"].split("ip=")[1].split()[:3] == [
        "185.220.101.1",
        "[DE",
        "tor]",
    ]
    assert by_name["order.created"].split()[3] == "info"
    assert by_name["order.created"].split("ip=")[1].split()[:3] == ["8.8.8.8", "[US", "hosting]"]
    # And the JSON of every reader: events --json and the jsonl export, as ip_info is.
    for dump in (["events", "--json"], ["export", "--format", "jsonl"]):
        out = CliRunner().invoke(main, [*dump, "--db", db]).stdout
        said = {(e["name"], e["severity"]) for e in map(json.loads, out.splitlines())}
        assert said == {("auth.login.failure", "warning"), ("order.created", "info")}, dump
    for option, value, said in (
        ("--asn", "0", "must be an AS number (e.g. 15169 or AS15169), from 1 to 4294967295"),
        ("--country", "Germany", "must be a two-letter country code (e.g. DE)"),
        ("--kind", "tors", "must be a network kind"),
        ("--severity", "high", "'high' is not one of 'info', 'warning', 'critical'"),
    ):
        out = CliRunner().invoke(main, ["events", option, value, "--db", db])
        assert out.exit_code == 2 and said in out.output, out.output


def test_sqreen_import_stores_ip_info_and_standard_names(tmp_path: Path) -> None:
    db = str(tmp_path / "import.db")
    lines = tmp_path / "events.jsonl"
    event = wire_event(name="AUTH_LOGIN_FAILURE")
    event["request"] = {**event["request"], "ip": "185.220.101.1"}
    lines.write_text(json.dumps(event) + "\n")
    result = CliRunner().invoke(main, ["import", str(lines), "--db", db])
    assert result.exit_code == 0, result.output
    out = CliRunner().invoke(main, ["events", "--json", "--db", db]).output
    (stored,) = map(json.loads, out.splitlines())
    assert stored["name"] == "auth.login.failure"
    assert (stored["ip_info"]["country"], stored["ip_info"]["kind"]) == ("DE", "tor")
    # The collector's own line (an export of a database stored before names were read in
    # any case): named as the collector stores it now, as a wire line is.
    again = tmp_path / "again.db"
    own = {**stored, "id": "own-1", "name": "Auth.Login.Failure"}
    lines.write_text(json.dumps(own) + "\n")
    result = CliRunner().invoke(main, ["import", str(lines), "--db", str(again)])
    assert result.exit_code == 0, result.output
    out = CliRunner().invoke(main, ["events", "--json", "--db", str(again)]).output
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["auth.login.failure"]


def test_sqreen_import_refuses_the_collector_s_own_names_but_keeps_its_own_lines(
    tmp_path: Path,
) -> None:
    """An impossible travel in a file of wire events is refused as at ingest (each stands for
    two logins the collector compared); one in the collector's own export imports back."""
    db = str(tmp_path / "import.db")
    lines = tmp_path / "events.jsonl"
    forged = [
        wire_event(name=name) for name in ("security.impossible_travel", "auth.login.success")
    ]
    lines.write_text("".join(json.dumps(e) + "\n" for e in forged))
    result = CliRunner().invoke(main, ["import", str(lines), "--db", db])
    assert "raised by the collector itself" in result.output
    out = CliRunner().invoke(main, ["events", "--json", "--db", db]).output
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["auth.login.success"]
    own = json.loads(out.splitlines()[0])
    own.update(name="security.impossible_travel", id="travel-1")
    lines.write_text(json.dumps(own) + "\n")  # the collector's line: seq, received_at...
    result = CliRunner().invoke(main, ["import", str(lines), "--db", db])
    assert result.exit_code == 0, result.output
    out = CliRunner().invoke(main, ["events", "--json", "--db", db]).output
    assert sorted(json.loads(line)["name"] for line in out.splitlines()) == [
        "auth.login.success",
        "security.impossible_travel",
    ]


def test_the_database_gone_makes_scores_without_blocks_said_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL restarting: every refresh failed with a traceback; now one line a minute
    (a bug's error keeps its traceback)."""
    import sqlite3
    from datetime import UTC, datetime

    from sqreen.server.intel import _score
    from sqreen.server.unavailable import UnavailableLog

    monkeypatch.setattr(_score, "_UNREAD", UnavailableLog("threat scores made without"))

    class Gone:
        error: Exception = sqlite3.OperationalError("database is locked")

        def now(self) -> datetime:
            return datetime.now(UTC)

        def recent_ip_blocks(self, since: datetime, limit: int) -> list[str]:
            raise self.error

        def recent_alert_ips(self, since: datetime, limit: int) -> list[str]:
            return []

    source = Gone()
    reputation = _score.Reputation(source, every=0)
    for _ in range(3):
        reputation.refresh()
    said = [r for r in caplog.records if "threat scores made without" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None
    source.error = sqlite3.OperationalError("no such column: x")  # a bug: its traceback
    reputation.refresh()
    (bug,) = [r for r in caplog.records if "not read; scores without" in r.getMessage()]
    assert bug.exc_info is not None
