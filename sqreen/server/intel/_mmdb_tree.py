"""The search tree of a ``.mmdb`` file, walked here for IPv4 addresses, so that a record is
decoded once, not once an address.

``maxminddb``'s ``get()`` walks the tree and decodes the whole record it reaches into Python
objects. A GeoLite2-City record holds every name in eight languages, the continent, the
registered country, the subdivisions, the postal code and the time zone, about sixty
objects: decoding it was 6 times the cost of decoding a record with only the fields the
collector reads (measured, same tree), and a scan from many new addresses decodes one for
each. Many addresses share a record (every network of a city), but ``get()`` says nothing of
which one it decoded. :class:`Ipv4Tree` reads the file's tree itself (memory-mapped, as the
reader maps it) and gives the *record number* an IPv4 address leads to (the value the format
stores in the tree: the data section's offset plus the node count and 16), a key under which
:class:`~._geoip.GeoIpDatabase` keeps what it read from that record: ``get()`` runs only for
a record not read yet.

The first 20 levels under the IPv4 root are read when the file is opened, into a table of
1 048 576 entries (8 MiB: one for each /20, the node at depth 20 or the record a shallower
network leads to; 1.2 s for a file of 3.2 million IPv4 networks of /16 to /24, of the order
of a real City file's, on a loaded machine); a lookup walks only the levels below (a City
file's IPv4 networks are mostly /20 to /24: a few steps, each a slice of the map). Measured
on that file, a walk was 1.2 µs where ``get()`` of a five-field record was 2.4 (with a
16-level table: 4.6). Record sizes 24, 28 and 32 (the three the format allows), trees of
IPv4 and IPv6 files (IPv4 under ``::/96``, as libmaxminddb looks them up). A tree
that does not end within 32 levels below the IPv4 root (a corrupt file) gives
:data:`UNKNOWN` for that address: the caller asks the reader, which says what is wrong.
"""

from __future__ import annotations

import mmap
import os
from array import array
from collections.abc import Callable
from typing import Any, Final

__all__ = ["SAME_FILE", "UNKNOWN", "Ipv4Tree", "names_held", "open_tree"]

#: What :meth:`Ipv4Tree.record` gives for an address whose walk did not end in 32 levels.
UNKNOWN: Final = -1
_TOP_BITS: Final = 20
_TOP_SHIFT: Final = 32 - _TOP_BITS  # an address's top bits: its entry in the table
_RECORD_SIZES: Final = (24, 28, 32)
#: The metadata that says two readers read the same file (with :func:`names_held`).
SAME_FILE: Final = ("node_count", "record_size", "ip_version", "build_epoch", "database_type")


class Ipv4Tree:
    """The tree of one file, for IPv4 lookups (see the module)."""

    def __init__(self, tree: bytes | mmap.mmap, node_count: int, record_size: int, ip_version: int):
        if record_size not in _RECORD_SIZES:
            raise ValueError(f"record size {record_size}: the format allows 24, 28 or 32")
        if len(tree) < node_count * record_size // 4:
            raise ValueError("the file is shorter than its search tree")
        self.node_count = node_count
        self._map = tree
        self._child = _reader(tree, record_size)
        start = 0
        if ip_version == 6:  # IPv4 addresses sit under ::/96: 96 left turns from the root
            for _ in range(96):
                if start >= node_count:
                    break
                start = self._child(start, 0)
        self._top = self._table(start)
        self._walk: Callable[[int], int] = self._walker(tree, record_size)

    def _table(self, start: int) -> array[int]:
        """What each /20 leads to: the node at depth 20, or the record above it."""
        count, child = self.node_count, self._child
        top = array("q", [UNKNOWN]) * (1 << _TOP_BITS)
        pending = [(start, 0, 0)]  # (value, depth, prefix)
        while pending:
            value, depth, prefix = pending.pop()
            if value >= count or depth == _TOP_BITS:
                span = 1 << (_TOP_BITS - depth)
                first = prefix << (_TOP_BITS - depth)
                top[first : first + span] = array("q", [value]) * span
                continue
            pending.append((child(value, 0), depth + 1, prefix << 1))
            pending.append((child(value, 1), depth + 1, (prefix << 1) | 1))
        return top

    def record(self, address: int) -> int:
        """The record number the IPv4 ``address`` (an int) leads to: :attr:`node_count` for
        none (the file does not place it), above it a record, :data:`UNKNOWN` when the walk
        does not end."""
        return self._walk(address)

    def _walker(self, tree: bytes | mmap.mmap, record_size: int) -> Callable[[int], int]:
        """:meth:`record`, its reads written out for the record size (a call a level was
        half a walk's cost, measured)."""
        count, top, from_bytes = self.node_count, self._top, int.from_bytes
        if record_size == 28:

            def walk28(address: int) -> int:
                value = top[address >> _TOP_SHIFT]
                bit = 31 - _TOP_BITS  # the next bit of the address, from its highest
                while value < count:
                    if bit < 0:
                        return UNKNOWN
                    at = value * 7
                    if (address >> bit) & 1:
                        value = ((tree[at + 3] & 0x0F) << 24) | from_bytes(
                            tree[at + 4 : at + 7], "big"
                        )
                    else:
                        value = ((tree[at + 3] & 0xF0) << 20) | from_bytes(tree[at : at + 3], "big")
                    bit -= 1
                return value

            return walk28
        width = record_size // 8

        def walk(address: int) -> int:
            value = top[address >> _TOP_SHIFT]
            bit = 31 - _TOP_BITS
            while value < count:
                if bit < 0:
                    return UNKNOWN
                at = (value * 2 + ((address >> bit) & 1)) * width
                value = from_bytes(tree[at : at + width], "big")
                bit -= 1
            return value

        return walk

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()


def _reader(tree: bytes | mmap.mmap, record_size: int) -> Callable[[int, int], int]:
    """``child(node, bit)``: the left (0) or right (1) record of ``node``."""
    from_bytes = int.from_bytes
    if record_size == 28:  # 7 bytes: left's 24 low bits, a byte of both high nibbles, right's

        def child28(node: int, bit: int) -> int:
            at = node * 7
            if bit:
                return ((tree[at + 3] & 0x0F) << 24) | from_bytes(tree[at + 4 : at + 7], "big")
            return ((tree[at + 3] & 0xF0) << 20) | from_bytes(tree[at : at + 3], "big")

        return child28
    width = record_size // 8

    def child(node: int, bit: int) -> int:
        at = (node * 2 + bit) * width
        return from_bytes(tree[at : at + width], "big")

    return child


def open_tree(fd: int, path: str | os.PathLike[str], metadata: Any) -> Ipv4Tree | None:
    """The tree of the open file ``fd`` (mapped read-only), when it is the file the reader
    reads: ``fd`` was opened before the reader opened ``path``, and ``path`` still names
    it; None when it is not (renamed over meanwhile: a next file's metadata can be the
    same as the first's, and record numbers from its tree lead the reader's lookups astray),
    or its layout is not one :class:`Ipv4Tree` reads."""
    try:
        if not names_held(fd, path):
            return None
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    try:
        if not _same_file(mapped, metadata):
            mapped.close()
            return None
        return Ipv4Tree(
            mapped, int(metadata.node_count), int(metadata.record_size), int(metadata.ip_version)
        )
    except (ValueError, IndexError, TypeError, OverflowError):
        mapped.close()
        return None


def names_held(fd: int, path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` still names the open file ``fd`` (held open, its inode cannot have
    been freed and reused meanwhile); OSError when either is gone."""
    held, named = os.fstat(fd), os.stat(path)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _same_file(mapped: mmap.mmap, metadata: Any) -> bool:
    """Whether ``mapped`` holds the metadata the reader read (the build time, the node
    count, the layout)."""
    from maxminddb.decoder import Decoder  # the reader's own decoder, for the metadata map

    marker = mapped.rfind(b"\xab\xcd\xefMaxMind.com")
    if marker < 0:
        return False
    start = marker + 14
    try:
        found, _ = Decoder(mapped, start).decode(start)
    except Exception:  # anything the decoder raises: not the same file
        return False
    return isinstance(found, dict) and all(
        found.get(name) == getattr(metadata, name, None) for name in SAME_FILE
    )
