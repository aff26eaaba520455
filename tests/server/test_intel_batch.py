"""IP intelligence looks a batch's new addresses up together and lets addresses with the same
answer share one ``ip_info`` and its JSON: what each event stores must be what looking each
address up on its own, field by field, says (the lookup as it was before), byte for byte."""

from __future__ import annotations

import copy
import ipaddress
import pickle
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import maxminddb
import pytest

from sqreen._json import dumps_ascii, dumps_fields
from sqreen._wire import parse_event
from sqreen.server.intel import (
    Countries,
    GeoIpDatabase,
    IpIntel,
    NetworkKinds,
    Reputation,
    parse_address,
    read_record,
    special_kind,
    threat_score,
)
from sqreen.server.pipeline import Batch
from sqreen.server.storage._rows import event_record
from tests.mmdb import write_mmdb

from .conftest import wire_event
from .test_intel import LONDON, SYDNEY

COUNTRIES, KINDS = Countries(), NetworkKinds()  # read once: the kinds' index takes a second
GROUPS = (("country",), ("city",), ("latitude", "longitude", "accuracy_radius"), ("asn",))


def corpus() -> list[Any]:
    rng = random.Random(15)
    ips: list[Any] = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(400)]
    ips += [str(ipaddress.IPv6Address((0x2A00 << 112) | rng.getrandbits(100))) for _ in range(60)]
    ips += [f"185.220.101.{n}" for n in range(1, 40)]  # Tor exits
    ips += [f"8.8.{n}.{n}" for n in range(40)] + ["2001:4860:4860::8888"]  # hosting
    ips += ["81.2.69.160", "81.2.69.7", "1.128.3.4", "::ffff:81.2.69.160", "::ffff:8.8.8.8"]
    ips += ["10.0.0.1", "192.168.1.1", "100.64.0.9", "fe80::1%eth0", "fc00::5"]  # private
    ips += ["127.0.0.1", "::1", "198.51.100.66", "2001:db8::1", "224.0.0.1", "0.0.0.0"]
    ips += ["2d00::1", "not-an-ip", "", "010.1.1.1", "1.1.1", None, 7]  # nothing, or no address
    return ips + ips[::3]  # and again: some cached, some new in the same batch


def expected(ip: object, files: list[Any]) -> dict[str, Any] | None:
    """``ip_info`` of ``ip`` worked out alone, from each source in turn."""
    address = parse_address(ip)
    if address is None:
        return None
    special = special_kind(address)
    if special is not None:
        return {"kind": special, "score": 0, "reasons": []}
    out: dict[str, Any] = {}
    as_org = None
    for reader in files:
        record = reader.get(address.text)
        got = read_record(record) if isinstance(record, dict) else {}
        for group in GROUPS:
            if group[0] in got and group[0] not in out:
                out.update({key: got[key] for key in group if key in got})
        as_org = as_org or got.get("as_org")
    country = COUNTRIES(address)
    if "country" not in out and country is not None:
        out["country"] = country
    kind = KINDS(address)
    if kind is not None:
        out["kind"], out["provider"] = kind
    elif as_org:
        out["provider"] = as_org
    out["score"], out["reasons"] = threat_score(None if kind is None else kind[0], False, False)
    return out


def batch_of(ips: list[Any]) -> Batch:
    """Parsed events from ``ips``, as the pipeline hands them to enrichers (any value as
    the address: an SDK sends what it likes)."""
    events = [parse_event(wire_event()) for _ in ips]
    for event, ip in zip(events, ips, strict=True):
        event["request"] = {**(event["request"] or {}), "ip": ip}
    return Batch(None, None, events, [{} for _ in events])


@pytest.mark.parametrize("files", [0, 1, 2])
def test_each_event_stores_what_its_address_alone_says(tmp_path: Path, files: int) -> None:
    city = write_mmdb(
        tmp_path / "city.mmdb",
        {"81.2.69.0/24": LONDON, "1.128.0.0/16": SYDNEY, "8.8.8.0/24": LONDON},
        database_type="GeoLite2-City",
    )
    asn = write_mmdb(
        tmp_path / "asn.mmdb",
        {
            "81.2.69.0/24": {
                "autonomous_system_number": 20712,
                "autonomous_system_organization": "AA",
            },
            "1.0.0.0/8": {"autonomous_system_number": 1, "autonomous_system_organization": "One"},
        },
        database_type="GeoLite2-ASN",
    )
    paths = [str(city), str(asn)][:files]
    readers = [maxminddb.open_database(path) for path in paths]
    intel = IpIntel.open(paths)
    try:
        ips = corpus()
        for start in range(0, len(ips), 200):
            chunk = ips[start : start + 200]
            batch = batch_of(chunk)
            intel(batch)
            for ip, fields in zip(chunk, batch.enrichment, strict=True):
                want = expected(ip, readers)
                assert fields.get("ip_info") == want, ip
                if want is not None:
                    assert dumps_fields(fields) == dumps_ascii({"ip_info": want}), ip
                    assert intel.info(ip) == want
                    # the row: its columns derived once a shared ip_info, as from a plain dict
                    for _ in range(2):
                        row = event_record(batch.events[0], None, None, 0, fields)
                        plain = event_record(batch.events[0], None, None, 0, {"ip_info": want})
                        assert row == plain, ip
    finally:
        intel.close()
        for reader in readers:
            reader.close()


def test_events_share_one_ip_info_that_refuses_changes_and_one_replaced_stores_its_own() -> None:
    """Addresses with the same answer share one ``ip_info`` (and its JSON): changing it in
    place raises (it would change every other event's), a later enricher replaces it, and
    only the event it replaced stores the change. A copy is a plain dict again."""
    intel = IpIntel()
    ips = ["185.220.101.1", "185.220.101.2", "185.220.101.3"]
    batch = batch_of(ips)
    intel(batch)
    first, second, third = batch.enrichment
    assert first["ip_info"] is second["ip_info"] is third["ip_info"]
    info = first["ip_info"]
    with pytest.raises(TypeError, match="shared"):
        info["provider"] = "changed"
    with pytest.raises(TypeError, match="shared"):
        info.update(provider="changed")
    with pytest.raises(TypeError, match="shared"):
        info["reasons"].append("mine")
    with pytest.raises(TypeError, match="shared"):
        del info["kind"]
    first["ip_info"] = {**info, "provider": "changed"}
    second["ip_info"] = {**info, "reasons": [*info["reasons"], "mine"]}
    assert '"provider":"changed"' in dumps_fields(first)
    assert '"reasons":["tor","mine"]' in dumps_fields(second)
    rows = [event_record(event, None, None, 0, f) for event, f in batch]  # third's: derived
    assert [row.enrichment_json for row in rows] == [dumps_fields(f) for f in batch.enrichment]
    assert [row.ip_kind for row in rows] == ["tor"] * 3
    first["ip_info"] = {**info, "kind": "vpn"}
    assert event_record(batch.events[0], None, None, 0, first).ip_kind == "vpn"
    assert event_record(batch.events[2], None, None, 0, third).ip_kind == "tor"
    assert dumps_fields(third) == dumps_ascii({"ip_info": expected("185.220.101.3", [])})
    assert intel.info("185.220.101.4") == expected("185.220.101.4", [])
    for copied in (copy.deepcopy(info), pickle.loads(pickle.dumps(info))):
        assert type(copied) is dict and copied == info
        copied["provider"] = "mine"  # a plain dict, with a plain list
        copied["reasons"].append("x")
    assert copy.copy(info) == info and type(copy.copy(info)) is dict
    assert dumps_fields(third) == dumps_ascii({"ip_info": expected("185.220.101.3", [])})


class _Reader:
    """A reader as ``maxminddb``'s: an IPv4-only file, or one whose tree is corrupt under
    one address (its lookup raises)."""

    def __init__(self, ip_version: int) -> None:
        self.ip_version = ip_version

    def metadata(self) -> Any:
        meta = {"database_type": "Test", "build_epoch": 0, "ip_version": self.ip_version}
        return type("Meta", (), meta)

    def get(self, text: str) -> Any:
        if ":" in text and self.ip_version == 4:
            raise ValueError("an IPv6 address in an IPv4-only database")
        if text == "9.9.9.9":
            raise maxminddb.InvalidDatabaseError("corrupt under this address")
        return {"country": {"iso_code": "GB"}} if text.startswith("81.") else None


@pytest.mark.parametrize("ip_version", [4, 6])
def test_a_file_lookup_that_fails_for_one_address_answers_the_others(
    tmp_path: Path, ip_version: int
) -> None:
    """An IPv6 address in an IPv4-only file, or a lookup that raises, is nothing from that
    file; the batch's other addresses are still answered."""
    db = GeoIpDatabase(tmp_path / "x.mmdb", _Reader(ip_version))
    addresses = [parse_address(ip) for ip in ("81.2.69.160", "2a00::1", "9.9.9.9", "1.1.1.1")]
    assert None not in addresses
    got = db.lookup_many([a for a in addresses if a is not None])
    assert got == [{"country": "GB"}, None, None, None]


class _Memory:
    """The collector's recent blocks and alerts (a ReputationSource), set by the test."""

    def __init__(self) -> None:
        self.blocks: list[str] = []

    def now(self) -> datetime:
        return datetime.now(UTC)

    def recent_ip_blocks(self, since: datetime, limit: int) -> list[str]:
        return self.blocks

    def recent_alert_ips(self, since: datetime, limit: int) -> list[str]:
        return []


def test_a_block_made_after_an_address_was_cached_scores_its_next_events() -> None:
    """Addresses cached while the collector held no block are scored once one covers them
    (and new addresses in the same batch too); the others keep their shared ip_info."""
    memory = _Memory()
    intel = IpIntel(reputation=Reputation(memory, every=0))
    tor, other = "185.220.101.1", "185.220.101.2"
    first = batch_of([tor, other])
    intel(first)
    assert [f["ip_info"]["score"] for f in first.enrichment] == [60, 60]
    memory.blocks = ["185.220.101.1/32", "185.220.101.9/32"]
    second = batch_of([tor, other, "185.220.101.9", "::ffff:185.220.101.9"])
    intel(second)
    scores = [(f["ip_info"]["score"], f["ip_info"]["reasons"]) for f in second.enrichment]
    blocked = (90, ["tor", "blocked_recently"])
    assert scores == [blocked, (60, ["tor"]), blocked, blocked]
    assert second.enrichment[1]["ip_info"] is first.enrichment[1]["ip_info"]
    assert dumps_fields(second.enrichment[0]) == dumps_ascii(
        {"ip_info": {**expected(tor, []), "score": 90, "reasons": ["tor", "blocked_recently"]}}
    )


def test_countries_keep_only_two_letter_codes_whatever_the_package_answers() -> None:
    """What ``iptocc`` answers is checked once a code: a code seen before costs a lookup, and
    anything that is no two-letter upper-case code (a later version's lower case, a number,
    a list) is no country, the first time and after."""
    countries = Countries()
    answers = ["GB", None, "zz", 5, ["x"], "GB", "FRA"]
    countries._many = lambda texts: answers[: len(texts)]  # type: ignore[method-assign]
    texts = [f"192.0.2.{i}" for i in range(len(answers))]
    for _ in range(2):
        assert countries.many(texts) == ["GB", None, None, None, None, "GB", None]
    assert countries.many(texts[:1]) == ["GB"]


def test_addresses_a_file_places_with_the_same_record_share_one_ip_info(tmp_path: Path) -> None:
    """Two addresses of one network of a City file (the same record, kind and provider)
    hold one ``ip_info``, encoded once; another record, or the same record with another
    kind (a Tor exit inside the network), has its own."""
    city = write_mmdb(
        tmp_path / "city.mmdb",
        {"81.2.69.0/24": LONDON, "1.128.0.0/16": SYDNEY, "185.220.101.0/24": LONDON},
        database_type="GeoLite2-City",
    )
    intel = IpIntel.open([str(city)])
    try:
        batch = batch_of(["81.2.69.1", "81.2.69.2", "1.128.0.1", "185.220.101.1"])
        intel(batch)
        london, again, sydney, tor = (fields["ip_info"] for fields in batch.enrichment)
        assert london is again and london.get("city") == "London"
        assert sydney is not london and sydney.get("city") == "Sydney"
        assert tor is not london and tor.get("kind") == "tor" and tor.get("city") == "London"
        later = batch_of(["81.2.69.3"])
        intel(later)
        assert later.enrichment[0]["ip_info"] is london
    finally:
        intel.close()


def test_ipv6_addresses_of_one_record_share_one_ip_info(tmp_path: Path) -> None:
    """IPv6 addresses are read one by one (no tree walk gives their record): those a record
    places alike still share one ``ip_info`` (1 000 of them made 1 000: 20 times the
    cache's memory), as IPv4 addresses of one record do."""
    city = write_mmdb(
        tmp_path / "city.mmdb",
        {"2a00::/16": LONDON, "81.0.0.0/8": LONDON},
        database_type="GeoLite2-City",
    )
    intel = IpIntel.open([str(city)])
    try:
        for ips in (
            [str(ipaddress.IPv6Address((0x2A00 << 112) + i * 7919)) for i in range(300)],
            [f"81.2.69.{i}" for i in range(1, 255)],
        ):
            batch = batch_of(ips)
            intel(batch)
            infos = {id(fields["ip_info"]) for fields in batch.enrichment}
            assert len(infos) == 1, ips[0]
            assert batch.enrichment[0]["ip_info"].get("city") == "London"
    finally:
        intel.close()


@pytest.mark.parametrize("split", [False, True], ids=["one batch", "two batches"])
def test_a_record_without_a_country_takes_each_address_s_own(tmp_path: Path, split: bool) -> None:
    """One record of a file (a city, no country) places addresses of several countries: each
    address's ``ip_info`` has the country the registries give it, whatever the record's
    other addresses got before (the record's fields are shared, and never changed)."""
    no_country = {k: v for k, v in LONDON.items() if k != "country"}
    city = write_mmdb(
        tmp_path / "city.mmdb", {"2.0.0.0/8": no_country}, database_type="GeoLite2-City"
    )
    intel = IpIntel.open([str(city)])
    try:
        ips = ["2.0.1.1", "2.3.1.1", "2.16.1.1", "2.0.1.2"]
        batches = [batch_of(ips[:2]), batch_of(ips[2:])] if split else [batch_of(ips)]
        for batch in batches:
            intel(batch)
        infos = [fields["ip_info"] for batch in batches for fields in batch.enrichment]
        assert [info.get("country") for info in infos] == ["SE", "FR", "NL", "SE"]
        assert all(info.get("city") == "London" for info in infos)
        assert infos[0] is infos[3] and infos[0] is not infos[1]
    finally:
        intel.close()
