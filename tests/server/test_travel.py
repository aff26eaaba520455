"""Impossible travel: a user's consecutive successful logins too far apart for the time
between them add one ``security.impossible_travel`` event, which playbooks act on."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from sqreen._wire_time import format_timestamp
from sqreen.events import DERIVED_EVENTS
from sqreen.server.app import create_app
from sqreen.server.auth import hash_token, new_token
from sqreen.server.cli import main
from sqreen.server.intel import IMPOSSIBLE_TRAVEL, ImpossibleTravel, IpIntel
from sqreen.server.intel._travel import LOGIN
from sqreen.server.pipeline import IngestPipeline
from sqreen.server.playbooks import PlaybookError, PlaybookSource, parse_playbooks
from sqreen.server.storage import EventFilter, Storage
from tests.mmdb import write_mmdb

from .conftest import envelope, wire_event

LONDON_IP, SYDNEY_IP, PARIS_IP = "81.2.69.160", "1.128.0.9", "2.3.4.5"
VPN_IP = "104.28.28.1"  # Apple Private Relay in iporigin's shipped ranges
COUNTRY_ONLY_IP = "8.8.4.4"  # not in the .mmdb: only a country (and hosting)


def city(name: str, lat: float, lon: float, radius: int, country: str) -> dict[str, Any]:
    return {
        "city": {"names": {"en": name}},
        "country": {"iso_code": country},
        "location": {"latitude": lat, "longitude": lon, "accuracy_radius": radius},
    }


@pytest.fixture(scope="module")
def city_mmdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("geo") / "city.mmdb"
    write_mmdb(
        path,
        {
            "81.2.69.0/24": city("London", 51.5142, -0.0931, 10, "GB"),
            "1.128.0.0/16": city("Sydney", -33.8688, 151.2093, 20, "AU"),
            "2.3.4.0/24": city("Paris", 48.8566, 2.3522, 20, "FR"),
            # The VPN exit sits in New York: far from both, and still never counted.
            "104.28.28.0/24": city("New York", 40.7128, -74.006, 5, "US"),
            "3.3.3.0/24": city("New York", 40.7128, -74.006, 5, "US"),
            # An address GeoLite2 places in a country alone: its centre, 1 000 km wide.
            "9.9.9.0/24": {
                "country": {"iso_code": "US"},
                "location": {"latitude": 37.751, "longitude": -97.822, "accuracy_radius": 1000},
            },
            # Cities as DB-IP Lite gives them: no accuracy radius. 180 km apart.
            "5.5.5.0/24": {
                "city": {"names": {"en": "Lyon"}},
                "country": {"iso_code": "FR"},
                "location": {"latitude": 45.764, "longitude": 4.8357},
            },
            "6.6.6.0/24": {
                "city": {"names": {"en": "Grenoble"}},
                "country": {"iso_code": "FR"},
                "location": {"latitude": 45.1885, "longitude": 5.7245 + 1.2},
            },
        },
        database_type="GeoLite2-City",
    )
    yield str(path)


def login(
    ip: str, at: datetime, uid: str = "42", name: str = "auth.login.success"
) -> dict[str, Any]:
    event = wire_event(name=name, user={"uid": uid}, timestamp=format_timestamp(at), properties={})
    event["id"] = f"{ip}-{uid}-{at.timestamp()}"  # one id a login, however often it is sent
    event["request"] = {**event["request"], "ip": ip}
    return event


def body(*events: Any) -> bytes:
    return json.dumps(envelope(list(events))).encode()


@pytest.fixture
def pipeline(storage: Storage, city_mmdb: str) -> IngestPipeline:
    return IngestPipeline(storage, enrichers=[IpIntel.open([city_mmdb]), ImpossibleTravel(storage)])


def travels(storage: Storage) -> list[Any]:
    return storage.query_events(EventFilter(name=IMPOSSIBLE_TRAVEL), limit=100)


def test_far_apart_minutes_apart_raises_one_alert_with_both_places_and_the_speed(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    """London, then Sydney 30 minutes later (17 000 km): one alert, in separate batches (the
    earlier login read back from storage) and stored once when the batch is retried."""
    start = datetime.now(UTC) - timedelta(hours=1)
    first = login(LONDON_IP, start)
    second = login(SYDNEY_IP, start + timedelta(minutes=30))
    pipeline(body(first))
    reply = pipeline(body(second))
    assert (reply["accepted"], reply["duplicates"]) == (1, 0)  # the SDK sent one event
    (alert,) = travels(storage)
    assert alert.user == {"uid": "42"}
    assert alert.ip == SYDNEY_IP
    props = alert.properties
    assert (props["from_ip"], props["to_ip"]) == (LONDON_IP, SYDNEY_IP)
    assert (props["from_city"], props["to_city"]) == ("London", "Sydney")
    assert (props["from_country"], props["to_country"]) == ("GB", "AU")
    assert (props["from_latitude"], props["to_longitude"]) == (51.5142, 151.2093)
    assert 16_900 < props["distance_km"] < 17_000  # less both accuracy radii
    assert props["minutes"] == 30.0
    assert props["speed_kmh"] == pytest.approx(props["distance_km"] * 2, abs=2)
    assert (props["from_event"], props["to_event"]) == (first["id"], second["id"])
    # Where and how fast first, as stored: lists cut an event's properties short.
    assert list(props)[:5] == ["from_city", "from_country", "to_city", "to_country", "speed_kmh"]
    assert alert.to_json()["ip_info"]["city"] == "Sydney"
    retried = pipeline(body(second))
    assert (retried["accepted"], retried["duplicates"]) == (0, 1)
    assert len(travels(storage)) == 1


def test_the_same_pair_hours_apart_raises_nothing(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    """London then Paris (340 km) 30 minutes apart is 680 km/h: a fast train and a plane,
    possible. London then Sydney 24 hours apart is a long flight. Neither alerts."""
    start = datetime.now(UTC) - timedelta(days=2)
    pipeline(body(login(LONDON_IP, start), login(PARIS_IP, start + timedelta(minutes=30))))
    pipeline(body(login(SYDNEY_IP, start + timedelta(hours=24, minutes=30))))
    assert travels(storage) == []
    assert len(storage.query_events(EventFilter(name="auth.login.success"))) == 3


@pytest.mark.parametrize("vpn_first", [True, False])
def test_a_vpn_address_on_either_side_raises_nothing(
    storage: Storage, pipeline: IngestPipeline, vpn_first: bool
) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    pair = [VPN_IP, SYDNEY_IP] if vpn_first else [SYDNEY_IP, VPN_IP]
    pipeline(body(login(pair[0], start), login(pair[1], start + timedelta(minutes=5))))
    stored = storage.query_events(EventFilter(name="auth.login.success"))
    assert {e.ip: e.enrichment["ip_info"].get("kind") for e in stored}[VPN_IP] == "vpn"
    assert travels(storage) == []


def test_a_country_alone_other_users_and_failures_raise_nothing(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    pipeline(
        body(
            login(COUNTRY_ONLY_IP, start),
            login(SYDNEY_IP, start + timedelta(minutes=1)),  # previous: country only
            login(LONDON_IP, start + timedelta(minutes=2), uid="7"),  # another user
            login(LONDON_IP, start + timedelta(minutes=3), name="auth.login.failure"),
        )
    )
    assert travels(storage) == []


def test_a_playbook_blocks_the_user_on_impossible_travel(
    storage: Storage, city_mmdb: str, tmp_path: Path
) -> None:
    """Through the collector (``POST /v1/events``): the alert event reaches the playbooks,
    which block the user; the SDK's reply already carries the block."""
    rules = tmp_path / "playbooks.toml"
    rules.write_text(
        '[[playbook]]\nid = "impossible-travel"\nevents = ["security.impossible_travel"]\n'
        'group_by = "user"\nthreshold = 1\nwindow = "1h"\naction = "block_user"\n'
        'duration = "1h"\n'
    )
    token = new_token()
    storage.create_key("sdk", hash_token(token))
    app = create_app(storage, ip_intel=IpIntel.open([city_mmdb]), playbooks=PlaybookSource(rules))
    start = datetime.now(UTC) - timedelta(minutes=20)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {token}"}
        client.post("/v1/events", json=envelope([login(LONDON_IP, start)]), headers=headers)
        reply = client.post(
            "/v1/events",
            json=envelope([login(SYDNEY_IP, start + timedelta(minutes=10))]),
            headers=headers,
        ).json()
    assert reply["accepted"] == 1
    (block,) = reply["actions"]["items"]
    assert block["user"] == {"uid": "42"}, block
    (alert,) = storage.list_alerts()
    assert alert.playbook == "impossible-travel"


def test_a_place_is_a_city_and_counts_its_accuracy(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    """An address placed in a country alone (its centre, 2 060 km from New York) is no
    place; cities without a radius (DB-IP Lite) count 100 km each: 180 km in 10 minutes is
    not an alert there (1 080 km/h with no radius)."""
    start = datetime.now(UTC) - timedelta(hours=3)
    pipeline(body(login("3.3.3.3", start), login("9.9.9.9", start + timedelta(minutes=45))))
    lyon, grenoble = login("5.5.5.5", start, uid="7"), login("6.6.6.6", start, uid="7")
    grenoble["timestamp"] = format_timestamp(start + timedelta(minutes=10))
    pipeline(body(lyon, grenoble))
    assert travels(storage) == []


@pytest.mark.parametrize("together", [True, False])
def test_a_pair_raises_one_alert_in_any_order_and_any_batching(
    storage: Storage, pipeline: IngestPipeline, together: bool
) -> None:
    """The later login first (a spool sent after an outage), then the earlier: the pair is
    compared, once, as of the later login; in one body or two."""
    start = datetime.now(UTC) - timedelta(hours=1)
    earlier, later = login(LONDON_IP, start), login(SYDNEY_IP, start + timedelta(minutes=30))
    for sent in [(later, earlier)] if together else [(later,), (earlier,)]:
        pipeline(body(*sent))
    assert len(travels(storage)) == 1
    pipeline(body(earlier, later))  # retried: nothing more
    (alert,) = travels(storage)
    assert (alert.properties["from_event"], alert.properties["to_event"]) == (
        earlier["id"],
        later["id"],
    )
    assert alert.ip == SYDNEY_IP and alert.timestamp == start + timedelta(minutes=30)


def test_the_previous_login_is_the_previous_in_time(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    """A login of two days before, imported after the others, is not the one compared: the
    login just before in time is; the same for a login at the same second."""
    now = datetime.now(UTC) - timedelta(minutes=30)
    pipeline(body(login(SYDNEY_IP, now)))
    pipeline(body(login(LONDON_IP, now - timedelta(days=2))))  # imported late
    pipeline(body(login(LONDON_IP, now + timedelta(minutes=10))))
    (alert,) = travels(storage)
    assert (alert.properties["from_ip"], alert.properties["to_ip"]) == (SYDNEY_IP, LONDON_IP)
    same = now + timedelta(minutes=5)
    pipeline(body(login(PARIS_IP, same, uid="7")))
    pipeline(body(login(SYDNEY_IP, same, uid="7")))
    assert len(travels(storage)) == 2


def test_a_user_in_another_spelling_is_the_same_user(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    """Folded as playbooks fold them: in one body in any spellings; against a stored login
    when it was stored in the folded spelling (the storage indexes identifiers as given)."""
    start = datetime.now(UTC) - timedelta(hours=2)
    pipeline(body(login(LONDON_IP, start, uid="alice@example.com")))
    pipeline(body(login(SYDNEY_IP, start + timedelta(minutes=30), uid=" ALICE@example.COM")))
    (alert,) = travels(storage)
    assert alert.user == {"uid": " ALICE@example.COM"}  # as the later login gave them
    later = start + timedelta(hours=1)
    pipeline(
        body(
            login(LONDON_IP, later, uid="Bob@Example.com"),
            # Fullwidth letters, as a login form may take them.
            login(SYDNEY_IP, later + timedelta(minutes=30), uid="\uff42\uff4f\uff42@example.com"),
        )
    )
    assert len(travels(storage)) == 2


def test_a_login_from_no_place_in_between_does_not_hide_the_pair(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    """London, then a VPN exit (and an address placed nowhere), then Sydney: London and
    Sydney are compared (an attacker's one login through Tor would otherwise hide the
    next from their own address)."""
    start = datetime.now(UTC) - timedelta(hours=1)
    pipeline(body(login(LONDON_IP, start), login(VPN_IP, start + timedelta(minutes=10))))
    pipeline(body(login(COUNTRY_ONLY_IP, start + timedelta(minutes=15))))
    pipeline(body(login(SYDNEY_IP, start + timedelta(minutes=30))))
    (alert,) = travels(storage)
    assert (alert.properties["from_ip"], alert.properties["to_ip"]) == (LONDON_IP, SYDNEY_IP)


def test_travel_speed_none_turns_it_off(storage: Storage, city_mmdb: str) -> None:
    app = create_app(storage, ip_intel=IpIntel.open([city_mmdb]), travel_speed=None)
    start = datetime.now(UTC) - timedelta(hours=1)
    app.state.pipeline(
        body(login(LONDON_IP, start), login(SYDNEY_IP, start + timedelta(minutes=9)))
    )
    assert travels(storage) == []
    with pytest.raises(ValueError, match="above 0"):
        ImpossibleTravel(storage, max_speed=0)


def test_playbooks_match_ip_country_kind_and_score_and_group_by_country(
    storage: Storage, tmp_path: Path
) -> None:
    """``where`` on what IP intelligence stored: a Tor exit is blocked at its first failure,
    Google's cloud only alerted (score 25, under 50); failures counted per country."""
    rules = tmp_path / "playbooks.toml"
    rules.write_text(
        '[[playbook]]\nid = "anonymous-failure"\nevents = ["auth.login.failure"]\n'
        'where = { "ip.kind" = ["tor", "vpn"], "ip.score" = { at_least = 50 } }\n'
        'group_by = "ip"\nthreshold = 1\nwindow = "1h"\naction = "block_ip"\nduration = "1h"\n'
        "\n"
        '[[playbook]]\nid = "us-failures"\nevents = ["auth.login.failure"]\n'
        'where = { "ip.country" = "US" }\n'
        'group_by = "ip.country"\nthreshold = 2\nwindow = "1h"\naction = "alert"\n'
    )
    token = new_token()
    storage.create_key("sdk", hash_token(token))
    app = create_app(storage, playbooks=PlaybookSource(rules))
    now = datetime.now(UTC) - timedelta(minutes=1)
    sent = [
        login("185.220.101.1", now, name="auth.login.failure"),
        login("8.8.8.8", now, name="auth.login.failure"),
        login("8.8.4.4", now, name="auth.login.failure"),
    ]
    with TestClient(app) as client:
        reply = client.post(
            "/v1/events", json=envelope(sent), headers={"Authorization": f"Bearer {token}"}
        ).json()
    (block,) = reply["actions"]["items"]
    assert block["ip"] == "185.220.101.1/32"
    alerts = {a.playbook: a for a in storage.list_alerts()}
    assert set(alerts) == {"anonymous-failure", "us-failures"}
    assert (alerts["us-failures"].group_key, alerts["us-failures"].total) == ("US", 2)
    with pytest.raises(PlaybookError, match="at_least"):
        parse_playbooks(
            '[[playbook]]\nid = "x"\nevents = ["a"]\nwhere = { "ip.score" = { above = 5 } }\n'
            'group_by = "ip"\nthreshold = 1\nwindow = "1h"\naction = "alert"\n'
        )


def test_without_coordinates_no_login_costs_a_query(storage: Storage) -> None:
    """With no City ``.mmdb`` (the default), no login has a place: impossible travel never
    reads the storage on the ingest path."""

    reads = CountedReads(storage)
    pipeline = IngestPipeline(
        storage,
        enrichers=[IpIntel(), ImpossibleTravel(reads)],  # type: ignore[arg-type]
    )
    start = datetime.now(UTC) - timedelta(hours=1)
    reply = pipeline(body(login(LONDON_IP, start), login(SYDNEY_IP, start + timedelta(minutes=5))))
    assert reply["accepted"] == 2 and travels(storage) == []
    assert reads.queries == 0


class CountedReads:
    """The storage, counting impossible travel's reads of its placed logins."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.queries = 0

    def nearby_places(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return self.storage.nearby_places(*args, **kwargs)

    def events_with_id(self, *args: Any, **kwargs: Any) -> Any:
        return self.storage.events_with_id(*args, **kwargs)

    def now(self) -> datetime:
        return self.storage.now()


def test_a_user_s_logins_cost_one_read_and_are_compared_in_time_order(
    storage: Storage, city_mmdb: str
) -> None:
    """200 logins of one user in a body (an ingest key's flood): one read of the storage
    for them all, each compared with its neighbours in time only (the 199 pairs of
    alternating cities, each once: London and Paris are 340 km apart, 5 minutes)."""
    reads = CountedReads(storage)
    pipeline = IngestPipeline(
        storage,
        enrichers=[IpIntel.open([city_mmdb]), ImpossibleTravel(reads)],  # type: ignore[arg-type]
    )
    start = datetime.now(UTC) - timedelta(days=1)
    sent = [
        login(LONDON_IP if n % 2 else PARIS_IP, start + timedelta(minutes=5 * n))
        for n in range(200)
    ]
    pipeline(body(*reversed(sent)))
    assert reads.queries == 1
    assert storage.count_events(EventFilter(name=IMPOSSIBLE_TRAVEL)) == 199


def test_equal_times_raise_one_event_however_the_pair_is_met(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    at = datetime.now(UTC) - timedelta(hours=1)
    first, second = login(LONDON_IP, at), login(SYDNEY_IP, at)
    pipeline(body(first))
    pipeline(body(second))
    pipeline(body(first))  # retried: met from the other side
    pipeline(body(second, first))
    assert len(travels(storage)) == 1


def test_logins_from_no_place_do_not_push_the_previous_one_out(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    """60 logins through a VPN between New York and London: still compared (the storage's
    read looks at the user's newest 2 000 events, not at their newest 50 logins)."""
    start = datetime.now(UTC) - timedelta(hours=2)
    pipeline(body(login("3.3.3.3", start)))
    hops = [login(VPN_IP, start + timedelta(seconds=10 + n)) for n in range(60)]
    pipeline(body(*hops))
    pipeline(body(login(LONDON_IP, start + timedelta(minutes=40))))
    (alert,) = travels(storage)
    assert (alert.properties["from_ip"], alert.properties["to_ip"]) == ("3.3.3.3", LONDON_IP)


#: A playbook blocking users on impossible travel (what the README advises against).
BLOCKING_PLAYBOOK = (
    '[[playbook]]\nid = "impossible-travel"\nevents = ["security.impossible_travel"]\n'
    'group_by = "user"\nthreshold = 1\nwindow = "1h"\naction = "block_user"\nduration = "1h"\n'
)


LOOK_ALIKES = [
    IMPOSSIBLE_TRAVEL + " ",
    IMPOSSIBLE_TRAVEL + "\u200b",  # a zero-width space
    "\uff53\uff45\uff43\uff55\uff52\uff49\uff54\uff59.impossible_travel",  # fullwidth
    "Security.Impossible-Travel",
    "security.impossible_trave\u0301l",  # a combining accent
    "security. impossible_travel",
    "security.imp\u043essible_travel",  # a Cyrillic o
    "s\u0435curity.impossible_tr\u0430vel",  # a Cyrillic e and a
    "security.\u03b9mpossible_travel",  # a Greek iota
    "security.impossib1e_travel",  # a digit one for l
    "security.lmpossible_travel",  # l for a capital I
    "\u0455ecurity.impossible_travel",  # a Cyrillic dze
    "security.impossible_\u0422ravel",  # a Cyrillic capital Te
    "SECURITY.IMPOSSIBLE_\u0422RAVEL",
    "security.i\u039cpossible_travel",  # a Greek capital Mu
    "security.irnpossible_travel",  # "rn" for m
    "security.impossible_\u0442ravel",  # a Cyrillic te
    "security.impossi\u0299le_travel",  # a small capital B
    "security.\u026ampossi\u0299\u029fe_tr\u1d00vel",  # small capitals I, B, L, A
    "security.impossible_trave\u1dab",  # a modifier small capital L
    "security.impossible\u2010travel",  # a Unicode hyphen
    "security/impossible/travel",
]


@pytest.mark.parametrize(
    "name",
    [
        *(f"security.impossible{dash}travel" for dash in "\u2010\u2011\u2012\u2013\u2014\u2212"),
        "security:impossible_travel",
        "security.impossible travel",
        "security.impossible__travel",
        "security..impossible_travel",
        "security.impossibletravel",
        "securityimpossibletravel",
        "security\uff0fimpossible\uff0ftravel",  # fullwidth solidus
        "(security.impossible_travel)",
    ],
)
def test_a_name_of_the_same_words_with_other_separators_reads_as_impossible_travel(
    name: str,
) -> None:
    """Separators of any kind between its words, doubled or left out, read alike: only
    ``-``, ``_``, a middle dot and a one-dot leader did."""
    from sqreen.server.names import derived_name

    assert derived_name(name) == IMPOSSIBLE_TRAVEL


@pytest.mark.parametrize(
    "name",
    ["security.impossible_travels", "security.possible_travel", "security.travel", "auth.login"],
)
def test_other_words_do_not_read_as_impossible_travel(name: str) -> None:
    from sqreen.server.names import derived_name

    assert derived_name(name) is None


@pytest.mark.parametrize("name", [IMPOSSIBLE_TRAVEL, "SECURITY_IMPOSSIBLE_TRAVEL", *LOOK_ALIKES])
@pytest.mark.parametrize("fast", [True, False], ids=["fast-parse", "slow-parse"])
def test_an_sdk_cannot_send_the_collectors_own_impossible_travel(
    storage: Storage,
    city_mmdb: str,
    tmp_path: Path,
    name: str,
    fast: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sent with an ingest key (in any spelling, or one that reads as it: a trailing space,
    a zero-width space, fullwidth letters, which the lists would show as the collector's
    own), it is refused by name, as an invalid event is, and the rest of the batch stored: a
    playbook blocking on it blocks nobody for it. Through the body parser's fast path and
    its slow one."""
    if not fast:
        monkeypatch.setattr(IngestPipeline, "parse", IngestPipeline.parse_slow)
    rules = tmp_path / "playbooks.toml"
    rules.write_text(BLOCKING_PLAYBOOK)
    token = new_token()
    storage.create_key("sdk", hash_token(token))
    app = create_app(storage, ip_intel=IpIntel.open([city_mmdb]), playbooks=PlaybookSource(rules))
    forged = login(LONDON_IP, datetime.now(UTC) - timedelta(minutes=1), uid="victim", name=name)
    with TestClient(app) as client:
        reply = client.post(
            "/v1/events",
            json=envelope([forged, wire_event()]),
            headers={"Authorization": f"Bearer {token}"},
        ).json()
    assert reply["accepted"] == 1
    said = (
        "" if name in (IMPOSSIBLE_TRAVEL, "SECURITY_IMPOSSIBLE_TRAVEL") else f"{name!r} looks like "
    )
    which = "" if not said else ", which"
    assert reply["rejected"] == [
        {
            "index": 0,
            "error": f"name: {said}'security.impossible_travel'{which} is raised by the collector"
            " itself (from auth.login.success), never sent by an SDK",
        }
    ]
    assert reply["actions"]["items"] == [] and storage.list_alerts() == []
    assert travels(storage) == [] and len(storage.query_events()) == 1


def test_sdks_send_logins_at_once_when_a_playbook_blocks_on_impossible_travel(
    storage: Storage, tmp_path: Path
) -> None:
    """SDKs never send the travel event (the collector derives it from successful logins):
    the action set's ``watch`` names the logins, so that they leave within 0.1 s."""
    assert DERIVED_EVENTS == {IMPOSSIBLE_TRAVEL: (LOGIN,)}  # the enricher's own names
    assert parse_playbooks(BLOCKING_PLAYBOOK).watched() == {"auth.login.success"}
    rules = tmp_path / "playbooks.toml"
    rules.write_text(BLOCKING_PLAYBOOK)
    token = new_token()
    storage.create_key("sdk", hash_token(token))
    app = create_app(storage, playbooks=PlaybookSource(rules))
    with TestClient(app) as client:
        reply = client.get("/v1/actions", headers={"Authorization": f"Bearer {token}"})
    assert reply.json()["actions"]["watch"] == ["auth.login.success"]


def test_a_login_stored_in_any_spelling_is_found_by_a_later_one(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    """The stored logins are keyed by the folded identifiers: a login sent as
    ``Carol@Example.COM`` is the previous login of `` carol@example.com`` in a later body."""
    start = datetime.now(UTC) - timedelta(hours=2)
    pipeline(body(login(LONDON_IP, start, uid="Carol@Example.COM")))
    pipeline(body(login(SYDNEY_IP, start + timedelta(minutes=30), uid=" carol@example.com")))
    (alert,) = travels(storage)
    assert (alert.properties["from_ip"], alert.properties["to_ip"]) == (LONDON_IP, SYDNEY_IP)


def test_a_late_login_s_alert_carries_the_stored_later_login(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    """Sydney arrives first, London (30 minutes earlier) later, as a spool sent after an
    outage: the alert is as of the later login, the stored one, with its identifiers as it
    gave them, its request and its ``ip_info``."""
    start = datetime.now(UTC) - timedelta(hours=2)
    later = login(SYDNEY_IP, start + timedelta(minutes=30), uid="Dave@Example.com")
    later["request"]["path"] = "/mobile/login"
    pipeline(body(later))
    pipeline(body(login(LONDON_IP, start, uid="dave@example.com")))
    (alert,) = travels(storage)
    assert alert.user == {"uid": "Dave@Example.com"}
    assert alert.request is not None and alert.request["path"] == "/mobile/login"
    assert alert.enrichment["ip_info"]["city"] == "Sydney"
    assert (alert.properties["from_ip"], alert.properties["to_ip"]) == (LONDON_IP, SYDNEY_IP)


def test_another_key_s_event_of_the_same_id_never_speaks_for_the_stored_login(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    """Ids are unique per API key only. Another key (a leaked one, or another app's) stores
    first an event with the id a user's later login will have, for another user from
    elsewhere: the alert a late earlier login raises must still name the user who logged
    in, with their request, never the other key's event (a playbook blocking on impossible
    travel would block whom that key chose)."""
    start = datetime.now(UTC) - timedelta(hours=2)
    later = login(SYDNEY_IP, start + timedelta(minutes=30), uid="dave")
    later["request"]["path"] = "/mobile/login"
    decoy = login(PARIS_IP, start, uid="victim")
    decoy["id"] = later["id"]
    decoy["request"]["path"] = "/decoy"
    pipeline(body(decoy), key_id=7)
    # And the same user in another spelling, from an address no city places (no place of
    # its own), under a third key: not the login either.
    same_user = login("192.0.2.66", start, uid="DAVE")
    same_user["id"] = later["id"]
    same_user["request"]["path"] = "/decoy-same-user"
    pipeline(body(same_user), key_id=8)
    pipeline(body(later))
    pipeline(body(login(LONDON_IP, start, uid="dave")))
    (alert,) = travels(storage)
    assert alert.user == {"uid": "dave"}
    assert alert.request is not None and alert.request["path"] == "/mobile/login"
    assert alert.ip == SYDNEY_IP
    assert (alert.properties["from_ip"], alert.properties["to_ip"]) == (LONDON_IP, SYDNEY_IP)


def test_a_stored_login_dated_ahead_still_speaks_for_its_alert(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    """A later login from an SDK whose clock is a day ahead is placed at its receipt; the
    alert an earlier login raises when it arrives late still carries that stored login's
    request (its own time is not its place's)."""
    now = datetime.now(UTC)
    later = login(SYDNEY_IP, now + timedelta(days=1), uid="erin")
    later["request"]["path"] = "/ahead"
    pipeline(body(later))
    pipeline(body(login(LONDON_IP, now - timedelta(minutes=30), uid="erin")))
    (alert,) = travels(storage)
    assert alert.request is not None and alert.request["path"] == "/ahead"
    assert alert.user == {"uid": "erin"}


def test_places_are_stored_once_a_login_and_leave_with_retention(
    storage: Storage, pipeline: IngestPipeline, clock: Any
) -> None:
    """A retried login stores its place once; purging the events purges their places, so a
    login after the retention compares with nothing."""
    start = clock() - timedelta(hours=2)
    first = login(LONDON_IP, start, uid="erin")
    pipeline(body(first))
    pipeline(body(first, first))  # retried, and repeated in one body
    assert_places(storage, 1)
    clock.advance(days=31)
    assert storage.purge_older_than(30) == 1
    assert_places(storage, 0)
    pipeline(body(login(SYDNEY_IP, clock() - timedelta(minutes=1), uid="erin")))
    assert travels(storage) == []


def assert_places(storage: Storage, count: int, uid: str = "erin") -> None:
    from sqreen.server.intel._travel import _key_text
    from sqreen.server.storage import PlaceAsk

    far = 10**17  # every time an event may have (up to the year 9000)
    key = _key_text((("uid", uid),))
    assert len(storage.nearby_places([PlaceAsk(key, far, "", far, "", 2 * far)])) == count


def test_a_login_from_the_future_is_placed_at_its_receipt_and_leaves_with_it(
    storage: Storage, pipeline: IngestPipeline, clock: Any
) -> None:
    """A login dated in the year 8999 (an SDK's clock, or an ingest key): its row is as of
    its receipt, as its event is, so that retention deletes both."""
    pipeline(body(login(LONDON_IP, datetime(8999, 1, 1, tzinfo=UTC), uid="fay")))
    assert_places(storage, 1, "fay")
    clock.advance(days=100)
    assert storage.purge_older_than(30) == 1
    assert_places(storage, 0, "fay")


def test_sixteen_long_identifiers_store_the_login_and_still_compare(
    storage: Storage, pipeline: IngestPipeline
) -> None:
    """The most identifiers an SDK sends, each as long as it may be (over 6 KB as text, past
    PostgreSQL's largest index entry): the batch is stored, and the pair compared."""
    import random

    rng = random.Random(5)
    user = {
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(120)): "".join(
            rng.choice("ÀÉÎÕÜàéîõü€") for _ in range(256)
        )
        for _ in range(16)
    }
    start = datetime.now(UTC) - timedelta(hours=2)
    sent = [login(LONDON_IP, start), login(SYDNEY_IP, start + timedelta(minutes=30))]
    for n, event in enumerate(sent):
        event["user"], event["id"] = user, f"long-identifiers-{n}"
    replies = [pipeline(body(event)) for event in sent]
    assert [reply["accepted"] for reply in replies] == [1, 1]
    assert len(travels(storage)) == 1


@pytest.mark.parametrize(
    "uid", ["\ud800lone", "nul\x00in", "\u212bngstr\u00f6m", "X" * 256, "\u0000"]
)
def test_hostile_identifiers_store_the_login_and_still_compare(
    storage: Storage, pipeline: IngestPipeline, uid: str
) -> None:
    """Identifiers an ingest key chooses (a lone surrogate, NUL, long, other normal forms):
    the logins are stored, their places too, and the pair is compared."""
    start = datetime.now(UTC) - timedelta(hours=2)
    sent = [login(LONDON_IP, start, uid=uid), login(SYDNEY_IP, start + timedelta(minutes=30))]
    sent[1]["user"] = {"uid": uid.lower()}
    for n, event in enumerate(sent):
        event["id"] = f"{uid[:32]}-{n}"  # the id as hostile, as long as an id may be
    first, second = pipeline(body(sent[0])), pipeline(body(sent[1]))
    assert first["accepted"] == second["accepted"] == 1
    assert len(travels(storage)) == 1


def readme_travel_playbook() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (found,) = [
        text
        for text in re.findall(r"```toml\n(.*?)```", readme, re.DOTALL)
        if 'id = "impossible-travel"' in text
    ]
    return found


def test_forged_logins_raise_impossible_travel_which_the_readme_only_alerts_on(
    storage: Storage, city_mmdb: str, tmp_path: Path
) -> None:
    """What refusing the event from SDKs does not prevent: an ingest key sends two logins of
    anyone, far apart, and the collector raises impossible travel for them. The README's
    playbook alerts (a block would lock the account out for whoever forged them)."""
    rules = tmp_path / "playbooks.toml"
    rules.write_text(readme_travel_playbook())
    token = new_token()
    storage.create_key("leaked", hash_token(token))
    app = create_app(storage, ip_intel=IpIntel.open([city_mmdb]), playbooks=PlaybookSource(rules))
    now = datetime.now(UTC)
    forged = [
        login(LONDON_IP, now - timedelta(minutes=2), uid="victim"),
        login(SYDNEY_IP, now - timedelta(minutes=1), uid="victim"),
    ]
    with TestClient(app) as client:
        reply = client.post(
            "/v1/events", json=envelope(forged), headers={"Authorization": f"Bearer {token}"}
        ).json()
    assert reply["accepted"] == 2 and len(travels(storage)) == 1
    (alert,) = storage.list_alerts()
    assert (alert.playbook, alert.action, alert.block_id) == ("impossible-travel", "alert", None)
    assert storage.list_blocks() == []


def test_playbooks_check_warns_of_blocking_users_on_a_derived_event(tmp_path: Path) -> None:
    blocking, readme = tmp_path / "blocking.toml", tmp_path / "readme.toml"
    blocking.write_text(BLOCKING_PLAYBOOK)
    readme.write_text(readme_travel_playbook())
    warned = CliRunner().invoke(main, ["playbooks", "check", str(blocking)])
    assert warned.exit_code == 0, warned.output
    assert (
        "warning: impossible-travel blocks users on security.impossible_travel, which the "
        "collector derives from auth.login.success: whoever holds an ingest key"
    ) in warned.stderr
    quiet = CliRunner().invoke(main, ["playbooks", "check", str(readme)])
    assert quiet.exit_code == 0 and quiet.stderr == ""
