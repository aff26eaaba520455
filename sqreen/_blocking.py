"""The blocklist: users and IPs the collector asked every SDK to refuse.

The collector sends the *full* set of actions in force with every reply, versioned, so an
unblock propagates like a block and every worker converges. Each action is checked before it
is applied: a block that would cover a whole provider (an IPv4 prefix wider than /16, IPv6
wider than /48), one with an empty user (which would match everybody) or one that covers a
trusted proxy (which would lock out every client behind it) is refused and logged.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ._client_ip import TrustedProxies

__all__ = ["Blocked", "Blocklist", "IPBlock", "UserBlock"]

logger = logging.getLogger("sqreen")

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


class Blocklist:
    """Active blocks, replaced whole by each action set; read lock-free on the request path."""

    def __init__(
        self, trusted: TrustedProxies, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._trusted = trusted
        self._clock = clock
        self._lock = threading.Lock()
        self.version = -1
        # Replaced, never mutated.
        self._users: tuple[UserBlock, ...] = ()
        self._nets: tuple[IPBlock, ...] = ()

    def after_fork_in_child(self) -> None:
        """A new lock: the parent's may have been held by a thread the child does not have.
        The blocks themselves are kept (they are in force in the child too)."""
        self._lock = threading.Lock()

    @property
    def has_ips(self) -> bool:
        return bool(self._nets)

    def apply(self, actions: Any) -> None:
        """Replace the blocks with a reply's action set (ignored unless its version changed)."""
        if not isinstance(actions, dict):
            return
        version = actions.get("version")
        items = actions.get("items")
        if not isinstance(version, int) or not isinstance(items, list):
            logger.warning("sqreen: ignoring a malformed action set")
            return
        with self._lock:
            if version == self.version:
                return
            now = self._clock()
            users: list[UserBlock] = []
            nets: list[IPBlock] = []
            for item in items:
                parsed = self._parse(item, now)
                if isinstance(parsed, UserBlock):
                    users.append(parsed)
                elif parsed is not None:
                    nets.append(parsed)
            self._users = tuple(users)
            self._nets = tuple(nets)
            self.version = version

    def _parse(self, item: Any, now: float) -> UserBlock | IPBlock | None:
        if not isinstance(item, dict):
            return None
        expires_in = item.get("expires_in")
        if expires_in is not None and (not isinstance(expires_in, int | float) or expires_in <= 0):
            return None
        deadline = None if expires_in is None else now + float(expires_in)
        reason = item.get("reason") if isinstance(item.get("reason"), str) else None
        action_id = str(item.get("id", ""))
        if item.get("type") == "block_user":
            user = item.get("user")
            if (
                not isinstance(user, dict)
                or not user
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in user.items())
            ):
                logger.warning("sqreen: refusing block %s: it needs a non-empty user", action_id)
                return None
            return UserBlock(dict(user), deadline, reason, action_id)
        if item.get("type") == "block_ip":
            try:
                net = ipaddress.ip_network(str(item.get("ip")), strict=False)
            except ValueError:
                logger.warning("sqreen: refusing block %s: invalid network", action_id)
                return None
            if net.prefixlen < (16 if net.version == 4 else 48):
                logger.warning("sqreen: refusing block %s: %s is too wide", action_id, net)
                return None
            if any(net.overlaps(proxy) for proxy in self._trusted.networks):  # type: ignore[arg-type,unused-ignore]
                logger.warning(
                    "sqreen: refusing block %s: %s covers a trusted proxy", action_id, net
                )
                return None
            return IPBlock(net, deadline, reason, action_id)
        return None

    def user_block(self, user: dict[str, str] | None) -> Blocked | None:
        """The :class:`Blocked` for ``user`` when an active block matches every key of it."""
        if not user or not self._users:
            return None
        now = self._clock()
        for block in self._users:
            if (block.deadline is None or block.deadline > now) and all(
                user.get(k) == v for k, v in block.user.items()
            ):
                return Blocked(user=user, reason=block.reason, action_id=block.action_id)
        return None

    def ip_block(self, ip: str | None) -> Blocked | None:
        if not ip or not self._nets:
            return None
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        now = self._clock()
        for block in self._nets:
            if (block.deadline is None or block.deadline > now) and addr in block.network:
                return Blocked(ip=ip, reason=block.reason, action_id=block.action_id)
        return None
