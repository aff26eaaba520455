"""The blocklist: users and IPs the collector asked every SDK to refuse.

The collector sends the *full* set of actions in force with every reply, versioned, so an
unblock propagates like a block and every worker converges. Each action is checked before it
is applied: a block that would cover a whole provider (an IPv4 prefix wider than /16, IPv6
wider than /48), one with an empty user (which would match everybody) or one that covers a
trusted proxy (which would lock out every client behind it) is refused and logged.

An action set holds at most :data:`MAX_BLOCKS` blocks here, as many as the collector allows
in force by default (``sqreen serve --max-blocks``): applying a set costs about 10 ms per 1 000
blocks with the GIL held, so one of 140 000 (which fits in a reply) stalled every request for
seconds. The blocks past it are refused (reported like any refused block, one log line for
the set) and kept, up to as many again, in the set's order, to be enforced as soon as lifted
blocks make room.

The blocks are indexed, because the IP check runs on every request and a linear scan of
10 000 blocks cost 5.4 ms per request (``identify()``: 7.8 ms): IP networks by prefix
length, then by their network number (one dict lookup per prefix length present), users by
each ``(key, value)`` they hold, so that a lookup touches only the blocks that share an
identifier with the user. ``bench/bench_blocking.py`` measures both against a linear scan.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable
from functools import lru_cache
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any, NamedTuple

from ._client_ip import TrustedProxies
from ._ip_syntax import normalize_ip

__all__ = ["MAX_BLOCKS", "PACE", "Blocked", "Blocklist", "IPBlock", "UserBlock"]

logger = logging.getLogger("sqreen")

#: The most blocks of an action set this SDK enforces: the collector's default
#: ``--max-blocks`` (``sqreen.server.blocks.MAX_ACTIVE_BLOCKS``; a test keeps them equal).
MAX_BLOCKS = 10_000
#: After an answer that changed the set, the thread that applied it (the action long-poll,
#: the flusher) asks again no sooner than this many times the CPU time the answer cost it
#: (reading, parsing, applying, spooling): at most a fifth of a core each, whatever the set.
PACE = 4.0

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


_EMPTY = _Index({}, (), (), False)
_BITS = {4: 32, 6: 128}
_MIN_PREFIX = {4: 16, 6: 48}


def fold_identifier(value: str) -> str:
    """An identifier as blocks and playbooks compare it: case-folded, compatibility-
    normalised (NFKC: fullwidth letters are the ASCII ones, as Django's login form reads
    them) and stripped, so that the spellings an app takes for one account are one user."""
    if value.isascii():
        return value.strip().lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold()).strip()


@lru_cache(maxsize=4096)
def _address(ip: str) -> tuple[int, int] | None:
    """``(version, integer)`` of the address in ``ip`` (read as :func:`normalize_ip` does)."""
    text = normalize_ip(ip)
    if text is None:
        return None
    address = ipaddress.ip_address(text)
    return address.version, int(address)


class Blocklist:
    """Active blocks, replaced whole by each action set; read lock-free on the request path.

    A user block matches identifiers that hold every key of the block with the same value,
    values compared trimmed and case-folded on both sides: a block on
    ``{"email": "alice@example.com"}`` matches ``{"email": " Alice@Example.com ", "uid": "7"}``
    (keys are compared as they are). An IP block matches the addresses of its network. Each
    block holds until its own deadline (``expires_in`` from when the set was applied, on
    ``clock``). When several blocks match, the first in the action set answers.

    Lookups cost one dict lookup per identifier of the user, or per prefix length present
    in the blocks of the address's version, whatever the number of blocks.
    """

    def __init__(
        self, trusted: TrustedProxies, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # (version, first, last address) of each trusted proxy network.
        self._trusted = tuple(
            (net.version, int(net.network_address), int(net.broadcast_address))
            for net in trusted.networks
        )
        self._clock = clock
        self._lock = threading.Lock()
        self.version = -1
        self._index = _EMPTY  # replaced, never mutated
        # The networks of the last action set by their text (a text: why it was refused), so
        # that a new version, which repeats the others, parses and checks only what it adds.
        self._networks: dict[str, Network | str] = {}
        #: The blocks of the set in force that this process refuses: id -> why (reported in
        #: the heartbeat, so that the collector can show a block nobody enforces).
        self.refused: dict[str, str] = {}
        # The set in force by id, in its order (what a diff applies to), and the items of the
        # refused ones as received (for snapshot()).
        self._blocks: dict[str, UserBlock | IPBlock] = {}
        self._refused_items: dict[str, dict[str, Any]] = {}
        # The items past MAX_BLOCKS, in the set's order (at most MAX_BLOCKS of them), refused
        # until lifted blocks make room; and whether the set was said to be over it.
        self._waiting: dict[str, Any] = {}
        self._capped = False

    def after_fork_in_child(self) -> None:
        """A new lock: the parent's may have been held by a thread the child does not have.
        The blocks themselves are kept (they are in force in the child too)."""
        self._lock = threading.Lock()

    @property
    def has_ips(self) -> bool:
        return self._index.has_ips

    @property
    def has_users(self) -> bool:
        return bool(self._index.users)

    def apply(self, actions: Any) -> None:
        """Replace the blocks with a reply's action set (ignored unless its version changed),
        or change them by a diff (``since``, ``add``, ``remove``: applied only to the set of
        version ``since``; else ignored, and the next request says which version this
        process holds)."""
        if not isinstance(actions, dict):
            return
        if "since" in actions:
            self._apply_diff(actions)
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
            known, self._networks = self._networks, {}
            refused: dict[str, str] = {}
            head = items[:MAX_BLOCKS]
            blocks = [b for item in head if (b := self._parse(item, now, known, refused))]
            self._index = _build(blocks)
            self._blocks = {b.action_id: b for b in blocks}
            self._refused_items = {
                str(item["id"]): item
                for item in head
                if isinstance(item, dict) and str(item.get("id", "")) in refused
            }
            waiting: dict[str, Any] = {}
            for item in items[MAX_BLOCKS : 2 * MAX_BLOCKS]:
                action_id = _id_of(item)
                if action_id and action_id not in self._blocks and action_id not in refused:
                    waiting[action_id] = item
            self._wait(waiting, refused, len(items))
            self.refused = refused
            self.version = version

    def _wait(self, waiting: dict[str, Any], refused: dict[str, str], total: int) -> None:
        """Keep the items past MAX_BLOCKS (refused, each saying why); say so once while the
        set is over it."""
        why = f"past the {MAX_BLOCKS} blocks this SDK enforces"
        for action_id in waiting:
            refused[action_id] = why
        self._waiting = waiting
        if total <= MAX_BLOCKS:
            self._capped = False
        elif not self._capped:
            self._capped = True
            logger.warning(
                "sqreen: the action set holds %d blocks, more than the %d this SDK enforces "
                "(the collector's default --max-blocks): the first %d are enforced, the others "
                "refused until lifted blocks make room",
                total,
                MAX_BLOCKS,
                MAX_BLOCKS,
            )

    def _apply_diff(self, diff: dict[str, Any]) -> None:
        fields: list[Any] = [diff.get(k) for k in ("version", "since", "add", "remove")]
        version, since, add, remove = fields
        shapes = ((version, int), (since, int), (add, list), (remove, list))
        if not all(isinstance(value, kind) for value, kind in shapes):
            logger.warning("sqreen: ignoring a malformed action set")
            return
        with self._lock:
            if version == self.version or since != self.version:
                return
            now = self._clock()
            blocks = {
                k: b for k, b in self._blocks.items() if b.deadline is None or b.deadline > now
            }
            refused, items = dict(self.refused), dict(self._refused_items)
            waiting = dict(self._waiting)
            for gone in remove:
                for held in (blocks, refused, items, waiting):
                    held.pop(str(gone), None)
            known = self._networks

            def place(action_id: str, item: Any) -> None:
                block = self._parse(item, now, known, refused)
                if block is not None:
                    blocks[action_id] = block
                    return
                blocks.pop(action_id, None)
                if action_id in refused:
                    items[action_id] = item

            # A block changed keeps its place (the first match answers), one waiting past
            # MAX_BLOCKS too; a new one comes last, after those waiting.
            for item in add:
                action_id = _id_of(item)
                if action_id in waiting:
                    waiting[action_id] = item
                    continue
                in_set = action_id in blocks or action_id in items
                refused.pop(action_id, None)
                items.pop(action_id, None)
                if in_set:
                    place(action_id, item)
                elif len(waiting) < MAX_BLOCKS:
                    waiting[action_id] = item
            if waiting and len(blocks) + len(items) < MAX_BLOCKS:  # room: the first waiting
                order, waiting = list(waiting.items()), {}
                for action_id, item in order:
                    if len(blocks) + len(items) < MAX_BLOCKS:
                        refused.pop(action_id, None)
                        place(action_id, item)
                    else:
                        waiting[action_id] = item
            self._wait(waiting, refused, len(blocks) + len(items) + len(waiting))
            if len(known) > 2 * len(blocks) + 64:  # (networks of blocks long gone)
                self._networks = {
                    str(b.network): b.network for b in blocks.values() if isinstance(b, IPBlock)
                }
            self._index = _build(blocks.values())
            self._blocks, self.refused, self._refused_items = blocks, refused, items
            self.version = version

    def snapshot(self) -> dict[str, Any]:
        """The set in force as a whole action set (``expires_in`` from now), as the spool
        keeps it for the next process."""
        with self._lock:
            now = self._clock()
            items = []
            for b in self._blocks.values():
                if b.deadline is not None and b.deadline <= now:
                    continue
                item: dict[str, Any] = {"id": b.action_id}
                if isinstance(b, UserBlock):
                    item.update(type="block_user", user=b.user)
                else:
                    item.update(type="block_ip", ip=str(b.network))
                item["expires_in"] = None if b.deadline is None else b.deadline - now
                item["reason"] = b.reason
                items.append(item)
            refused = list(self._refused_items.values()) + list(self._waiting.values())
            return {"version": self.version, "items": items + refused}

    def _parse(
        self, item: Any, now: float, known: dict[str, Network | str], refused: dict[str, str]
    ) -> UserBlock | IPBlock | None:
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
                refused[action_id] = "it needs a non-empty user"
                return None
            return UserBlock(dict(user), deadline, reason, action_id)
        if item.get("type") == "block_ip":
            text = str(item.get("ip"))
            net = known[text] if text in known else self._network(text, action_id)
            self._networks[text] = net
            if isinstance(net, str):
                refused[action_id] = net
                return None
            return IPBlock(net, deadline, reason, action_id)
        return None

    def _network(self, text: str, action_id: str) -> Network | str:
        """The network of a ``block_ip`` action, or why it is refused (logged)."""
        net = _parse_network(text)
        if net is None:
            why = "invalid network"
        elif net.prefixlen < _MIN_PREFIX[net.version]:
            why = f"{net} is too wide"
        else:
            first = int(net.network_address)
            last = first | ((1 << (_BITS[net.version] - net.prefixlen)) - 1)
            if not any(
                v == net.version and lo <= last and first <= hi for v, lo, hi in self._trusted
            ):
                return net
            why = f"{net} covers a trusted proxy"
        logger.warning("sqreen: refusing block %s: %s", action_id, why)
        return why

    def user_block(self, user: dict[str, str] | None) -> Blocked | None:
        """The :class:`Blocked` for ``user`` when an active block matches every key of it."""
        index = self._index
        if not user or not index.users:
            return None
        folded = {k: fold_identifier(str(v)) for k, v in user.items()}
        found = _first_active(
            (index.users.get(pair, ()) for pair in folded.items()),
            self._clock(),
            lambda entry: all(folded.get(k) == v for k, v in entry.folded),
        )
        if found is None:
            return None
        return Blocked(user=user, reason=found.reason, action_id=found.action_id)

    def ip_block(self, ip: str | None) -> Blocked | None:
        """The :class:`Blocked` for the address ``ip`` when an active block covers it."""
        index = self._index
        if not ip or not index.has_ips:
            return None
        parsed = _address(ip)
        if parsed is None:
            return None
        version, value = parsed
        host_bits = _BITS[version]
        networks = index.v4 if version == 4 else index.v6
        found = _first_active(
            (table.get(value >> (host_bits - prefix), ()) for prefix, table in networks),
            self._clock(),
        )
        if found is None:
            return None
        return Blocked(ip=ip, reason=found.reason, action_id=found.action_id)


def _id_of(item: Any) -> str:
    return str(item.get("id", "")) if isinstance(item, dict) else ""


def _parse_network(text: str) -> Network | None:
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


def _build(blocks: Iterable[UserBlock | IPBlock]) -> _Index:
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
            number = int(net.network_address) >> (_BITS[net.version] - net.prefixlen)
            tables.setdefault(net.prefixlen, {}).setdefault(number, []).append(
                _Entry(position, block)
            )
    v4, v6 = (tuple(sorted(networks[v].items(), reverse=True)) for v in (4, 6))
    return _Index(users, v4, v6, bool(v4 or v6))


def _first_active(
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
