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

The blocks are indexed for the request path (:mod:`sqreen._block_index`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from ._block_index import (
    BITS,
    EMPTY,
    Blocked,
    IPBlock,
    Network,
    UserBlock,
    address_of,
    build_index,
    first_active,
    fold_identifier,
    ipv4_client,
    parse_network,
    too_wide,
)
from ._client_ip import TrustedProxies
from ._text import visible

__all__ = ["MAX_BLOCKS", "PACE", "Blocked", "Blocklist", "IPBlock", "UserBlock", "fold_identifier"]

logger = logging.getLogger("sqreen")

#: The most blocks of an action set this SDK enforces: the collector's default
#: ``--max-blocks`` (``sqreen.server.blocks.MAX_ACTIVE_BLOCKS``; a test keeps them equal).
MAX_BLOCKS = 10_000
#: After an answer that changed the set, the thread that applied it (the action long-poll,
#: the flusher) asks again no sooner than this many times the CPU time the answer cost it
#: (reading, parsing, applying, spooling): at most a fifth of a core each, whatever the set.
PACE = 4.0


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
        # (version, first, last address) of each trusted proxy network, and of the IPv4
        # clients its IPv6 addresses carry (NAT64's, Teredo's, 6to4's: an IPv4 block covers
        # those addresses, so it would refuse that proxy too).
        ranges: list[tuple[int, int, int]] = []
        for net in trusted.networks:
            first, last = int(net.network_address), int(net.broadcast_address)
            ranges.append((net.version, first, last))
            carried = _carried(first, last) if net.version == 6 else None
            if carried is not None:
                ranges.append(carried)
        self._trusted = tuple(ranges)
        self._clock = clock
        self._lock = threading.Lock()
        self.version = -1
        self._index = EMPTY  # replaced, never mutated
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
            self._index = build_index(blocks)
            self._blocks = {b.action_id: b for b in blocks}
            self._refused_items = {
                action_id: item for item in head if (action_id := _id_of(item)) in refused
            }
            waiting: dict[str, Any] = {}
            for item in items[MAX_BLOCKS : 2 * MAX_BLOCKS]:
                action_id = _id_of(item)
                if action_id and action_id not in self._blocks and action_id not in refused:
                    waiting[action_id] = item
            self._wait(waiting, refused, len(items))
            _log_refused(self.refused, refused)
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
                    held.pop(str(gone)[:MAX_ID], None)
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
            self._index = build_index(blocks.values())
            _log_refused(self.refused, refused)
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
        deadline = None
        if expires_in is not None:
            if not isinstance(expires_in, int | float) or expires_in <= 0:
                return None
            try:  # an integer of 400 digits (the wire has no bound on them) is no float
                deadline = now + float(expires_in)
            except OverflowError:
                deadline = math.inf
            if not math.isfinite(deadline):
                refused[_id_of(item)] = "its expires_in is no finite number of seconds"
                return None
        reason = item.get("reason")
        reason = reason[:MAX_REASON] if isinstance(reason, str) else None
        action_id = _id_of(item)
        if item.get("type") == "block_user":
            user = item.get("user")
            if (
                not isinstance(user, dict)
                or not user
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in user.items())
            ):
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
        net = parse_network(text)
        if net is None:
            why = "invalid network"
        elif too_wide(net):
            why = f"{net} is too wide"
        else:
            first = int(net.network_address)
            last = first | ((1 << (BITS[net.version] - net.prefixlen)) - 1)
            if not any(
                v == net.version and lo <= last and first <= hi for v, lo, hi in self._trusted
            ):
                return net
            why = f"{net} covers a trusted proxy"
        return why

    def user_block(self, user: dict[str, str] | None) -> Blocked | None:
        """The :class:`Blocked` for ``user`` when an active block matches every key of it."""
        index = self._index
        if not user or not index.users:
            return None
        folded = {k: fold_identifier(str(v)) for k, v in user.items()}
        found = first_active(
            (index.users.get(pair, ()) for pair in folded.items()),
            self._clock(),
            lambda entry: all(folded.get(k) == v for k, v in entry.folded),
        )
        if found is None:
            return None
        return Blocked(user=user, reason=found.reason, action_id=found.action_id)

    def ip_block(self, ip: str | None) -> Blocked | None:
        """The :class:`Blocked` for the address ``ip`` when an active block covers it: for
        a Teredo, 6to4 or NAT64 address, an IPv4 block covering its IPv4 client too."""
        index = self._index
        if not ip or not index.has_ips:
            return None
        parsed = address_of(ip)
        if parsed is None:
            return None
        version, value = parsed
        if version == 4:
            candidates = [table.get(value >> (32 - prefix), ()) for prefix, table in index.v4]
        else:
            candidates = [table.get(value >> (128 - prefix), ()) for prefix, table in index.v6]
            client = ipv4_client(value)
            if client is not None:
                candidates += [table.get(client >> (32 - n), ()) for n, table in index.v4]
        found = first_active(candidates, self._clock())
        if found is None:
            return None
        return Blocked(ip=ip, reason=found.reason, action_id=found.action_id)


def _carried(first: int, last: int) -> tuple[int, int, int] | None:
    """``(4, low, high)``: the IPv4 clients the IPv6 addresses ``first`` to ``last`` (a
    network) carry (:func:`~._block_index.ipv4_client`), None when they carry none: one client
    (an address, a 6to4 ``/48``), the range a network inside one ``/96`` holds (NAT64's,
    Teredo's), else every IPv4 address (a Teredo server's ``/64`` holds one of each)."""
    low, high = ipv4_client(first), ipv4_client(last)
    if low is None or high is None:
        return None
    if low == high or first >> 32 == last >> 32:
        return (4, min(low, high), max(low, high))
    return (4, 0, 0xFFFFFFFF)


#: A block's id and reason as kept, at most (characters): the collector's are short; a
#: reason of 7 MiB made every refused request build a message of 7 MiB.
MAX_ID = 256
MAX_REASON = 1024
#: Refusals written out in the one log line of a set, at most.
LOGGED_REFUSALS = 5


def _id_of(item: Any) -> str:
    return str(item.get("id", ""))[:MAX_ID] if isinstance(item, dict) else ""


def _log_refused(before: dict[str, str], refused: dict[str, str]) -> None:
    """One log line for the blocks a new set refuses that the set before did not (a set
    that changes at every reply logged each of its refused blocks again, raw: the
    collector's ids made log lines and terminal escapes of their own). Those past
    MAX_BLOCKS are said once by :meth:`Blocklist._wait`."""
    new = [
        (action_id, why)
        for action_id, why in refused.items()
        if before.get(action_id) != why and not why.startswith("past the ")
    ]
    if not new:
        return
    shown = "; ".join(
        f"refusing block {visible(action_id[:100])}: {visible(why[:200])}"
        for action_id, why in new[:LOGGED_REFUSALS]
    )
    more = len(new) - LOGGED_REFUSALS
    logger.warning("sqreen: %s%s", shown, f" (and {more} more)" if more > 0 else "")
