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
score. What data files say of an address is cached (bounded; dropped whole when full), as an
immutable ``ip_info`` shared by every event from that address, and from every address with
the same answer when no file placed it (:mod:`._info`: an event holds it without a copy; to
change it, replace it). While the collector holds recent blocks or alerts, the score is
worked out for each event, since it depends on what the collector did since.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ._address import Parsed, parse_address, parse_many
from ._geoip import GeoIpDatabase, GeoIpError, Placed, open_geoip
from ._info import IpInfo, Reasons
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
#: The score of each kind alone, its reasons shared by every ``ip_info`` of that kind
#: (:class:`~._info.Reasons`: they refuse changes), so a lookup makes no list.
_KIND_SCORES: Final = {
    kind: (score, Reasons(reasons))
    for kind, (score, reasons) in ((k, threat_score(k, False, False)) for k in KIND_POINTS)
}
_NO_REASONS: Final = Reasons()
_MISSING: Final[Any] = object()
#: What a file gives, taken together from the first file that has the group's first field
#: (a radius from one file never goes with coordinates from another).
_GEO_GROUPS: Final = (
    ("country",),
    ("city",),
    ("latitude", "longitude", "accuracy_radius"),
    ("asn",),
)


def _merge(answers: Sequence[Placed | None]) -> Placed | None:
    """What several files say of one address: for each group of fields, the first file's
    that has it; the provider, the first AS organisation."""
    out: dict[str, Any] = {}
    as_org = None
    for got in answers:
        if got is None:
            continue
        as_org = as_org or got.as_org
        if not out:  # the first file with fields: all of them (the usual case)
            out = dict(got.fields)
            continue
        for group in _GEO_GROUPS:
            if group[0] in got.fields and group[0] not in out:
                for key in group:
                    if key in got.fields:
                        out[key] = got.fields[key]
    if as_org:
        out["as_org"] = as_org
    return Placed(out) if out else None


def _own(
    out: dict[str, Any],
    country: str | None,
    kind: tuple[str, str | None] | None,
    as_org: str | None,
) -> IpInfo:
    """``out`` (what files said, or nothing) completed with the country, kind and provider,
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
    return IpInfo(out)


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
        self._cache: dict[str, IpInfo | None] = {}
        self._shared: dict[tuple[Any, ...], IpInfo] = {}
        #: What several files say together, by what each says (:func:`_merge`).
        self._merged: dict[tuple[Placed | None, ...], Placed | None] = {}
        #: The addresses as the events gave them (not their IPv4 client: a block or alert on
        #: a NAT64 address is on that address), parsed for :attr:`reputation` checks.
        self._where: dict[str, Parsed] = {}

    @classmethod
    def open(
        cls, paths: Iterable[str] = (), *, reputation: ReputationSource | None = None
    ) -> IpIntel:
        """The enricher with the ``.mmdb`` files at ``paths`` (:class:`~._geoip.GeoIpError`
        for one that cannot be used) and, given the storage, the collector's reputation."""
        opened: list[GeoIpDatabase] = []
        files: dict[tuple[int, int], str] = {}
        try:
            for path in paths:
                db = open_geoip(path)
                opened.append(db)
                found = os.stat(path)
                first = files.setdefault((found.st_dev, found.st_ino), str(path))
                if len(opened) > len(files):
                    raise GeoIpError(
                        f"{path}: given twice (first as {first}): each file once, in the order "
                        "their answers should win"
                    )
        except BaseException:
            for db in opened:
                db.close()
            raise
        return cls(opened, reputation=None if reputation is None else Reputation(reputation))

    def __call__(self, batch: Batch) -> None:
        # Most of the time the collector has blocked or alerted on nothing lately: then each
        # event holds its address's cached ip_info itself (no call, no copy an event).
        reputation = self.reputation
        scored = None
        if reputation is not None:
            reputation.refresh()
            if reputation.holds_any:
                scored = self._scored
        cache = self._cache
        waiting: list[str] = []  # the events' new addresses, and their enrichment dicts
        waiting_fields: list[dict[str, Any]] = []
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
            info = cache.get(ip, _MISSING)
            if info is _MISSING:
                waiting.append(ip)
                waiting_fields.append(fields)
            elif info is not None:
                fields["ip_info"] = info if scored is None else scored(ip, info)
        if not waiting:
            return
        # The batch's new addresses, each looked up once, all of them together.
        self._fill(dict.fromkeys(waiting))
        for fields, ip in zip(waiting_fields, waiting, strict=True):
            info = cache[ip]
            if info is not None:
                fields["ip_info"] = info if scored is None else scored(ip, info)

    def info(self, ip: object) -> dict[str, Any] | None:
        """``ip_info`` for the text ``ip``, or None when it is no address (shared: see
        :mod:`._info`)."""
        if not isinstance(ip, str):
            return None
        ip = str(ip)
        reputation = self.reputation
        scoring = reputation is not None and reputation.holds_any
        if ip not in self._cache:
            self._fill((ip,))
        info = self._cache[ip]
        if info is None or not scoring:
            return info
        return self._scored(ip, info)

    def _scored(self, ip: str, info: IpInfo) -> dict[str, Any]:
        """``info`` (of the address ``ip``) with what the collector did lately to that
        address (its own dict when that adds to the score: rarely)."""
        assert self.reputation is not None
        address = self._where.get(ip)
        if address is None:  # only while the collector holds a recent block or alert
            address = parse_address(ip)
            assert address is not None  # it has an ip_info
            self._where[ip] = address
        blocked, alerted = self.reputation.check(address)
        if blocked or alerted:
            score, reasons = threat_score(info.get("kind"), blocked, alerted)
            return {**info, "score": score, "reasons": reasons}
        return info

    def _fill(self, texts: Collection[str]) -> None:
        """Look up ``texts`` (distinct, none cached) and cache each one's ``ip_info`` (None
        for no address). Each source is asked about all the public ones in one call
        (a Python call an address and source was a third of a new address's cost:
        measured). Addresses no file placed share the ``ip_info`` of their country, kind
        and provider (:meth:`_share`). An address costs the cache one entry: its text to a
        shared object, or to its own ``ip_info`` when a file placed it (no container of its
        own, for the garbage collector to walk, otherwise)."""
        # Bounded as ever: dropped whole when full (a batch holds far fewer addresses).
        # The shared ip_info (and the files' merged answers) are bounded apart: a scan of
        # new addresses fills the cache of addresses every CACHE_SIZE events, and dropping
        # them with it made each record's ip_info, its JSON and its columns again (a
        # dense City file, every address new: about 2 µs an event, measured over HTTP).
        cache = self._cache
        if len(cache) + len(texts) > self.cache_size:
            cache.clear()
            self._where.clear()
        if max(len(self._shared), len(self._merged)) + len(texts) > self.cache_size:
            self._shared.clear()
            self._merged.clear()
        public_texts, public, special, bad = parse_many(texts)
        cache.update(dict.fromkeys(bad))
        share = self._share
        for text, _, kind in special:
            cache[text] = share((None, (kind, None), None), None)
        if public:
            placed = self._geo(public)
            unplaced = (  # their canonical texts (not "::ffff:a.b.c.d")
                [address[2] for address in public]
                if not self.geoip
                else [
                    address[2]
                    for address, got in zip(public, placed, strict=True)
                    if got is None or "country" not in got.fields
                ]
            )
            countries = iter(self.countries.many(unplaced) if unplaced else ())
            kinds = self.kinds.many(public)
            shared = self._shared
            for text, got, network in zip(public_texts, placed, kinds, strict=True):
                out = None
                if got is None:  # the usual case: no file has it
                    key: tuple[Any, ...] = (next(countries), network, None)
                elif got.fields:  # a file placed it: shared by the addresses of its record
                    out = got.fields
                    country = next(countries) if "country" not in out else None
                    key = (got, country, network, got.as_org)
                else:
                    key = (next(countries), network, got.as_org)
                info = shared.get(key)
                cache[text] = share(key, out) if info is None else info

    def _share(self, key: tuple[Any, ...], out: dict[str, Any] | None) -> IpInfo:
        """The ``ip_info`` of every address with this answer: ``key`` ends with ``(country,
        kind, provider)``, after what a file placed the address with (``out``, its fields)
        when one did. One for all of them, so a new address makes no dict, and the storage
        encodes its JSON once for all (a scan's new addresses no file placed fall in a few
        hundred such groups)."""
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = _own({} if out is None else dict(out), *key[-3:])
        return shared

    def _geo(self, addresses: Sequence[Parsed]) -> Sequence[Placed | None]:
        """What the ``.mmdb`` files say of each of ``addresses`` (None: nothing)."""
        if not self.geoip:
            return [None] * len(addresses)
        answers = [db.placed_many(addresses) for db in self.geoip]
        if len(answers) == 1:  # the usual case
            return answers[0]
        merged = self._merged
        out: list[Placed | None] = []
        for gots in zip(*answers, strict=True):
            found = merged.get(gots, _MISSING)
            if found is _MISSING:
                found = merged[gots] = _merge(gots)
            out.append(found)
        return out

    def gives(self) -> frozenset[str]:
        """What the ``.mmdb`` files together can give of places and ASNs (see
        :func:`._mmdb_paths.layout_gives`): what playbooks and impossible travel can read."""
        return frozenset().union(*(db.gives for db in self.geoip))

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
