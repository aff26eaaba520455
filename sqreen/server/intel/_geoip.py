"""MaxMind-format (``.mmdb``) files the user points to: city, coordinates, ASN.

``sqreen serve --geoip-db PATH`` (repeated) opens each file once, at start, with
``maxminddb``'s C extension (memory-mapped; a lookup is a walk down the file's tree and the
decoding of one record). The layouts read as they are:

- GeoLite2-City / GeoIP2-City and DB-IP City Lite: ``city.names.en``, ``country.iso_code``,
  ``location.latitude``, ``location.longitude``, ``location.accuracy_radius`` (GeoLite2 only);
- GeoLite2-ASN and DB-IP ASN Lite: ``autonomous_system_number``,
  ``autonomous_system_organization``;
- IPinfo Lite: ``country_code``, ``asn`` (``"AS13335"``), ``as_name``.

A file's records are checked as they are read: a field of the wrong type or out of range is
left out, text is cut to :data:`MAX_TEXT` characters, so that a strange file gives less
information, never a broken event. A file that is missing, unreadable or not a MaxMind DB is
refused at start (:class:`GeoIpError`, with the path and the reason).

Replace a file by renaming a new one over it (as ``geoipupdate`` does), never by writing into
it: the collector maps the file it opened and keeps reading that one until it restarts.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import maxminddb

from ._address import Parsed
from ._mmdb_paths import PathReader, layout_gives, layout_keys, open_paths
from ._mmdb_tree import UNKNOWN, Ipv4Tree, open_tree

__all__ = ["GeoIpDatabase", "GeoIpError", "Placed", "finite_number", "is_country", "open_geoip"]

MAX_TEXT: Final = 128
MAX_RADIUS_KM: Final = 20_000
#: Records read and kept by record number (dropped whole when full): a City file's IPv4
#: networks lead to far fewer records than there are networks (one a city). Full, with a
#: City file's five fields each: 24 MiB (tracemalloc), as much as the enricher's cache of
#: addresses.
RECORD_CACHE_SIZE: Final = 65_536
_MISSING: Final[Any] = object()
_ASN_TEXT: Final = re.compile(r"(?:AS)?(\d{1,10})")
#: What a damaged record makes ``maxminddb``'s ``get()`` raise: its own error, text that is
#: not UTF-8 (ValueError), and SystemError (its C extension, 3.2.0, returns from ``get()``
#: with an exception set on some damaged maps: a string's length byte changed, measured).
RECORD_ERRORS: Final = (ValueError, maxminddb.InvalidDatabaseError, TypeError, SystemError)
#: Addresses looked up once when a file is opened (the search tree walked to its leaves).
PROBES: Final = ("1.1.1.1", "81.2.69.160", "2001:4860:4860::8888")


class GeoIpError(ValueError):
    """A ``--geoip-db`` file that cannot be used: the message names it and says why."""


class Placed:
    """What a file says of an address: its ``fields`` (of :func:`read_record`, but the AS
    organisation, which is ``as_org``), one object for every address of the same record
    (so never changed), compared by identity: the enricher keys what addresses share by it
    (a tuple of a record's fields built and hashed for every new address was a fifth of its
    cost with a dense City file, measured)."""

    __slots__ = ("as_org", "fields")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.as_org: str | None = fields.pop("as_org", None)
        self.fields = fields

    def record(self) -> dict[str, Any]:
        """The fields as :func:`read_record` gives them (a new dict)."""
        return self.fields | {"as_org": self.as_org} if self.as_org else dict(self.fields)


class GeoIpDatabase:
    """One opened ``.mmdb`` file."""

    def __init__(self, path: str | os.PathLike[str], reader: Any) -> None:
        self.path = Path(path)
        self._reader = reader
        #: The file's tree for IPv4 lookups (:mod:`._mmdb_tree`; :func:`open_geoip` sets it
        #: once the file passed its probes), and what was read of each record it leads to
        #: (record number -> fields, None for none).
        self._tree: Ipv4Tree | None = None
        self._records: dict[int, Placed | None] = {}
        #: What addresses read one by one said (IPv6, files without the tree, records
        #: decoded whole), by their fields: one :class:`Placed` for equal ones, as they are
        #: not read once a record (1 000 IPv6 addresses of one record made 1 000 ip_info).
        self._same: dict[tuple[tuple[str, Any], ...], Placed] = {}
        #: The fields of a record not read yet, by path (:mod:`._mmdb_paths`; None: get()).
        self._paths: PathReader | None = None
        meta = reader.metadata()
        self.database_type = str(meta.database_type)[:MAX_TEXT]
        self.build_epoch = int(meta.build_epoch)
        self.ip_version = int(meta.ip_version)
        #: The record's keys read (a known layout, :func:`._mmdb_paths.layout_keys`; None: all),
        #: of the type whole, as :func:`._mmdb_paths.open_paths` reads it (not cut short).
        self._keys = layout_keys(str(meta.database_type))
        #: What the file can give of places and ASNs (:func:`._mmdb_paths.layout_gives`).
        self.gives = layout_gives(str(meta.database_type))
        #: Whether lookups run in C (``maxminddb``'s extension) or in its pure-Python reader.
        self.in_c = type(reader).__module__ == "maxminddb.extension"

    def lookup_many(self, addresses: Sequence[Parsed]) -> list[dict[str, Any] | None]:
        """The fields this file has for each of ``addresses`` (None: none): any of
        ``country``, ``city``, ``latitude``, ``longitude``, ``accuracy_radius``, ``asn``,
        ``as_org`` (a new dict each)."""
        return [None if got is None else got.record() for got in self.placed_many(addresses)]

    def placed_many(self, addresses: Sequence[Parsed]) -> list[Placed | None]:
        """What this file says of each of ``addresses`` (None: nothing), shared by the
        addresses of one record. One loop for a batch's new addresses (a call a lookup was
        0.5 µs of 1.5 on top of the reader's, with an address the file does not hold:
        measured)."""
        if self._tree is not None:
            return self._by_record(addresses)
        get = self._reader.get
        if self.ip_version == 4 and any(address[0] == 6 for address in addresses):
            return [None if address[0] == 6 else self._one(address[2]) for address in addresses]
        try:  # one comprehension (no call of ours an address): most addresses have no record
            records = [get(address[2]) for address in addresses]
        except RECORD_ERRORS:
            return [self._one(address[2]) for address in addresses]
        return [self._fields(record) for record in records]

    def _by_record(self, addresses: Sequence[Parsed]) -> list[Placed | None]:
        """:meth:`placed_many` through the tree: an IPv4 address's record is read once, the
        batch's new records together; IPv6 addresses and those the walk cannot place are
        read together too, each one."""
        assert self._tree is not None
        record, none = self._tree.record, self._tree.node_count
        records = self._records
        # Each address's answer or None; or, read below, the number of a record not read
        # yet or the address's text (IPv6, a walk that did not end).
        out: list[Any] = []
        new: dict[int, str] = {}  # record number -> an address leading to it
        alone: dict[str, None] = {}
        for address in addresses:
            if address[0] == 4:
                number = record(address[1])
                if number == none:  # the file does not place it
                    out.append(None)
                    continue
                if number != UNKNOWN:
                    got = records.get(number, _MISSING)
                    if got is _MISSING:
                        new.setdefault(number, address[2])
                        out.append(number)
                    else:
                        out.append(got)
                    continue
            elif self.ip_version == 4:
                out.append(None)
                continue
            alone[address[2]] = None
            out.append(address[2])
        if not new and not alone:
            return out
        if new:
            if len(records) + len(new) > RECORD_CACHE_SIZE:
                records.clear()
            records.update(zip(new, self._read([*new.values()], False), strict=True))
        each = dict(zip(alone, self._read([*alone], True), strict=True)) if alone else {}
        return [
            records[item] if type(item) is int else each[item] if type(item) is str else item
            for item in out
        ]

    def _read(self, texts: list[str], by_fields: bool) -> list[Placed | None]:
        """What the records of ``texts`` (addresses) say, together: by path when the file's
        layout allows, else each decoded whole. A record the path reader cannot read is
        decoded whole alone, so that what an address reads does not depend on the others of
        its batch (in a damaged file's batches only: each address read again).
        ``by_fields``: ``texts`` may lead to the same record (not one address a record
        number): equal answers are made one (:meth:`_placed`)."""
        paths = self._paths
        if paths is None:
            return [self._one(text) for text in texts]
        found: Sequence[dict[str, Any] | None] | None = paths.records(texts)
        if found is None:  # a record it cannot read: the others by path still, each alone
            found = [None if (one := paths.records([text])) is None else one[0] for text in texts]
        out: list[Placed | None] = []
        for text, got in zip(texts, found, strict=True):
            if got is None:
                out.append(self._one(text))
            elif not (fields := read_record(got)):
                out.append(None)
            else:
                out.append(self._placed(fields) if by_fields else Placed(fields))
        return out

    def _one(self, text: str) -> Placed | None:
        """What this file says of the address ``text`` (None: nothing, or an error)."""
        try:
            record = self._reader.get(text)
        except RECORD_ERRORS:
            return None
        return self._fields(record)

    def _fields(self, record: object) -> Placed | None:
        """:func:`read_record` of a decoded record, of its layout's keys; None when it is no
        map or gives no field."""
        if not isinstance(record, dict):
            return None
        if self._keys is not None:
            record = {key: record[key] for key in self._keys if key in record}
        fields = read_record(record)
        return self._placed(fields) if fields else None

    def _placed(self, fields: dict[str, Any]) -> Placed:
        """The one :class:`Placed` of these fields (see :attr:`_same`)."""
        key = tuple(fields.items())
        same = self._same.get(key)
        if same is None:
            if len(self._same) >= RECORD_CACHE_SIZE:
                self._same.clear()
            same = self._same[key] = Placed(fields)
        return same

    def describe(self) -> dict[str, Any]:
        """What the agents page and ``/healthz`` say of this file (its name, not its path)."""
        return {
            "file": self.path.name,
            "type": self.database_type,
            "built": _built(self.build_epoch),
            "reader": ("C extension" if self.in_c else "pure Python (slow)")
            + (", fields by path (maxminddb-rust)" if self._paths is not None else ""),
        }

    def close(self) -> None:
        self._reader.close()
        if self._tree is not None:
            self._tree.close()
        if self._paths is not None:
            self._paths.close()


def _built(epoch: int) -> str:
    """The build date a file's metadata says (``unknown`` for a time no calendar holds: a
    writer that put milliseconds there, a negative or huge number; the file reads as well)."""
    try:
        return datetime.fromtimestamp(epoch, UTC).date().isoformat()
    except (OverflowError, OSError, ValueError):
        return "unknown"


def open_geoip(path: str | os.PathLike[str]) -> GeoIpDatabase:
    """Open ``path`` as a MaxMind DB file, or raise :class:`GeoIpError` saying why not."""
    where = str(path)
    try:
        # Held open while the reader opens the path: the tree walked for IPv4 lookups is
        # this file's, once the path still names it (:func:`._mmdb_tree.open_tree`).
        # O_NONBLOCK: opening a FIFO waits for a writer otherwise (the start hung, silent).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except IsADirectoryError:
        raise GeoIpError(f"{where}: a directory, not a MaxMind DB (.mmdb) file") from None
    except FileNotFoundError:
        raise GeoIpError(f"{where}: no such file") from None
    except OSError as exc:
        raise _unreadable(where, exc) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise GeoIpError(f"{where}: a directory, not a MaxMind DB (.mmdb) file")
        raise GeoIpError(
            f"{where}: not a regular file (a pipe or a device), which the collector "
            "cannot map: give the path of the .mmdb file itself"
        )
    held = os.fdopen(fd, "rb")  # closed below, after the reader has opened the path
    with held:
        try:
            first = held.read(1)
        except OSError as exc:
            raise _unreadable(where, exc) from None
        if not first:
            raise GeoIpError(f"{where}: the file is empty, not a MaxMind DB (.mmdb) file")
        db = _open_reader(path)
        # After the probes: a corrupt file is refused without reading its tree (the table
        # of a tree that loops takes a second and more to fill).
        db._tree = open_tree(held.fileno(), where, db._reader.metadata())
        if db._tree is not None:  # only records met through the tree are read by path
            db._paths = open_paths(path, db._reader.metadata(), held.fileno())
    return db


def _unreadable(where: str, exc: OSError) -> GeoIpError:
    return GeoIpError(f"{where}: cannot read it ({exc.strerror or exc})")


def _open_reader(path: str | os.PathLike[str]) -> GeoIpDatabase:
    """The file opened by ``maxminddb``'s reader, its metadata read and a few addresses
    looked up (:class:`GeoIpError` when it is no usable MaxMind DB file)."""
    where = str(path)
    try:
        reader = maxminddb.open_database(where, maxminddb.MODE_AUTO)
    except (maxminddb.InvalidDatabaseError, ValueError, OSError, RuntimeError) as exc:
        detail = str(exc).replace(f"({where})", "").replace(where, "").strip()
        if not detail or "valid MaxMind DB" in detail:  # says no more than we do
            detail = ""
        raise GeoIpError(
            f"{where}: not a MaxMind DB (.mmdb) file" + (f" ({detail[:200]})" if detail else "")
        ) from None
    try:  # the C reader decodes the metadata map here: InvalidDatabaseError when it cannot
        db = GeoIpDatabase(path, reader)
    except (
        AttributeError,
        TypeError,
        ValueError,
        OverflowError,
        maxminddb.InvalidDatabaseError,
        SystemError,
    ) as exc:
        reader.close()
        raise GeoIpError(f"{where}: unreadable MaxMind DB metadata ({exc})") from None
    # A file cut short or overwritten in place still has its metadata at the end: a few
    # lookups find out now rather than on every event.
    for probe in PROBES if db.ip_version == 6 else PROBES[:2]:
        try:
            reader.get(probe)
        except (maxminddb.InvalidDatabaseError, SystemError) as exc:
            db.close()
            detail = (
                str(exc).rpartition(". ")[2]
                if isinstance(exc, maxminddb.InvalidDatabaseError)
                else "a record the reader cannot decode"
            )
            raise GeoIpError(f"{where}: a corrupt MaxMind DB file ({detail})") from None
        except ValueError:
            pass
    return db


def read_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of one record, checked (see the module's docstring for the layouts)."""
    # Read with plain lookups (a new address placed by a City file reads one record: the
    # nested helpers and the country's regular expression were a third of that, measured).
    out: dict[str, Any] = {}
    found = record.get("country")
    country = found.get("iso_code") if isinstance(found, dict) else None
    if country is None:
        country = record.get("country_code")  # IPinfo Lite
    if isinstance(country, str) and is_country(country):
        out["country"] = country
    found = record.get("city")
    if isinstance(found, dict):
        found = found.get("names")
        city = found.get("en") if isinstance(found, dict) else None
        if isinstance(city, str):
            city = city.strip()
            if city:
                out["city"] = city[:MAX_TEXT]
    location = record.get("location")
    if isinstance(location, dict):
        lat, lon = finite_number(location.get("latitude")), finite_number(location.get("longitude"))
        if lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180:
            out["latitude"], out["longitude"] = round(lat, 4), round(lon, 4)
            radius = location.get("accuracy_radius")
            if type(radius) is int and 0 <= radius <= MAX_RADIUS_KM:
                out["accuracy_radius"] = radius
    asn = record.get("autonomous_system_number")
    if asn is None and isinstance(record.get("asn"), str):  # IPinfo Lite: "AS13335"
        matched = _ASN_TEXT.fullmatch(record["asn"])
        asn = int(matched[1]) if matched else None
    if type(asn) is int and 0 < asn < 2**32:
        out["asn"] = asn
    org = record.get("autonomous_system_organization", record.get("as_name"))
    if isinstance(org, str) and org.strip():
        out["as_org"] = org.strip()[:MAX_TEXT]
    return out


def is_country(code: str) -> bool:
    """Two ASCII capital letters (``[A-Z]{2}``, without the regular expression)."""
    return len(code) == 2 and code.isascii() and code.isalpha() and code.isupper()


def finite_number(value: object) -> float | None:
    if type(value) not in (int, float):
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None
