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
        self._cache: dict[str, list[Any] | None] = {}

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
        info = self.info
        for event, fields in batch:
            request = event["request"]
            if request is not None:
                found = info(request.get("ip"))
                if found is not None:
                    fields["ip_info"] = found

    def info(self, ip: object) -> dict[str, Any] | None:
        """``ip_info`` for the text ``ip``, or None when it is no address."""
        if type(ip) is not str:  # what json.loads makes is never a subclass
            if not isinstance(ip, str):
                return None
            ip = str(ip)
        entry = self._cache.get(ip, _MISSING)
        if entry is _MISSING:
            found = self._lookup(ip)
            # [ip_info as the data says, its JSON once the storage asks, the address]: one
            # list is both the cache's entry and the copies' shared memo (fewer objects for
            # the garbage collector, which took 40 % of an uncached lookup: measured).
            entry = None if found is None else [found[1], None, found[0]]
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[ip] = entry
        if entry is None:
            return None
        known: dict[str, Any] = entry[0]
        # The kind's score is in the cache; the collector's memory adds to it (rarely).
        reputation = self.reputation
        if reputation is not None and reputation.holds_any:
            blocked, alerted = reputation.check(entry[2])
            if blocked or alerted:
                score, reasons = threat_score(known.get("kind"), blocked, alerted)
                return {**known, "score": score, "reasons": reasons}
        # Each event's own copy (a later enricher may change it), with its own list, sharing
        # the JSON text its storage writes (encoded once an address, not once an event).
        copy = Encoded(known)
        copy.memo = entry
        copy["reasons"] = known["reasons"].copy()
        return copy

    def _lookup(self, ip: str) -> tuple[Address, dict[str, Any]] | None:
        address = parse_address(ip)
        if address is None:
            return None
        special = special_kind(address)
        if special is not None:
            return address, {"kind": special, "score": 0, "reasons": _NO_REASONS}
        out: dict[str, Any] = {}
        as_org = None
        for db in self.geoip:
            got = db.lookup(address.text, address.version)
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
        if "country" not in out:
            country = self.countries(address)
            if country is not None:
                out["country"] = country
        kind = self.kinds(address)
        if kind is not None:
            out["kind"], out["provider"] = kind
            out["score"], out["reasons"] = _KIND_SCORES.get(kind[0], (0, _NO_REASONS))
        else:
            if as_org:
                out["provider"] = as_org
            out["score"], out["reasons"] = 0, _NO_REASONS
        return address, out

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
