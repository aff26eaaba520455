"""IP intelligence's fast paths give what the plain ones give: the bucketed range index
answers as ``iporigin`` itself, and ``ip_info`` is stored as its own JSON, the shared text of
its address or, where a later enricher replaced it, the replacement's."""

from __future__ import annotations

import json
import random
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import iporigin

from sqreen._json import Encoded, dumps_ascii, dumps_fields
from sqreen.server.intel import IpIntel, NetworkKinds, RangeIndex, parse_address
from sqreen.server.pipeline import Batch, IngestPipeline
from sqreen.server.storage import Storage

from .conftest import envelope, wire_event
from .test_intel import city_db

KINDS = {"hosting", "cdn", "vpn", "tor", "bot"}


def test_the_range_index_finds_each_range_at_its_edges_and_nothing_between() -> None:
    """Ranges inside one bucket, across many buckets, touching a bucket's edge, and gaps."""
    ranges = [(5, 9, "a"), (10, 10, "b"), (0x1FFFF, 0x30001, "c"), (0xFFFF0000, 0xFFFFFFFF, "d")]
    index = RangeIndex([r[0] for r in ranges], [r[1] for r in ranges], [r[2] for r in ranges], 32)

    def slow(value: int) -> str | None:
        return next((label for lo, hi, label in ranges if lo <= value <= hi), None)

    probes = {edge + d for lo, hi, _ in ranges for edge in (lo, hi) for d in (-1, 0, 1)}
    probes |= {0, 0x20000, 0x2FFFF, 0x40000, 0xFFFEFFFF}
    rng = random.Random(15)
    probes |= {rng.getrandbits(32) for _ in range(2000)}
    for value in sorted(v for v in probes if 0 <= v < 2**32):
        assert index.find(value) == slow(value), hex(value)


def test_network_kinds_answer_as_iporigin_classify_at_every_range_edge() -> None:
    kinds = NetworkKinds()
    table = iporigin.core.dataset()
    columns = ((table.v4_starts, table.v4_ends, 4), (table.v6_starts, table.v6_ends, 6))
    checked = 0
    for starts, ends, version in columns:
        for i in range(0, len(starts), 7):  # a sample: classify parses with ipaddress
            for value in (starts[i] - 1, starts[i], ends[i], ends[i] + 1):
                if not 0 <= value < 2 ** (32 if version == 4 else 128):
                    continue
                text = str(IPv4Address(value) if version == 4 else IPv6Address(value))
                address = parse_address(text)
                if address is None or address.version != version:
                    continue  # an IPv4-mapped edge, or outside the version's space
                origin = iporigin.classify(text)
                if origin.kind == "reserved":
                    continue  # classify's own special ranges (the enricher has its own)
                expected = (origin.kind, origin.provider) if origin.kind in KINDS else None
                assert kinds(address) == expected, text
                checked += 1
    assert checked > 10_000


def test_a_value_that_gives_its_own_json_is_written_with_it() -> None:
    class Counted(Encoded):
        calls = 0

        def json(self) -> str:
            Counted.calls += 1
            return super().json()

    info = Counted({"country": "GB", "latitude": 51.5142, "score": 0, "reasons": []})
    assert json.loads(dumps_fields({"ip_info": info})) == {"ip_info": dict(info)}
    assert json.loads(dumps_fields({"ip_info": info, "geo": [1.5]})) == {
        "ip_info": dict(info),
        "geo": [1.5],
    }
    assert dumps_fields({"ip_info": info}) == dumps_ascii({"ip_info": dict(info)})
    assert Counted.calls == 3


def test_a_later_enricher_replacing_ip_info_is_stored_as_replaced(
    storage: Storage, tmp_path: Path
) -> None:
    """Two events from one address share one ``ip_info`` and its text; the one whose
    ``ip_info`` a later enricher replaced (as a custom score would) is stored with the
    change, the other not. One that changes the shared ``ip_info`` in place fails (logged,
    skipped) and changes no event's."""

    def rescore(batch: Batch) -> None:
        for event, fields in batch:
            if event["properties"].get("flag"):
                info = fields["ip_info"]
                fields["ip_info"] = {**info, "score": 99, "reasons": [*info["reasons"], "custom"]}

    def in_place(batch: Batch) -> None:
        for _, fields in batch:
            fields["ip_info"]["score"] = 50

    intel = IpIntel.open([str(city_db(tmp_path / "city.mmdb"))])
    request = {**wire_event()["request"], "ip": "81.2.69.160"}
    plain = wire_event(request=request)
    flagged = wire_event(request=request, properties={"flag": True})
    body = json.dumps(envelope([plain, flagged])).encode()
    IngestPipeline(storage, enrichers=[intel, in_place, rescore])(body)
    got_plain, got_flagged = storage.get_event(plain["id"]), storage.get_event(flagged["id"])
    assert got_plain is not None and got_flagged is not None
    plain_info = got_plain.to_json()["ip_info"]
    assert (plain_info["score"], plain_info["reasons"]) == (0, [])
    assert plain_info["city"] == "London"
    flagged_info = got_flagged.to_json()["ip_info"]
    assert (flagged_info["score"], flagged_info["reasons"]) == (99, ["custom"])
    assert flagged_info["city"] == "London"
