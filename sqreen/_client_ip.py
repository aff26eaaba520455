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
middleware, so parsing is cached and the walk stops at the first untrusted hop. The syntax of
addresses and forwarded headers is :mod:`sqreen._ip_syntax`'s; the warning about an untrusted
peer that looks like a proxy is :mod:`sqreen._ip_warnings`'.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Final

from ._ip_syntax import IPNetwork, Parsed, as_parsed, forwarded_hops, normalize_ip, parse_ip

__all__ = [
    "DEFAULT_TRUSTED_PROXIES",
    "TrustedProxies",
    "ip_in_networks",
    "resolve_client_ip",
]

logger = logging.getLogger("sqreen")

#: What ``trusted_proxies=None`` means: loopback, and peers without an IP address (a Unix
#: domain socket, e.g. gunicorn or uvicorn behind nginx on the same machine). Both can only be
#: processes of this machine.
DEFAULT_TRUSTED_PROXIES: Final = ("127.0.0.0/8", "::1", "unix")

#: Client IPs remembered per set of trusted proxies, and the longest header remembered.
_MAX_RESOLVED: Final = 1024
_MAX_CACHED_HEADER: Final = 256


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

    def trusts_parsed(self, parsed: Parsed) -> bool:
        """Whether the address :func:`~sqreen._ip_syntax.parse_ip` gave is a trusted proxy."""
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
            parsed = parse_ip(ip)
        elif isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            parsed = as_parsed(ip)
        else:
            return False
        return parsed is not None and self.trusts_parsed(parsed)

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
    parsed = parse_ip(ip) if isinstance(ip, str) else None
    if parsed is None:
        return False
    addr = ipaddress.IPv4Address(parsed[1]) if parsed[0] == 4 else ipaddress.IPv6Address(parsed[1])
    return any(addr in net for net in networks)


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
    hop, which the client writes), only used when the header is missing. Unless
    ``trusted_proxies`` trusts no address (``[]``: no proxy in front): then no forwarded
    header is believed, the server's pick is one, and the client IP is unknown (None).
    """
    if rewritten:
        if not trusted.networks:
            return None
        if not header_value:
            return normalize_ip(peer) if peer else None
        nearest: str | None = None
    elif peer:
        parsed = parse_ip(peer)
        if parsed is None or not trusted.trusts_parsed(parsed):
            return None if parsed is None else parsed[2]
        nearest = parsed[2]
    elif trusted.trusts_unix_socket:
        nearest = None
    else:
        return None
    if not header_value:
        return nearest
    for hop in forwarded_hops(header_value, header.lower().replace("_", "-")):
        hop_parsed = parse_ip(hop)
        if hop_parsed is None:
            return nearest
        if not trusted.trusts_parsed(hop_parsed):
            return hop_parsed[2]
        nearest = hop_parsed[2]
    return nearest
