"""A ``.mmdb`` file's tree walked by the collector for IPv4 addresses (``intel/_mmdb_tree``):
each address gets what the reader's own lookup gives it, for every record size and both
tree layouts, while a record shared by many addresses is decoded once; a tree the walk cannot
read, or a file replaced under the reader, falls back to the reader."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path
from typing import Any

import pytest

from sqreen.server.intel import GeoIpDatabase, IpIntel, open_geoip, parse_address
from sqreen.server.intel._mmdb_tree import UNKNOWN, Ipv4Tree, open_tree
from tests.mmdb import write_mmdb

from .test_intel_batch import batch_of


def networks(rng: random.Random, count: int = 600) -> dict[str, Any]:
    """Networks of every length from /1 to /32, none overlapping another, their records
    shared by several networks (a city's), some of them no map at all."""
    kept: list[ipaddress.IPv4Network] = []
    while len(kept) < count:
        net = ipaddress.IPv4Network((rng.getrandbits(32), rng.randrange(1, 33)), strict=False)
        if net.prefixlen < 6 and rng.random() < 0.9:  # a few huge ones, many small ones
            continue
        if not any(net.overlaps(other) for other in kept):
            kept.append(net)
    records: list[Any] = [
        {"city": {"names": {"en": f"City {n}"}}, "country": {"iso_code": "GB"}} for n in range(40)
    ]
    records += ["not a map", {"unrelated": 1}]
    return {str(net): rng.choice(records) for net in kept}


def addresses(placed: dict[str, Any], rng: random.Random) -> list[tuple[int, int, str]]:
    """Random addresses, and the first, last and neighbours of every network."""
    values = [rng.getrandbits(32) for _ in range(3000)] + [0, 2**32 - 1]
    for cidr in placed:
        net = ipaddress.IPv4Network(cidr)
        first, last = int(net.network_address), int(net.broadcast_address)
        values += [first, last, max(first - 1, 0), min(last + 1, 2**32 - 1)]
    return [(4, v, str(ipaddress.IPv4Address(v))) for v in values]


class Counting:
    """A reader that counts its lookups (the real one underneath)."""

    def __init__(self, reader: Any) -> None:
        self.reader, self.calls = reader, 0

    def get(self, text: str) -> Any:
        self.calls += 1
        return self.reader.get(text)

    def metadata(self) -> Any:
        return self.reader.metadata()

    def close(self) -> None:
        self.reader.close()


@pytest.mark.parametrize("record_size", [24, 28, 32])
@pytest.mark.parametrize("ip_version", [4, 6])
def test_every_address_gets_what_the_reader_gives_it(
    tmp_path: Path, record_size: int, ip_version: int
) -> None:
    rng = random.Random(record_size * 10 + ip_version)
    placed = networks(rng)
    path = write_mmdb(
        tmp_path / "city.mmdb", placed, record_size=record_size, ip_version=ip_version
    )
    walked = open_geoip(path)
    assert walked._tree is not None
    alone = open_geoip(path)
    alone._tree = None  # the reader for every address, as before the tree
    batch = addresses(placed, rng)
    got = walked.lookup_many(batch)
    assert got == alone.lookup_many(batch)
    assert sum(1 for found in got if found) > len(placed)  # placed ones, and others not
    assert None in got
    walked.close()
    alone.close()


def test_a_shared_record_is_decoded_once_and_each_address_gets_its_own_copy(
    tmp_path: Path,
) -> None:
    london = {"city": {"names": {"en": "London"}}, "country": {"iso_code": "GB"}}
    paris = {"city": {"names": {"en": "Paris"}}, "country": {"iso_code": "FR"}}
    path = write_mmdb(
        tmp_path / "city.mmdb",
        {"81.2.0.0/16": london, "82.0.0.0/8": london, "90.1.2.0/24": paris},
        record_size=28,
    )
    db = open_geoip(path)
    counting = Counting(db._reader)
    db._reader = counting
    ips = ["81.2.69.160", "82.7.7.7", "81.2.0.1", "90.1.2.3", "90.1.2.4", "91.0.0.1"]
    got = db.lookup_many([a for a in map(parse_address, ips) if a is not None])
    assert counting.calls == 2  # London's record once, Paris's once; 91.0.0.1 is in none
    assert got[0] == got[1] == got[2] == {"city": "London", "country": "GB"}
    assert got[3] == got[4] == {"city": "Paris", "country": "FR"}
    assert got[5] is None
    got[0]["city"] = "changed by a caller"
    assert got[1]["city"] == "London"
    assert db.lookup_many([a for a in map(parse_address, ["82.1.1.1"]) if a])[0] == got[1]
    assert counting.calls == 2

    # Through the enricher: each event from those addresses stores its own city.
    intel = IpIntel([db])
    batch = batch_of(ips)
    intel(batch)
    cities = [fields.get("ip_info", {}).get("city") for _, fields in batch]
    assert cities == ["London", "London", "London", "Paris", "Paris", None]
    db.close()


def test_ipv6_addresses_are_asked_of_the_reader(tmp_path: Path) -> None:
    path = write_mmdb(
        tmp_path / "city.mmdb",
        {
            "2a00::/16": {"country": {"iso_code": "NL"}},
            "81.2.0.0/16": {"country": {"iso_code": "GB"}},
        },
    )
    db = open_geoip(path)
    assert db._tree is not None
    parsed = [parse_address(ip) for ip in ("2a00::1", "::ffff:81.2.69.160", "2b00::1")]
    got = db.lookup_many([a for a in parsed if a is not None])
    assert got == [{"country": "NL"}, {"country": "GB"}, None]
    db.close()


def test_28_bit_records_keep_their_high_nibbles() -> None:
    """Records above 2**24 (files of more than 16 M nodes, as GeoLite2-City is) keep the
    four bits stored in the middle byte: left's in its high nibble, right's in its low."""
    left, right = 0x0ABCDEF1, 0x05123456  # both record numbers past the 2 nodes: records
    node = (
        (left & 0xFFFFFF).to_bytes(3, "big") + bytes([0xA5]) + (right & 0xFFFFFF).to_bytes(3, "big")
    )
    tree = Ipv4Tree(node + b"\x00" * 7, 2, 28, 4)
    assert tree.record(0x00000001) == left  # first bit 0
    assert tree.record(0x80000000) == right  # first bit 1


def test_a_tree_that_does_not_end_falls_back_to_the_reader(tmp_path: Path) -> None:
    """A corrupt tree (a node leading back to itself) makes the walk give UNKNOWN within 32
    levels, and the address is asked of the reader (which says what it says)."""
    looping = (0).to_bytes(3, "big") * 2  # node 0's two records: node 0
    tree = Ipv4Tree(looping, 1, 24, 4)
    assert tree.record(0x01020304) == UNKNOWN

    path = write_mmdb(tmp_path / "city.mmdb", {"81.2.0.0/16": {"country": {"iso_code": "GB"}}})
    db = open_geoip(path)
    counting = Counting(db._reader)
    db._reader, db._tree = counting, tree
    parsed = parse_address("81.2.69.160")
    assert parsed is not None
    assert db.lookup_many([parsed]) == [{"country": "GB"}]
    assert counting.calls == 1
    db.close()


def test_a_file_replaced_under_the_reader_or_of_another_layout_has_no_tree(
    tmp_path: Path,
) -> None:
    path = tmp_path / "city.mmdb"
    write_mmdb(path, {"81.2.0.0/16": {"country": {"iso_code": "GB"}}}, build_epoch=1)
    db = open_geoip(path)
    metadata = db._reader.metadata()
    replaced = tmp_path / "new.mmdb"
    write_mmdb(replaced, {"81.2.0.0/16": {"country": {"iso_code": "FR"}}}, build_epoch=2)
    with open(path, "rb") as first:  # the reader's file
        replaced.rename(path)  # as geoipupdate replaces it
        assert open_tree(first.fileno(), path, metadata) is None  # the path names another
    with open(path, "rb") as next_file:  # named, but not the metadata the reader read
        assert open_tree(next_file.fileno(), path, metadata) is None
    assert db.lookup_many([(4, 0x51024591, "81.2.69.145")]) == [{"country": "GB"}]
    db.close()

    (tmp_path / "text").write_text("not an mmdb at all")
    with open(tmp_path / "text", "rb") as text:
        assert open_tree(text.fileno(), tmp_path / "text", metadata) is None
    with pytest.raises(ValueError, match="record size 26"):
        Ipv4Tree(b"\x00" * 64, 1, 26, 4)
    with pytest.raises(ValueError, match="shorter than its search tree"):
        Ipv4Tree(b"\x00" * 5, 1, 24, 4)


def test_a_reader_without_a_tree_still_answers(tmp_path: Path) -> None:
    """GeoIpDatabase built without a tree (as other code and older callers build it)."""
    path = write_mmdb(tmp_path / "city.mmdb", {"81.2.0.0/16": {"country": {"iso_code": "GB"}}})
    opened = open_geoip(path)
    db = GeoIpDatabase(path, opened._reader)
    assert db.lookup_many([(4, 0x51024591, "81.2.69.145")]) == [{"country": "GB"}]
    opened.close()


def test_a_file_written_with_pointers_reads_as_one_written_in_full(tmp_path: Path) -> None:
    """``tests/mmdb.py``'s ``pointers=True`` (keys and values met before written as pointers,
    as MaxMind's writers do): the reader gives the same records from a smaller file, and so
    does the collector's lookup."""
    city = {"names": {"de": "London", "en": "London"}}
    gb = {"iso_code": "GB", "names": {"en": "United Kingdom"}}
    placed = {
        f"81.{n}.0.0/16": {
            "city": city,
            "country": gb,
            "location": {"accuracy_radius": n, "latitude": 51.5, "longitude": -0.125},
        }
        for n in range(40)
    }
    full = write_mmdb(tmp_path / "full.mmdb", placed, record_size=28)
    shared = write_mmdb(tmp_path / "shared.mmdb", placed, record_size=28, pointers=True)
    assert shared.stat().st_size < full.stat().st_size * 0.6
    texts = [f"81.{n}.1.1" for n in range(40)]
    parsed = [a for a in map(parse_address, texts) if a is not None]
    answers = []
    for path in (full, shared):
        db = open_geoip(path)
        assert [db._reader.get(t) for t in texts] == list(placed.values())
        answers.append(db.lookup_many(parsed))
        db.close()
    assert answers[0] == answers[1]
    assert answers[1][7] == {
        "city": "London",
        "country": "GB",
        "latitude": 51.5,
        "longitude": -0.125,
        "accuracy_radius": 7,
    }


def test_a_scan_that_fills_the_address_cache_keeps_each_record_s_ip_info(tmp_path: Path) -> None:
    """Every address of a scan is new: the cache of addresses fills and is dropped, but the
    ``ip_info`` of a record seen before is the same object after it (its JSON and columns
    made once), and what is shared stays bounded all the same."""
    london = {"city": {"names": {"en": "London"}}, "country": {"iso_code": "GB"}}
    path = write_mmdb(tmp_path / "city.mmdb", {"81.0.0.0/8": london}, record_size=28)
    intel = IpIntel([open_geoip(path)], cache_size=64)
    first = batch_of(["81.0.0.1"])
    intel(first)
    info = first.enrichment[0]["ip_info"]
    assert info["city"] == "London"
    for n in range(5):  # 200 new addresses: the cache of 64 dropped three times
        batch = batch_of([f"81.0.{n}.{i}" for i in range(1, 41)])
        intel(batch)
        assert all(fields["ip_info"] is info for fields in batch.enrichment)
    assert len(intel._cache) <= 64
    # Distinct answers beyond the bound: dropped whole, as the addresses are.
    for n in range(10):
        intel(batch_of([f"{n + 1}.0.0.{i}" for i in range(1, 31)]))  # countries, no record
        assert len(intel._shared) <= 64 and len(intel._cache) <= 64
    intel.close()
