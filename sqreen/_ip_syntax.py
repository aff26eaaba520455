"""The syntax of client addresses: an address in text, and the hops of a forwarded header.

Syntax only: which of those addresses to believe is :mod:`sqreen._client_ip`'s concern (the
trusted proxies and the walk), and what they say of a misconfiguration is
:mod:`sqreen._ip_warnings`'. Both parse here, on the flusher thread (once per event) or in the
blocking check of the middleware, so parsing an address is cached.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Final

__all__ = [
    "IPAddress",
    "IPNetwork",
    "Parsed",
    "as_parsed",
    "canonical_ip",
    "forwarded_hops",
    "normalize_ip",
    "parse_ip",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The longest text parsed as one address: ``[<45-character IPv6>%<zone>]:65535`` fits.
_MAX_IP_TEXT: Final = 96
#: Hops examined at most; past them the walk stops as on a garbage hop.
_MAX_HOPS: Final = 32
_PORT_RE: Final = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")  # RFC 7239 allows "_obfuscated"

# A parsed address: (version, integer value, canonical text). Tuples make membership tests
# integer comparisons, which is what the per-event walk needs.
Parsed = tuple[int, int, str]


@lru_cache(maxsize=4096)
def parse_ip(value: str) -> Parsed | None:
    """The address in ``value`` (as :func:`normalize_ip` reads it), or ``None``; cached."""
    if not value or len(value) > _MAX_IP_TEXT:
        return None
    text = value.strip(" \t\r\n\"'")
    if text.startswith("["):  # "[2001:db8::1]" or "[2001:db8::1]:443"
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest and (rest[0] != ":" or not _PORT_RE.fullmatch(rest[1:])):
            return None
    elif text.count(":") == 1:  # "1.2.3.4:5678" (an unbracketed IPv6 has at least two)
        host, _, port = text.partition(":")
        if not _PORT_RE.fullmatch(port):
            return None
    else:
        host = text
    host = host.partition("%")[0]  # an IPv6 zone ("fe80::1%eth0") says nothing about the host
    try:
        addr: IPAddress = ipaddress.ip_address(host)
    except ValueError:  # "unknown", "_hidden", hostnames, empty, garbage
        return None
    return as_parsed(addr)


def as_parsed(addr: IPAddress) -> Parsed:
    """``addr`` as :func:`parse_ip` gives it: IPv4-mapped IPv6 unmapped, zone dropped."""
    if addr.version == 6:
        mapped = addr.ipv4_mapped
        if mapped is not None:  # "::ffff:1.2.3.4" is the IPv4 client of a dual-stack socket
            addr = mapped
        elif addr.scope_id:
            addr = ipaddress.IPv6Address(int(addr))
    return addr.version, int(addr), str(addr)


def normalize_ip(value: str) -> str | None:
    """The canonical text of the address in ``value``, or ``None`` when it holds none.

    Strips whitespace, quotes, brackets and ports (``"[2001:db8::1]:443"``,
    ``"1.2.3.4:5678"``), drops an IPv6 zone, unmaps IPv4-mapped IPv6 (``::ffff:1.2.3.4`` is
    ``1.2.3.4``) and writes IPv6 compressed and lower-case. ``"unknown"``, RFC 7239's
    obfuscated identifiers (``"_hidden"``), hostnames, empty and over-long values give ``None``.
    """
    parsed = parse_ip(value)
    return None if parsed is None else parsed[2]


_OCTET: Final = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
#: An IPv4 address as its canonical text (no leading zero, no blank).
_IPV4_TEXT: Final = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
#: The first ten bytes of an IPv4-mapped (or -compatible) IPv6 address: zero.
_ZEROS: Final = bytes(10)


def canonical_ip(value: str) -> str | None:
    """:func:`normalize_ip`'s answer, for text of any number of addresses: text that is an
    address in its canonical spelling already (what SDKs send) is recognised as such in a
    fraction of a microsecond (IPv4 by its pattern; IPv6 written back by the C library as
    it was read), where parsing it costs about 5 µs and a scan brings a new address in every
    event; anything else is parsed (:func:`normalize_ip`, cached)."""
    if _IPV4_TEXT.fullmatch(value):
        return value
    if ":" in value and len(value) <= 39 and "." not in value:
        try:
            packed = socket.inet_pton(socket.AF_INET6, value)
        except (OSError, ValueError):
            return normalize_ip(value)
        # IPv4 in IPv6 is unmapped by normalize_ip; the C library's spelling of a few
        # addresses differs from Python's (then written as Python writes it).
        if not packed.startswith(_ZEROS) and socket.inet_ntop(socket.AF_INET6, packed) == value:
            return value
    return normalize_ip(value)


def _split_quoted(value: str, sep: str) -> list[str]:
    """Split ``value`` on ``sep`` outside double-quoted strings (RFC 7230 quoted-string)."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def _rsplit_elements(value: str) -> Iterator[str]:
    """The comma-separated elements of a ``Forwarded`` header, right-most first.

    Scanning from the right keeps quote parsing correct for the elements proxies appended even
    when the client's part (on the left) is malformed, e.g. an unterminated quoted string.
    """
    if '"' not in value:
        yield from reversed(value.rsplit(",", _MAX_HOPS))
        return
    end = len(value)
    quoted = False
    for i in range(end - 1, -1, -1):
        char = value[i]
        if char == '"':
            backslashes = 0
            while i - backslashes > 0 and value[i - backslashes - 1] == "\\":
                backslashes += 1
            if backslashes % 2 == 0:
                quoted = not quoted
        elif char == "," and not quoted:
            yield value[i + 1 : end]
            end = i
    yield value[:end]


def _forwarded_for(element: str) -> str:
    """The ``for=`` value of one ``Forwarded`` element, or ``""`` when it has none (or two)."""
    found: str | None = None
    for pair in _split_quoted(element, ";"):
        name, sep, raw = pair.partition("=")
        if not sep or name.strip().lower() != "for":
            continue
        if found is not None:  # a parameter may appear once per element (RFC 7239, 4)
            return ""
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        found = raw
    return found or ""


def forwarded_hops(header_value: str, kind: str) -> Iterator[str]:
    """The hops of the forwarded header, right-most first; empty list elements skipped.

    ``kind`` is the header's name in lower case with ``-``: ``forwarded`` (RFC 7239's
    ``for=``), ``x-real-ip`` (one address) or any other (a comma-separated list). More than
    32 hops end with ``""``, a garbage hop that stops the walk."""
    if kind == "x-real-ip":
        yield header_value  # one address: a comma makes it garbage
        return
    if kind == "forwarded":
        elements: Iterable[str] = _rsplit_elements(header_value)
    else:
        elements = reversed(header_value.rsplit(",", _MAX_HOPS))
    for count, element in enumerate(elements):
        if count > _MAX_HOPS:
            yield ""  # garbage: stop the walk
            return
        if element.strip():  # RFC 7230 7: ignore empty list elements
            yield _forwarded_for(element) if kind == "forwarded" else element
