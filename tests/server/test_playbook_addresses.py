"""The addresses playbooks count and block: IPv6 by network (one host holds a whole /64, and
must not get a fresh count, and a fresh block, from each of its addresses), and only ever an
address that an event really carried (never a network sent in its place)."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sqreen._blocking import Blocklist
from sqreen._client_ip import TrustedProxies
from sqreen.server.explorer._alerts import group_of
from sqreen.server.export.ecs import ecs_alert
from sqreen.server.export.ocsf import ocsf_alert
from sqreen.server.intel._score import Reputation
from sqreen.server.playbooks import TEMPLATES, PlaybookError, is_exempt, parse_playbooks
from sqreen.server.playbooks._alerts import _block
from sqreen.server.playbooks._fields import ip_group
from sqreen.server.playbooks._streams import group_streams
from sqreen.server.storage import EventFilter

from .conftest import Collector, envelope
from .test_playbook_engine import BASE, Feed, variant
from .test_playbooks import armed, failure  # noqa: F401  (a fixture)

HOST = "2001:db8:1:2"  # a /64: one machine's, or one home's
#: RFC 4380's example: the Teredo address of client 192.0.2.45 (server 65.54.227.120, port
#: 40000); the same client through another server, with other flags and ports; its 6to4.
TEREDO = "2001:0:4136:e378:8000:63bf:3fff:fdd2"
SAME_CLIENT = [
    "2001:0:4136:e378:8000:63be:3fff:fdd2",
    "2001:0:4136:e378:8123:1:3fff:fdd2",
    "2001:0:5ef5:79fd:0:abcd:3fff:fdd2",
    "2002:c000:22d:1::1",
    "2002:c000:22d:ffff::2",
]


def fired(feed: Feed, playbook: str) -> list[tuple[str, int]]:
    return [(key, total) for pid, key, total, _ in feed.fired if pid == playbook]


def test_failures_from_addresses_of_one_64_count_together() -> None:
    feed = Feed()
    for n in range(1, 6):  # a new address for each try
        feed.send("auth.login.failure", ip=f"{HOST}::{n:x}", uid=str(n))
    assert fired(feed, "brute-force-ip") == [(f"{HOST}::/64", 5)]


def test_neighbouring_64s_are_apart_and_ipv4_addresses_are_as_they_are() -> None:
    feed = Feed()
    for n in range(1, 5):
        feed.send("auth.login.failure", ip=f"2001:db8:1:0::{n}", uid="a")
        feed.send("auth.login.failure", ip=f"2001:db8:1:1::{n}", uid="a")
        feed.send("auth.login.failure", ip="198.51.100.7", uid="b")
        feed.send("auth.login.failure", ip=f"198.51.100.{n + 7}", uid="b")
    assert fired(feed, "brute-force-ip") == []
    feed.send("auth.login.failure", ip="198.51.100.7", uid="b")
    feed.send("auth.login.failure", ip="2001:db8:1:0::99", uid="a")
    assert sorted(fired(feed, "brute-force-ip")) == [("198.51.100.7", 5), ("2001:db8:1::/64", 5)]


def test_ipv6_prefix_128_counts_each_address_and_48_a_site() -> None:
    per_address = TEMPLATES.replace(
        'id = "brute-force-ip"', 'id = "brute-force-ip"\nipv6_prefix = 128', 1
    )
    feed = Feed(per_address)
    for n in range(1, 11):
        feed.send("auth.login.failure", ip=f"{HOST}::{n:x}", uid="1")
    assert fired(feed, "brute-force-ip") == []
    per_site = TEMPLATES.replace('id = "brute-force-ip"', 'id = "brute-force-ip"\nipv6_prefix = 48')
    feed = Feed(per_site)
    for n in range(5):
        feed.send("auth.login.failure", ip=f"2001:db8:1:{n:x}::1", uid="1")
    assert fired(feed, "brute-force-ip") == [("2001:db8:1::/48", 5)]


def test_distinct_addresses_of_one_64_are_one_value() -> None:
    # A user whose home rotates its IPv6 privacy address is one place, not five.
    text = variant(
        group_by="'user'", distinct="'ip'", threshold="3", events="['auth.login.success']"
    )
    feed = Feed(text)
    for n in range(1, 6):
        feed.send("auth.login.success", ip=f"{HOST}::{n:x}", uid="7")
    assert fired(feed, "a") == []
    feed.send("auth.login.success", ip="2001:db8:9::1", uid="7")
    feed.send("auth.login.success", ip="203.0.113.5", uid="7")
    assert fired(feed, "a") == [('{"uid":"7"}', 3)]


def test_where_still_matches_the_address_itself() -> None:
    feed = Feed(variant(where=f"{{ ip = '{HOST}::1' }}", threshold="2"))
    feed.send("x", ip=f"{HOST}::2")
    feed.send("x", ip=f"{HOST}::3")
    assert fired(feed, "a") == []
    feed.send("x", ip=f"{HOST}::1")
    feed.send("x", ip=f"{HOST}::1")
    assert fired(feed, "a") == [(f"{HOST}::/64", 2)]


def test_a_64_holding_an_exempt_address_is_never_blocked() -> None:
    text = TEMPLATES.replace(
        'id = "brute-force-ip"', f'id = "brute-force-ip"\nexempt_ips = ["{HOST}::10/128"]', 1
    )
    feed = Feed(text)
    for n in range(1, 11):
        feed.send("auth.login.failure", ip=f"{HOST}::{n:x}", uid="1")
    assert fired(feed, "brute-force-ip") == []  # its block would lock the exempt one out


@pytest.mark.parametrize(
    ("ip", "group"),
    [
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),  # a dual-stack socket's IPv4 client
        ("198.51.100.7", "198.51.100.7"),
        ("2002:c633:6407:1234::1", "198.51.100.7"),  # 6to4: its IPv4 host's
        ("64:ff9b::c633:6407", "64:ff9b::c633:6407"),  # NAT64: one IPv4 client an address
        ("64:ff9b:1::c633:6407", "64:ff9b:1::c633:6407"),
        (TEREDO, "192.0.2.45"),  # Teredo: its IPv4 client's, whatever its port
        ("fe80::1%eth0", "fe80::/64"),  # its zone is no part of its network
        ("not:an:address", "not:an:address"),
    ],
)
def test_ip_group(ip: str, group: str) -> None:
    assert ip_group(ip, 64) == group


def test_the_default_prefix_keeps_the_streams_it_had() -> None:
    # Windows already stored keep counting across the upgrade: the default adds nothing to
    # a stream's id; another prefix is another stream.
    def stream_ids(text: str) -> set[str]:
        return set(group_streams(parse_playbooks(text)).streams)

    default, explicit = stream_ids(BASE), stream_ids(variant(ipv6_prefix="64"))
    assert default == explicit
    assert stream_ids(variant(ipv6_prefix="128")).isdisjoint(default)
    per_address = variant(ipv6_prefix="128").replace("'a'", "'c'")
    assert len(stream_ids(BASE + BASE.replace("'a'", "'b'") + per_address)) == 2  # a, b share


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("32", "ipv6_prefix: must be an integer from 48 to 128"),
        ("129", "ipv6_prefix: must be an integer from 48 to 128"),
        ("'64'", "ipv6_prefix: must be an integer"),
        ("true", "ipv6_prefix: must be an integer"),
        ("64.0", "ipv6_prefix: must be an integer"),
    ],
)
def test_a_bad_ipv6_prefix_is_refused_with_its_line(value: str, reason: str) -> None:
    with pytest.raises(PlaybookError, match=reason) as info:
        parse_playbooks(variant(ipv6_prefix=value), "pb.toml")
    assert info.value.line == 8


def test_ipv6_prefix_needs_an_ip_to_count() -> None:
    with pytest.raises(PlaybookError, match='ipv6_prefix: applies to group_by = "ip"'):
        parse_playbooks(variant(group_by="'user'", ipv6_prefix="64"))


def test_the_collector_blocks_the_64_and_the_sdk_refuses_its_other_addresses(
    armed: Collector,  # noqa: F811
) -> None:
    for n in range(1, 6):
        reply = armed.post("/v1/events", envelope([failure(f"{HOST}::{n:x}", f"u{n}")]))
    items = reply.json()["actions"]["items"]
    assert [i["ip"] for i in items if i["type"] == "block_ip"] == [f"{HOST}::/64"]
    (alert,) = armed.storage.list_alerts(playbook="brute-force-ip")
    assert (alert.group_by, alert.group_key, alert.total) == ("ip", f"{HOST}::/64", 5)
    blocklist = Blocklist(TrustedProxies(None))
    blocklist.apply(reply.json()["actions"])
    assert blocklist.ip_block(f"{HOST}:ffff:ffff:ffff:ffff") is not None  # never seen: blocked
    assert blocklist.ip_block("2001:db8:1:3::1") is None  # the next /64
    # What is shown and exported of it: no link to an events filter that cannot list a
    # /64, and no network in the address fields of ECS and OCSF.
    assert group_of("/explorer", "ip", alert.group_key).href is None
    assert group_of("/explorer", "ip", "198.51.100.7").href == "/explorer/events?ip=198.51.100.7"
    doc: dict[str, Any] = alert.to_json()
    assert "ip" not in ecs_alert(doc).get("source", {})
    assert "ip" not in ocsf_alert(doc).get("src_endpoint", {})
    assert ecs_alert(doc)["sqreen"]["alert"]["group_key"] == f"{HOST}::/64"


def alerted_on(keys: list[str]) -> Reputation:
    """The threat score's memory, read from a store whose recent IP alerts have ``keys``."""

    class Source:
        def now(self) -> datetime:
            return datetime.now(UTC)

        def recent_ip_blocks(self, since: Any, limit: int) -> list[str]:
            return []

        def recent_alert_ips(self, since: Any, limit: int) -> list[str]:
            return keys

    reputation = Reputation(Source())
    reputation.refresh()
    return reputation


def test_a_64_alerted_on_scores_its_addresses() -> None:
    reputation = alerted_on([f"{HOST}::/64", "198.51.100.7"])

    def check(text: str) -> tuple[bool, bool]:
        address = ipaddress.ip_address(text)
        return reputation.check((address.version, int(address), text))

    assert check(f"{HOST}::abcd") == (False, True)
    assert check("198.51.100.7") == (False, True)
    assert check("198.51.100.8") == (False, False)
    assert check("2001:db8:1:3::1") == (False, False)


@pytest.mark.parametrize("slow_path", [False, True], ids=["fast-parse", "usual-parse"])
def test_a_network_sent_as_an_events_ip_blocks_nothing(
    armed: Collector,  # noqa: F811
    slow_path: bool,
) -> None:
    # Someone holding an ingest key sends login failures "from" a /16: stored with no
    # address, they make no block (a block of the /16 would refuse 65 536 addresses).
    for n in range(6):
        events = [failure("203.0.0.0/16", f"u{n}"), failure("2001:db8:abcd::/48", f"v{n}")]
        if slow_path:  # an invalid event beside them: the batch takes the usual parser
            events.append({**failure("198.51.100.1", "x"), "timestamp": "yesterday"})
        reply = armed.post("/v1/events", envelope(events))
        assert reply.status_code == 200 and reply.json()["accepted"] == 2, reply.text
    assert armed.storage.list_blocks() == []
    assert {e.ip for e in armed.storage.query_events(EventFilter())} == {None}


def test_addresses_are_stored_in_their_canonical_spelling(armed: Collector) -> None:  # noqa: F811
    spellings = ["::ffff:203.0.113.5", "203.0.113.5", " 203.0.113.5", "[2001:DB8::7]:443"]
    reply = armed.post("/v1/events", envelope([failure(ip, "a") for ip in spellings]))
    assert reply.json()["accepted"] == 4
    stored = sorted(str(e.ip) for e in armed.storage.query_events(EventFilter()))
    assert stored == ["2001:db8::7", "203.0.113.5", "203.0.113.5", "203.0.113.5"]


@pytest.mark.parametrize(
    ("key", "blocked"),
    [
        ("203.0.113.9", "203.0.113.9/32"),
        (f"{HOST}::/64", f"{HOST}::/64"),
        ("203.0.0.0/16", None),  # stored before addresses were checked: never a block
        ("2001:db8:1::/48", None),  # wider than the playbook groups by
        ("2002:c633:6407::/48", None),  # a 6to4 host's, grouped so before: its IPv4 now
        ("2002:c633:6407:1::/64", None),
        ("unknown", None),
    ],
)
def test_a_playbook_blocks_one_group_never_more(key: str, blocked: str | None) -> None:
    (playbook,) = [p for p in parse_playbooks(TEMPLATES).playbooks if p.id == "brute-force-ip"]
    spec = _block(playbook, key, "5 failures", None)
    assert (spec.ip if spec is not None else None) == blocked


def test_clients_of_a_nat64_translator_are_counted_apart() -> None:
    feed = Feed()
    for n in range(6):  # one IPv4 attacker behind the translator
        feed.send("auth.login.failure", ip="64:ff9b::c633:6407", uid=str(n))
    for n in range(4):  # four others, once each: not the attacker's count
        feed.send("auth.login.failure", ip=f"64:ff9b::cb00:71{n:02x}", uid="z")
    assert fired(feed, "brute-force-ip") == [("64:ff9b::c633:6407", 5)]


def test_an_alert_on_a_network_from_old_events_scores_nothing() -> None:
    # Before addresses were checked, an event's ip could be a network, and so an alert's key.
    reputation = alerted_on(["203.0.0.0/16", "2001:db8::/32", f"{HOST}::/64"])
    assert reputation.check((4, int(ipaddress.ip_address("203.0.7.7")), "")) == (False, False)
    assert reputation.check((6, int(ipaddress.ip_address("2001:db8:9::1")), "")) == (False, False)
    assert reputation.check((6, int(ipaddress.ip_address(f"{HOST}::9")), "")) == (False, True)


def test_the_teredo_addresses_of_one_client_count_as_its_ipv4_address() -> None:
    # One IPv4 client takes a new Teredo address for each port (and server, and flags):
    # counted address by address, it never failed five times.
    feed = Feed()
    for n, address in enumerate([TEREDO, *SAME_CLIENT[:3]]):
        feed.send("auth.login.failure", ip=address, uid=str(n))
    feed.send("auth.login.failure", ip="2001:0:4136:e378:8000:63bf:3fff:fdd3", uid="z")
    assert fired(feed, "brute-force-ip") == []  # four of the client's, one of another's
    feed.send("auth.login.failure", ip="2001:0:4136:e378:0:4000:3fff:fdd2", uid="4")
    assert fired(feed, "brute-force-ip") == [("192.0.2.45", 5)]


def test_one_ipv4_client_counts_once_over_ipv4_teredo_and_6to4() -> None:
    feed = Feed()
    for n, address in enumerate(["192.0.2.45", TEREDO, *SAME_CLIENT[3:], "::ffff:192.0.2.45"]):
        feed.send("auth.login.failure", ip=address, uid=str(n))
    assert fired(feed, "brute-force-ip") == [("192.0.2.45", 5)]


def test_the_block_of_a_teredo_client_covers_its_other_addresses(
    armed: Collector,  # noqa: F811
) -> None:
    for n, address in enumerate([TEREDO, *SAME_CLIENT[:4]]):
        reply = armed.post("/v1/events", envelope([failure(address, f"u{n}")]))
    items = reply.json()["actions"]["items"]
    assert [i["ip"] for i in items if i["type"] == "block_ip"] == ["192.0.2.45/32"]
    blocklist = Blocklist(TrustedProxies(None))
    blocklist.apply(reply.json()["actions"])
    # Every address of the client, seen or not: a new port, its 6to4 /48, its IPv4 address.
    for address in ["2001:0:4136:e378:8000:1:3fff:fdd2", *SAME_CLIENT, "192.0.2.45"]:
        assert blocklist.ip_block(address) is not None, address
    for address in ["2001:0:4136:e378:8000:63bf:3fff:fdd3", "2002:c000:22e::1", "192.0.2.46"]:
        assert blocklist.ip_block(address) is None, address
    # The events behind the alert keep their own addresses.
    assert {e.ip for e in armed.storage.query_events(EventFilter())} == {TEREDO, *SAME_CLIENT[:4]}


@pytest.mark.parametrize(
    "exempt", ["2002:c000:22d::/48", "2002:c000:22d:7::1/128", TEREDO + "/128"]
)
def test_an_ipv4_client_whose_teredo_or_6to4_addresses_an_exemption_pins_is_exempt(
    exempt: str,
) -> None:
    # Its block would cover the exempt addresses (the SDK checks them against IPv4 blocks);
    # wider exemptions (2001::/32) exempt no IPv4 address: test_playbook_exempt_tunnels.py.
    text = TEMPLATES.replace(
        'id = "brute-force-ip"', f'id = "brute-force-ip"\nexempt_ips = ["{exempt}"]', 1
    )
    (playbook,) = [p for p in parse_playbooks(text).playbooks if p.id == "brute-force-ip"]
    assert is_exempt(playbook, "192.0.2.45")
    assert not is_exempt(playbook, "192.0.2.46")
    assert not is_exempt(playbook, "2001:db8::/64")


def test_a_client_alerted_on_scores_its_teredo_and_6to4_addresses() -> None:
    reputation = alerted_on(["192.0.2.45"])
    for text in [TEREDO, *SAME_CLIENT]:
        address = ipaddress.ip_address(text)
        assert reputation.check((6, int(address), text)) == (False, True), text
    other = ipaddress.ip_address("2002:c000:22e::1")
    assert reputation.check((6, int(other), str(other))) == (False, False)


def readme_playbook(playbook: str) -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    (block,) = [b for b in blocks if f'id = "{playbook}"' in b]
    return block


def test_a_site_rotating_its_64s_is_caught_by_the_documented_coarser_playbook() -> None:
    # 48 failures over 12 /64s of one /48, 4 from each: never 5 from one /64.
    for text, expected in [
        (TEMPLATES, []),
        (TEMPLATES + readme_playbook("brute-force-site"), [("2001:db8:1::/48", 20)]),
    ]:
        feed = Feed(text)
        for n in range(48):
            feed.send("auth.login.failure", ip=f"2001:db8:1:{n // 4:x}::{n + 1:x}", uid=str(n))
        assert fired(feed, "brute-force-ip") == []
        assert fired(feed, "brute-force-site") == expected
