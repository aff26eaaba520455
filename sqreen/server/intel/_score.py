"""The threat score of an address, 0 to 100, and the reasons behind it.

Points add up, capped at 100:

============================  ======  =================================================
reason                        points  when
============================  ======  =================================================
``tor``                         60    a Tor exit node
``vpn``                         35    a consumer VPN or private relay exit
``hosting``                     25    a machine in a cloud or hosting provider
``bot``                         15    a declared crawler
``cdn``                         10    edge infrastructure (a proxy in front of someone)
``blocked_recently``            30    an IP block covering it was made in the last 7 days
                                      (by hand or by a playbook; active, lifted or expired)
``playbook_alert``              20    a playbook grouped by IP alerted on it in the last 24 h
============================  ======  =================================================

A network kind scores once (an address has one). The collector's own memory
(:class:`Reputation`) is read from the database at most every :data:`REFRESH_EVERY` seconds,
not per event: a block made a moment ago counts from the next refresh on. The score is stored
with each event, as it was when the event arrived.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Final, Protocol

from ..unavailable import UnavailableLog, unavailable
from ._address import Parsed, ipv4_client

__all__ = ["KIND_POINTS", "REASONS", "Reputation", "ReputationSource", "threat_score"]

logger = logging.getLogger("sqreen.server")
_UNREAD = UnavailableLog("threat scores made without recent blocks and alerts")

KIND_POINTS: Final = {"tor": 60, "vpn": 35, "hosting": 25, "bot": 15, "cdn": 10}
BLOCKED_POINTS: Final = 30
ALERT_POINTS: Final = 20
#: Every reason, in the order they are listed.
REASONS: Final = (*KIND_POINTS, "blocked_recently", "playbook_alert")
REFRESH_EVERY: Final = 5.0
BLOCKED_WINDOW: Final = timedelta(days=7)
ALERT_WINDOW: Final = timedelta(hours=24)
#: At most this many recent IP blocks and IP alerts are read at a refresh (newest first).
MAX_READ: Final = 5000


def threat_score(kind: str | None, blocked: bool, alerted: bool) -> tuple[int, list[str]]:
    """(score, reasons) for an address of ``kind`` (None: unknown or residential)."""
    score, reasons = 0, []
    if kind in KIND_POINTS:
        score += KIND_POINTS[kind]
        reasons.append(kind)
    if blocked:
        score += BLOCKED_POINTS
        reasons.append("blocked_recently")
    if alerted:
        score += ALERT_POINTS
        reasons.append("playbook_alert")
    return min(score, 100), reasons


class ReputationSource(Protocol):
    """What :class:`Reputation` reads (the collector's storage)."""

    def now(self) -> datetime: ...

    def recent_ip_blocks(self, since: datetime, limit: int) -> list[str]: ...

    def recent_alert_ips(self, since: datetime, limit: int) -> list[str]: ...


class Reputation:
    """What the collector knows of addresses by itself: recent IP blocks, playbook alerts.

    Networks are kept by (version, prefix length) as integers, so a check costs one set
    lookup per prefix length present (as the SDK's blocklist does).
    """

    def __init__(
        self,
        source: ReputationSource,
        *,
        every: float = REFRESH_EVERY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.every = every
        self._monotonic = monotonic
        self._next = 0.0
        self._networks: dict[tuple[int, int], set[int]] = {}
        self._alerted: dict[tuple[int, int], set[int]] = {}

    def refresh(self) -> None:
        """Read again, if the last read is older than ``every`` seconds."""
        now = self._monotonic()
        if now < self._next:
            return
        self._next = now + self.every
        try:
            at = self.source.now()
            blocks = self.source.recent_ip_blocks(at - BLOCKED_WINDOW, MAX_READ)
            alerts = self.source.recent_alert_ips(at - ALERT_WINDOW, MAX_READ)
        except Exception as exc:  # the events are stored without these points, not refused
            if unavailable(exc):  # the database gone a while: a line a minute, no traceback
                _UNREAD.met(exc)
            else:
                logger.exception("sqreen: recent blocks and alerts not read; scores without them")
            return
        self._networks = _networks(blocks)
        # Addresses, and the IPv6 networks playbooks group by (``ipv6_prefix``, /48 at most:
        # a wider one is no group of theirs, but an event's text stored before addresses
        # were checked).
        self._alerted = {
            (version, length): numbers
            for (version, length), numbers in _networks(alerts).items()
            if (version == 4 and length == 32) or (version == 6 and length >= 48)
        }

    @property
    def holds_any(self) -> bool:
        """Whether any recent block or alert is known (most of the time, none is)."""
        return bool(self._networks or self._alerted)

    def check(self, address: Parsed) -> tuple[bool, bool]:
        """(blocked recently, alerted recently) for ``address``, as the event gave it; a
        Teredo, 6to4 or NAT64 address for its IPv4 client too (which IPv4 blocks cover)."""
        of, value = address[0], address[1]
        blocked, alerted = _within(self._networks, of, value), _within(self._alerted, of, value)
        client = ipv4_client(value) if of == 6 else None
        if client is not None:
            blocked = blocked or _within(self._networks, 4, client)
            alerted = alerted or _within(self._alerted, 4, client)
        return blocked, alerted


def _within(networks: dict[tuple[int, int], set[int]], of: int, value: int) -> bool:
    """Whether the address ``value`` (IP version ``of``) is in one of ``networks``."""
    bits = 32 if of == 4 else 128
    for (version, length), numbers in networks.items():
        if version == of and value >> (bits - length) in numbers:
            return True
    return False


def _networks(texts: Sequence[str]) -> dict[tuple[int, int], set[int]]:
    out: dict[tuple[int, int], set[int]] = {}
    for text in texts:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        bits = net.max_prefixlen
        out.setdefault((net.version, net.prefixlen), set()).add(
            int(net.network_address) >> (bits - net.prefixlen)
        )
    return out
