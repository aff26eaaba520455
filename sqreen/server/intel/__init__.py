"""IP intelligence at ingest: country, network kind, location, ASN and a threat score for
every event's address, from local data only (never a network call).

:class:`IpIntel` is the ingest pipeline's enricher (``create_app`` adds it by default;
``sqreen serve --geoip-db PATH`` gives it ``.mmdb`` files); it stores ``ip_info`` in each
event's enrichment, which every read of the event shows as its ``ip_info``. The score is in
:mod:`._score`, the sources in :mod:`._sources` and :mod:`._geoip`.
"""

from __future__ import annotations

from ._address import Address, SpecialKind, parse_address, special_kind
from ._enricher import IP_INFO_KEYS, IpIntel
from ._geoip import GeoIpDatabase, GeoIpError, open_geoip, read_record
from ._score import KIND_POINTS, REASONS, Reputation, ReputationSource, threat_score
from ._sources import Countries, NetworkKinds

__all__ = [
    "IP_INFO_KEYS",
    "KIND_POINTS",
    "REASONS",
    "Address",
    "Countries",
    "GeoIpDatabase",
    "GeoIpError",
    "IpIntel",
    "NetworkKinds",
    "Reputation",
    "ReputationSource",
    "SpecialKind",
    "open_geoip",
    "parse_address",
    "read_record",
    "special_kind",
    "threat_score",
]
