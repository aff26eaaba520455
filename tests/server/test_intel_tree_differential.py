"""The collector's own walk of a ``.mmdb`` tree (``intel/_mmdb_tree``) answers what
``maxminddb``'s reader alone answers (``db._tree = None``: the lookup before the walk), for
any set of networks a file can hold, and for files written to break it: the differential
half with random files (hypothesis), the hostile half with files written byte by byte."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from pathlib import Path
from typing import Any

import maxminddb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqreen.server.intel import (
    Countries,
    GeoIpError,
    IpIntel,
    NetworkKinds,
    _mmdb_paths,
    open_geoip,
    parse_address,
)
from tests.mmdb import METADATA_MARKER, U16, U32, U64, encode, pack_node, write_mmdb

from .test_intel_batch import batch_of

COUNTRIES, KINDS = Countries(), NetworkKinds()  # read once: the kinds' index takes a second

#: Records shared by several networks, of every shape the reader may hand back.
RECORDS: list[Any] = [
    {"city": {"names": {"en": "London"}}, "country": {"iso_code": "GB"}},
    {"country": {"iso_code": "FR"}, "location": {"latitude": 48.85, "longitude": 2.35}},
    {"autonomous_system_number": 13335, "autonomous_system_organization": "Cloudflare"},
    {"country_code": "AU", "asn": "AS1221", "as_name": "Telstra"},
    {"unrelated": 1},
    "not a map",
    [1, 2],
    {"country": {"iso_code": "gb"}, "city": "no names"},
]


#: A layout read whole, and the known layouts read by path when ``maxminddb-rust`` is there.
DATABASE_TYPES = ("Test-City", "GeoLite2-City", "GeoIP2-Country", "DBIP-ASN-Lite")


def v4_as_v6(net: ipaddress.IPv4Network) -> ipaddress.IPv6Network:
    """Where an IPv6 tree holds an IPv4 network: under ``::/96``."""
    return ipaddress.IPv6Network((int(net.network_address), 96 + net.prefixlen))


@st.composite
def mmdb_files(draw: st.DrawFn) -> tuple[dict[str, Any], int, int]:
    """``(networks, record_size, ip_version)``: IPv4 networks of every length (/0 only in
    an IPv6 tree: an IPv4 tree's root holds /1s), and in IPv6 trees IPv6 networks, some of
    which cover ``::/96`` whole (then every IPv4 address has their record), none
    overlapping another."""
    ip_version = draw(st.sampled_from([4, 6]))
    record_size = draw(st.sampled_from([24, 28, 32]))
    low = 0 if ip_version == 6 else 1
    wanted: list[ipaddress.IPv6Network] = []
    for _ in range(draw(st.integers(0, 40))):
        length = draw(st.integers(low, 32))
        value = draw(st.integers(0, 2**32 - 1))
        wanted.append(v4_as_v6(ipaddress.IPv4Network((value, length), strict=False)))
    if ip_version == 6:
        for _ in range(draw(st.integers(0, 8))):
            length = draw(st.integers(1, 128))
            value = draw(st.one_of(st.integers(0, 2**128 - 1), st.integers(0, 2**40)))
            wanted.append(ipaddress.IPv6Network((value, length), strict=False))
    kept: list[ipaddress.IPv6Network] = []
    for net in wanted:
        if not any(net.overlaps(other) for other in kept):
            kept.append(net)
    placed: dict[str, Any] = {}
    for net in kept:
        record = RECORDS[draw(st.integers(0, len(RECORDS) - 1))]
        if ip_version == 4 or (net.prefixlen >= 96 and int(net.network_address) >> 32 == 0):
            v4 = ipaddress.IPv4Network((int(net.network_address), net.prefixlen - 96))
            placed[str(v4)] = record
        else:
            placed[str(net)] = record
    return placed, record_size, ip_version


def probes(placed: dict[str, Any], extra: list[int]) -> list[str]:
    """Addresses at and around each network's ends and the /20 that holds them (the walk's
    table ends at /20), the ends of the space, drawn ones, and IPv6 spellings of IPv4."""
    values = [0, 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1, *extra]
    texts = []
    for cidr in placed:
        net = ipaddress.ip_network(cidr)
        first, last = int(net.network_address), int(net.broadcast_address)
        if net.version == 6:
            texts += [str(ipaddress.IPv6Address(v)) for v in (first, last)]
            continue
        top = first >> 12 << 12
        around = (first, last, first - 1, last + 1, top, top - 1, top + 4095, top + 4096)
        values += [v for v in around if 0 <= v < 2**32]
    for value in values:
        text = str(ipaddress.IPv4Address(value))
        texts += [text, f"::ffff:{text}"]
    texts += [f"::{ipaddress.IPv4Address(extra[0] if extra else 7)}", "2a00::1", "::1", "::"]
    return texts


def assert_same_answers(path: Path, texts: list[str]) -> None:
    """``lookup_many`` with the walk gives what the reader alone gives, address by address,
    in one batch and again once its records are read; and each event's ``ip_info``."""
    walked, alone = open_geoip(path), open_geoip(path)
    alone._tree = None  # the reader for every address, as before the walk
    try:
        parsed = [p for p in map(parse_address, texts) if p is not None]
        want = alone.lookup_many(parsed)
        for _ in range(2):
            assert walked.lookup_many(parsed) == want
        assert [walked.lookup_many([p])[0] for p in reversed(parsed)] == want[::-1]
        stored = []
        for db in (walked, alone):
            batch = batch_of(texts)
            IpIntel([db], countries=COUNTRIES, kinds=KINDS)(batch)
            stored.append([fields.get("ip_info") for fields in batch.enrichment])
        assert stored[0] == stored[1]
    finally:
        walked.close()
        alone.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    mmdb_files(),
    st.lists(st.integers(0, 2**32 - 1), max_size=20),
    st.booleans(),
    st.sampled_from(DATABASE_TYPES),
)
def test_any_file_answers_as_its_reader_does(
    file: tuple[dict[str, Any], int, int], extra: list[int], pointers: bool, database_type: str
) -> None:
    """Files of a known layout (City, ASN) have the records the walk meets read by path
    (``intel/_mmdb_paths``, with the ``server-speedups`` extra); the others decoded whole."""
    placed, record_size, ip_version = file
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mmdb(
            Path(tmp) / "random.mmdb",
            placed,
            record_size=record_size,
            ip_version=ip_version,
            pointers=pointers,
            database_type=database_type,
        )
        if _mmdb_paths.open_rust is not None:
            db = open_geoip(path)
            by_path = db._paths is not None
            db.close()
            assert by_path == (database_type != "Test-City" and db._tree is not None)
        assert_same_answers(path, probes(placed, extra))


def test_a_file_renamed_over_while_the_reader_opens_it_is_not_walked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """geoipupdate renames the next file over the path while ``open_geoip`` runs, and the
    next file's metadata is the same as the first's (same networks so same node count, same
    build time and type: a writer that pins its build time for reproducible files): the
    tree must still be the one of the file the reader reads, or the walk's record numbers
    lead the reader's lookups astray (81.2.0.1 was answered FR where the reader says GB)."""
    path = tmp_path / "city.mmdb"
    gb, fr = {"country": {"iso_code": "GB"}}, {"country": {"iso_code": "FR"}}
    write_mmdb(path, {"81.2.0.0/16": gb, "82.0.0.0/16": fr})
    write_mmdb(tmp_path / "next.mmdb", {"81.2.0.0/16": fr, "82.0.0.0/16": fr})
    real_open = maxminddb.open_database

    def open_then_replaced(where: str, mode: int) -> Any:
        reader = real_open(where, mode)
        os.replace(tmp_path / "next.mmdb", path)
        return reader

    monkeypatch.setattr(maxminddb, "open_database", open_then_replaced)
    db = open_geoip(path)
    monkeypatch.undo()
    try:
        parsed = [p for p in map(parse_address, ["82.0.0.1", "81.2.0.1", "9.9.9.9"]) if p]
        assert db.lookup_many(parsed) == [{"country": "FR"}, {"country": "GB"}, None]
    finally:
        db.close()


GB, FR = {"country": {"iso_code": "GB"}}, {"country": {"iso_code": "FR"}}
#: A node's record: a node (its index), "" none, "GB" or "FR" that record, ("+", n) the
#: raw value node_count + n (16 is the data section's first byte).
Record = int | str | tuple[str, int]


def tree_file(
    path: Path,
    nodes: list[tuple[Record, Record]],
    *,
    record_size: int = 24,
    ip_version: int = 4,
    cut: str = "",
) -> Path:
    """A file with exactly these ``nodes`` (the root first), written byte by byte; ``cut``
    ``"node"`` leaves the last node's bytes out, ``"FR"`` that record's."""
    count = len(nodes)
    data = encode(GB) + encode(FR)
    at = {"GB": 0, "FR": len(encode(GB))}

    def value(record: Record) -> int:
        if isinstance(record, tuple):
            return count + record[1]
        if isinstance(record, str):
            return count if not record else count + 16 + at[record]
        return record

    tree = b"".join(pack_node(value(left), value(right), record_size) for left, right in nodes)
    metadata = {
        "node_count": U32(count),
        "record_size": U16(record_size),
        "ip_version": U16(ip_version),
        "database_type": "Hostile",
        "languages": ["en"],
        "binary_format_major_version": U16(2),
        "binary_format_minor_version": U16(0),
        "build_epoch": U64(1),
        "description": {"en": "written to break the walk"},
    }
    if cut == "node":
        tree = tree[: -record_size // 4]
    elif cut == "FR":
        data = data[: at["FR"]]
    path.write_bytes(tree + b"\x00" * 16 + data + METADATA_MARKER + encode(metadata))
    return path


def chain(depth: int, side: int, end: Record) -> list[tuple[Record, Record]]:
    """Nodes under the root's right half: a path ``depth`` nodes deep, each node's other
    record GB, the last one's two records ``end`` (``side``: the path's turn, 0 or 1)."""
    nodes: list[tuple[Record, Record]] = [("", 1)]
    for n in range(1, depth + 1):
        nxt: Record = n + 1 if n < depth else end
        other: Record = "GB" if n < depth else end
        nodes.append((nxt, other) if side == 0 else (other, nxt))
    return nodes


HOSTILE: dict[str, tuple[list[tuple[Record, Record]], dict[str, Any]]] = {
    # the root's left half (where the open's probes go) sane, the right half broken
    "right half loops on itself": ([("GB", 1), (1, "")], {}),
    "right half leads back to the root": ([("GB", 1), (0, "FR")], {}),
    "right half points past the data": ([("GB", 1), (("+", 10_000), "FR")], {}),
    "right half points into the separator": ([("GB", 1), (("+", 3), "FR")], {}),
    "right half points inside a record": ([("GB", 1), (("+", 17), "FR")], {}),
    "28-bit record's high nibble past the data": (
        [("GB", 1), (("+", 1 << 26), "FR")],
        {"record_size": 28},
    ),
    "32-bit record past the data": ([("GB", 1), (("+", 2**32 - 10), "FR")], {"record_size": 32}),
    "no record anywhere": ([("", 1), ("", "")], {}),
    "no node at all": ([("", "")], {}),
    "IPv6 tree whose ::/96 path loops": ([(0, "FR")], {"ip_version": 6}),
    "IPv6 tree whose ::/96 path ends in a record": ([("GB", "")], {"ip_version": 6}),
    # bytes missing, the metadata still at the end: the tree's last node, the FR record
    "cut in the tree": ([("GB", 1), (2, "FR"), ("GB", "FR")], {"cut": "node"}),
    "cut in the data": ([("GB", 1), ("FR", "FR")], {"cut": "FR"}),
}
for depth in (18, 19, 20, 21, 31, 32, 33):
    for side in (0, 1):
        HOSTILE[f"a path {depth} deep, turning {side}, ending in FR"] = (
            chain(depth, side, "FR"),
            {},
        )
    HOSTILE[f"a path {depth} deep ending in a loop"] = (chain(depth, 1, depth), {})
    HOSTILE[f"a path {depth} deep ending in nothing"] = (chain(depth, 0, ""), {})


@pytest.mark.parametrize(
    ("name", "record_size"),
    [(name, (24, 28, 32)[n % 3]) for n, name in enumerate(sorted(HOSTILE))],
)
def test_a_hostile_file_is_refused_or_answers_as_its_reader_does(
    tmp_path: Path, name: str, record_size: int
) -> None:
    nodes, options = HOSTILE[name]
    options = {"record_size": record_size, **options}
    path = tree_file(tmp_path / "hostile.mmdb", nodes, **options)
    try:
        open_geoip(path).close()
    except GeoIpError:
        return  # refused at open, as documented: no other exception
    texts = probes({"128.0.0.0/1": None, "0.0.0.0/1": None}, [])
    texts += [str(ipaddress.IPv4Address(v)) for v in range(0x80000000, 2**32, 0x00FFF0F1)]
    texts += [str(ipaddress.IPv4Address(2**32 - 1 - (1 << n))) for n in range(32)]
    texts += [str(ipaddress.IPv4Address(2**31 + (1 << n))) for n in range(31)]
    assert_same_answers(path, texts)


def test_metadata_the_reader_cannot_decode_is_refused_at_open(tmp_path: Path) -> None:
    """``maxminddb`` opens a file whose metadata map holds a value it cannot decode, and
    raises on ``metadata()``: that is a :class:`GeoIpError` too, not an escape."""
    path = write_mmdb(tmp_path / "city.mmdb", {"81.2.0.0/16": GB}, ip_version=4)
    raw = path.read_bytes()
    at = raw.rfind(METADATA_MARKER) + len(METADATA_MARKER)
    size = raw[at] & 0x1F  # the map's control byte: its entry count, below 29
    bad_value = bytes([0x00, 0x10])  # an extended type (7 + 16) that does not exist
    raw = raw[:at] + bytes([(7 << 5) | (size + 1)]) + raw[at + 1 :] + encode("x") + bad_value
    path.write_bytes(raw)
    with pytest.raises(GeoIpError, match="unreadable MaxMind DB metadata"):
        open_geoip(path)
