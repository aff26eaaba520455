"""The client IP of a request, with trusted proxies.

It is a security issue to trust values that came from the client rather than from a proxy
(werkzeug's ``ProxyFix`` says so, and it is the whole point of this module). A forwarded
header such as ``X-Forwarded-For`` is plain text that any client can send; only the hops that
*trusted proxies* appended to it mean anything. So:

* The **peer** (the address of the TCP connection, ``REMOTE_ADDR`` / ``scope["client"]``) is
  the only value nobody on the internet can choose.
* If the peer is not a trusted proxy, **the peer is the client** and the header is ignored.
* If it is, the header is walked **from the right**, skipping hops that are trusted proxies
  too; the first untrusted hop is the client (each trusted proxy appended the address of
  whoever connected to it, so that hop is the last one a trusted machine vouches for).

Only loopback (and Unix-socket) peers are trusted by default, and ``trusted_proxies`` takes
explicit CIDRs, never "every private address": a container next to the app on a Docker or
Kubernetes network is not a proxy just because its address is private. Unlike the agents of
Sqreen, Castle, dd-trace, Sentry and PostHog, which read the left-most value of a list of
headers, a client on the internet cannot choose its IP here.

Everything runs on the flusher thread (once per event) or in the blocking check of the
middleware, so parsing is cached and the walk stops at the first untrusted hop.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Final

__all__ = [
    "DEFAULT_TRUSTED_PROXIES",
    "TrustedProxies",
    "ip_in_networks",
    "maybe_warn_untrusted_proxy",
    "normalize_ip",
    "resolve_client_ip",
    "should_warn_untrusted_private",
    "warn_untrusted_proxy_once",
]

logger = logging.getLogger("sqreen")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: What ``trusted_proxies=None`` means: loopback, and peers without an IP address (a Unix
#: domain socket, e.g. gunicorn or uvicorn behind nginx on the same machine). Both can only be
#: processes of this machine.
DEFAULT_TRUSTED_PROXIES: Final = ("127.0.0.0/8", "::1", "unix")

#: The longest text parsed as one address: ``[<45-character IPv6>%<zone>]:65535`` fits.
_MAX_IP_TEXT: Final = 96
#: Hops examined at most; past them the walk stops as on a garbage hop.
_MAX_HOPS: Final = 32
#: Client IPs remembered per set of trusted proxies, and the longest header remembered.
_MAX_RESOLVED: Final = 1024
_MAX_CACHED_HEADER: Final = 256
_PORT_RE: Final = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]+")  # RFC 7239 allows "_obfuscated"
# 100.64.0.0/10 (carrier-grade NAT, also used by some Kubernetes networks) is not is_private.
_SHARED_V4: Final = ipaddress.IPv4Network("100.64.0.0/10")

# A parsed address: (version, integer value, canonical text). Tuples make membership tests
# integer comparisons, which is what the per-event walk needs.
_Parsed = tuple[int, int, str]


@lru_cache(maxsize=4096)
def _parse(value: str) -> _Parsed | None:
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
    return _as_parsed(addr)


def _as_parsed(addr: IPAddress) -> _Parsed:
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
    parsed = _parse(value)
    return None if parsed is None else parsed[2]


def _network(entry: object) -> IPNetwork:
    if isinstance(entry, ipaddress.IPv4Network | ipaddress.IPv6Network):
        net: IPNetwork = entry
    elif isinstance(entry, ipaddress.IPv4Address | ipaddress.IPv6Address):
        net = ipaddress.ip_network(entry)
    elif isinstance(entry, str):
        text = entry.strip()
        if text.startswith("[") and "]" in text:  # "[::1]" or "[2001:db8::]/32"
            text = text[1:].replace("]", "", 1)
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            hint = ""
            if "has host bits set" in str(exc):
                hint = f"; did you mean {str(ipaddress.ip_network(text, strict=False))!r}?"
            raise ValueError(
                f"trusted_proxies: {entry!r} is not an IP address or CIDR ({exc}){hint}"
            ) from None
    else:
        raise ValueError(
            f"trusted_proxies: {entry!r} is a {type(entry).__name__}, not a CIDR string"
        )
    if net.version == 6 and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:  # "::ffff:10.0.0.0/104": addresses are unmapped, so the CIDR too
            net = ipaddress.IPv4Network((int(mapped), net.prefixlen - 96))
    return net


class TrustedProxies:
    """The proxies whose forwarded headers are believed: immutable, built once from config.

    ``TrustedProxies(None)`` is the default, :data:`DEFAULT_TRUSTED_PROXIES`: loopback
    (``127.0.0.0/8``, ``::1``) and Unix-socket peers. ``TrustedProxies([])`` trusts nobody,
    not even loopback: the peer is always the client. Otherwise every entry is an address or a
    CIDR (``"10.0.0.0/8"``, ``"2001:db8::/32"``, ``"192.0.2.7"``), or ``"unix"`` for peers
    without an IP address; a bad entry raises :class:`ValueError` naming it. Private ranges are
    never trusted implicitly (``ipaddress.is_private`` decides nothing here).
    """

    __slots__ = ("_resolved", "_v4", "_v6", "networks", "trusts_unix_socket")

    networks: tuple[IPNetwork, ...]
    trusts_unix_socket: bool
    _v4: tuple[tuple[int, int], ...]
    _v6: tuple[tuple[int, int], ...]
    #: (peer, header value, header, rewritten) -> client IP, bounded (see :meth:`client_ip`).
    _resolved: dict[tuple[str | None, str | None, str, bool], str | None]

    def __init__(self, cidrs: Iterable[str] | None) -> None:
        if cidrs is None:
            cidrs = DEFAULT_TRUSTED_PROXIES
        elif isinstance(cidrs, str | bytes):
            raise ValueError(
                f"trusted_proxies must be a list of CIDRs, not a string ({cidrs!r}): "
                f"write [{cidrs!r}]"
            )
        networks: list[IPNetwork] = []
        unix = False
        for entry in cidrs:
            if isinstance(entry, str) and entry.strip().lower() == "unix":
                unix = True
                continue
            net = _network(entry)
            if net.prefixlen == 0:
                logger.warning(
                    "sqreen: trusted_proxies contains %s: every client can now choose its IP "
                    "with a forwarded header",
                    net,
                )
            if net not in networks:
                networks.append(net)
        setattr_ = object.__setattr__
        setattr_(self, "_resolved", {})
        setattr_(self, "networks", tuple(networks))
        setattr_(self, "trusts_unix_socket", unix)
        for name, version in (("_v4", 4), ("_v6", 6)):
            ranges = tuple(
                (int(n.network_address), int(n.broadcast_address))
                for n in networks
                if n.version == version
            )
            setattr_(self, name, ranges)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("TrustedProxies is immutable")

    def _has(self, parsed: _Parsed) -> bool:
        version, value, _ = parsed
        for low, high in self._v4 if version == 4 else self._v6:
            if low <= value <= high:
                return True
        return False

    def client_ip(
        self, peer: str | None, header_value: str | None, header: str, rewritten: bool
    ) -> str | None:
        """:func:`resolve_client_ip` with these proxies, remembered: the flusher resolves one
        IP per event, and the same clients and proxies send many (3.4 µs a resolution on a
        loaded machine, 0.3 a lookup). Bounded; long headers are not kept."""
        key = (peer, header_value, header, rewritten)
        resolved = self._resolved
        try:
            return resolved[key]
        except KeyError:
            pass
        ip = resolve_client_ip(peer, header_value, self, header, rewritten)
        if header_value is None or len(header_value) <= _MAX_CACHED_HEADER:
            if len(resolved) >= _MAX_RESOLVED:
                resolved.clear()
            resolved[key] = ip
        return ip

    def __contains__(self, ip: object) -> bool:
        """Whether ``ip`` (text or an ``ipaddress`` address) is a trusted proxy."""
        if isinstance(ip, str):
            parsed = _parse(ip)
        elif isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            parsed = _as_parsed(ip)
        else:
            return False
        return parsed is not None and self._has(parsed)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustedProxies):
            return NotImplemented
        return (self.networks, self.trusts_unix_socket) == (
            other.networks,
            other.trusts_unix_socket,
        )

    def __hash__(self) -> int:
        return hash((self.networks, self.trusts_unix_socket))

    def __repr__(self) -> str:
        entries = [str(n) for n in self.networks] + (["unix"] if self.trusts_unix_socket else [])
        return f"TrustedProxies({entries!r})"


def ip_in_networks(ip: str, networks: Iterable[IPNetwork]) -> bool:
    """Whether the address in ``ip`` (normalized as :func:`normalize_ip` does) is in one of
    ``networks``; ``False`` for garbage. For the IP blocklist, whose blocks are CIDRs."""
    parsed = _parse(ip) if isinstance(ip, str) else None
    if parsed is None:
        return False
    addr = ipaddress.IPv4Address(parsed[1]) if parsed[0] == 4 else ipaddress.IPv6Address(parsed[1])
    return any(addr in net for net in networks)


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


def _hops(header_value: str, kind: str) -> Iterator[str]:
    """The hops of the forwarded header, right-most first; empty list elements skipped."""
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


def resolve_client_ip(
    peer: str | None,
    header_value: str | None,
    trusted: TrustedProxies,
    header: str = "x-forwarded-for",
    rewritten: bool = False,
) -> str | None:
    """The client IP of a request whose connection came from ``peer``.

    * The peer is not a trusted proxy: the peer is the client; the header is ignored.
    * The peer is trusted: ``header_value`` is walked from the right, skipping trusted proxies;
      the first untrusted hop is the client. When every hop is trusted, the left-most one is.
    * A garbage hop (``unknown``, ``_hidden``, a hostname, a missing ``for=``, more than 32
      hops) stops the walk and the nearest trusted address seen so far (at worst the peer) is
      the client. Only a trusted proxy could have written that hop, so we cannot know what is
      left of it; going on would let whatever the client wrote there choose its IP.

    ``peer`` is ``None`` or ``""`` for a Unix socket: trusted only with ``"unix"`` in
    ``trusted_proxies`` (the default); then, without a usable header, the result is ``None``.
    A peer that is not an IP address (``"testclient"``) is untrusted and gives ``None``.

    ``header`` (case-insensitive) picks the syntax: ``x-forwarded-for`` and any other name, a
    comma-separated list (several header lines joined with ``,`` included); ``forwarded``, the
    ``for=`` parameters of RFC 7239 (quoted, IPv6 in brackets, optional port); ``x-real-ip``, a
    single address. Configure only a header that your proxies always set or append to.

    ``rewritten``: the server already replaced the peer with a hop of a forwarded header and
    kept no trace of the connection (:func:`sqreen._request.asgi_peer`). It did so because it
    trusted the connection as a proxy, so the header is walked as from a trusted proxy; the
    server's pick itself is not believed (daphne, and uvicorn with ``*``, take the left-most
    hop, which the client writes), only used when the header is missing.
    """
    if rewritten:
        if not header_value:
            return normalize_ip(peer) if peer else None
        nearest: str | None = None
    elif peer:
        parsed = _parse(peer)
        if parsed is None or not trusted._has(parsed):
            return None if parsed is None else parsed[2]
        nearest = parsed[2]
    elif trusted.trusts_unix_socket:
        nearest = None
    else:
        return None
    if not header_value:
        return nearest
    for hop in _hops(header_value, header.lower().replace("_", "-")):
        hop_parsed = _parse(hop)
        if hop_parsed is None:
            return nearest
        if not trusted._has(hop_parsed):
            return hop_parsed[2]
        nearest = hop_parsed[2]
    return nearest


def _is_internal(parsed: _Parsed) -> bool:
    version, value, _ = parsed
    addr = ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)
    return (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or (version == 4 and addr in _SHARED_V4)
    )


def should_warn_untrusted_private(
    peer: str | None, header_value: str | None, trusted: TrustedProxies
) -> bool:
    """Whether a forwarded header came from an untrusted peer that looks like a proxy.

    True when ``header_value`` is not empty and the peer is an untrusted private, loopback,
    link-local or carrier-grade-NAT address (a Docker or Kubernetes proxy, most likely), or
    an untrusted Unix socket. The client IP recorded is then the proxy's, for every request;
    the caller logs :func:`warn_untrusted_proxy_once`. ``is_private`` only *warns* here.
    With ``trusted_proxies=[]`` (trust nobody, on purpose) it is always False.
    """
    if not header_value or not header_value.strip():
        return False
    if not trusted.networks and not trusted.trusts_unix_socket:
        return False
    if not peer:
        return not trusted.trusts_unix_socket
    parsed = _parse(peer)
    return parsed is not None and not trusted._has(parsed) and _is_internal(parsed)


_warn_lock = threading.Lock()
_warned = threading.Event()


def warn_untrusted_proxy_once(peer: str, header: str) -> None:
    """Log, once per process, that ``peer`` sent ``header`` but is not a trusted proxy."""
    if _warned.is_set():
        return
    with _warn_lock:
        if _warned.is_set():
            return
        _warned.set()
    logger.warning(
        "sqreen: the %s header came from %s, which is not a trusted proxy, so the client IP "
        "recorded is %s for every request. If the app runs behind a proxy or a load balancer "
        "(Docker, Kubernetes), list it: SQREEN_TRUSTED_PROXIES=%s or "
        'sqreen.init(trusted_proxies=["%s"]) (a CIDR such as "10.0.0.0/8" covers a network).',
        header,
        peer,
        peer,
        peer,
        peer,
    )


def maybe_warn_untrusted_proxy(
    peer: str | None, header_value: str | None, trusted: TrustedProxies, header: str
) -> None:
    """:func:`should_warn_untrusted_private` then :func:`warn_untrusted_proxy_once`; free once
    the warning has been logged."""
    if _warned.is_set() or not should_warn_untrusted_private(peer, header_value, trusted):
        return
    # A server that already applied the header (uvicorn's proxy_headers, werkzeug's
    # ProxyFix) hands us one of its hops as the peer: nothing is misconfigured then.
    peer_ip = normalize_ip(peer) if peer else None
    if peer_ip is not None and header_value is not None:
        kind = header.lower().replace("_", "-")
        if any(normalize_ip(hop) == peer_ip for hop in _hops(header_value, kind) if hop):
            return
    warn_untrusted_proxy_once(peer or "a Unix socket", header)


def _reset_warning() -> None:
    """For tests: let :func:`warn_untrusted_proxy_once` log again."""
    _warned.clear()
