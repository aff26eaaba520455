"""Reading an event's IP address, and telling the addresses no data file should be asked
about (private, loopback, reserved) from public ones.

The address comes from an SDK, so from whoever holds an ingest key: any string of up to a
few KiB. Only text that ``inet_pton`` reads as an address goes further (no name resolution,
no leniency: ``1``, ``0x7f.1``, `` 8.8.8.8`` and ``8.8.8.8\\x00`` are no addresses); an IPv6
zone (``fe80::1%eth0``) is dropped, an IPv4-mapped IPv6 address is its IPv4 address (as the
SDK records it). An address that carries one IPv4 client's (Teredo, 6to4, NAT64's well-known
prefix) is labelled and looked up as that IPv4 address, as blocks and playbooks count it: a
Tor exit reaching the app over 6to4 is still a Tor exit, a private address inside 6to4 still
private. Special ranges are looked up in sorted tables (one ``bisect``), not with
:mod:`ipaddress`, whose parsing and ``is_global`` cost more than the whole enrichment.
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections.abc import Iterable
from typing import Final, Literal, NamedTuple, TypeAlias

from ..._block_index import NAT64_LOCAL, ipv4_client

__all__ = [
    "Address",
    "Parsed",
    "SpecialKind",
    "as_ipv4_client",
    "ipv4_client",
    "parse_address",
    "parse_many",
    "special_kind",
]

#: Longer text is no address (the storage's ``ip`` column stops there too).
MAX_LENGTH: Final = 64

SpecialKind = Literal["private", "loopback", "reserved"]

#: IANA's special-purpose ranges, as this collector labels them: ``private`` for networks of
#: one organisation (RFC 1918, carrier-grade NAT, link-local, unique local), ``loopback``,
#: and ``reserved`` for everything else that is not routed on the internet (documentation,
#: benchmarking, multicast, the future-use block, unspecified). None of them is looked up.
_V4: Final[tuple[tuple[str, SpecialKind], ...]] = (
    ("0.0.0.0/8", "reserved"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "private"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "private"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),
    ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"),
    ("224.0.0.0/3", "reserved"),  # multicast, then 240/4 and the broadcast address
)
_V6: Final[tuple[tuple[str, SpecialKind], ...]] = (
    ("::/128", "reserved"),
    ("::1/128", "loopback"),
    ("::/3", "reserved"),  # below 2000::/3, the only block allocated for global unicast
    ("2001::/23", "reserved"),  # IETF protocol assignments (Teredo, ORCHID, benchmarking)
    ("2001:db8::/32", "reserved"),  # documentation
    ("2002::/16", "reserved"),  # 6to4 (deprecated): the address of some IPv4 host, inside
    ("3fff::/20", "reserved"),  # documentation (RFC 9637)
    ("4000::/2", "reserved"),  # above 2000::/3: unallocated, then ULA, link-local, multicast
    ("8000::/1", "reserved"),
    ("fc00::/7", "private"),
    ("fe80::/10", "private"),
)


class _Table:
    """Ranges of one IP version, flattened so that the narrowest containing range wins."""

    def __init__(self, ranges: tuple[tuple[str, SpecialKind], ...], bits: int) -> None:
        # Paint from the widest range to the narrowest, on a list of disjoint intervals.
        cuts: list[tuple[int, int, SpecialKind]] = []
        networks = [(ipaddress.ip_network(cidr), kind) for cidr, kind in ranges]
        for net, kind in sorted(networks, key=lambda entry: entry[0].prefixlen):
            lo, hi = int(net.network_address), int(net.broadcast_address)
            kept = []
            for a, b, k in cuts:
                if b < lo or a > hi:
                    kept.append((a, b, k))
                    continue
                if a < lo:
                    kept.append((a, lo - 1, k))
                if b > hi:
                    kept.append((hi + 1, b, k))
            cuts = sorted([*kept, (lo, hi, kind)])
        self.starts = [a for a, _, _ in cuts]
        self.ends = [b for _, b, _ in cuts]
        self.kinds = [k for _, _, k in cuts]
        # 1 for each value of the top 16 bits some range touches: most public addresses
        # are answered by indexing these bytes, without a bisect (0.5 -> 0.2 µs, measured).
        self.shift = bits - 16
        touched = bytearray(1 << 16)
        for a, b, _ in cuts:
            touched[a >> self.shift : (b >> self.shift) + 1] = b"\x01" * (
                (b >> self.shift) - (a >> self.shift) + 1
            )
        self.touched = bytes(touched)

    def find(self, value: int) -> SpecialKind | None:
        i = bisect.bisect_right(self.starts, value) - 1
        return self.kinds[i] if i >= 0 and value <= self.ends[i] else None


_TABLES: Final = {4: _Table(_V4, 32), 6: _Table(_V6, 128)}


class Address(NamedTuple):
    """A parsed address: its version, its value as an integer and its canonical text."""

    version: int
    value: int
    text: str


#: An :class:`Address`, or the same values in a plain tuple, as :func:`parse_many` gives them
#: (a batch's new addresses: ``tuple.__new__(Address, ...)`` is a call, 0.35 µs of a 1 µs
#: IPv4 parse, measured; a tuple display is none). What reads them indexes them.
Parsed: TypeAlias = tuple[int, int, str]

#: ``Address(...)`` runs a Python-level ``__new__``: a quarter of a parse. This is the same
#: tuple, built in C (as ``storage/_rows.py`` builds its rows).
_new_address: Final = tuple.__new__
_pton: Final = socket.inet_pton
_AF_INET: Final = socket.AF_INET
_from_bytes: Final = int.from_bytes


def parse_address(raw: object) -> Address | None:
    """The address ``raw`` spells, or None for anything that is not exactly one."""
    if type(raw) is not str:  # what json.loads makes is never a subclass
        if not isinstance(raw, str):
            return None
        raw = str(raw)
    if ":" not in raw:
        # inet_pton takes exactly four decimal parts without leading zeros (no "010.1.1.1",
        # tested), ASCII, at most 15 characters: no other check needed (0.3 µs of 1.7, an
        # IPv4 parse), and the text is already canonical (inet_ntop would cost a third).
        try:
            packed = _pton(_AF_INET, raw)
        except (OSError, ValueError):  # ValueError: an embedded NUL, or not UTF-8
            return None
        return _new_address(Address, (4, _from_bytes(packed, "big"), raw))
    if not 2 <= len(raw) <= MAX_LENGTH or not raw.isascii():
        return None
    text = raw.partition("%")[0]  # an IPv6 zone says which interface, not which host
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return None
    value = int.from_bytes(packed, "big")
    if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d
        v4 = value & 0xFFFFFFFF
        return _new_address(
            Address, (4, v4, socket.inet_ntop(socket.AF_INET, v4.to_bytes(4, "big")))
        )
    return _new_address(Address, (6, value, socket.inet_ntop(socket.AF_INET6, packed)))


def as_ipv4_client(address: Parsed) -> Parsed:
    """``address``, or the IPv4 address of the one client it carries (:func:`ipv4_client`):
    what it is labelled and looked up as. A local-use NAT64 address (``64:ff9b:1::/48``) is
    looked up as itself: where in it the client's address sits depends on the prefix length
    its operator chose, and a wrong guess would place it in another country."""
    if address[0] != 6 or address[1] >> 80 == NAT64_LOCAL:
        return address
    client = ipv4_client(address[1])
    if client is None:
        return address
    return (4, client, socket.inet_ntop(socket.AF_INET, client.to_bytes(4, "big")))


def special_kind(address: Parsed) -> SpecialKind | None:
    """``private``, ``loopback`` or ``reserved`` for an address no data file is asked about;
    None for a public one."""
    table, value = _TABLES[address[0]], address[1]
    return table.find(value) if table.touched[value >> table.shift] else None


_V4_TOUCHED: Final = _TABLES[4].touched
_V4_FIND: Final = _TABLES[4].find


def parse_many(
    texts: Iterable[str],
) -> tuple[list[str], list[Parsed], list[tuple[str, Parsed, SpecialKind]], list[str]]:
    """:func:`parse_address` and :func:`special_kind` of each of ``texts`` (a batch's new
    addresses), in one loop: ``(texts of the public addresses, those addresses, (text,
    address, kind) of the special ones, texts that are no address)``. IPv4 text is parsed
    here, without a call an address (parsing was a quarter of a new address's cost, its
    calls a third of that: measured)."""
    public_texts: list[str] = []
    public: list[Parsed] = []
    special: list[tuple[str, Parsed, SpecialKind]] = []
    bad: list[str] = []
    pton, af_inet, from_bytes = _pton, _AF_INET, _from_bytes
    touched, find = _V4_TOUCHED, _V4_FIND
    for text in texts:
        if ":" not in text:  # as parse_address does it
            try:
                value = from_bytes(pton(af_inet, text), "big")
            except (OSError, ValueError):
                bad.append(text)
                continue
            address: Parsed = (4, value, text)
            kind = find(value) if touched[value >> 16] else None
        else:
            parsed = parse_address(text)
            if parsed is None:
                bad.append(text)
                continue
            address = as_ipv4_client(parsed)
            kind = special_kind(address)
        if kind is None:
            public_texts.append(text)
            public.append(address)
        else:
            special.append((text, address, kind))
    return public_texts, public, special, bad
