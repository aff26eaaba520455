"""Warnings about how the server and its proxies hand the client's address to the app.

A wrong setting here is silent: every event carries an address, only not the client's, and
an IP block never matches. So :func:`watch_peer` looks at each event's peer and forwarded
header (on the flusher thread, where the client IP is resolved) and logs, once per process:

* a forwarded header from an untrusted private peer (a Docker or Kubernetes proxy that is
  not in ``trusted_proxies``: :func:`maybe_warn_untrusted_proxy`);
* a server that replaced the peer with a hop of a forwarded header and kept no trace of the
  connection (hypercorn's ``ProxyFixMiddleware``, daphne's ``--proxy-headers``, uvicorn's
  proxy headers under Django);
* an untrusted public peer whose forwarded header named :data:`PUBLIC_PROXY_CLIENTS`
  different clients among the first :data:`WATCHED_EVENTS` events: a CDN or load balancer
  missing from ``trusted_proxies``, every client behind it recorded as its address, so that
  a playbook blocking one blocks them all (one client forging the header names one, or a
  few: it is not said, nor is the header believed);
* :data:`SILENT_PROXY_EVENTS` events from a trusted proxy without the forwarded header,
  among the first :data:`WATCHED_EVENTS` of the process: a proxy that does not send it (nginx
  without ``proxy_set_header``), or a server that removes it (waitress drops
  ``X-Forwarded-For`` unless told to trust the proxy). Every client is then the proxy. Events
  that do carry the header do not settle it: behind such a proxy they are the ones whose
  clients wrote it themselves (it passes theirs on), and one forged header silenced the
  warning for the life of the process. Once :data:`WATCHED_EVENTS` were seen, nothing is
  counted.

Each check costs a few comparisons per event until it is settled, nothing after.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Final

from ._client_ip import TrustedProxies
from ._ip_syntax import Parsed, forwarded_hops, normalize_ip, parse_ip

__all__ = [
    "PUBLIC_PROXY_CLIENTS",
    "SILENT_PROXY_EVENTS",
    "WATCHED_EVENTS",
    "counting_done",
    "maybe_warn_untrusted_proxy",
    "should_warn_untrusted_private",
    "warn_untrusted_proxy_once",
    "watch_peer",
]

logger = logging.getLogger("sqreen")

#: Events from a trusted proxy without the forwarded header before the warning: enough that
#: a health check or two from the proxy's host do not count as "every request".
SILENT_PROXY_EVENTS: Final = 20
#: Events looked at for that warning, then none: behind a proxy that sends the header, an
#: event without it is one that did not pass through it (a local job, a health check).
WATCHED_EVENTS: Final = 200
#: Different clients an untrusted public peer's forwarded header names, among the first
#: WATCHED_EVENTS events, before it is said to look like a proxy.
PUBLIC_PROXY_CLIENTS: Final = 5
# 100.64.0.0/10 (carrier-grade NAT, also used by some Kubernetes networks) is not is_private.
_SHARED_V4: Final = ipaddress.IPv4Network("100.64.0.0/10")


class _Watch:
    """What has been seen so far in this process (touched by the flusher thread only; the
    lock only keeps two warnings from being logged twice)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.seen = 0  # events looked at
        self.silent = 0  # of which from a trusted proxy without the header
        self.silent_settled = False  # warned, or WATCHED_EVENTS seen
        self.rewritten_warned = False
        #: Untrusted public peers -> the clients their forwarded headers named (the first
        #: WATCHED_EVENTS events only: that many values at most, in all).
        self.public: dict[str, set[str]] = {}
        self.public_warned = False


_watch = _Watch()


def watch_peer(
    peer: str | None,
    header_value: str | None,
    trusted: TrustedProxies,
    header: str,
    rewritten: bool,
) -> None:
    """Log what one event's peer and forwarded header say of the set-up, once each."""
    if rewritten:
        if not _watch.rewritten_warned and (header_value or not _is_loopback(peer)):
            _warn_rewritten(peer, header)
        return
    maybe_warn_untrusted_proxy(peer, header_value, trusted, header)
    if _watch.silent_settled:
        return
    _watch.seen += 1
    if peer and header_value and not _watch.public_warned:
        _count_public(peer, header_value, trusted, header)
    if not (header_value and header_value.strip()) and _is_trusted(peer, trusted):
        _watch.silent += 1
        if _watch.silent >= SILENT_PROXY_EVENTS:
            _warn_silent(peer, header)
            return
    if _watch.seen >= WATCHED_EVENTS:
        _watch.silent_settled = True


def counting_done() -> bool:
    """Whether the events without a forwarded header are counted no more (warned, or
    :data:`WATCHED_EVENTS` seen): until then every event must be watched, those with the
    header too."""
    return _watch.silent_settled


def _is_trusted(peer: str | None, trusted: TrustedProxies) -> bool:
    if not peer:
        return trusted.trusts_unix_socket
    return peer in trusted


def _count_public(peer: str, header_value: str, trusted: TrustedProxies, header: str) -> None:
    """Count the client ``header_value`` names for ``peer`` if that is an untrusted public
    address (with ``trusted_proxies=[]``, trusting nobody on purpose, nothing is said); say
    so once it named PUBLIC_PROXY_CLIENTS different ones."""
    if not trusted.networks and not trusted.trusts_unix_socket:
        return
    parsed = parse_ip(peer)
    if parsed is None or trusted.trusts_parsed(parsed) or _is_internal(parsed):
        return
    named = _watch.public.setdefault(peer, set())
    named.add(header_value.strip()[-128:])
    if len(named) < PUBLIC_PROXY_CLIENTS:
        return
    with _watch.lock:
        if _watch.public_warned:
            return
        _watch.public_warned = True
        _watch.public.clear()
    logger.warning(
        "sqreen: %s, not a trusted proxy, sent a %s header naming %d different clients among "
        "the first %d events: it looks like a proxy, load balancer or CDN in front of this app. "
        "Every client behind it is then recorded as %s, and a playbook that blocks one "
        "address blocks them all. If it is yours, list its addresses: SQREEN_TRUSTED_PROXIES "
        "or sqreen.init(trusted_proxies=[...]) (your CDN publishes its ranges). If it is not, "
        "a client writes the header itself, and ignoring it is right.",
        normalize_ip(peer),
        header,
        PUBLIC_PROXY_CLIENTS,
        _watch.seen,
        normalize_ip(peer),
    )


def _warn_silent(peer: str | None, header: str) -> None:
    with _watch.lock:
        if _watch.silent_settled:
            return
        _watch.silent_settled = True
    where = normalize_ip(peer) if peer else "a Unix socket"
    logger.warning(
        "sqreen: %d of the first %d events came from %s, a trusted proxy, without a %s header: "
        "those clients are recorded as the proxy, and no IP block can match them. If a "
        "proxy is in front of this app, make it send the client's address (nginx: "
        'proxy_set_header X-Real-IP $remote_addr; with client_ip_header="X-Real-IP"); '
        "waitress removes X-Forwarded-For unless told to trust the proxy. See the README's "
        "table of servers. (With clients on this machine, in development, ignore this.)",
        SILENT_PROXY_EVENTS,
        _watch.seen,
        where,
        header,
    )


def _warn_rewritten(peer: str | None, header: str) -> None:
    with _watch.lock:
        if _watch.rewritten_warned:
            return
        _watch.rewritten_warned = True
    logger.warning(
        "sqreen: the server replaced the address of the connection with %s (port 0), taken "
        "from a forwarded header, and sqreen cannot see the connection: hypercorn's "
        "ProxyFixMiddleware or daphne --proxy-headers; uvicorn's --forwarded-allow-ips under "
        "Django, or under a middleware outside sqreen's that hides uvicorn's `receive`. sqreen "
        "reads the %s header itself as if a trusted proxy sent it (unless trusted_proxies=[], "
        "which believes no header): if the server can be reached other than through your proxy, "
        "every client chooses its IP. When the server trusts your proxy only (uvicorn's "
        "default: 127.0.0.1, behind nginx on the host), this is expected; otherwise turn its "
        "proxy headers off (uvicorn --no-proxy-headers, which also silences this) and list "
        "your proxies in trusted_proxies (the README's table of servers).",
        peer,
        header,
    )


def _reset() -> None:
    """For tests: forget what was seen and warned."""
    with _watch.lock:
        _watch.reset()


def _is_loopback(peer: str | None) -> bool:
    """Whether ``peer`` is a loopback address: with no forwarded header, a port 0 there is a
    test client's (Django's async one says 127.0.0.1, port 0), not a server's rewrite."""
    parsed = parse_ip(peer) if peer else None
    return parsed is not None and ipaddress.ip_address(parsed[2]).is_loopback


def _is_internal(parsed: Parsed) -> bool:
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
    parsed = parse_ip(peer)
    return parsed is not None and not trusted.trusts_parsed(parsed) and _is_internal(parsed)


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
        "recorded is %s for every request. If that address is your proxy or load balancer "
        "(Docker, Kubernetes), and not a client of its own, list it: SQREEN_TRUSTED_PROXIES=%s or "
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
        if any(normalize_ip(hop) == peer_ip for hop in forwarded_hops(header_value, kind) if hop):
            return
    warn_untrusted_proxy_once(peer or "a Unix socket", header)


def _reset_warning() -> None:
    """For tests: let :func:`warn_untrusted_proxy_once` log again."""
    _warned.clear()
