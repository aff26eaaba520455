"""IP intelligence at ingest: country, network kind, location, ASN and a threat score for
every event's address, from local data only (never a network call).

:class:`IpIntel` is the ingest pipeline's enricher (``create_app`` adds it by default;
``sqreen serve --geoip-db PATH`` gives it ``.mmdb`` files); it stores ``ip_info`` in each
event's enrichment, which every read of the event shows as its ``ip_info``. The score is in
:mod:`._score`, the sources in :mod:`._sources` and :mod:`._geoip`; impossible travel (an
enricher after it, which adds ``security.impossible_travel`` events) in :mod:`._travel`.
"""

from __future__ import annotations

from ._address import Address, SpecialKind, parse_address, special_kind
from ._check import checked_ip_info
from ._enricher import IP_INFO_KEYS, IpIntel
from ._geoip import GeoIpDatabase, GeoIpError, open_geoip, read_record
from ._ranges import RangeIndex
from ._score import KIND_POINTS, REASONS, Reputation, ReputationSource, threat_score
from ._sources import Countries, NetworkKinds
from ._travel import (
    DEFAULT_MAX_SPEED,
    IMPOSSIBLE_TRAVEL,
    MIN_MAX_SPEED,
    ImpossibleTravel,
    Place,
    travel_speed,
)

__all__ = [
    "DEFAULT_MAX_SPEED",
    "IMPOSSIBLE_TRAVEL",
    "IP_INFO_KEYS",
    "KIND_POINTS",
    "MIN_MAX_SPEED",
    "REASONS",
    "Address",
    "Countries",
    "GeoIpDatabase",
    "GeoIpError",
    "ImpossibleTravel",
    "IpIntel",
    "NetworkKinds",
    "Place",
    "RangeIndex",
    "Reputation",
    "ReputationSource",
    "SpecialKind",
    "checked_ip_info",
    "open_geoip",
    "parse_address",
    "read_record",
    "special_kind",
    "threat_score",
    "travel_speed",
]
