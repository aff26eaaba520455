"""The blocks in force, indexed for the request path, and what a block is.

The IP check runs on every request, and a linear scan of 10 000 blocks cost 5.4 ms a request
(``identify()``: 7.8 ms): IP networks are indexed by prefix length, then by their network
number (one dict lookup per prefix length present), users by each ``(key, value)`` they hold,
so that a lookup touches only the blocks that share an identifier with the user.
``bench/bench_blocking.py`` measures both against a linear scan. :class:`~._blocking.Blocklist`
builds an index whole from each action set and never changes it.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from collections.abc import Callable, Iterable
from functools import lru_cache
from socket import AF_INET, AF_INET6, inet_pton
from typing import NamedTuple

from ._ip_syntax import normalize_ip

__all__ = [
    "BITS",
    "EMPTY",
    "MIN_PREFIX",
    "NAT64_LOCAL",
    "NAT64_MIN_PREFIX",
    "Blocked",
    "IPBlock",
    "Network",
    "UserBlock",
    "address_of",
    "build_index",
    "embedded_ipv4",
    "first_active",
    "fold_identifier",
    "ipv4_client",
    "parse_network",
    "too_wide",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Blocked(BaseException):
    """The current user or client IP is blocked.

    It derives from :class:`BaseException`, like :class:`KeyboardInterrupt`, so that a
    handler's ``except Exception:`` cannot swallow it: the middleware turns it into a 403.
    """

    def __init__(
        self,
        user: dict[str, str] | None = None,
        ip: str | None = None,
        reason: str | None = None,
        action_id: str | None = None,
    ) -> None:
        what = f"user {user}" if user else f"IP {ip}"
        super().__init__(f"{what} is blocked" + (f": {reason}" if reason else ""))
        self.user = user
        self.ip = ip
        self.reason = reason
        self.action_id = action_id


class UserBlock(NamedTuple):
    """A user block in force: every key/value of ``user`` must be in the identifiers."""

    user: dict[str, str]
    deadline: float | None  # on the blocklist's clock; None: until lifted
    reason: str | None
    action_id: str


class IPBlock(NamedTuple):
    network: Network
    deadline: float | None
    reason: str | None
    action_id: str


class _Entry(NamedTuple):
    """A block in the index: its place in the action set (the first match in the set's order
    answers, as a scan would), and for a user block its pairs with values folded."""

    position: int
    block: UserBlock | IPBlock
    folded: tuple[tuple[str, str], ...] = ()


# Per IP version: (prefix length, {network number: entries}) for each prefix length present.
_Networks = tuple[tuple[int, dict[int, list[_Entry]]], ...]


class _Index(NamedTuple):
    """The blocks in force, indexed. Built whole by :meth:`Blocklist.apply`, never mutated."""

    users: dict[tuple[str, str], list[_Entry]]
    v4: _Networks
    v6: _Networks
    has_ips: bool


EMPTY = _Index({}, (), (), False)
BITS = {4: 32, 6: 128}
MIN_PREFIX = {4: 16, 6: 48}


def fold_identifier(value: str) -> str:
    """An identifier as blocks and playbooks compare it: case-folded, compatibility-
    normalised (NFKC: fullwidth letters are the ASCII ones, as Django's login form reads
    them) and stripped, so that the spellings an app takes for one account are one user."""
    if value.isascii():
        return value.strip().lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold()).strip()


@lru_cache(maxsize=4096)
def address_of(ip: str) -> tuple[int, int] | None:
    """``(version, integer)`` of the address in ``ip`` (read as :func:`normalize_ip` does)."""
    text = normalize_ip(ip)
    if text is None:
        return None
    address = ipaddress.ip_address(text)
    return address.version, int(address)


def embedded_ipv4(value: int) -> int | None:
    """The IPv4 address (as an integer) that the IPv6 address ``value`` stands for: a Teredo
    address's client (``2001::/32``: its last 32 bits, inverted), a 6to4 address's host
    (``2002::/16``: the 32 bits after the prefix); None for any other. Each is one IPv4
    client's, which may take any number of them (a Teredo address per port, a 6to4 host's
    2^80): an IPv4 block covers them, as playbooks count them under that address."""
    if value >> 96 == 0x20010000:
        return ~value & 0xFFFFFFFF
    if value >> 112 == 0x2002:
        return (value >> 80) & 0xFFFFFFFF
    return None


#: NAT64's prefixes (``value >> 32`` of the well-known ``64:ff9b::/96``, RFC 6052;
#: ``value >> 80`` of the local-use ``64:ff9b:1::/48``, RFC 8215, with a ``/96`` inside it),
#: whose addresses end with an IPv4 client's address: a translator in front of an IPv6-only
#: site (SIIT-DC) shows each IPv4 client as one of them.
_NAT64_WKP = 0x64FF9B << 64
NAT64_LOCAL = 0x64FF9B0001


def ipv4_client(value: int) -> int | None:
    """The IPv4 address (an integer) of the one client the IPv6 address ``value`` carries:
    :func:`embedded_ipv4`'s Teredo and 6to4 clients, and a NAT64 address's (its last 32
    bits); None for any other. An IPv4 block covers them all."""
    if value >> 32 == _NAT64_WKP or value >> 80 == NAT64_LOCAL:
        return value & 0xFFFFFFFF
    return embedded_ipv4(value)


#: The narrowest prefix of a block inside a NAT64 prefix that may hold many clients: a
#: ``/112`` holds a ``/16`` of IPv4 clients, the widest IPv4 block.
NAT64_MIN_PREFIX = 128 - 32 + MIN_PREFIX[4]
_NAT64_RANGES = tuple(
    (start, start | ((1 << bits) - 1))
    for start, bits in ((_NAT64_WKP << 32, 32), (NAT64_LOCAL << 80, 80))
)


def too_wide(net: Network) -> bool:
    """Whether the block of ``net`` is wider than any SDK enforces: an IPv4 network wider than
    a ``/16``, an IPv6 one wider than a ``/48``, or one holding NAT64 addresses (whose clients
    :func:`ipv4_client` reads) of more than a ``/16`` of IPv4 clients: ``64:ff9b::/96`` would
    refuse every IPv4 client of a site behind a translator."""
    if net.prefixlen < MIN_PREFIX[net.version]:
        return True
    if net.version == 4 or net.prefixlen >= NAT64_MIN_PREFIX:
        return False
    first = int(net.network_address)
    last = first | ((1 << (128 - net.prefixlen)) - 1)
    return any(low <= last and first <= high for low, high in _NAT64_RANGES)


def parse_network(text: str) -> Network | None:
    """The network of ``"203.0.113.0/24"``, ``"2001:db8::/48"`` or an address alone (host
    bits cleared); None for anything else. ``::ffff:203.0.113.0/120`` is
    ``203.0.113.0/24``: addresses are unmapped, so blocks are too.

    ``inet_pton`` and an integer, not :func:`ipaddress.ip_network` (which tries IPv4 first, and
    whose failure costs as much again): 10 000 blocks are parsed in a third of the time.
    """
    host, slash, length = text.partition("/")
    v6 = ":" in host
    bits = 128 if v6 else 32
    try:
        number = int.from_bytes(inet_pton(AF_INET6 if v6 else AF_INET, host), "big")
    except (OSError, ValueError):  # garbage; ValueError: a NUL character
        return None
    if not slash:
        prefix = bits
    elif length.isascii() and length.isdigit() and int(length) <= bits:
        prefix = int(length)
    else:
        return None
    number &= ~((1 << (bits - prefix)) - 1)
    if v6 and prefix >= 96 and number >> 32 == 0xFFFF:
        return ipaddress.IPv4Network((number & 0xFFFFFFFF, prefix - 96))
    return (ipaddress.IPv6Network if v6 else ipaddress.IPv4Network)((number, prefix))


def build_index(blocks: Iterable[UserBlock | IPBlock]) -> _Index:
    users: dict[tuple[str, str], list[_Entry]] = {}
    networks: dict[int, dict[int, dict[int, list[_Entry]]]] = {4: {}, 6: {}}
    for position, block in enumerate(blocks):
        if isinstance(block, UserBlock):
            folded = tuple((k, fold_identifier(v)) for k, v in block.user.items())
            # Under one of its pairs: a user who lacks it cannot match the block anyway.
            users.setdefault(min(folded), []).append(_Entry(position, block, folded))
        else:
            net = block.network
            tables = networks[net.version]
            number = int(net.network_address) >> (BITS[net.version] - net.prefixlen)
            tables.setdefault(net.prefixlen, {}).setdefault(number, []).append(
                _Entry(position, block)
            )
    v4, v6 = (tuple(sorted(networks[v].items(), reverse=True)) for v in (4, 6))
    return _Index(users, v4, v6, bool(v4 or v6))


def first_active(
    candidates: Iterable[Iterable[_Entry]],
    now: float,
    matches: Callable[[_Entry], bool] | None = None,
) -> UserBlock | IPBlock | None:
    """The block, among ``candidates`` (lists in action-set order), that comes first in the
    action set, has not expired and ``matches``."""
    best: _Entry | None = None
    for entries in candidates:
        for entry in entries:
            if best is not None and entry.position >= best.position:
                break
            deadline = entry.block.deadline
            if (deadline is None or deadline > now) and (matches is None or matches(entry)):
                best = entry
                break
    return None if best is None else best.block
