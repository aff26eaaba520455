"""Impossible travel: a user's successful logins from places too far apart for the time
between them.

:class:`ImpossibleTravel` is an enricher that runs after :class:`~._enricher.IpIntel` (it reads
the ``ip_info`` that one added). For each ``auth.login.success`` of a batch from a *place*
(below), it finds the same user's logins from places just before and just after it in time
(in the batch, in the batches stored in the same transaction before it, and in the storage:
one indexed query over the window in which a pair could be too fast) and, for each of the
two pairs, works out the speed::

    distance = max(0, great-circle distance - accuracy radius of each side)
    speed    = distance / time between the two logins (at least one second)

Above ``max_speed`` (default 1 000 km/h, an airliner's cruise), it adds an event
``security.impossible_travel`` to the batch, for the same user, with the later login's
request and ``ip_info``, and both places and the speed in its properties. It is stored in
the same transaction as the login, so playbooks see it as any other event (``where`` on
``name``, then block the user or notify). Its id comes from the pair's two logins, so a
pair raises one event, however its logins arrive: in one batch or two, in time order or not
(a spool sent after an outage, ``sqreen import``), retried.

A *place* is a login's address placed in a city with coordinates: never a ``vpn``, ``tor``,
``hosting`` or ``cdn`` address (the person is not where the address is), nor an address
placed only in a country (no city: a country's centre, thousands of km from the person; a
GeoLite2 record for a country alone has coordinates, and a radius of 1 000 km). A file
without accuracy radii (DB-IP Lite) counts :data:`DEFAULT_ACCURACY_KM` for each place.
Logins without a place are neither compared nor in the way: a login through a VPN between
two others leaves those two compared. A user is all of its identifiers, folded as playbooks
and blocks fold them (case, spaces, NFKC): ``Alice`` logging in is ``alice``.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ..._blocking import fold_identifier
from ..._wire import WireEvent, parse_event
from ..._wire_time import format_timestamp, parse_timestamp
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
#: The farthest two places can be, before their accuracy radii: half the circumference.
MOST_KM: Final = math.pi * EARTH_RADIUS_KM
#: A place's accuracy when its file says none (DB-IP Lite): what a city-level answer is often
#: off by, so that two neighbouring cities an hour's drive apart are not an alert.
DEFAULT_ACCURACY_KM: Final = 100.0
#: How many of a user's newest events the storage looks at for their logins, at most: a
#: user with a long history (a service account) costs a bounded read, not a walk of it all.
MOST_SCANNED: Final = 2000
#: How many spellings of one user a batch looks up in the storage, besides the folded one.
MOST_SPELLINGS: Final = 3


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
    """The login's place, or None when it cannot be used (no city with coordinates, or a
    VPN, Tor, hosting or CDN address)."""
    if not isinstance(info, Mapping) or not isinstance(ip, str):
        return None
    if info.get("kind") in NOT_WHERE_THE_PERSON_IS:
        return None
    lat, lon, city = info.get("latitude"), info.get("longitude"), info.get("city")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float) or not city:
        return None
    radius = info.get("accuracy_radius")
    return Place(
        at,
        ip,
        float(lat),
        float(lon),
        float(radius) if isinstance(radius, int | float) else DEFAULT_ACCURACY_KM,
        info.get("country"),
        city if isinstance(city, str) else None,
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
        ours: dict[UserKey, list[Login]] = {}
        for event, fields in batch:
            if login := _located(event, fields):
                ours.setdefault(login.user, []).append(login)
        if not ours:  # without a City .mmdb, no login has a place: no query
            return
        earlier: dict[UserKey, list[Login]] = {}
        for other in batch.earlier:
            for event, fields in zip(other.events, other.enrichment, strict=False):
                if (login := _located(event, fields)) and login.user in ours:
                    earlier.setdefault(login.user, []).append(login)
        window = timedelta(hours=MOST_KM / self.max_speed)
        found: list[tuple[WireEvent, dict[str, Any]]] = []
        for user, logins in ours.items():
            # One read a user (whatever the number of their logins here), then their logins
            # in time order (ties by id, so that a pair is always written the same way).
            known = {login.place.event_id: login for login in (*logins, *earlier.get(user, ()))}
            for login in self._stored(logins, window, set(known)):
                known.setdefault(login.place.event_id, login)
            timeline = sorted(known.values(), key=lambda x: (x.place.at, x.place.event_id))
            mine = {login.place.event_id for login in logins}
            for a, b in itertools.pairwise(timeline):  # each pair with a login of this batch
                if a.place.event_id not in mine and b.place.event_id not in mine:
                    continue
                km, hours, speed = travel_speed(a.place, b.place)
                if speed > self.max_speed:
                    found.append(self._alert(a, b, km, hours, speed))
        for alert, fields in found:
            batch.add_derived(alert, fields)

    def _stored(self, logins: Sequence[Login], window: timedelta, skip: set[str]) -> list[Login]:
        """The user's logins stored within ``window`` of ``logins``, from places: the newest
        :data:`MOST_SCANNED` events of the user's first identifier are looked at (an indexed
        read, bounded for a user with a long history), as given and as folded when that
        differs."""
        here = logins[0]
        times = [login.place.at for login in logins]
        since, until = min(times) - window, max(times) + window + _STEP
        out: list[Login] = []
        seen = set(skip)
        # The folded spelling, and a few of those given (a body can spell one user a
        # thousand ways: each is a read).
        spellings = sorted({login.given for login in logins} - {here.user})[:MOST_SPELLINGS]
        for pairs in (here.user, *spellings):
            query = EventFilter(name=LOGIN, users=pairs, since=since, until=until)
            for event in self.store.query_events(query, limit=MOST_SCANNED, scan=MOST_SCANNED):
                if event.id in seen:
                    continue
                seen.add(event.id)
                info = event.enrichment.get("ip_info")
                found = place(event.timestamp, event.ip, info, event.id)
                user = event.user or {}
                if found is not None and _user_key(user) == here.user:
                    given = tuple(sorted(user.items()))
                    out.append(Login(found, here.user, given, event.request, info))
        return out

    def _alert(
        self, first: Login, second: Login, km: float, hours: float, speed: float
    ) -> tuple[WireEvent, dict[str, Any]]:
        """The event for the pair (``first`` before ``second``), as of the later login."""
        a, b = first.place, second.place
        digest = hashlib.sha256(f"{a.event_id}\n{b.event_id}".encode()).hexdigest()[:32]
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
                "timestamp": format_timestamp(b.at),
                "properties": properties,
                "user": dict(second.given),
                "target": None,
                "request": second.request,
            }
        )
        logger.warning(
            "sqreen: impossible travel at login %s: %s -> %s, %.0f km in %.1f min (%.0f km/h)",
            b.event_id,
            a.ip,
            b.ip,
            km,
            hours * 60,
            speed,
        )
        return alert, {"ip_info": second.ip_info} if second.ip_info is not None else {}


#: A user: their identifiers, folded, sorted.
UserKey = tuple[tuple[str, str], ...]
#: The smallest step of an event's time (its until bound is exclusive).
_STEP: Final = timedelta(microseconds=1)


class Login(NamedTuple):
    """A successful login from a place, and what an alert ending with it carries."""

    place: Place
    user: UserKey
    given: UserKey  # the identifiers as the event gave them
    request: Mapping[str, Any] | None
    ip_info: Any


def _user_key(user: Mapping[str, Any] | None) -> UserKey:
    return tuple(sorted((k, fold_identifier(str(v))) for k, v in (user or {}).items()))


def _located(event: WireEvent, fields: Mapping[str, Any]) -> Login | None:
    """The event as a :class:`Login` (None: no successful login, or from no place)."""
    user = event["user"]
    if event["name"] != LOGIN or not user:
        return None
    request = event["request"]
    info = fields.get("ip_info")
    at = parse_timestamp(event["timestamp"])
    found = place(at, (request or {}).get("ip"), info, event["id"])
    if found is None:
        return None
    return Login(found, _user_key(user), tuple(sorted(user.items())), request, info)


def _neighbours(here: Login, others: Sequence[Login]) -> tuple[Login | None, Login | None]:
    """The logins just before ``here`` (at the same time too) and just after it."""
    at = here.place.at
    before = after = None
    for other in others:
        when = other.place.at
        if other.place.event_id == here.place.event_id:
            continue
        if when <= at:
            if before is None or when > before.place.at:
                before = other
        elif after is None or when < after.place.at:
            after = other
    return before, after
