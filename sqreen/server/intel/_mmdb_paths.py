"""The few fields the collector reads from a ``.mmdb`` record, read by path, without decoding
the rest of the record (the ``server-speedups`` extra's ``maxminddb-rust``).

``maxminddb``'s ``get()`` decodes a whole record into Python objects: a GeoLite2-City record
holds every name in eight languages, the continent, both countries, the subdivisions, the
postal code and the time zone, 20 to 70 values, of which the collector keeps five. Its C
extension offers no way to decode less. ``maxminddb-rust`` (written by ``maxminddb``'s
maintainer, the same API, ISC licence) adds ``get_many_path()``: one field for many addresses,
decoding only what lies on the way to it. A record first met by a scan of new addresses then
costs three path lookups instead of a whole decode (measured: ``bench/bench_enrich.py``).

Only files whose layout is known by their database type are read so: MaxMind's and DB-IP's
City and Country files (``country.iso_code``, ``city.names.en``, ``location``) and their ASN
files (``autonomous_system_number``, ``autonomous_system_organization``); such a file is
read for its layout's fields only, with or without this reader (:func:`layout_keys`). Any
other file (IPinfo Lite, a file of one's own) is decoded whole, for every field
:func:`~._geoip.read_record` knows. What the paths give is put back in the shape of a record
and checked by the same :func:`~._geoip.read_record`, so a file reads the same either way
(``tests/server/test_intel_paths_reader.py``, and the tree's differential test), but for a
record damaged off the paths: ``get()`` refuses a record any of whose values it cannot
decode (text that is not UTF-8, a pointer out of the file), and keeps the last of a key
written twice, where the paths read what lies on their way, and a key's first
(``tests/server/test_intel_paths_hostile.py``). A record the paths cannot read is decoded
by ``get()``, alone: the others of its batch are read by path still.

Without ``maxminddb-rust`` (``pip install 'sqreen-sdk[server]'`` alone, a platform it has no
wheel for, or ``SQREEN_NO_SPEEDUPS=1``), with threads of stacks under 1 MiB
(:func:`thread_stacks_fit`: musl's, Alpine's, are 128 KiB), or when it cannot read a file or
a record, ``get()`` does the work, with the same results.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from ._mmdb_tree import SAME_FILE, names_held

try:  # the optional extra: pip install sqreen-sdk[server,server-speedups]
    import maxminddb_rust

    _OPEN: Callable[[str], Any] | None = maxminddb_rust.open_database
except ImportError:  # pragma: no cover - the server-speedups extra not installed
    _OPEN = None

#: What opens a file for path lookups (None: none is, get() reads every record); tests set it.
open_rust = None if os.environ.get("SQREEN_NO_SPEEDUPS") else _OPEN

__all__ = ["PathReader", "layout_keys", "layout_paths", "open_paths", "thread_stacks_fit"]

Path = tuple[str, ...]

#: MaxMind's GeoIP2/GeoLite2 City and Country layout (DB-IP's City and Country Lite too).
CITY_PATHS: Final[tuple[Path, ...]] = (
    ("country", "iso_code"),
    ("city", "names", "en"),
    ("location",),
)
#: MaxMind's and DB-IP's ASN layout.
ASN_PATHS: Final[tuple[Path, ...]] = (
    ("autonomous_system_number",),
    ("autonomous_system_organization",),
)
_KNOWN_MAKERS: Final = ("GeoIP2-", "GeoLite2-", "DBIP-")
#: The stack a thread needs to read by path: ``maxminddb-rust`` decodes the maps of a value
#: at about 0.8 KiB of stack a level (the format's 512 levels: 400 KiB, measured), where
#: the C extension's ``get()`` decodes them in 64 KiB. In a thread of 128 KiB (musl's), a
#: record whose location was 150 maps deep crashed the process.
STACK_NEEDED: Final = 1 << 20


def layout_paths(database_type: str) -> tuple[Path, ...] | None:
    """The paths to read from a file of this database type; None: decode its records whole."""
    if not database_type.startswith(_KNOWN_MAKERS):
        return None
    if "ASN" in database_type:
        return ASN_PATHS
    if "City" in database_type or "Country" in database_type:
        return CITY_PATHS
    return None  # ISP, Enterprise, Anonymous-IP...: other layouts


#: What :func:`layout_gives` says a file may give: coordinates (a login's place), ASNs.
PLACES: Final = "places"
ASNS: Final = "asn"


def layout_gives(database_type: str) -> frozenset[str]:
    """What a file of this database type can give of :data:`PLACES` and :data:`ASNS`: a
    City file places, an ASN file ASNs, a Country file neither; a layout not known here
    (IPinfo's, ISP, Enterprise, a file of one's own) may give both."""
    paths = layout_paths(database_type)
    if paths is ASN_PATHS:
        return frozenset({ASNS})
    if paths is CITY_PATHS:
        return frozenset({PLACES}) if "City" in database_type else frozenset()
    return frozenset({PLACES, ASNS})


def layout_keys(database_type: str) -> tuple[str, ...] | None:
    """The top-level keys of a record that a file of this type is read for (with or without
    ``maxminddb-rust``, so that a file reads the same either way); None: every key
    :func:`~._geoip.read_record` knows."""
    paths = layout_paths(database_type)
    return None if paths is None else tuple(dict.fromkeys(path[0] for path in paths))


class PathReader:
    """One file opened by ``maxminddb-rust``, read by the paths of its layout."""

    def __init__(self, reader: Any, paths: tuple[Path, ...]) -> None:
        self._reader = reader
        self._paths = paths
        self._city = paths is CITY_PATHS

    def records(self, addresses: Sequence[str]) -> list[dict[str, Any]] | None:
        """For each address (text), a record holding only the fields read (empty: none);
        None when the file cannot be read so for one of them (a field's parent that is no
        map, a damaged record): the caller then asks for each alone."""
        many = self._reader.get_many_path
        try:
            columns = [many(addresses, path) for path in self._paths]
        except Exception:  # whatever a damaged file makes the reader raise: get() says
            return None
        if self._city:
            return [
                _city_record(country, city, location)
                for country, city, location in zip(*columns, strict=True)
            ]
        names = [path[0] for path in self._paths]  # top-level keys: a record as decoded
        return [
            {name: v for name, v in zip(names, values, strict=True) if v is not None}
            for values in zip(*columns, strict=True)
        ]

    def close(self) -> None:
        self._reader.close()


def _city_record(country: object, city: object, location: object) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if country is not None:
        record["country"] = {"iso_code": country}
    if city is not None:
        record["city"] = {"names": {"en": city}}
    if location is not None:
        record["location"] = location
    return record


def thread_stacks_fit() -> bool:
    """Whether the threads started from now on (the server's, that look addresses up) have
    :data:`STACK_NEEDED`: the size :func:`threading.stack_size` sets, else the platform's
    (glibc: the stack's resource limit, 8 MiB as a rule; musl: 128 KiB; CPython's on macOS
    and Windows: 16 and 2 MiB; others: not known, so no)."""
    size = threading.stack_size()
    if size:
        return size >= STACK_NEEDED
    if sys.platform in ("darwin", "win32"):
        return True
    try:
        glibc = bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):  # not glibc: musl (Alpine), or not Linux
        glibc = False
    if not glibc:
        return False
    import resource  # Unix only

    soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
    return soft == resource.RLIM_INFINITY or soft >= STACK_NEEDED


def open_paths(path: str | os.PathLike[str], metadata: Any, held: int) -> PathReader | None:
    """A :class:`PathReader` of ``path`` when ``maxminddb-rust`` is installed, threads have
    the stack it needs (:func:`thread_stacks_fit`), the file's layout is known, and the file
    it opens is the one the C reader and the tree read: the open file ``held`` (opened
    before both), which ``path`` must still name once this reader opened it, with the
    metadata ``metadata`` (the C reader's); else None."""
    if open_rust is None or not thread_stacks_fit():
        return None
    paths = layout_paths(str(metadata.database_type))
    if paths is None:
        return None
    try:
        reader = open_rust(os.fspath(path))
    except Exception:  # the C reader opened it: whatever this one says, get() reads it
        return None
    try:
        # Renamed over since: another file, whose metadata can be the same as the first's
        # (a writer that pins its build time), and whose records the tree's numbers are not.
        found = reader.metadata()
        same = names_held(held, path) and all(
            getattr(found, name) == getattr(metadata, name) for name in SAME_FILE
        )
    except Exception:
        same = False
    if not same:
        reader.close()
        return None
    return PathReader(reader, paths)
