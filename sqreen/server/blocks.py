"""Blocks: the one service that validates, creates and lifts them.

Blocks come from the JSON API, the explorer's form, the CLI and playbooks; each turns its own
input into a :class:`BlockRequest` with :func:`block_request` (or :func:`user_block` /
:func:`ip_block`) and hands it to :class:`BlockService`, and only maps :class:`InvalidBlock`
(which names the field) to its own kind of error.

The rules mirror what every SDK enforces on the action set it receives: an SDK refuses a
block it considers dangerous, so the collector refuses it first, with a clear message, rather
than report "blocked" for a block nobody enforces. A user block names a non-empty set of
identifiers, checked with the SDK's own identifier rules; an IP block is a network no wider
than a /16 (IPv4) or a /48 (IPv6), host bits cleared, that covers no loopback address (every
SDK trusts loopback as a proxy by default, and refuses a block that would lock out every
client behind one). A duration is from 1 second to 3650 days, written in a few digits; a
reason is one line of at most 512 characters, without control characters (it is printed in
terminals and pages, and PostgreSQL refuses NUL). The durations and times that blocks take
are read in :mod:`._block_input` (imported from here), for the CLI and the explorer alike.

A block on a target that an active block already covers (the same network, the same
identifiers) extends that block instead of adding a second one: :meth:`BlockService.apply`
says which it did (``created``, ``extended`` or ``kept``), in storage's one piece of code
that places blocks for playbooks too.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final
from unicodedata import category

from .._block_index import MIN_PREFIX, NAT64_MIN_PREFIX, too_wide
from .._client_ip import DEFAULT_TRUSTED_PROXIES
from .._event import InvalidEvent, validate_user
from .._text import first_hidden
from ._block_input import InvalidBlock, parse_duration, parse_pairs, parse_when
from .storage import (
    MAX_TARGET_BYTES,
    Block,
    BlockSpec,
    BlockType,
    ControlStore,
    PlacedBlock,
    TooManyBlocks,
    block_target,
)

__all__ = [
    "ENDED_LISTED",
    "MAX_ACTIVE_BLOCKS",
    "MAX_ENDED_LISTED",
    "BlockLimitReached",
    "BlockRequest",
    "BlockService",
    "Duration",
    "InvalidBlock",
    "PlacedBlock",
    "block_from_json",
    "block_request",
    "block_warnings",
    "ip_block",
    "parse_block_id",
    "parse_duration",
    "parse_network",
    "parse_pairs",
    "parse_when",
    "user_block",
]

#: The most blocks in force at once, by default (``sqreen serve --max-blocks``, env
#: ``SQREEN_MAX_BLOCKS``): every SDK process holds them all, and a new one receives them all
#: in its first reply (about 150 bytes a block as playbooks word them: 1.5 MB for 10 000).
MAX_ACTIVE_BLOCKS: Final = 10_000
#: Lifted and expired blocks a listing adds to those in force (``GET /v1/blocks?all=1``,
#: ``sqreen blocks --all``), by default and at most (``limit=``, ``--limit``): the table keeps
#: every block ever made, one an attacker for a playbook.
ENDED_LISTED: Final = 1000
MAX_ENDED_LISTED: Final = 10_000
MAX_REASON: Final = 512
#: What :func:`~sqreen._text.first_hidden` finds, by Unicode category, for error messages.
_KINDS: Final = {
    "Cs": "an unpaired surrogate",
    "Cf": "a bidirectional control",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
#: The bidirectional marks, embeddings, overrides and isolates (the other format characters
#: ``first_hidden`` finds show nothing: zero-width spaces and joiners, a soft hyphen...).
_BIDI: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: The networks every SDK trusts as proxies with its default settings (the non-IP entry is
#: Unix sockets); an SDK refuses a block that overlaps one of them.
LOOPBACK: Final = tuple(
    ipaddress.ip_network(proxy) for proxy in DEFAULT_TRUSTED_PROXIES if proxy != "unix"
)
#: Where proxies and load balancers usually are (private, carrier-grade NAT and link-local
#: networks, as the SDK's untrusted-proxy warning reads them): no SDK trusts them by default,
#: but one configured to (``SQREEN_TRUSTED_PROXIES=10.0.0.0/8``) refuses a block covering
#: them, and one behind an untrusted proxy there sees that proxy as every client.
INTERNAL_NETWORKS: Final = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)
#: The keys of a block in JSON (see :func:`block_from_json`).
JSON_KEYS: Final = frozenset({"type", "user", "ip", "duration", "reason"})
#: A block id as text: digits, within a 64-bit integer.
_BLOCK_ID_RE: Final = re.compile(r"[0-9]{1,18}")

#: How long a block lasts: a timedelta, seconds, or text like ``15m``, ``1h``, ``7d``.
Duration = timedelta | int | float | str


class BlockLimitReached(InvalidBlock):
    """A new block refused because ``limit`` blocks are in force already."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            "blocks",
            f"{limit} or more blocks are in force, and this collector allows {limit} at most "
            "(--max-blocks, env SQREEN_MAX_BLOCKS): lift some, or wait for some to expire",
        )
        self.limit = limit


def validate_user_spec(user: object) -> dict[str, str]:
    if isinstance(user, Mapping) and not isinstance(user, dict):
        user = dict(user)
    try:
        checked = validate_user(user, "user")
    except InvalidEvent as exc:
        raise InvalidBlock(exc.field, str(exc).removeprefix(f"{exc.field}: ")) from None
    if not checked:
        raise InvalidBlock("user", "a user block needs at least one identifier, e.g. uid=42")
    for key, value in checked.items():
        if not value.strip():  # identifiers are compared stripped: it would match nobody
            raise InvalidBlock(f"user.{key}", "must not be empty or only spaces")
    # Stored folded and indexed: a block on more cannot be looked up (nor, on PostgreSQL,
    # stored), whoever asks; NFKC makes 18 characters of some one.
    size = len(block_target("block_user", None, checked).encode())
    if size > MAX_TARGET_BYTES:
        raise InvalidBlock(
            "user",
            f"{size} bytes once folded and escaped, at most {MAX_TARGET_BYTES}: "
            "block it by fewer or shorter identifiers",
        )
    return checked


def parse_network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``value`` as a network, host bits cleared (``203.0.113.7/24`` -> ``203.0.113.0/24``),
    without the rules of a new block: also what finds an existing one."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidBlock("ip", "must be an IP address or a CIDR network")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise InvalidBlock("ip", f"{value!r} is not an IP address or a CIDR network") from None


def validate_network(value: object) -> str:
    """The normalised CIDR of a new IP block, which every SDK would enforce."""
    if isinstance(value, str) and "%" in value:
        # Python reads a zone (fe80::1%eth0) into the network; no SDK does, nor should.
        raise InvalidBlock(
            "ip", "an IPv6 zone (%...) names an interface, not a host: write the address alone"
        )
    network = parse_network(value)
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        raise InvalidBlock("ip", "write IPv4-mapped addresses as IPv4")
    least = MIN_PREFIX[network.version]
    if network.prefixlen < least:
        raise InvalidBlock(
            "ip",
            f"/{network.prefixlen} is too wide: IPv{network.version} blocks are /{least} or "
            "narrower",
        )
    if too_wide(network):
        raise InvalidBlock(
            "ip",
            f"{network} holds the NAT64 addresses of more than a /{MIN_PREFIX[4]} of IPv4 "
            f"clients (each one's last 32 bits): such blocks are /{NAT64_MIN_PREFIX} or "
            "narrower",
        )
    for loopback in LOOPBACK:
        if network.version == loopback.version and network.overlaps(loopback):
            raise InvalidBlock(
                "ip",
                f"{network} covers loopback ({loopback}): every SDK trusts loopback as a "
                "proxy by default and refuses such a block, so it would never be enforced",
            )
    return str(network)


def block_warnings(request: BlockRequest) -> list[str]:
    """What to tell whoever places this (valid) block before they rely on it: an IP block on
    a private, carrier-grade NAT or link-local network (:data:`INTERNAL_NETWORKS`) may be
    refused by the SDKs that trust a proxy there (the explorer's blocks and agents pages then
    say so), or, where a proxy there is not trusted, refuse every client behind it."""
    if request.ip is None:
        return []
    network = ipaddress.ip_network(request.ip)
    for internal in INTERNAL_NETWORKS:
        if network.version == internal.version and network.overlaps(internal):
            return [
                f"{network} is in {internal}, where proxies and load balancers usually are: "
                "an SDK that trusts a proxy there refuses this block (the explorer's blocks "
                "and agents pages say which), and one behind a proxy there that it does not "
                "trust sees that proxy as every client, and would refuse them all"
            ]
    return []


def validate_reason(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_REASON:
        raise InvalidBlock("reason", f"must be a string of at most {MAX_REASON} characters")
    # Control characters (NUL, escapes, newlines...), lone surrogates (no database can store
    # them), line separators and the bidirectional controls that make text read otherwise.
    char = first_hidden(value)
    if char is not None:
        kind = _KINDS.get(category(char), "a control character")
        if category(char) == "Cf" and char not in _BIDI:
            kind = "an invisible character"
        raise InvalidBlock(
            "reason", f"must be one line of text: U+{ord(char):04X} ({kind}) is not allowed"
        )
    return value


@dataclass(frozen=True, slots=True)
class BlockRequest:
    """A validated block, ready for :meth:`BlockService.create`: who or what (``user`` for a
    ``block_user``, ``ip``, a normalised CIDR, for a ``block_ip``), for how long (None: until
    lifted) and why. Made by :func:`block_request`, :func:`user_block` or :func:`ip_block`."""

    type: BlockType
    user: dict[str, str] | None = None
    ip: str | None = None
    duration: timedelta | None = None
    reason: str = ""


def block_request(
    type: object,
    *,
    user: object = None,
    ip: object = None,
    duration: object = None,
    reason: object = None,
) -> BlockRequest:
    """Validate a block from any input (typed values, a JSON body, form text already split):
    ``type`` is ``block_user`` (with ``user``) or ``block_ip`` (with ``ip``). Raises
    :class:`InvalidBlock` naming the field at fault."""
    span = None if duration is None else parse_duration(duration)
    why = validate_reason(reason)
    if type == "block_user":
        return BlockRequest("block_user", user=validate_user_spec(user), duration=span, reason=why)
    if type == "block_ip":
        return BlockRequest("block_ip", ip=validate_network(ip), duration=span, reason=why)
    raise InvalidBlock("type", "must be 'block_user' or 'block_ip'")


def block_from_json(obj: object) -> BlockRequest:
    """A block as JSON spells it (``POST /v1/blocks``): an object with ``type``, ``user`` or
    ``ip``, and optionally ``duration`` (seconds or ``1h``) and ``reason``."""
    if not isinstance(obj, dict):
        raise InvalidBlock("body", "must be a JSON object")
    unknown = set(obj) - JSON_KEYS
    if unknown:
        raise InvalidBlock("body", f"unknown keys {sorted(unknown)[:5]}")
    return block_request(
        obj.get("type"),
        user=obj.get("user"),
        ip=obj.get("ip"),
        duration=obj.get("duration"),
        reason=obj.get("reason"),
    )


def user_block(
    user: Mapping[str, str], *, duration: Duration | None = None, reason: str = ""
) -> BlockRequest:
    """A validated block of the user whose identifiers include all of ``user``."""
    return block_request("block_user", user=user, duration=duration, reason=reason)


def ip_block(network: str, *, duration: Duration | None = None, reason: str = "") -> BlockRequest:
    """A validated block of an address or a network (``203.0.113.7``, ``2001:db8::/48``)."""
    return block_request("block_ip", ip=network, duration=duration, reason=reason)


def parse_block_id(text: str) -> int | None:
    """The block id written in ``text`` (a URL segment, a CLI argument), or None when it is
    not one (then no block has it)."""
    return int(text) if _BLOCK_ID_RE.fullmatch(text) else None


class BlockService:
    """Creating and lifting blocks, for every caller: the JSON API, the explorer, the CLI,
    and playbooks::

        blocks.create(user_block({"uid": "42"}, duration=timedelta(minutes=15),
                                 reason="10 failed logins"), created_by="playbook:7")

    Each method is one transaction of the control store, which bumps the action set's version
    with it: every SDK receives the change in its next reply. Blocking: call it from a thread
    in async code.

    At most ``max_active`` blocks are in force at once (None: no limit): past it,
    :meth:`create` raises :class:`BlockLimitReached` (an :class:`InvalidBlock` naming the
    limit), unless ``created_by`` is a playbook's (``playbook:<id>``): then the new block
    replaces the oldest playbook block in force (see ``storage/_blocks.py``),
    and only with none (every block in force a person's) is it refused.
    """

    def __init__(self, store: ControlStore, max_active: int | None = MAX_ACTIVE_BLOCKS) -> None:
        self.store = store
        self.max_active = max_active

    def apply(self, request: BlockRequest, *, created_by: str) -> PlacedBlock:
        """Place a block; ``created_by`` says who (``cli:alice``, ``api-key:3:ops``,
        ``explorer:admin``, ``playbook:7``). When an active block already covers the same
        network or user, that block is extended to last as long as asked (``extended``), or
        kept as it is when it already does (``kept``); else a new one is ``created``. The
        request is checked again (a few microseconds), so that even one built by hand cannot
        store a block SDKs refuse."""
        if not created_by:
            raise ValueError("created_by: say who creates the block, e.g. 'playbook:7'")
        request = block_request(
            request.type,
            user=request.user,
            ip=request.ip,
            duration=request.duration,
            reason=request.reason,
        )
        spec = BlockSpec(
            request.type,
            request.user,
            request.ip,
            request.duration,
            request.reason,
            created_by,
            self.max_active,
        )
        try:
            return self.store.place_block(spec)
        except TooManyBlocks as exc:
            raise BlockLimitReached(exc.limit) from None

    def create(self, request: BlockRequest, *, created_by: str) -> Block:
        """:meth:`apply`, for a caller that needs only the block in force."""
        return self.apply(request, created_by=created_by).block

    def lift(self, block_id: int, *, lifted_by: str) -> Block | None:
        """Lift an active block; None when no active block has this id."""
        return self.store.lift_block(block_id, lifted_by)
