"""Impossible travel: a user's consecutive successful logins from places too far apart for
the time between them.

:class:`ImpossibleTravel` is an enricher that runs after :class:`~._enricher.IpIntel` (it reads
the ``ip_info`` that one added). For each ``auth.login.success`` of a batch whose address has
coordinates, it finds the same user's previous successful login (earlier in the batch, else
the newest stored one before it: one indexed query, after a look at the batches stored in
the same transaction before this one) and works out the speed::

    distance = max(0, great-circle distance - accuracy radius of each side)
    speed    = distance / time between the two logins (at least one second)

Above ``max_speed`` (default 1 000 km/h, an airliner's cruise), it adds an event
``security.impossible_travel`` to the batch, for the same user, with the second login's
request and ``ip_info``, and both locations and the speed in its properties. It is stored in
the same transaction as the login, so playbooks see it as any other event (``where`` on
``name``, then block the user or notify), and a retried batch adds it once (its id comes from
the login's).

Pairs are skipped, never guessed at: either side a ``vpn``, ``tor``, ``hosting`` or ``cdn``
address (the person is not where the address is), or with no coordinates (a country alone is
thousands of km wide). The previous login is the previous one, located or not: a login from
an unlocated address in between breaks the chain rather than being skipped over.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ..._wire import WireEvent, parse_event
from ..._wire_time import parse_timestamp
from ..storage import EventFilter, EventStore

if TYPE_CHECKING:
    from ..pipeline import Batch

__all__ = ["DEFAULT_MAX_SPEED", "IMPOSSIBLE_TRAVEL", "ImpossibleTravel", "Place", "travel_speed"]

logger = logging.getLogger("sqreen.server")

IMPOSSIBLE_TRAVEL: Final = "security.impossible_travel"
LOGIN: Final = "auth.login.success"
DEFAULT_MAX_SPEED: Final = 1000.0  # km/h
#: Kinds of address that say where a server is, not where the person is.
NOT_WHERE_THE_PERSON_IS: Final = frozenset({"vpn", "tor", "hosting", "cdn"})
EARTH_RADIUS_KM: Final = 6371.0088


class Place(NamedTuple):
    """Where and when a login came from."""

    at: datetime
    ip: str
    latitude: float
    longitude: float
    accuracy_km: float
    country: str | None
    city: str | None
    event_id: str


def place(at: datetime, ip: object, info: object, event_id: str) -> Place | None:
    """The login's place, or None when it cannot be used (no coordinates, or a VPN, Tor,
    hosting or CDN address)."""
    if not isinstance(info, Mapping) or not isinstance(ip, str):
        return None
    if info.get("kind") in NOT_WHERE_THE_PERSON_IS:
        return None
    lat, lon = info.get("latitude"), info.get("longitude")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        return None
    radius = info.get("accuracy_radius")
    return Place(
        at,
        ip,
        float(lat),
        float(lon),
        float(radius) if isinstance(radius, int | float) else 0.0,
        info.get("country"),
        info.get("city"),
        event_id,
    )


def distance_km(a: Place, b: Place) -> float:
    """Great-circle distance (haversine), less both places' accuracy radii, at least 0."""
    p1, p2 = math.radians(a.latitude), math.radians(b.latitude)
    dp, dl = p2 - p1, math.radians(b.longitude - a.longitude)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    raw = 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
    return max(0.0, raw - a.accuracy_km - b.accuracy_km)


def travel_speed(a: Place, b: Place) -> tuple[float, float, float]:
    """(km, hours, km/h) from ``a`` to ``b``; the time is at least one second."""
    km = distance_km(a, b)
    hours = max(abs((b.at - a.at).total_seconds()), 1.0) / 3600
    return km, hours, km / hours


class ImpossibleTravel:
    """The enricher (see the module); ``store`` is where earlier logins are looked up."""

    def __init__(self, store: EventStore, *, max_speed: float = DEFAULT_MAX_SPEED) -> None:
        if not max_speed > 0:
            raise ValueError("max_speed must be above 0 km/h")
        self.store = store
        self.max_speed = max_speed

    def __call__(self, batch: Batch) -> None:
        last: dict[tuple[tuple[str, str], ...], Place | None] = {}
        earlier = _logins_by_identifier(batch.earlier)
        found: list[tuple[WireEvent, dict[str, Any]]] = []
        for event, fields in list(batch):
            user = event["user"]
            if event["name"] != LOGIN or not user:
                continue
            key = tuple(sorted(user.items()))
            at = parse_timestamp(event["timestamp"])
            here = place(at, (event["request"] or {}).get("ip"), fields.get("ip_info"), event["id"])
            if here is None:  # cannot alert (and without a City .mmdb, no login can): no query
                last[key] = None
                continue
            before = last[key] if key in last else self._previous(earlier, key, at, event["id"])
            if before is not None and before.at > at:  # the batch is not in time order
                before = None
            last[key] = here
            if before is None:
                continue
            km, hours, speed = travel_speed(before, here)
            if speed > self.max_speed:
                found.append(self._alert(event, fields, before, here, km, hours, speed))
        for alert, fields in found:
            batch.add_derived(alert, fields)

    def _previous(
        self,
        earlier: Mapping[tuple[str, str], list[tuple[Batch, int]]],
        key: tuple[tuple[str, str], ...],
        at: datetime,
        event_id: str,
    ) -> Place | None:
        """The user's newest login stored before ``at``: the batches stored together with
        this one and before it (``earlier``, by identifier) are not in the database yet."""
        for batch, n in reversed(earlier.get(key[0], ())):
            event = batch.events[n]
            if not set(key) <= (event["user"] or {}).items():
                continue
            when = parse_timestamp(event["timestamp"])
            if when >= at:
                continue
            if event["id"] == event_id:
                return None
            fields = batch.enrichment[n] if n < len(batch.enrichment) else {}
            ip = (event["request"] or {}).get("ip")
            return place(when, ip, fields.get("ip_info"), event["id"])
        return self._stored(key, at, event_id)

    def _stored(
        self, key: tuple[tuple[str, str], ...], at: datetime, event_id: str
    ) -> Place | None:
        found = self.store.query_events(EventFilter(name=LOGIN, users=key, until=at), limit=1)
        previous = next(iter(found), None)
        if previous is None or previous.id == event_id:
            return None
        info = previous.enrichment.get("ip_info")
        return place(previous.timestamp, previous.ip, info, previous.id)

    def _alert(
        self,
        login: WireEvent,
        fields: Mapping[str, Any],
        a: Place,
        b: Place,
        km: float,
        hours: float,
        speed: float,
    ) -> tuple[WireEvent, dict[str, Any]]:
        digest = hashlib.sha256(login["id"].encode()).hexdigest()[:32]
        properties: dict[str, Any] = {
            "from_ip": a.ip,
            "from_latitude": a.latitude,
            "from_longitude": a.longitude,
            "from_event": a.event_id,
            "to_ip": b.ip,
            "to_latitude": b.latitude,
            "to_longitude": b.longitude,
            "to_event": b.event_id,
            "distance_km": round(km),
            "minutes": round(hours * 60, 1),
            "speed_kmh": round(speed),
            "max_speed_kmh": round(self.max_speed),
        }
        for prefix, p in (("from", a), ("to", b)):
            if p.country:
                properties[f"{prefix}_country"] = p.country
            if p.city:
                properties[f"{prefix}_city"] = p.city
        alert = parse_event(
            {
                "id": f"travel-{digest}",
                "name": IMPOSSIBLE_TRAVEL,
                "timestamp": login["timestamp"],
                "properties": properties,
                "user": dict(login["user"] or {}),
                "target": None,
                "request": login["request"],
            }
        )
        logger.warning(
            "sqreen: impossible travel at login %s: %s -> %s, %.0f km in %.1f min (%.0f km/h)",
            login["id"],
            a.ip,
            b.ip,
            km,
            hours * 60,
            speed,
        )
        return alert, {"ip_info": fields["ip_info"]} if "ip_info" in fields else {}


def _logins_by_identifier(
    batches: Sequence[Batch],
) -> dict[tuple[str, str], list[tuple[Batch, int]]]:
    """The successful logins of ``batches``, in order, under each identifier of their user:
    one pass, so that each login of the next batch looks at its user's only (a group of 8
    bodies of 1 000 logins of distinct users would otherwise scan 28 million events)."""
    out: dict[tuple[str, str], list[tuple[Batch, int]]] = {}
    for batch in batches:
        for n, event in enumerate(batch.events):
            user = event["user"]
            if event["name"] == LOGIN and user:
                for pair in user.items():
                    out.setdefault(pair, []).append((batch, n))
    return out
