"""Impossible travel: a user's successful logins from places too far apart for the time
between them.

:class:`ImpossibleTravel` is an enricher that runs after :class:`~._enricher.IpIntel` (it reads
the ``ip_info`` that one added). For each ``auth.login.success`` of a batch from a *place*
(below), it finds the same user's logins from places just before and just after it in time
(in the batch, in the batches stored in the same transaction before it, and in the storage's
``login_places``, where each placed login is stored with its event, keyed by a digest of
the user's folded identifiers and the time: one bounded read a user, all in one read of the
storage a batch) and, for each of the two pairs, works out the speed::

    distance = max(0, great-circle distance - accuracy radius of each side)
    speed    = distance / time between the two logins (at least one second)

Above ``max_speed`` (default 1 000 km/h, an airliner's cruise), it adds an event
``security.impossible_travel`` to the batch, for the same user, with the later login's
request and ``ip_info``, and both places and the speed in its properties. It is stored in
the same transaction as the login, so playbooks see it as any other event (``where`` on
``name``, then block the user or notify). Its id comes from the pair's two logins, so a
pair raises one event, however its logins arrive: in one batch or two, in time order or not
(a spool sent after an outage), retried. (``sqreen import`` places no login: it reads
no ``.mmdb``, and its logins are compared with nothing.)

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
import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

from ..._blocking import fold_identifier
from ..._wire import WireEvent, parse_event
from ..._wire_time import format_timestamp, time_us
from ..storage import PlaceAsk, PlaceRow, StoredEvent, clean

if TYPE_CHECKING:
    from ..pipeline import Batch

__all__ = [
    "DEFAULT_MAX_SPEED",
    "IMPOSSIBLE_TRAVEL",
    "MIN_MAX_SPEED",
    "ImpossibleTravel",
    "Place",
    "travel_speed",
]

logger = logging.getLogger("sqreen.server")

IMPOSSIBLE_TRAVEL: Final = "security.impossible_travel"
LOGIN: Final = "auth.login.success"
#: Where a batch keeps its placed logins (:attr:`~..pipeline.Batch.notes`).
NOTE: Final = "impossible_travel.logins"
DEFAULT_MAX_SPEED: Final = 1000.0  # km/h
#: The lowest speed ``sqreen serve --travel-speed`` takes (km/h): a slow walk. Below, every
#: pair of logins a street apart would be an alert.
MIN_MAX_SPEED: Final = 1.0
#: The longest window read around a login (µs): what a 64-bit integer holds (the storage
#: reads a longer one as unbounded; a speed such as 1e-300 km/h made it infinite).
_MOST_WINDOW_US: Final = 2**63 - 1
#: Kinds of address that say where a server is, not where the person is.
NOT_WHERE_THE_PERSON_IS: Final = frozenset({"vpn", "tor", "hosting", "cdn"})
EARTH_RADIUS_KM: Final = 6371.0088
#: The farthest two places can be, before their accuracy radii: half the circumference.
MOST_KM: Final = math.pi * EARTH_RADIUS_KM
#: A place's accuracy when its file says none (DB-IP Lite): what a city-level answer is often
#: off by, so that two neighbouring cities an hour's drive apart are not an alert.
DEFAULT_ACCURACY_KM: Final = 100.0


#: Where and when a login came from: its row of ``login_places``, as stored (its time in µs).
Place = PlaceRow


def place(user_key: str, at: int, ip: object, info: object, event_id: str) -> Place | None:
    """The login's place (``user_key``'s, at ``at`` µs), or None when it cannot be used (no
    city with coordinates, or a VPN, Tor, hosting or CDN address)."""
    if not (isinstance(info, dict) or isinstance(info, Mapping)) or not isinstance(ip, str):
        return None
    if info.get("kind") in NOT_WHERE_THE_PERSON_IS:
        return None
    lat, lon, city = info.get("latitude"), info.get("longitude"), info.get("city")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float) or not city:
        return None
    radius = info.get("accuracy_radius")
    return Place(
        user_key,
        at,
        event_id,
        ip,
        float(lat),
        float(lon),
        float(radius) if isinstance(radius, int | float) else DEFAULT_ACCURACY_KM,
        info.get("country"),
        city if isinstance(city, str) else None,
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
    hours = max(abs(b.at - a.at) / 1_000_000, 1.0) / 3600
    return km, hours, km / hours


class ImpossibleTravel:
    """The enricher (see the module); ``store`` is where earlier logins are looked up."""

    def __init__(self, store: TravelStore, *, max_speed: float = DEFAULT_MAX_SPEED) -> None:
        if not max_speed > 0:
            raise ValueError("max_speed must be above 0 km/h")
        self.store = store
        self.max_speed = max_speed
        #: Each user as an event gives it -> (folded, its key in ``login_places``, as
        #: given, sorted): a user logs in again and again, and folding and digesting their
        #: identifiers was a third of the check's CPU.
        self._users: dict[tuple[tuple[str, str], ...], tuple[UserKey, str, UserKey]] = {}

    def __call__(self, batch: Batch) -> None:
        ours: dict[UserKey, list[Login]] = {}
        latest = (self.store.now() - EPOCH) // _US
        located: list[Login] = []
        for n, (event, fields) in enumerate(batch):
            if event["name"] == LOGIN and (login := self._located(event, fields, latest)):
                located.append(login)
                ours.setdefault(login.user, []).append(login)
                batch.places.append((n, *login.place))  # stored with the event, if new
        batch.notes[NOTE] = located  # for the bodies stored after this one, in its turn
        if not ours:  # without a City .mmdb, no login has a place: no query
            return
        earlier: dict[UserKey, list[Login]] = {}
        for other in batch.earlier:
            for login in self._logins_of(other, latest):
                if login.user in ours:
                    earlier.setdefault(login.user, []).append(login)
        stored = self._stored(ours)
        found: list[tuple[WireEvent, dict[str, Any]]] = []
        for user, logins in ours.items():
            # The user's logins in time order (ties by id, so that a pair is always written
            # the same way): theirs here, in the bodies before, and the stored neighbours.
            known = {login.place.event_id: login for login in (*logins, *earlier.get(user, ()))}
            for login in stored.get(user, ()):
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

    def _logins_of(self, other: Batch, latest: int) -> list[Login]:
        """The placed logins of ``other``, a body before this one in its turn: as found when
        it was checked (else again)."""
        kept = other.notes.get(NOTE)
        if kept is not None:
            return kept  # type: ignore[no-any-return]
        return [
            login
            for event, fields in zip(other.events, other.enrichment, strict=False)
            if event["name"] == LOGIN and (login := self._located(event, fields, latest))
        ]

    def _stored(self, ours: Mapping[UserKey, Sequence[Login]]) -> dict[UserKey, list[Login]]:
        """Each user's stored logins from places just before their first login here, just
        after their last, and between (``login_places``, as the storage knows it or in one
        read for the batch): only those can be a neighbour of one of theirs here."""
        window = int(min(MOST_KM / self.max_speed * 3600 * 1_000_000, _MOST_WINDOW_US))
        asks: dict[str, tuple[UserKey, PlaceAsk]] = {}
        for user, logins in ours.items():
            first = min((login.place.at, login.place.event_id) for login in logins)
            last = max((login.place.at, login.place.event_id) for login in logins)
            text = logins[0].place.user_key
            asks[text] = (user, PlaceAsk(text, *first, *last, window))
        out: dict[UserKey, list[Login]] = {}
        for row in self.store.nearby_places([ask for _, ask in asks.values()]):
            owner = asks[row.user_key][0]  # each row is of a user asked about
            out.setdefault(owner, []).append(Login(row, owner, None, None, None))
        return out

    def _complete(self, login: Login) -> Login:
        """``login`` with its identifiers as given, its request and ``ip_info``: a stored one
        holds only its place (read here, for an alert ending with it: rare, as logins mostly
        arrive in time order); if its event is gone, its folded identifiers stand in."""
        if login.given is not None:
            return login
        # Ids are unique per key only: the login is the successful login of this user with
        # this id, from the place's address at its time (another key's event of the id,
        # stored first, must not speak for it, even one of the same user).
        place = login.place
        event = next(
            (
                e
                for e in self.store.events_with_id(place.event_id)
                if e.name == LOGIN
                and e.ip == place.ip
                and _placed_at(e, place.at)
                and _user_key(e.user) == login.user
            ),
            None,
        )
        if event is None:
            return login._replace(given=login.user)
        given = tuple(sorted((event.user or {}).items())) or login.user
        return login._replace(
            given=given, request=event.request, ip_info=event.enrichment.get("ip_info")
        )

    def _alert(
        self, first: Login, second: Login, km: float, hours: float, speed: float
    ) -> tuple[WireEvent, dict[str, Any]]:
        """The event for the pair (``first`` before ``second``), as of the later login."""
        second = self._complete(second)
        assert second.given is not None
        a, b = first.place, second.place
        digest = hashlib.sha256(f"{a.event_id}\n{b.event_id}".encode()).hexdigest()[:32]
        # What a list shows first (the alert's page cuts its summary): where, how fast.
        properties: dict[str, Any] = {}
        for prefix, p in (("from", a), ("to", b)):
            if p.city:
                properties[f"{prefix}_city"] = p.city
            if p.country:
                properties[f"{prefix}_country"] = p.country
        properties.update(
            {
                "speed_kmh": round(speed),
                "distance_km": round(km),
                "minutes": round(hours * 60, 1),
                "max_speed_kmh": round(self.max_speed),
                "from_ip": a.ip,
                "to_ip": b.ip,
                "from_latitude": a.latitude,
                "from_longitude": a.longitude,
                "to_latitude": b.latitude,
                "to_longitude": b.longitude,
                "from_event": a.event_id,
                "to_event": b.event_id,
            }
        )
        alert = parse_event(
            {
                "id": f"travel-{digest}",
                "name": IMPOSSIBLE_TRAVEL,
                "timestamp": format_timestamp(EPOCH + timedelta(microseconds=b.at)),
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

    def _located(self, event: WireEvent, fields: Mapping[str, Any], latest: int) -> Login | None:
        """The event as a :class:`Login` (None: no successful login, or from no place), its
        time at most ``latest`` µs (its receipt: as the storage keeps the event's, so that its
        row leaves with it, and a clock ahead places no login in the future)."""
        user = event["user"]
        if event["name"] != LOGIN or not user:
            return None
        request = event["request"]
        info = fields.get("ip_info")
        if not (isinstance(info, dict) or isinstance(info, Mapping)) or "city" not in info:
            return None  # no place: no time to read
        at = min(time_us(event["timestamp"]), latest)
        given = tuple(user.items())
        known = self._users.get(given)
        if known is None:
            key = _user_key(user)
            known = (key, _key_text(key), tuple(sorted(given)))
            if sum(len(k) + len(v) for k, v in given) <= KEPT_USER_CHARS:
                if len(self._users) >= MOST_USERS:
                    self._users.clear()
                self._users[given] = known
        key, text, ordered = known
        # The id as the storage keeps it (a lone surrogate an SDK sent is U+FFFD there).
        found = place(text, at, (request or {}).get("ip"), info, clean(event["id"]))
        if found is None:
            return None
        return Login(found, key, ordered, request, info)


#: A user: their identifiers, folded, sorted.
UserKey = tuple[tuple[str, str], ...]


class Login(NamedTuple):
    """A successful login from a place, and what an alert ending with it carries."""

    place: Place
    user: UserKey
    given: UserKey | None  # the identifiers as the event gave them (None: not read yet)
    request: Mapping[str, Any] | None
    ip_info: Any


class TravelStore(Protocol):
    """What impossible travel reads of the storage (:class:`~..storage.Storage` has it)."""

    def now(self) -> datetime: ...

    def nearby_places(self, asks: Sequence[PlaceAsk]) -> list[PlaceRow]: ...

    def events_with_id(self, event_id: str) -> list[StoredEvent]: ...


EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Users whose keys are kept at most (:attr:`ImpossibleTravel._users`; then all forgotten),
#: and the characters of their identifiers, at most, for a user's to be kept: a few MiB.
MOST_USERS: Final = 20_000
KEPT_USER_CHARS: Final = 128
_US: Final = timedelta(microseconds=1)


def _placed_at(event: StoredEvent, at: int) -> bool:
    """Whether a stored login's place is at ``at`` µs: its own time, or, dated after its
    receipt, the time it was checked at (about its receipt: a clock ahead places no login
    in the future)."""
    ts = (event.timestamp - EPOCH) // _US
    return ts == at or (ts > at and at <= (event.received_at - EPOCH) // _US + 1_000_000)


def _key_text(user: UserKey) -> str:
    """A user as ``login_places`` keys them: the digest of their folded identifiers (a fixed
    32 characters: 16 long identifiers as text are past PostgreSQL's largest index entry,
    and a refused row would make the SDK retry its whole batch forever; a short key is a
    smaller row and index too)."""
    text = json.dumps(user, separators=(",", ":"))  # ASCII: a lone surrogate escaped
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).hexdigest()


def _user_key(user: Mapping[str, Any] | None) -> UserKey:
    return tuple(sorted((k, fold_identifier(str(v))) for k, v in (user or {}).items()))
