"""Damaged and hostile ``.mmdb`` files of a known layout (``intel/_mmdb_paths``): a record
read by path (``maxminddb-rust``) answers as ``get()`` does, and ``maxminddb-rust`` neither
raises out of :meth:`GeoIpDatabase.lookup_many` nor crashes the process (the C extension's
own crashes and errors, which ``get()`` had before it, aside).

Each case compares three readers of the same file, address by address, in batches: the
tree with the path reader, the tree with ``get()`` alone, and ``get()`` alone. Records the
C extension may crash on (map keys that are not text) and the seeded byte-level fuzzing run
in a subprocess (``slow``)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import maxminddb
import pytest

from sqreen.server.intel import (
    GeoIpDatabase,
    GeoIpError,
    _geoip,
    _mmdb_paths,
    open_geoip,
    parse_address,
)
from tests.mmdb import METADATA_MARKER, Raw, encode, pointer, write_mmdb
from tests.mmdb import _control as control

pytestmark = pytest.mark.skipif(
    _mmdb_paths.open_rust is None, reason="needs the server-speedups extra (maxminddb-rust)"
)

ROOT = Path(__file__).resolve().parents[2]
#: A record under the probes' network (1.1.1.1), so that a file opens; the hostile record
#: is at 5.0.0.0/8, written first (at offset 0 of the data section: ``pointer(0)`` is it).
GOOD = {
    "country": {"iso_code": "AU"},
    "city": {"names": {"en": "Sydney"}},
    "location": {"latitude": -33.8, "longitude": 151.2, "accuracy_radius": 5},
    "autonomous_system_number": 13335,
    "autonomous_system_organization": "Cloudflare",
}
TEXTS = ["5.1.2.3", "1.1.1.1", "9.9.9.9", "5.200.0.1"]


def raw(value: Any) -> bytes:
    """``value`` encoded, or as it is when it is bytes already (a hand-made encoding)."""
    return value if isinstance(value, bytes) else encode(value)


def mapping(*pairs: tuple[Any, Any]) -> bytes:
    """A map of these (key, value) pairs, each raw bytes or a value to encode."""
    return control(7, len(pairs)) + b"".join(raw(key) + raw(value) for key, value in pairs)


def names_en(value: Any) -> bytes:
    return mapping(("city", mapping(("names", mapping(("en", value))))))


def located(*pairs: tuple[Any, Any]) -> bytes:
    return mapping(("location", mapping(*pairs)))


def nested(depth: int, inner: Any = "x", *, arrays: bool = False) -> bytes:
    """``depth`` maps (or one-item arrays) one in another, around ``inner``."""
    level = control(11, 1) if arrays else control(7, 1) + encode("a")
    return level * depth + raw(inner)


BAD_UTF8 = control(2, 2) + b"\xff\xfe"
SURROGATE = control(2, 3) + b"\xed\xa0\x80"  # U+D800 as UTF-8 would write it: no UTF-8
GB = mapping(("iso_code", "GB"))
#: A pointer to the end of the 32-bit offset space: past the end of any test file.
FAR = bytes([0x38, 0x7F, 0xFF, 0xFF, 0xFF])

#: Records that both readers read alike: refused whole by both (a field on the way damaged),
#: or read and then checked by ``read_record`` the same.
SAME: dict[str, bytes] = {
    "text not UTF-8 on the path": names_en(BAD_UTF8),
    "a lone surrogate on the path": names_en(SURROGATE),
    "control characters": names_en("Pa\x00\x1bris\u2028\t"),
    "NaN latitude": located(("latitude", float("nan")), ("longitude", 1.0)),
    "infinite longitude": located(("latitude", 1.0), ("longitude", float("-inf"))),
    "float32 latitude": located(
        ("latitude", control(15, 4) + b"\x42\x4e\x00\x00"), ("longitude", 2.0)
    ),
    "uint128 latitude": located(("latitude", control(10, 1) + b"\x2a"), ("longitude", 2.0)),
    "boolean latitude": located(("latitude", True), ("longitude", 2.0)),
    "a location key twice": located(("latitude", 1.0), ("longitude", 2.0), ("latitude", 3.0)),
    "a huge location map": located(*((f"k{n}", n) for n in range(20_000)), ("latitude", 4.0)),
    "location a string": mapping(("location", "here"), ("country", GB)),
    "country an array": mapping(("country", ["GB"]), ("city", mapping(("names", "x")))),
    "the record a pointer to itself": pointer(0),
    "a value pointing at its map": mapping(("country", pointer(0))),
    "location pointing at its record": mapping(("location", pointer(0))),
    # The map is 11 bytes; its value points just past it, at a pointer to itself.
    "a pointer to a pointer to itself": mapping(("country", pointer(11))) + pointer(11),
    "a pointer out of the file on the path": mapping(("country", FAR)),
    "600 maps deep on the way": mapping(("continent", nested(600)), ("country", GB)),
    "600 arrays deep on the way": mapping(("continent", nested(600, arrays=True)), ("country", GB)),
    "100 000 maps deep in location": mapping(("location", nested(100_000))),
    "511 maps deep in location (about the limit)": mapping(("location", nested(511))),
    "a map of 2**24 pairs": control(7, 16_777_215) + encode("country") + GB,
    "a string of 16 MiB": mapping(("continent", control(2, 16_843_036) + b"abc"), ("country", GB)),
    "an unknown type": mapping(("continent", bytes([0x00, 0x10])), ("country", GB)),
    "a data cache container": mapping(("continent", bytes([0x00, 0x05])), ("country", GB)),
    "an end marker": mapping(("continent", bytes([0x00, 0x06])), ("country", GB)),
    "a map cut short": control(7, 3) + encode("country") + GB,
    "ASN number as text": mapping(("autonomous_system_number", "13335")),
    "ASN number negative": mapping(("autonomous_system_number", -5)),
    "ASN number 2**32": mapping(("autonomous_system_number", 2**32)),
    "ASN organisation not UTF-8": mapping(("autonomous_system_organization", BAD_UTF8)),
    "ASN organisation a map": mapping(("autonomous_system_organization", GB)),
}


def hostile_file(path: Path, record: bytes, database_type: str) -> Path:
    return write_mmdb(
        path, {"5.0.0.0/8": Raw(record), "1.0.0.0/8": GOOD}, database_type=database_type
    )


def lookups(db: GeoIpDatabase, texts: list[str], batch: int) -> list[dict[str, Any] | None]:
    parsed = [p for p in map(parse_address, texts) if p is not None]
    return [a for i in range(0, len(parsed), batch) for a in db.lookup_many(parsed[i : i + batch])]


def three_ways(
    path: Path, texts: list[str], batches: tuple[int, ...], *, errors: bool = False
) -> list[Any]:
    """What the tree with the path reader, the tree with ``get()``, and ``get()`` alone say
    of ``texts``: for each batch size of ``batches``, ``texts`` in batches of that size, from
    no record read. With ``errors``, a reader's lookups that raise give what they raised
    (text) instead."""
    dbs = [open_geoip(path) for _ in range(3)]
    try:
        assert dbs[0]._paths is not None
        for db in dbs[1:]:
            db._paths.close()  # type: ignore[union-attr]
            db._paths = None
        tree, dbs[2]._tree = dbs[2]._tree, None
        assert tree is not None
        tree.close()
        answers: list[Any] = [[], [], []]
        for n, db in enumerate(dbs):
            try:
                for batch in batches:
                    db._records.clear()
                    answers[n].append(lookups(db, texts, batch))
            except Exception as exc:
                if not errors:
                    raise
                answers[n] = repr(exc)
        return answers
    finally:
        for db in dbs:
            db.close()


@pytest.mark.parametrize("database_type", ["GeoLite2-City", "GeoLite2-ASN"])
@pytest.mark.parametrize("case", sorted(SAME))
def test_a_hostile_record_reads_as_get_reads_it(
    tmp_path: Path, case: str, database_type: str
) -> None:
    path = hostile_file(tmp_path / "x.mmdb", SAME[case], database_type)
    by_path, by_tree, by_get = three_ways(path, TEXTS, (1, 2, 100))
    assert by_path == by_get
    assert by_tree == by_get
    assert all(answer[1] is not None for answer in by_get)  # the good record still reads


def test_every_hostile_record_of_one_file_in_one_batch(tmp_path: Path) -> None:
    """All the cases side by side, each under its own /16, looked up together and mixed
    with good addresses, in batches of every size."""
    networks: dict[str, Any] = {"1.0.0.0/8": GOOD}
    texts = []
    for n, case in enumerate(sorted(SAME)):
        if "itself" in case or "its map" in case or "its record" in case or "to a pointer" in case:
            continue  # their pointers say where the record is: first in the file only
        networks[f"5.{n}.0.0/16"] = Raw(SAME[case])
        texts += [f"5.{n}.1.1", "1.1.1.1", f"5.{n}.2.2"]
    path = write_mmdb(tmp_path / "all.mmdb", networks, database_type="GeoLite2-City")
    by_path, by_tree, by_get = three_ways(path, texts, (1, 3, 7, len(texts)))
    assert by_path == by_get
    assert by_tree == by_get


#: Records ``get()`` refuses whole (text that is not UTF-8, a pointer out of the file) or
#: reads with the last of a key written twice, where the path reader reads only what lies on
#: its way, and the first of a key: their answers differ. The same answers would take
#: decoding the whole record, which the path reader is there to avoid.
DIFFERENT: dict[str, bytes] = {
    "text not UTF-8 off the path": mapping(("country", GB), ("postal", BAD_UTF8)),
    "a lone surrogate off the path": mapping(("continent", SURROGATE), ("country", GB)),
    "a pointer out of the file off the path": mapping(("continent", FAR), ("country", GB)),
    "a key twice": mapping(("country", GB), ("country", mapping(("iso_code", "FR")))),
    "a city name twice": mapping(("city", mapping(("names", mapping(("en", "A"), ("en", "B")))))),
}


@pytest.mark.xfail(
    strict=True,
    reason="get() refuses a record damaged off the paths, or keeps a key's last value",
)
@pytest.mark.parametrize("case", sorted(DIFFERENT))
def test_a_record_damaged_off_its_paths_reads_as_get_reads_it(tmp_path: Path, case: str) -> None:
    path = hostile_file(tmp_path / "x.mmdb", DIFFERENT[case], "GeoLite2-City")
    by_path, _, by_get = three_ways(path, TEXTS, (1, 100))
    assert by_path == by_get


#: Run in a subprocess (``python -c``): a JSON line ``{"path", "texts", "batches"}`` a file on
#: stdin; for each, a ``step`` line before each step (what a crash interrupted), then the
#: answers. ``maxminddb-rust`` reads every address first, by every path, alone; then ``get()``
#: does (the addresses it raised for); then the three readers of :func:`three_ways`.
WORKER = """
import json, sys
import maxminddb, maxminddb_rust
from sqreen.server.intel import GeoIpError
from sqreen.server.intel._mmdb_paths import layout_paths
from tests.server.test_intel_paths_hostile import get_watched, three_ways

def say(**what):
    print(json.dumps(what, default=repr), flush=True)

for line in sys.stdin:
    job = json.loads(line)
    path, texts = job["path"], job["texts"]
    say(step="rust")
    try:
        rust = maxminddb_rust.open_database(path)
    except Exception:  # the collector reads it with get() alone
        say(raised=[], answers="not opened by path")
        continue
    for text in texts:
        for where in layout_paths(rust.metadata().database_type):
            try:
                rust.get_many_path([text], where)
            except Exception:
                pass
    rust.close()
    say(step="get")
    reader, raised, unset = maxminddb.open_database(path), [], []
    for text in texts:
        failed, from_garbage = get_watched(reader, text)
        if failed is not None:
            raised.append(text)
        if from_garbage:
            unset.append(text)
    reader.close()
    say(step="three ways")
    try:
        answers = three_ways(path, texts, tuple(job["batches"]), errors=True)
    except GeoIpError:  # its probes failed: refused at start
        answers = "refused"
    except Exception as exc:
        answers = repr(exc)
    say(raised=raised, unset=unset, answers=answers)
"""


def get_watched(reader: Any, text: str) -> tuple[Exception | None, bool]:
    """``reader.get(text)``: what it raised (None: nothing), and whether it made a map key
    of memory never written. ``maxminddb`` 3.2's C extension makes a key that is no string
    (a map, an array: a damaged record) with ``PyUnicode_FromStringAndSize(NULL, n)``:
    under Python 3.11, a warning and n characters of whatever the heap held, so ``get()``
    answers a record or raises ``SystemError`` as the process's memory layout has it (about
    one process in 4 000 reads a record); 3.12 raises. Such an answer has no reference to
    compare with."""
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        try:
            reader.get(text)
            failed = None
        except Exception as exc:
            failed = exc
    garbage = any("PyUnicode_FromStringAndSize(NULL" in str(w.message) for w in warned)
    return failed, garbage


class Worker:
    """The :data:`WORKER` subprocess; started again after a crash."""

    def __init__(self) -> None:
        paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )

    def run(self, path: Path, texts: list[str], batches: tuple[int, ...]) -> dict[str, Any]:
        """The answers for ``path``, or ``{"crashed": step, "returncode": ...}``."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps({"path": str(path), "texts": texts, "batches": batches}) + "\n")
        stdin.flush()
        step = "start"
        for line in stdout:
            said = json.loads(line)
            if "step" not in said:
                return dict(said)
            step = said["step"]
        return {"crashed": step, "returncode": self.process.wait(timeout=10)}

    def close(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self.process.wait(timeout=10)


def check_differential(
    worker: Worker, path: Path, texts: list[str], batches: tuple[int, ...]
) -> tuple[Worker, str]:
    """Run ``path`` in ``worker``; assert that the path reader answers as ``get()`` for
    every address ``get()`` reads without raising, and that neither ``maxminddb-rust`` nor
    our readers crash. Returns the worker to go on with, and what happened: ``same``,
    ``raised`` (``get()`` raised for some addresses), ``refused`` (at start), ``not opened
    by path`` (by ``maxminddb-rust``), ``get() raised`` (out of ``lookup_many``: the C
    extension's ``SystemError``), or ``C crash`` (``get()`` alone crashed: the C
    extension's, as before the path reader)."""
    got = worker.run(path, texts, batches)
    if "crashed" in got:
        worker.close()
        assert got["crashed"] == "get", (path, got)  # maxminddb-rust read every address alone
        return Worker(), "C crash"
    if got["answers"] in ("refused", "not opened by path"):
        return worker, got["answers"]
    assert not isinstance(got["answers"], str), (path, got)
    by_path, by_tree, by_get = got["answers"]
    if isinstance(by_get, str):  # SystemError out of the C extension's get(): not ours
        return worker, "get() raised"
    assert not isinstance(by_path, str), (path, by_path)
    unset = set(got["unset"])  # get() answered from memory never written (get_watched)

    def kept(answers: list[list[Any]]) -> list[list[Any]]:
        return [
            [a for text, a in zip(texts, batch, strict=True) if text not in unset]
            for batch in answers
        ]

    assert kept(by_tree) == kept(by_get), path
    raised = set(got["raised"]) | unset
    for answers_path, answers_get in zip(by_path, by_get, strict=True):
        for text, a, b in zip(texts, answers_path, answers_get, strict=True):
            if text not in raised:
                assert a == b, (path, text, a, b)
    return worker, "raised" if raised else "same"


def damage(data: bytes, rng: random.Random, start: int, end: int) -> bytes:
    """``data`` with a few bytes of ``data[start:end]`` changed, cut out, or made a pointer."""
    out = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:  # bytes replaced
        for _ in range(rng.randint(1, 6)):
            out[rng.randrange(start, end)] = rng.randrange(256)
    elif kind == 1:  # bits flipped
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(start, end)] ^= 1 << rng.randrange(8)
    elif kind == 2:  # a slice cut out of the data section (the metadata kept)
        at = rng.randrange(start, end)
        del out[at : at + rng.randint(1, 64)]
    else:  # a pointer somewhere, or a size extended to 3 bytes of 0xFF
        at = rng.randrange(start, end - 5)
        if rng.random() < 0.5:
            out[at : at + 2] = bytes([0x20 | rng.randrange(8), rng.randrange(256)])
        else:
            out[at] = (out[at] & 0xE0) | 31
            out[at + 1 : at + 4] = b"\xff\xff\xff"
    return bytes(out)


def base_files(tmp_path: Path) -> list[tuple[Path, int, int, list[str]]]:
    """City and ASN files, with and without pointers, of each record size: (path, data
    section start, metadata start, addresses to look up)."""
    rng = random.Random(11)
    languages = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")
    cities = [
        {
            "city": {"geoname_id": n, "names": {lang: f"City {n} {lang}" for lang in languages}},
            "continent": {"code": "EU", "names": {lang: f"Europe {lang}" for lang in languages}},
            "country": {"iso_code": ["GB", "FR", "DE"][n % 3], "names": {"en": "Country"}},
            "location": {"latitude": n / 3, "longitude": -n / 7, "accuracy_radius": 5 * n},
            "postal": {"code": f"{n:05d}"},
            "subdivisions": [{"iso_code": "S1", "names": {"en": "Region"}}],
        }
        for n in range(12)
    ]
    asns = [
        {"autonomous_system_number": 64_500 + n, "autonomous_system_organization": f"Org {n}"}
        for n in range(12)
    ]
    texts = [f"{1 + n // 30}.{n % 30}.7.9" for n in range(90)] + ["9.9.9.9"]
    files = []
    for database_type, records in (("GeoLite2-City", cities), ("GeoLite2-ASN", asns)):
        networks = {
            f"{1 + n // 30}.{n % 30}.0.0/16": records[rng.randrange(len(records))]
            for n in range(90)
        }
        for pointers in (False, True):
            for record_size in (24, 28, 32):
                path = write_mmdb(
                    tmp_path / f"{database_type}-{pointers}-{record_size}.mmdb",
                    networks,
                    database_type=database_type,
                    record_size=record_size,
                    pointers=pointers,
                )
                with maxminddb.open_database(str(path)) as reader:
                    tree = reader.metadata().node_count * record_size // 4
                files.append((path, tree + 16, path.read_bytes().rfind(METADATA_MARKER), texts))
    return files


@pytest.mark.slow
def test_damaged_files_answer_as_get_does_and_do_not_crash(tmp_path: Path) -> None:
    """Seeded damage to the data section of City and ASN files (bytes changed, cut out,
    pointers anywhere, sizes made huge): for every address ``get()`` reads without raising,
    the path reader's answer is ``get()``'s; ``maxminddb-rust`` reads every address of
    every file without crashing (a crash of ``get()`` alone is the C extension's)."""
    rng = random.Random(2026)
    bases = base_files(tmp_path)
    worker, seen = (
        Worker(),
        dict.fromkeys(
            ["same", "raised", "refused", "not opened by path", "get() raised", "C crash"], 0
        ),
    )
    try:
        for n in range(160):
            base, start, end, texts = bases[n % len(bases)]
            path = tmp_path / f"damaged-{n}.mmdb"
            path.write_bytes(damage(base.read_bytes(), rng, start, end))
            worker, what = check_differential(worker, path, texts, (1, 7, 100))
            seen[what] += 1
    finally:
        worker.close()
    print(seen)
    assert seen["raised"] > 20 and seen["same"] > 20, seen


#: Map keys that are not text: the C extension's ``get()`` decodes some, and crashes on
#: others (a known fault of maxminddb 3.2's ``from_map``): in a subprocess.
KEYS_NOT_TEXT: dict[str, bytes] = {
    "a number before country": mapping((5, "v"), ("country", GB)),
    "a number before en": mapping(("city", mapping(("names", mapping((9, "v"), ("en", "A")))))),
    "a number after en": mapping(("city", mapping(("names", mapping(("en", "A"), (9, "v")))))),
    "a number in location": located((7, "v"), ("latitude", 1.0), ("longitude", 2.0)),
    "bytes for en": mapping(("city", mapping(("names", mapping((encode(b"en"), "Paris")))))),
    "a map for a key": mapping((mapping(("a", 1)), "v"), ("country", GB)),
    "an array for a key": mapping((encode([1, 2]), "v"), ("country", GB)),
    "a double for a key": mapping((1.5, "v"), ("country", GB)),
}


@pytest.mark.slow
def test_map_keys_not_text_answer_as_get_does_and_do_not_crash(tmp_path: Path) -> None:
    worker, seen = Worker(), []
    try:
        for n, case in enumerate(sorted(KEYS_NOT_TEXT)):
            for database_type in ("GeoLite2-City", "GeoLite2-ASN"):
                path = hostile_file(
                    tmp_path / f"{n}-{database_type}.mmdb", KEYS_NOT_TEXT[case], database_type
                )
                worker, what = check_differential(worker, path, TEXTS, (1, 100))
                seen.append(what)
    finally:
        worker.close()
    print(seen)
    assert seen.count("same") + seen.count("raised") > len(seen) // 2, seen


@pytest.mark.parametrize(
    "database_type",
    ["GeoLite2-" + "x" * 130 + "City", "GeoLite2-City " + "x" * 120 + "ASN"],
)
def test_a_long_database_type_is_one_layout_with_or_without_paths(
    tmp_path: Path, database_type: str
) -> None:
    """The layout that decides the paths and the one that decides the keys read are that of
    the same text: the database type whole, not as :attr:`GeoIpDatabase.database_type`
    shows it (cut to 128 characters)."""
    path = write_mmdb(
        tmp_path / "long.mmdb", {"5.0.0.0/8": GOOD, "1.0.0.0/8": GOOD}, database_type=database_type
    )
    by_path, by_tree, by_get = three_ways(path, TEXTS, (100,))
    assert by_path == by_tree == by_get


class CountingReader:
    """The C reader, counting the addresses its ``get()`` was asked for."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self.asked: list[str] = []

    def get(self, address: str) -> Any:
        self.asked.append(address)
        return self._reader.get(address)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


def test_a_record_reads_the_same_whatever_else_its_batch_holds(tmp_path: Path) -> None:
    """A record the path reader cannot read (its city is not UTF-8) is decoded by ``get()``
    alone: the others of its batch are still read by path, as they would be in any other
    batch, so that what an address reads does not depend on the addresses looked up with
    it. (Here the other record is damaged off its paths: ``get()`` refuses it, the path
    reader reads its country.)"""
    networks = {
        "5.0.0.0/8": Raw(DIFFERENT["text not UTF-8 off the path"]),
        "6.0.0.0/8": Raw(names_en(BAD_UTF8)),
        "1.0.0.0/8": GOOD,
    }
    path = write_mmdb(tmp_path / "x.mmdb", networks, database_type="GeoLite2-City")
    texts = ["5.1.1.1", "6.1.1.1", "1.1.1.1", "9.9.9.9"]
    alone, together = open_geoip(path), open_geoip(path)
    try:
        want = [lookups(alone, [text], 1)[0] for text in texts]
        assert want[0] == {"country": "GB"} and want[1] is None and want[2] is not None
        counting = together._reader = CountingReader(together._reader)
        assert lookups(together, texts, len(texts)) == want
        assert counting.asked == ["6.1.1.1"]  # get() for the record it cannot read only
    finally:
        alone.close()
        together.close()


def test_a_file_renamed_over_with_the_same_metadata_is_not_read_by_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path reader opens the path after the C reader and the tree did: a next file
    renamed over it meanwhile, of the same tree and build time (its metadata the same),
    is not read by path, or the tree's record numbers would be read from that file."""

    def networks(iso_code: str) -> dict[str, Any]:
        return {"1.0.0.0/8": GOOD, "5.0.0.0/8": {"country": {"iso_code": iso_code}}}

    path = write_mmdb(tmp_path / "city.mmdb", networks("GB"), database_type="GeoLite2-City")
    after = write_mmdb(tmp_path / "next.mmdb", networks("FR"), database_type="GeoLite2-City")
    real = _mmdb_paths.open_rust
    assert real is not None

    def renamed_over_first(where: str) -> Any:
        after.replace(path)
        return real(where)

    monkeypatch.setattr(_mmdb_paths, "open_rust", renamed_over_first)
    db = open_geoip(path)
    try:
        assert db._tree is not None  # the first file's, as the C reader's
        assert lookups(db, ["5.1.1.1"], 1) == [{"country": "GB"}]
        assert db._paths is None
    finally:
        db.close()


#: A record ``get()`` decodes in any thread: its location 300 maps deep (under the format's
#: limit of 512) past the coordinates, and last (a path to a key after it skips it, and
#: ``maxminddb-rust`` refuses to skip a value so deep).
DEEP_LOCATION = mapping(
    ("country", GB),
    ("city", mapping(("names", mapping(("en", "Deep"))))),
    ("location", mapping(("latitude", 1.0), ("longitude", 2.0), ("z", nested(300)))),
)
SMALL_STACKS = """
import json, sys, threading
threading.stack_size(128 * 1024)  # what a thread has by default under musl (Alpine)
from sqreen.server.intel import open_geoip, parse_address
db = open_geoip(sys.argv[1])
out = []
thread = threading.Thread(target=lambda: out.append(db.lookup_many([parse_address("5.1.1.1")])))
thread.start()
thread.join()
print(json.dumps(out[0]))
"""


@pytest.mark.slow
def test_threads_of_small_stacks_do_not_crash_on_a_deep_record(tmp_path: Path) -> None:
    """``maxminddb-rust`` decodes a value a level of its maps at about 0.8 KiB of stack
    (measured: 512 levels took 400 KiB), where the C extension decoded them in 64 KiB: in
    threads of 128 KiB (musl's default) a 300-level location crashed the process."""
    path = hostile_file(tmp_path / "deep.mmdb", DEEP_LOCATION, "GeoLite2-City")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SMALL_STACKS, str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    want = {"country": "GB", "city": "Deep", "latitude": 1.0, "longitude": 2.0}
    assert json.loads(done.stdout) == [want]


@pytest.mark.parametrize("stacks", ["set small", "musl", "limit small", "glibc", "set large"])
def test_the_path_reader_only_where_threads_have_the_stack_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stacks: str
) -> None:
    import resource

    if stacks == "musl":  # no glibc: musl's threads have 128 KiB
        monkeypatch.setattr(os, "confstr", lambda name: None)
    elif stacks == "limit small":  # glibc's threads have the stack's resource limit
        monkeypatch.setattr(resource, "getrlimit", lambda which: (512 * 1024, -1))
    elif stacks == "glibc":
        monkeypatch.setattr(os, "confstr", lambda name: "glibc 2.36")
        monkeypatch.setattr(resource, "getrlimit", lambda which: (8 << 20, -1))
    path = hostile_file(tmp_path / "x.mmdb", DEEP_LOCATION, "GeoLite2-City")
    size = {"set small": 512 * 1024, "set large": 1 << 20}.get(stacks, 0)
    before = threading.stack_size(size)
    try:
        db = open_geoip(path)
    finally:
        threading.stack_size(before)
    try:
        assert (db._paths is not None) == (stacks in ("glibc", "set large"))
        assert lookups(db, ["5.1.1.1"], 1) == [
            {"country": "GB", "city": "Deep", "latitude": 1.0, "longitude": 2.0}
        ]
    finally:
        db.close()


# Before it fails, the C extension warns (PyUnicode_FromStringAndSize(NULL, size) is
# deprecated): ignored, as Python's default filters ignore it in a server.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_record_the_c_reader_fails_on_with_a_system_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``maxminddb`` 3.2.0's C extension returns from ``get()`` with an exception set
    (``SystemError``) on some damaged maps; here one key's length byte changed (``pt-BR``,
    5 -> 21 bytes), found by the seeded damage above. The events of such addresses are
    stored with no fields from the file, and a file whose probes meet such a record is
    refused at start saying why: never the ``SystemError``."""
    base = next(p for p, *_ in base_files(tmp_path) if p.name == "GeoLite2-City-False-32.mmdb")
    data = base.read_bytes()
    at = data.index(b"ICity 2 jaEpt-BR") + len(b"ICity 2 ja")
    path = tmp_path / "damaged.mmdb"
    path.write_bytes(data[:at] + b"\x55" + data[at + 1 :])
    texts = [f"{1 + n // 30}.{n % 30}.7.9" for n in range(90)]
    failing = []
    with maxminddb.open_database(str(path)) as reader:
        for text in texts:
            failed, from_garbage = get_watched(reader, text)
            if isinstance(failed, SystemError):
                failing.append(text)
            elif from_garbage:  # this process's layout read the key's garbage as text
                pytest.skip("maxminddb's get() answered from memory never written")
    assert failing  # the fault, as it is
    db = open_geoip(path)  # its probes (1.1.1.1, 81.2.69.160) do not meet one
    try:
        by_path = dict(zip(texts, lookups(db, texts, 100), strict=True))
        db._paths, db._records = None, {}
        by_get = dict(zip(texts, lookups(db, texts, 100), strict=True))
    finally:
        db.close()
    assert all(by_get[text] is None for text in failing)
    # The damage lies off the paths (after "en" in the names): read by path, as documented.
    assert all(by_path[text] is not None for text in failing)
    assert all(by_path[text] == by_get[text] is not None for text in texts if text not in failing)
    monkeypatch.setattr(_geoip, "PROBES", (failing[0], "81.2.69.160"))
    with pytest.raises(GeoIpError, match=r"a corrupt MaxMind DB file \(a record the reader"):
        open_geoip(path)
