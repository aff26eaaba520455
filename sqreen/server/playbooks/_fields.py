"""The fields a playbook reads from an event: in ``where``, ``group_by`` and ``distinct``.

``name``, ``ip``, ``app``, ``user`` (all the identifiers together), ``user.<key>``,
``properties.<key>``, ``request.<field>`` (``path``, ``route``, ``method``,
``user_agent``) and ``ip.<field>`` (what IP intelligence added: ``country``, ``kind``,
``asn``, ``score``). Values are compared as text, as the storage indexes them: a string as
it is, an integer in decimal, a boolean as ``true`` or ``false``.

As a group (``group_by``) or a counted value (``distinct``), ``ip`` is an IPv4 address or
the IPv6 network of a playbook's ``ipv6_prefix`` (``/64`` by default) holding the address:
one host or one home gets a whole ``/64``, and a per-address count would let it try once from
each of its 2^64 addresses. An IPv6 address that stands for an IPv4 client (IPv4-mapped,
Teredo, 6to4) is that IPv4 address. In ``where``, ``ip`` is the address as it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final, NamedTuple

from ..._block_index import Network, address_of, embedded_ipv4
from ..._blocking import fold_identifier
from ..._json import dumps_utf8
from ..blocks import INTERNAL_NETWORKS
from ..storage import clean

__all__ = [
    "IPV6_PREFIX",
    "AtLeast",
    "EventView",
    "FieldPath",
    "InNetwork",
    "group_covers",
    "internal_group",
    "ip_group",
    "matches",
    "parse_field",
    "spellings",
    "user_key",
]

REQUEST_FIELDS: Final = frozenset({"path", "route", "method", "user_agent"})
IP_FIELDS: Final = frozenset({"country", "kind", "asn", "score", "provider"})
KINDS: Final = ("name", "ip", "app", "user", "properties", "request", "ip_info")
#: The IPv6 network an address counts under by default, as a group or a distinct value.
IPV6_PREFIX: Final = 64
#: IPv6 networks whose addresses each stand for one IPv4 client of a translator (NAT64's
#: well-known and local-use prefixes): counted address by address, as the /64 of one is the
#: translator's, shared by all its clients. (Teredo and 6to4 addresses count as the IPv4
#: client they carry: :func:`~sqreen._block_index.embedded_ipv4`.)
TRANSLATED: Final = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48"))
#: Addresses remembered with their group, per reader (cleared when full).
IP_GROUPS_MAX: Final = 20_000


class EventView(NamedTuple):
    """What playbooks see of a stored event."""

    seq: int
    name: str
    ts_us: int  # the event's own time, never later than its receipt
    ip: str | None
    user: Mapping[str, str] | None
    properties: Mapping[str, Any]
    request: Mapping[str, Any] | None
    app: str | None = None
    ip_info: Mapping[str, Any] | None = None
    #: :func:`user_key` of ``user`` when known (else made when read: it is remembered).
    user_key: str | None = None


@dataclass(frozen=True, slots=True)
class FieldPath:
    kind: str  # one of KINDS
    key: str | None = None
    #: For ``ip`` as a group or a distinct value: the IPv6 network length an address counts
    #: under (None: the address itself, as in ``where``).
    ipv6_prefix: int | None = None
    #: Read case-folded in ``where``: ``ip.provider``, whose values are names in any case
    #: (``"tor"`` matches ``Tor``), as a country and a kind are; ``request.method``; a
    #: user's identifiers, folded as blocks compare them (``Admin`` is ``admin``).
    fold: bool = False

    def __str__(self) -> str:
        if self.kind == "ip_info":
            return f"ip.{self.key}"
        return self.kind if self.key is None else f"{self.kind}.{self.key}"

    @property
    def spec(self) -> str:
        """What it reads, as text: :func:`str`, and an IPv6 prefix other than the default
        (``ip/128``), so that playbooks counting IPv6 addresses differently share no stream."""
        prefix = self.ipv6_prefix
        return str(self) if prefix is None or prefix == IPV6_PREFIX else f"{self}/{prefix}"

    def reader(self) -> Callable[[EventView], str | None]:
        """:meth:`read` for this field, made once: an attribute read for ``name``, ``ip`` and
        ``app`` (the engine reads a group key of every event it looks at)."""
        if self.kind == "ip" and self.ipv6_prefix is not None and self.ipv6_prefix < 128:
            return _ip_group_reader(self.ipv6_prefix)
        if self.kind in ("name", "ip", "app"):
            return attrgetter(self.kind)
        if self.kind == "user":  # a group or a distinct value: folded (see user_key)
            return _user_key_of if self.key is None else _user_value_reader(self.key)
        return self.read

    def read(self, event: EventView) -> str | None:
        """This field of ``event`` as text, or None when the event has none."""
        kind = self.kind
        if kind == "ip":
            return event.ip
        if kind == "name":
            return event.name
        if kind == "user":
            user = event.user
            if not user:
                return None
            if self.key is not None:
                value = user.get(self.key)
                if self.fold and isinstance(value, str):  # (where: as blocks compare it)
                    return clean(fold_identifier(value))
                return value
            return event.user_key if event.user_key is not None else user_key(user)
        if kind == "properties":
            return _text(event.properties.get(self.key)) if self.key else None
        if kind == "app":
            return event.app
        if kind == "request":
            text = _text((event.request or {}).get(self.key)) if self.key else None
        else:
            text = _text((event.ip_info or {}).get(self.key)) if self.key else None
        return text.casefold() if self.fold and text is not None else text


#: Users seen lately -> their :func:`user_key` (cleared when full). An attack's batch names
#: hundreds of users, each read by two streams: a lookup is about a tenth of the JSON.
_USER_KEYS: dict[tuple[tuple[str, str], ...], str] = {}
USER_KEYS_MAX: Final = 20_000


def user_key(user: Mapping[str, str]) -> str:
    """All of a user's identifiers as one text (the group of ``group_by = "user"``), each
    value folded as blocks compare them (:func:`~sqreen._blocking.fold_identifier`): the
    spellings an app takes for one account (``Bob@Example.com ``, fullwidth letters)
    are one user, whose tries an attacker cannot spread over spellings."""
    items = tuple(user.items())
    try:
        found = _USER_KEYS.get(items)
    except TypeError:  # a value that is not text (not from the wire): not remembered
        return _folded_json(items)
    if found is None:
        if len(_USER_KEYS) >= USER_KEYS_MAX:
            _USER_KEYS.clear()
        found = _USER_KEYS[items] = _folded_json(items)
    return found


def _folded_json(items: tuple[tuple[str, object], ...]) -> str:
    return dumps_utf8(
        {k: fold_identifier(v) if isinstance(v, str) else v for k, v in sorted(items)}
    )


def spellings(events: Sequence[EventView], group_by: FieldPath) -> dict[str, dict[str, str]]:
    """The user group keys (of ``group_by``) of ``events``, each with its identifiers as the
    first event of it spelled them."""
    read = group_by.reader()
    out: dict[str, dict[str, str]] = {}
    for event in events:
        user = event.user
        if not user or (key := read(event)) is None or key in out:
            continue
        if group_by.key is None:
            out[key] = dict(user)
        elif isinstance(value := user.get(group_by.key), str):
            out[key] = {group_by.key: value}
    return out


def _user_value_reader(key: str) -> Callable[[EventView], str | None]:
    """A reader of the identifier ``key`` of an event's user, folded (as :func:`user_key`)."""

    def read(event: EventView) -> str | None:
        user = event.user
        value = user.get(key) if user else None
        return clean(fold_identifier(value)) if isinstance(value, str) else None

    return read


def _user_key_of(event: EventView) -> str | None:
    user = event.user
    if not user:
        return None
    if event.user_key is not None:
        return event.user_key
    try:  # the lookup of user_key inlined: this runs for every event a user stream reads
        found = _USER_KEYS.get(tuple(user.items()))
    except TypeError:
        found = None
    return found if found is not None else user_key(user)


def ip_group(ip: str, prefix: int) -> str:
    """The group of ``ip``: an IPv4 address as it is, an IPv6 address as the network of
    ``prefix`` bits holding it (``2001:db8:1:2::/64``; one of :data:`TRANSLATED` as itself);
    an IPv4-mapped, Teredo or 6to4 address as the IPv4 address of its client, which gets a
    Teredo address per port and a 6to4 ``/48`` (an IPv4 block covers them all: the SDK
    checks a Teredo or 6to4 address against IPv4 blocks); text that is no address, as it is."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip)
    except ValueError:
        return ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    client = embedded_ipv4(int(address))
    if client is not None:
        return str(ipaddress.IPv4Address(client))
    if any(address in network for network in TRANSLATED):
        return str(address)  # one IPv4 client each: its /64 is every client of a translator
    host_bits = 128 - prefix
    return str(ipaddress.IPv6Network(((int(address) >> host_bits) << host_bits, prefix)))


def group_covers(key: str, networks: Iterable[Network]) -> bool:
    """Whether the group ``key`` (an address, or an IPv6 network) is covered by one of
    ``networks``: an IPv6 group overlapping one; an IPv4 address in one, or pinned by an IPv6
    one made only of its Teredo or 6to4 addresses (its block would cover them). A wider IPv6
    network holds such addresses of every IPv4 address, and covers none of them. A NAT64
    address (counted as itself: one IPv4 client's) is covered by an IPv4 network holding
    the address it carries, as :func:`internal_group` reads it."""
    try:
        group = ipaddress.ip_network(key, strict=False)
    except ValueError:
        return False
    carried = _nat64_client(group)
    for network in networks:
        if network.version == group.version:
            if group.overlaps(network):
                return True
        elif group.num_addresses == 1 and _holds_client_of(network, int(group.network_address)):
            return True
        elif carried is not None and carried in network:
            return True
    return False


def _nat64_client(group: Network) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64 address (one, of :data:`_NAT64`) carries in its last 32 bits."""
    if group.version != 6 or group.num_addresses != 1:
        return None
    if not any(group.subnet_of(n) for n in _NAT64):  # type: ignore[arg-type]
        return None
    return ipaddress.IPv4Address(int(group.network_address) & 0xFFFFFFFF)


#: NAT64's prefixes (RFC 6052, RFC 8215's local use), whose addresses carry an IPv4
#: address in their last 32 bits; and the deprecated site-local IPv6 addresses.
_NAT64: Final = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SITE_LOCAL: Final = ipaddress.ip_network("fec0::/10")


def internal_group(key: str) -> bool:
    """Whether the group ``key`` of an ``ip`` playbook is a private, carrier-grade NAT or
    link-local address or network, in any of its IPv6 forms (mapped, 6to4, Teredo, NAT64,
    site-local): where a proxy the SDKs do not trust would be."""
    if group_covers(key, INTERNAL_NETWORKS):
        return True
    try:
        group = ipaddress.ip_network(key, strict=False)
    except ValueError:
        return False
    if group.version != 6:
        return False
    if group.subnet_of(_SITE_LOCAL):  # type: ignore[arg-type]
        return True
    carried = _nat64_client(group)
    return carried is not None and any(carried in n for n in INTERNAL_NETWORKS if n.version == 4)


def _holds_client_of(network: Network, ipv4: int) -> bool:
    """Whether ``network`` (IPv6) pins the IPv4 client ``ipv4``: every address in it a Teredo
    or 6to4 address of that client (6to4: inside its ``/48``; Teredo, whose client is the
    last 32 bits: that one address). A wider one (``2002::/16``, a Teredo server's ``/64``,
    ``::/0``) holds such an address of every IPv4 address: it does not make them all exempt."""
    if network.version != 6:
        return False
    # The client's bits are contiguous: pinned when the first and last addresses share them.
    first = embedded_ipv4(int(network.network_address))
    return first == ipv4 and embedded_ipv4(int(network.broadcast_address)) == ipv4


def _ip_group_reader(prefix: int) -> Callable[[EventView], str | None]:
    """A reader of :func:`ip_group` of an event's IP, remembering the IPv6 ones (an IPv4
    address costs a test)."""
    groups: dict[str, str] = {}

    def read(event: EventView) -> str | None:
        ip = event.ip
        if ip is None or ":" not in ip:
            return ip
        found = groups.get(ip)
        if found is None:
            if len(groups) >= IP_GROUPS_MAX:
                groups.clear()
            found = groups[ip] = ip_group(ip, prefix)
        return found

    return read


def _text(value: object) -> str | None:
    """A field's value as a group key or a distinct value: text as it is stored (a NUL as
    U+FFFD, :func:`~..storage.clean`: PostgreSQL refuses it in text, and one event's NUL
    failed the windows' transaction of its whole batch, every key of it uncounted)."""
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, int | float):
        return str(value)
    return None


def parse_field(value: object) -> FieldPath:
    """``"ip"``, ``"user.email"``, ``"properties.reason"``... as a :class:`FieldPath`;
    :class:`ValueError` naming what is accepted otherwise."""
    if not isinstance(value, str) or not value or len(value) > 140:
        raise ValueError("must be a field name such as ip, user, user.<key>, properties.<key>")
    head, dot, key = value.partition(".")
    if not dot:
        if head in ("name", "ip", "app", "user"):
            return FieldPath(head)
    elif key:
        if head in ("user", "properties"):
            return FieldPath(head, key)
        if head == "request" and key in REQUEST_FIELDS:
            return FieldPath(head, key)
        if head == "ip" and key in IP_FIELDS:
            return FieldPath("ip_info", key)
    raise ValueError(
        f"{value[:60]!r} is not a field: use name, ip, app, user, user.<key>, "
        f"properties.<key>, request.{{{','.join(sorted(REQUEST_FIELDS))}}} or "
        f"ip.{{{','.join(sorted(IP_FIELDS))}}}"
    )


class AtLeast(str):
    """A ``where`` value that is a lower bound (``"ip.score" = { at_least = 60 }``): a number
    field matches when it is at least :attr:`bound`. Its text, ``>=60``, keeps two playbooks
    with ``= 60`` and ``at_least = 60`` from sharing a stream (streams are keyed by text)."""

    bound: float

    def __new__(cls, bound: float) -> AtLeast:
        text = f">={int(bound) if float(bound).is_integer() else bound}"
        made = super().__new__(cls, text)
        made.bound = float(bound)
        return made

    def holds(self, value: str) -> bool:
        try:
            return float(value) >= self.bound
        except ValueError:
            return False


class InNetwork(str):
    """A ``where`` value of ``ip`` that is a network (``ip = "10.0.0.0/8"``): an address
    matches when the network holds it. Its text is the network's."""

    version: int
    prefix: int  # the network's address, shifted right past its host bits
    shift: int

    def __new__(cls, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> InNetwork:
        made = super().__new__(cls, network.with_prefixlen)
        made.version = network.version
        made.shift = network.max_prefixlen - network.prefixlen
        made.prefix = int(network.network_address) >> made.shift
        return made

    def holds(self, value: str) -> bool:
        found = address_of(value)
        return (
            found is not None and found[0] == self.version and found[1] >> self.shift == self.prefix
        )


def matches(where: tuple[tuple[FieldPath, frozenset[str]], ...], event: EventView) -> bool:
    """Whether ``event`` has, for each field of ``where``, one of its values (or a number at
    least an :class:`AtLeast` bound, or an address in an :class:`InNetwork`, among them)."""
    for path, wanted in where:
        value = path.read(event)
        if value in wanted:
            continue
        if value is None or not any(
            isinstance(w, AtLeast | InNetwork) and w.holds(value) for w in wanted
        ):
            return False
    return True
