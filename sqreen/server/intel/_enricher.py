"""The IP intelligence enricher: ``ip_info`` for every event with an address.

For each event of a batch whose ``request.ip`` is an address (:func:`parse_address`), the
enrichment gets ``ip_info``::

    {"country": "GB", "kind": "hosting", "provider": "Google", "city": "London",
     "latitude": 51.5142, "longitude": -0.0931, "accuracy_radius": 10, "asn": 15169,
     "score": 25, "reasons": ["hosting"]}

each key absent when unknown, ``score`` and ``reasons`` always there. Private, loopback and
reserved addresses get that ``kind`` and are looked up nowhere. Sources, in order: the
``--geoip-db`` files (country, city, coordinates, accuracy, ASN; for each field the first
file that has it), ``iptocc`` for the country when no file gave one, ``iporigin`` for the
kind and provider (else the ASN's organisation as the provider). See :mod:`._score` for the
score. What data files say of an address is cached (bounded; dropped whole when full); the
score is worked out for each event, since it depends on what the collector did since.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..._json import Encoded
from ._address import Address, parse_address, special_kind
from ._geoip import GeoIpDatabase, open_geoip
from ._score import KIND_POINTS, Reputation, ReputationSource, threat_score
from ._sources import Countries, NetworkKinds

if TYPE_CHECKING:
    from ..pipeline import Batch

__all__ = ["IP_INFO_KEYS", "IpIntel"]

#: Every key ``ip_info`` may hold.
IP_INFO_KEYS: Final = (
    "country",
    "kind",
    "provider",
    "city",
    "latitude",
    "longitude",
    "accuracy_radius",
    "asn",
    "score",
    "reasons",
)
CACHE_SIZE: Final = 65_536
#: The score of each kind alone, its reasons list shared by every cached ``ip_info`` (never
#: handed out: each event gets a copy), so an uncached lookup makes no list.
_KIND_SCORES: Final = {kind: threat_score(kind, False, False) for kind in KIND_POINTS}
_NO_REASONS: Final[list[str]] = []
_MISSING: Final[Any] = object()
#: What a file gives, taken together from the first file that has the group's first field
#: (a radius from one file never goes with coordinates from another).
_GEO_GROUPS: Final = (
    ("country",),
    ("city",),
    ("latitude", "longitude", "accuracy_radius"),
    ("asn",),
)


#: What no file says (never changed: a file's answer is a new dict).
_NOWHERE: Final[tuple[dict[str, Any], None]] = ({}, None)


def _merge(answers: Iterable[dict[str, Any] | None]) -> tuple[dict[str, Any], str | None]:
    """What several files say of one address: for each group of fields, the first file's
    that has it; the provider, the first AS organisation."""
    out: dict[str, Any] = {}
    as_org = None
    for got in answers:
        if not got:
            continue
        if not out:  # the first file with an answer: all of it (the usual case)
            out = got
            as_org = out.pop("as_org", None)
            continue
        for group in _GEO_GROUPS:
            if group[0] in got and group[0] not in out:
                for key in group:
                    if key in got:
                        out[key] = got[key]
        as_org = as_org or got.get("as_org")
    return out, as_org


def _own(
    out: dict[str, Any],
    country: str | None,
    kind: tuple[str, str | None] | None,
    as_org: str | None,
) -> list[Any]:
    """The memo of ``out`` (what files said) completed with the country, kind and provider,
    in the order every ``ip_info`` has its keys (its JSON is stored as it is)."""
    if country is not None:
        out["country"] = country
    if kind is None:
        if as_org:
            out["provider"] = as_org
        out["score"], out["reasons"] = 0, _NO_REASONS
    elif kind[1] is None:  # private, loopback, reserved
        out["kind"] = kind[0]
        out["score"], out["reasons"] = 0, _NO_REASONS
    else:
        out["kind"], out["provider"] = kind
        out["score"], out["reasons"] = _KIND_SCORES.get(kind[0], (0, _NO_REASONS))
    return [out, None]


class IpIntel:
    """The enricher (an :class:`~sqreen.server.pipeline.Enricher`): see the module."""

    def __init__(
        self,
        geoip: Sequence[GeoIpDatabase] = (),
        *,
        reputation: Reputation | None = None,
        countries: Countries | None = None,
        kinds: NetworkKinds | None = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.geoip = tuple(geoip)
        self.reputation = reputation
        self.countries = countries if countries is not None else Countries()
        self.kinds = kinds if kinds is not None else NetworkKinds()
        self.cache_size = cache_size
        self._cache: dict[str, tuple[list[Any], Address] | None] = {}
        self._shared: dict[tuple[Any, ...], list[Any]] = {}

    @classmethod
    def open(
        cls, paths: Iterable[str] = (), *, reputation: ReputationSource | None = None
    ) -> IpIntel:
        """The enricher with the ``.mmdb`` files at ``paths`` (:class:`~._geoip.GeoIpError`
        for one that cannot be used) and, given the storage, the collector's reputation."""
        opened: list[GeoIpDatabase] = []
        try:
            for path in paths:
                opened.append(open_geoip(path))
        except BaseException:
            for db in opened:
                db.close()
            raise
        return cls(opened, reputation=None if reputation is None else Reputation(reputation))

    def __call__(self, batch: Batch) -> None:
        if self.reputation is not None:
            self.reputation.refresh()
        cache, give = self._cache, self._give
        waiting: list[tuple[dict[str, Any], str]] = []  # events whose address is new
        for event, fields in batch:
            request = event["request"]
            if request is None:
                continue
            ip = request.get("ip")
            if type(ip) is not str:  # what json.loads makes is never a subclass
                found = None if ip is None else self.info(ip)
                if found is not None:
                    fields["ip_info"] = found
                continue
            entry = cache.get(ip, _MISSING)
            if entry is _MISSING:
                waiting.append((fields, ip))
            elif entry is not None:
                fields["ip_info"] = give(entry)
        if not waiting:
            return
        # The batch's new addresses, each looked up once, all of them together.
        entries = self._fill(dict.fromkeys([ip for _, ip in waiting]))
        for fields, ip in waiting:
            entry = entries[ip]
            if entry is not None:
                fields["ip_info"] = give(entry)

    def info(self, ip: object) -> dict[str, Any] | None:
        """``ip_info`` for the text ``ip``, or None when it is no address."""
        if not isinstance(ip, str):
            return None
        ip = str(ip)
        entry = self._cache.get(ip, _MISSING)
        if entry is _MISSING:
            entry = self._fill((ip,))[ip]
        return None if entry is None else self._give(entry)

    def _give(self, entry: tuple[list[Any], Address]) -> dict[str, Any]:
        """An event's ``ip_info`` from the cache's ``entry`` for its address."""
        memo = entry[0]
        known: dict[str, Any] = memo[0]
        # The kind's score is in the cache; the collector's memory adds to it (rarely).
        reputation = self.reputation
        if reputation is not None and reputation.holds_any:
            blocked, alerted = reputation.check(entry[1])
            if blocked or alerted:
                score, reasons = threat_score(known.get("kind"), blocked, alerted)
                return {**known, "score": score, "reasons": reasons}
        # Each event's own copy (a later enricher may change it), with its own list, sharing
        # the JSON text its storage writes (encoded once a memo, not once an event).
        copy = Encoded(known)
        copy.memo = memo
        copy["reasons"] = known["reasons"].copy()
        return copy

    def _fill(self, texts: Iterable[str]) -> dict[str, tuple[list[Any], Address] | None]:
        """Look up ``texts`` (distinct, none cached), cache and return each one's entry
        (``(memo, address)``, or None for no address: see :meth:`_memo`). Each source is
        asked about all the public ones in one call (a Python call an address and source
        was a third of a new address's cost: measured)."""
        found: dict[str, tuple[list[Any], Address] | None] = {}
        public: list[str] = []
        addresses: list[Address] = []
        memo = self._memo
        for text in texts:
            address = parse_address(text)
            if address is None:
                found[text] = None
                continue
            special = special_kind(address)
            if special is not None:
                found[text] = (memo(None, (special, None), None), address)
            else:
                public.append(text)
                addresses.append(address)
        if addresses:
            geo = self._geo(addresses)
            unplaced = [
                a for a, (out, _) in zip(addresses, geo, strict=True) if "country" not in out
            ]
            countries = iter(self.countries.many(unplaced) if unplaced else ())
            kinds = self.kinds.many(addresses)
            for text, address, (out, as_org), kind in zip(
                public, addresses, geo, kinds, strict=True
            ):
                country = next(countries) if "country" not in out else None
                if out:  # a file placed it: its own ip_info
                    found[text] = (_own(out, country, kind, as_org), address)
                else:
                    found[text] = (memo(country, kind, as_org), address)
        # Bounded as ever: dropped whole when full (a batch holds far fewer addresses).
        if len(self._cache) + len(found) > self.cache_size:
            self._cache.clear()
            self._shared.clear()
        self._cache.update(found)
        return found

    def _memo(
        self, country: str | None, kind: tuple[str, str | None] | None, as_org: str | None
    ) -> list[Any]:
        """The memo (``[ip_info, its JSON once the storage asks]``, :class:`Encoded`'s) of
        every address no file placed with this country, kind and provider: one shared by
        all of them, so a new address makes no dict, and the storage encodes the JSON once
        for all (a scan's new addresses fall in a few hundred such groups). Cache entries
        then hold one container each, not three (fewer for the garbage collector)."""
        key = (country, kind, as_org)
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = _own({}, country, kind, as_org)
        return shared

    def _geo(self, addresses: Sequence[Address]) -> list[tuple[dict[str, Any], str | None]]:
        """What the ``.mmdb`` files say of each of ``addresses``, and its AS organisation."""
        if not self.geoip:
            return [_NOWHERE] * len(addresses)
        answers = [db.lookup_many(addresses) for db in self.geoip]
        if len(answers) == 1:  # the usual case
            return [(got, got.pop("as_org", None)) if got else ({}, None) for got in answers[0]]
        return [_merge(gots) for gots in zip(*answers, strict=True)]

    def sources(self) -> dict[str, Any]:
        """The data in use and its versions (``/healthz``, the explorer's agents page)."""
        return {
            "country": self.countries.describe(),
            "network_kind": self.kinds.describe(),
            "geoip": [db.describe() for db in self.geoip],
        }

    def close(self) -> None:
        for db in self.geoip:
            db.close()
