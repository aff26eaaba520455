"""What a webhook's alert says of the events behind it (:func:`behind`): their addresses
with what IP intelligence stored, and their users, one account in any spelling."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqreen.server.playbooks._alerts import MOST_LISTED, MOST_USER_BYTES, behind
from sqreen.server.storage import StoredEvent

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def stored(
    seq: int,
    ip: str | None,
    user: dict[str, str] | None,
    name: str = "auth.login.failure",
    properties: dict[str, Any] | None = None,
    **info: Any,
) -> StoredEvent:
    return StoredEvent(
        seq=seq,
        id=f"e{seq}",
        name=name,
        timestamp=NOW,
        received_at=NOW,
        app="shop",
        host=None,
        ip=ip,
        user=user,
        properties=properties or {},
        target=None,
        request=None if ip is None else {"ip": ip},
        enrichment={"ip_info": info} if info else {},
    )


def test_addresses_and_users_most_events_first_one_account_in_any_spelling() -> None:
    events = [
        stored(1, "185.220.101.1", {"username": "Alice"}, country="DE", kind="tor", score=80),
        stored(2, "203.0.113.9", {"username": "alice "}),
        stored(3, "185.220.101.1", {"username": "bob"}, country="DE", kind="tor"),
        stored(4, "185.220.101.1", None, country="DE", kind="tor"),
        stored(5, None, {"username": "ALICE"}),
    ]
    assert behind(events) == {
        "addresses": [
            {"ip": "185.220.101.1", "events": 3, "country": "DE", "kind": "tor"},
            {"ip": "203.0.113.9", "events": 1},
        ],
        "users": [
            {"user": {"username": "Alice"}, "events": 3},  # as first spelled
            {"user": {"username": "bob"}, "events": 1},
        ],
        "from_events": 5,
    }


def test_at_most_the_listed_many_and_nothing_for_no_event() -> None:
    events = [stored(n, f"198.51.100.{n}", {"username": f"u{n}"}) for n in range(1, 60)]
    events += [stored(99, "198.51.100.59", {"username": "u59"})]
    said = behind(events)
    assert len(said["addresses"]) == len(said["users"]) == MOST_LISTED
    assert said["addresses"][0] == {"ip": "198.51.100.59", "events": 2}
    assert said["users"][0] == {"user": {"username": "u59"}, "events": 2}
    assert behind([]) == {"addresses": [], "users": [], "from_events": 0}


def test_the_event_that_fired_comes_first_however_few_its_events() -> None:
    """An account takeover after failures from 25 addresses: the success's address (the
    lead) was cut, seen last among 26 addresses of one event each."""
    events = [stored(n, f"79.{n}.1.1", {"username": "gina"}) for n in range(1, 26)]
    events.append(stored(26, "81.2.69.203", {"username": "Gina"}))
    said = behind(events, fired=26)
    assert said["addresses"][0] == {"ip": "81.2.69.203", "events": 1}
    assert len(said["addresses"]) == MOST_LISTED
    assert [a["ip"] for a in said["addresses"][1:]] == [f"79.{n}.1.1" for n in range(1, 20)]
    assert said["users"] == [{"user": {"username": "gina"}, "events": 26}]
    assert behind(events, fired=999)["addresses"][0]["ip"] == "79.1.1.1"  # no such event


def test_users_are_listed_within_a_byte_budget() -> None:
    """20 users of 16 identifiers of 256 emoji made a post of 1.4 MB (JSON escapes each in
    12 bytes), which receivers' body limits refuse: past the first, users stop at the
    budget."""
    big = {f"k{i:02d}": "\U0001f600" * 256 for i in range(16)}
    events = [
        stored(n, "198.51.100.9", {**big, "k00": f"{n}" + "\U0001f600" * 200}) for n in range(20)
    ]
    said = behind(events, fired=19)
    sizes = [len(json.dumps(u)) for u in said["users"]]
    assert said["users"][0]["user"]["k00"].startswith("19")  # the firing one, whole
    assert 1 <= len(sizes) < 20 and sum(sizes[1:]) <= MOST_USER_BYTES
    assert len(json.dumps(said)) < 3 * MOST_USER_BYTES


def test_an_impossible_travel_lists_both_places() -> None:
    """The travel event is the later login: its post listed only the later address (the
    earlier one was in its properties)."""
    travel = stored(
        7,
        "1.128.0.9",
        {"username": "ana"},
        name="security.impossible_travel",
        properties={"from_ip": "81.2.69.160", "from_country": "GB", "to_country": "AU"},
        country="AU",
    )
    assert behind([travel], fired=7)["addresses"] == [
        {"ip": "1.128.0.9", "events": 1, "country": "AU"},
        {"ip": "81.2.69.160", "events": 1, "country": "GB"},
    ]
    same = stored(8, "1.128.0.9", None, name="security.impossible_travel",
                  properties={"from_ip": "1.128.0.9"})  # fmt: skip
    assert behind([same])["addresses"] == [{"ip": "1.128.0.9", "events": 1}]
