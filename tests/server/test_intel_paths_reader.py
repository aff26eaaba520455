"""Records of a known layout read by path (``intel/_mmdb_paths``, ``maxminddb-rust`` of the
``server-speedups`` extra): the same fields as ``get()`` gives, without decoding the record whole;
``get()`` whenever the path reader cannot say (a record of the wrong shape, no extra, a file
renamed over), with the same answers."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from sqreen.server.intel import GeoIpDatabase, _mmdb_paths, open_geoip, parse_address
from sqreen.server.intel._mmdb_paths import (
    ASN_PATHS,
    CITY_PATHS,
    layout_keys,
    layout_paths,
    open_paths,
)
from tests.mmdb import write_mmdb

pytestmark = pytest.mark.skipif(
    _mmdb_paths.open_rust is None, reason="needs the server-speedups extra (maxminddb-rust)"
)

LANGUAGES = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")


def city_record(n: int, rng: random.Random) -> dict[str, Any]:
    """Shaped as GeoLite2-City's: names in eight languages, both countries, a subdivision."""

    def names(text: str) -> dict[str, str]:
        return {language: f"{text} ({language})" for language in LANGUAGES}

    country = {"geoname_id": 6_000 + n % 7, "iso_code": "GB FR DE US JP BR AU".split()[n % 7]}
    return {
        "city": {"geoname_id": 2_000 + n, "names": names(f"City {n}")},
        "continent": {"code": "EU", "names": names("Europe")},
        "country": {**country, "names": names("Country")},
        "location": {
            "accuracy_radius": rng.choice([5, 50, 500]),
            "latitude": round(rng.uniform(-60, 60), 4),
            "longitude": round(rng.uniform(-180, 180), 4),
            "time_zone": "Europe/London",
        },
        "postal": {"code": f"{n:05d}"},
        "registered_country": {**country, "names": names("Country")},
        "subdivisions": [{"iso_code": "S1", "names": names("Region")}],
    }


#: Records of the wrong shape for the City layout's paths (a path through them raises in the
#: path reader) or with values of the wrong type (read, then refused by the checks).
ODD: list[Any] = [
    {"country": "Germany", "city": {"names": {"en": "Berlin"}}},  # country no map
    {"country": {"iso_code": "FR"}, "city": {"names": "Paris"}},  # names no map
    {"country": {"iso_code": 5}, "location": "here"},
    {"country": {"iso_code": "gb"}, "location": {"latitude": "51", "longitude": 0.1}},
    {"city": {"names": {"en": "  " + "x" * 300}}, "location": {"latitude": 91, "longitude": 0}},
    {"autonomous_system_number": 13335, "country_code": "AU"},  # not this layout's keys
    "not a map",
    [1, 2],
    {},
]


def city_file(path: Path, *, pointers: bool, odd: bool = False) -> Path:
    rng = random.Random(7)
    records = [city_record(n, rng) for n in range(300)]
    networks: dict[str, Any] = {}
    for n in range(2_000):
        a, b = 1 + n // 200, n % 200
        if odd and n % 50 == 0:
            networks[f"{a}.{b}.0.0/16"] = ODD[(n // 50) % len(ODD)]
        else:
            networks[f"{a}.{b}.0.0/16"] = records[rng.randrange(len(records))]
    networks["2a00::/16"] = records[0]  # IPv6: read by path too, an address at a time
    networks["2a01::/16"] = ODD[0] if odd else records[1]
    return write_mmdb(
        path, networks, database_type="GeoLite2-City", record_size=28, pointers=pointers
    )


def addresses(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = [
        f"{rng.randint(1, 11)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.9" for _ in range(count)
    ]
    return [*out, "2001:db8::1", "::ffff:1.2.3.4", "1.0.0.1", "2a00::1", "2a01:5::9"]


def answers(db: GeoIpDatabase, texts: list[str]) -> list[dict[str, Any] | None]:
    """``lookup_many`` in batches of 100, as the enricher hands a batch's new addresses."""
    parsed = [p for p in map(parse_address, texts) if p is not None]
    return [a for i in range(0, len(parsed), 100) for a in db.lookup_many(parsed[i : i + 100])]


class CountingReader:
    """The C reader, counting its ``get()`` calls."""

    def __init__(self, reader: Any) -> None:
        self._reader, self.gets = reader, 0

    def get(self, address: str) -> Any:
        self.gets += 1
        return self._reader.get(address)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


@pytest.mark.parametrize("pointers", [True, False])
@pytest.mark.parametrize("odd", [False, True])
def test_a_city_file_reads_by_path_what_get_reads(
    tmp_path: Path, pointers: bool, odd: bool
) -> None:
    path = city_file(tmp_path / "city.mmdb", pointers=pointers, odd=odd)
    by_path, whole = open_geoip(path), open_geoip(path)
    assert by_path._paths is not None and "fields by path" in by_path.describe()["reader"]
    whole._tree, whole._paths = None, None  # get() for every address, as before the walk
    counting = by_path._reader = CountingReader(by_path._reader)
    try:
        texts = addresses(3_000, seed=1)
        want = answers(whole, texts)
        assert sum(a is not None and "city" in a for a in want) > 1_000  # the file places them
        assert want[-2] is not None and want[-2]["city"] == "City 0 (en)"  # and IPv6 ones
        assert answers(by_path, texts) == want
        assert answers(by_path, texts[::-1]) == want[::-1]  # from what was read
        if not odd:  # every record read by path, the IPv6 address's too: no get() at all
            assert counting.gets == 0
        else:  # the batches with an odd record fell back to get(), with the same answers
            assert counting.gets > 0
    finally:
        by_path.close()
        whole.close()


def test_an_asn_file_reads_by_path_and_only_its_layout(tmp_path: Path) -> None:
    asn = {"autonomous_system_number": 13335, "autonomous_system_organization": "Cloudflare"}
    extra = {**asn, "country_code": "AU", "city": {"names": {"en": "Sydney"}}}
    path = write_mmdb(
        tmp_path / "asn.mmdb",
        {"1.1.1.0/24": asn, "1.0.0.0/24": extra, "2.0.0.0/8": {"autonomous_system_number": -1}},
        database_type="DBIP-ASN-Lite (compat=GeoLite2-ASN)",
    )
    db = open_geoip(path)
    try:
        assert db._paths is not None
        got = answers(db, ["1.1.1.1", "1.0.0.1", "2.2.2.2", "9.9.9.9"])
        want = {"asn": 13335, "as_org": "Cloudflare"}
        # Keys outside an ASN file's layout are not read, with or without the path reader.
        assert got == [want, want, None, None]
        db._paths, db._records = None, {}
        assert answers(db, ["1.1.1.1", "1.0.0.1", "2.2.2.2", "9.9.9.9"]) == got
    finally:
        db.close()


def test_other_layouts_are_decoded_whole(tmp_path: Path) -> None:
    ipinfo = {"country_code": "AU", "asn": "AS1221", "as_name": "Telstra", "country": "Australia"}
    path = write_mmdb(tmp_path / "ipinfo.mmdb", {"1.0.0.0/8": ipinfo}, database_type="ipinfo lite")
    db = open_geoip(path)
    try:
        assert db._paths is None  # a layout the paths do not know: every field read
        assert answers(db, ["1.2.3.4"]) == [{"country": "AU", "asn": 1221, "as_org": "Telstra"}]
    finally:
        db.close()


@pytest.mark.parametrize(
    ("database_type", "paths"),
    [
        ("GeoLite2-City", CITY_PATHS),
        ("GeoIP2-City", CITY_PATHS),
        ("GeoLite2-Country", CITY_PATHS),
        ("DBIP-City-Lite", CITY_PATHS),
        ("DBIP-Country-Lite", CITY_PATHS),
        ("GeoLite2-ASN", ASN_PATHS),
        ("DBIP-ASN-Lite (compat=GeoLite2-ASN)", ASN_PATHS),
        ("GeoIP2-ISP", None),
        ("GeoIP2-Enterprise", None),
        ("GeoIP2-Anonymous-IP", None),
        ("ipinfo lite", None),
        ("Test-City", None),
        ("", None),
    ],
)
def test_layouts_by_database_type(database_type: str, paths: Any) -> None:
    assert layout_paths(database_type) is paths
    keys = layout_keys(database_type)
    assert keys == (None if paths is None else tuple(dict.fromkeys(p[0] for p in paths)))


def test_without_the_extra_get_reads_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = city_file(tmp_path / "city.mmdb", pointers=True, odd=True)
    texts = addresses(1_000, seed=2)
    with_paths = open_geoip(path)
    want = answers(with_paths, texts)
    with_paths.close()
    monkeypatch.setattr(_mmdb_paths, "open_rust", None)  # SQREEN_NO_SPEEDUPS, or no wheel
    db = open_geoip(path)
    try:
        assert db._paths is None and db._tree is not None
        assert db.describe()["reader"] == "C extension"
        assert answers(db, texts) == want
    finally:
        db.close()


def test_a_file_renamed_over_is_not_read_by_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path reader opens the path after the C reader did. geoipupdate renames the next
    file over it meanwhile, with the same metadata (a writer that pins its build time): the
    path reader must not be used, or the record numbers of the tree (the first file's)
    would be read from the next file's addresses."""
    path = city_file(tmp_path / "city.mmdb", pointers=True)
    real = path.read_bytes()
    # The same networks and metadata, every record of GB another country.
    swapped = real.replace(b"\x42GB", b"\x42ZZ")
    assert swapped != real and len(swapped) == len(real)
    (tmp_path / "next.mmdb").write_bytes(swapped)
    real_open = _mmdb_paths.open_rust
    assert real_open is not None

    def open_then_replaced(where: str) -> Any:
        (tmp_path / "next.mmdb").replace(path)
        return real_open(where)

    monkeypatch.setattr(_mmdb_paths, "open_rust", open_then_replaced)
    db = open_geoip(path)
    try:
        assert db._tree is not None and db._paths is None
        assert all(a is None or a.get("country") != "ZZ" for a in answers(db, addresses(500, 3)))
    finally:
        db.close()
    monkeypatch.setattr(_mmdb_paths, "open_rust", real_open)
    first = open_geoip(path)
    metadata = first._reader.metadata()
    first.close()
    with open(path, "rb") as held:  # and a path that names no file any more
        path.unlink()
        assert open_paths(path, metadata, held.fileno()) is None
