"""A small MaxMind DB (``.mmdb``) writer, for tests and benchmarks: the format as the spec
describes it (a binary search tree of 24-, 28- or 32-bit records, a data section, the
metadata), enough for files that the real reader (``maxminddb``'s C extension) opens and
answers from.

``write_mmdb(path, {"81.2.69.0/24": {"city": {"names": {"en": "London"}}, ...}})`` writes an
IPv6 tree (IPv4 networks sit under ``::/96``, as in GeoLite2 and DB-IP files), or with
``ip_version=4`` an IPv4 one (IPv4 networks only). Networks may not overlap. Values: dicts
(maps), lists, str, int (uint32 when >= 0), float (double), bool.

With ``pointers=True`` the data section is written as MaxMind's writers write it: a map's
key or value, or an array's item, already written elsewhere becomes a pointer to it when the
pointer is shorter (so a GeoLite2 file's keys, continents, countries and cities are
pointers); without, every record is written out in full. A :class:`Raw` value is written
as its bytes, for damaged files.
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import Any

METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"


class Typed(int):
    """An unsigned integer written as a given type (the metadata's fields have fixed ones)."""

    type = 6
    width = 4


class Raw(bytes):
    """Bytes written into the data section as they are, where a value goes: a damaged or
    hostile value the encoder would not write (its offsets, for pointers, are the data
    section's: a record met first starts at 0)."""


class U16(Typed):
    type, width = 5, 2


class U32(Typed):
    type, width = 6, 4


class U64(Typed):
    type, width = 9, 8


def _control(type_: int, size: int) -> bytes:
    if size < 29:
        head, extra = size, b""
    elif size < 29 + 256:
        head, extra = 29, bytes([size - 29])
    elif size < 285 + 65536:
        head, extra = 30, (size - 285).to_bytes(2, "big")
    else:
        head, extra = 31, (size - 65821).to_bytes(3, "big")
    if type_ <= 7:
        return bytes([(type_ << 5) | head]) + extra
    return bytes([head, type_ - 7]) + extra


def encode(value: Any) -> bytes:
    """One value in the data section's encoding."""
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, bool):
        return _control(14, int(value))
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _control(2, len(raw)) + raw
    if isinstance(value, float):
        return _control(3, 8) + struct.pack(">d", value)
    if isinstance(value, Typed):
        raw = int(value).to_bytes(value.width, "big").lstrip(b"\x00")
        return _control(value.type, len(raw)) + raw
    if isinstance(value, int):
        if value < 0:
            return _control(8, 4) + struct.pack(">i", value)
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
        if value < 2**16:
            return _control(5, len(raw)) + raw
        if value < 2**32:
            return _control(6, len(raw)) + raw
        return _control(9, len(raw)) + raw
    if isinstance(value, bytes):
        return _control(4, len(value)) + value
    if isinstance(value, dict):
        out = _control(7, len(value))
        for k, v in value.items():
            out += encode(str(k)) + encode(v)
        return out
    if isinstance(value, list | tuple):
        return _control(11, len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def pointer(offset: int) -> bytes:
    """A pointer to ``offset`` in the data section, in the fewest bytes the format allows."""
    if offset < 2048:
        return bytes([0x20 | (offset >> 8), offset & 0xFF])
    if offset < 526_336:
        rest = offset - 2048
        return bytes([0x28 | (rest >> 16)]) + (rest & 0xFFFF).to_bytes(2, "big")
    if offset < 134_744_064:
        rest = offset - 526_336
        return bytes([0x30 | (rest >> 24)]) + (rest & 0xFFFFFF).to_bytes(3, "big")
    return b"\x38" + offset.to_bytes(4, "big")


class _Shared:
    """The data section of a file written with pointers: each value's first place."""

    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.seen: dict[bytes, tuple[int, int]] = {}  # its full encoding -> (offset, size)

    def put(self, value: Any) -> None:
        """Write ``value`` at the end, its children as pointers where they pay."""
        if isinstance(value, dict):
            self.data += _control(7, len(value))
            for k, v in value.items():
                self.child(str(k))
                self.child(v)
        elif isinstance(value, list | tuple):
            self.data += _control(11, len(value))
            for v in value:
                self.child(v)
        else:
            self.data += encode(value)

    def child(self, value: Any) -> None:
        key = encode(value)
        found = self.seen.get(key)
        if found is not None and found[1] > len(pointer(found[0])):
            self.data += pointer(found[0])
            return
        start = len(self.data)
        self.put(value)
        self.seen.setdefault(key, (start, len(self.data) - start))


def write_mmdb(
    path: str | Path,
    networks: dict[str, Any],
    *,
    database_type: str = "Test-City",
    build_epoch: int = 1_700_000_000,
    record_size: int = 24,
    ip_version: int = 6,
    pointers: bool = False,
) -> Path:
    """Write ``networks`` (CIDR -> record) as a MaxMind DB file at ``path``: a tree of
    ``record_size`` bits (24, 28 or 32) records, of IPv6 (IPv4 under ``::/96``) or, with
    ``ip_version=4``, IPv4 addresses only; with ``pointers``, values met before are
    pointers (see the module)."""
    data = bytearray()
    offsets: dict[bytes, int] = {}
    encoded: dict[int, bytes] = {}
    shared = _Shared(data) if pointers else None
    # Each node: [left, right]; an entry is ("node", index), ("data", offset) or None.
    nodes: list[list[tuple[str, int] | None]] = [[None, None]]
    for cidr, record in networks.items():
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version == 4 and ip_version == 4:
            bits = net.prefixlen
            value = int(net.network_address) << 96  # its bits where an IPv6 one's are
        elif net.version == 4:
            bits = 96 + net.prefixlen
            value = int(net.network_address)
        else:
            bits = net.prefixlen
            value = int(net.network_address)
        key = encoded.get(id(record))  # a record shared by many networks: encoded once
        if key is None:
            key = encoded[id(record)] = encode(record)
        if key not in offsets:
            offsets[key] = len(data)
            if shared is None:
                data += key
            else:
                shared.put(record)
        offset = offsets[key]
        node = 0
        for depth in range(bits):
            bit = (
                _v4_bit(value, depth)
                if net.version == 4 and ip_version == 6
                else (value >> (127 - depth)) & 1
            )
            if depth == bits - 1:
                nodes[node][bit] = ("data", offset)
                break
            entry = nodes[node][bit]
            if entry is None:
                nodes.append([None, None])
                entry = nodes[node][bit] = ("node", len(nodes) - 1)
            assert entry[0] == "node", f"{cidr} overlaps another network"
            node = entry[1]
    count = len(nodes)

    def record(entry: tuple[str, int] | None) -> int:
        if entry is None:
            return count
        kind, n = entry
        return n if kind == "node" else count + 16 + n

    tree = b"".join(pack_node(record(left), record(right), record_size) for left, right in nodes)
    metadata = {
        "node_count": U32(count),
        "record_size": U16(record_size),
        "ip_version": U16(ip_version),
        "database_type": database_type,
        "languages": ["en"],
        "binary_format_major_version": U16(2),
        "binary_format_minor_version": U16(0),
        "build_epoch": U64(build_epoch),
        "description": {"en": "a test database"},
    }
    target = Path(path)
    target.write_bytes(tree + b"\x00" * 16 + bytes(data) + METADATA_MARKER + encode(metadata))
    return target


def pack_node(left: int, right: int, record_size: int) -> bytes:
    """One node of the tree: its two records, as the format packs records of that size."""
    if record_size == 28:  # left's low 24 bits, both high nibbles in one byte, right's
        middle = ((left >> 24) << 4) | (right >> 24)
        return (
            (left & 0xFFFFFF).to_bytes(3, "big")
            + bytes([middle])
            + (right & 0xFFFFFF).to_bytes(3, "big")
        )
    width = record_size // 8
    return left.to_bytes(width, "big") + right.to_bytes(width, "big")


def _v4_bit(value: int, depth: int) -> int:
    """Bit ``depth`` of an IPv4 address placed at ``::a.b.c.d`` (96 zero bits first)."""
    return 0 if depth < 96 else (value >> (127 - depth)) & 1
