"""The blocklist: indexed lookups that answer as a scan of every block would."""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sqreen
from sqreen._blocking import MAX_ID, MAX_REASON, Blocked, Blocklist, IPBlock, UserBlock
from sqreen._client_ip import TrustedProxies
from sqreen.transports import Reply, ScriptedTransport

#: RFC 4380's example: the Teredo address of client 192.0.2.45 (port 40000).
TEREDO = "2001:0:4136:e378:8000:63bf:3fff:fdd2"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def blocklist(
    items: list[dict[str, Any]], trusted: list[str] | None = None, clock: Clock | None = None
) -> Blocklist:
    b = Blocklist(TrustedProxies(trusted), clock or Clock())
    b.apply({"version": 1, "items": items})
    return b


def user(uid: str, expires_in: float | None = None, **more: str) -> dict[str, Any]:
    item: dict[str, Any] = {"id": f"u-{uid}", "type": "block_user", "user": {"uid": uid, **more}}
    if expires_in is not None:
        item["expires_in"] = expires_in
    return item


def ip(cidr: str, expires_in: float | None = None, id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"id": id or f"i-{cidr}", "type": "block_ip", "ip": cidr}
    if expires_in is not None:
        item["expires_in"] = expires_in
    return item


# -- users ------------------------------------------------------------------------------------


def test_a_user_matches_when_every_key_of_the_block_is_theirs() -> None:
    b = blocklist(
        [user("7", tenant="acme"), {"id": "e", "type": "block_user", "user": {"email": "m@x.io"}}]
    )
    blocked = b.user_block({"uid": "7", "tenant": "acme", "name": "Mallory"})
    assert isinstance(blocked, Blocked) and blocked.action_id == "u-7"
    assert blocked.user == {"uid": "7", "tenant": "acme", "name": "Mallory"}
    assert b.user_block({"uid": "7"}) is None  # lacks the tenant
    assert b.user_block({"uid": "7", "tenant": "other"}) is None
    assert b.user_block({"uid": "8", "email": "m@x.io"}) is not None
    assert b.user_block({"uid": "8"}) is None
    assert b.user_block({}) is None and b.user_block(None) is None


@pytest.mark.parametrize(
    ("blocked", "identified"),
    [
        ("alice@example.com", " Alice@Example.com "),
        (" ALICE@example.COM\t", "alice@example.com"),
        ("Straße", "STRASSE"),  # case-folded, not lower-cased
    ],
)
def test_user_values_match_trimmed_and_case_folded(blocked: str, identified: str) -> None:
    b = blocklist([{"id": "a", "type": "block_user", "user": {"email": blocked}}])
    assert b.user_block({"email": identified}) is not None
    assert b.user_block({"Email": identified}) is None  # keys are compared as they are


def test_refused_user_blocks(sqreen_log: pytest.LogCaptureFixture) -> None:
    b = blocklist(
        [
            {"id": "empty", "type": "block_user", "user": {}},
            {"id": "none", "type": "block_user"},
            {"id": "int", "type": "block_user", "user": {"uid": 7}},
            {"id": "zero", "type": "block_user", "user": {"uid": "7"}, "expires_in": 0},
        ]
    )
    assert b.user_block({"uid": "7"}) is None
    assert "refusing block empty" in sqreen_log.text and "refusing block int" in sqreen_log.text


# -- networks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cidr", "inside", "outside"),
    [
        ("203.0.113.0/24", ["203.0.113.0", "203.0.113.255"], ["203.0.114.0", "203.0.112.255"]),
        ("203.0.113.7", ["203.0.113.7"], ["203.0.113.8"]),
        ("203.0.113.7/24", ["203.0.113.1"], ["203.0.114.1"]),  # host bits cleared
        ("198.51.0.0/16", ["198.51.255.1"], ["198.52.0.1"]),
        ("2001:db8:1::/48", ["2001:db8:1:ffff::1"], ["2001:db8:2::1", "203.0.113.1"]),
        ("2001:db8::1/128", ["2001:db8::1", "2001:DB8:0::1"], ["2001:db8::2"]),
        ("::ffff:203.0.113.0/120", ["203.0.113.9", "::ffff:203.0.113.9"], ["203.0.114.9"]),
        # An IPv4 block covers the Teredo addresses of its client (whatever the server,
        # flags and port) and its 6to4 /48, as playbooks count them under the IPv4 address;
        # and its NAT64 addresses (well-known and local-use prefixes), which playbooks take
        # as covered by it (a translator in front of an IPv6-only site shows them).
        (
            "192.0.2.45",
            [
                TEREDO,
                "2001:0:5ef5:79fd:0:abcd:3fff:fdd2",
                "2002:c000:22d:1::1",
                "192.0.2.45",
                "64:ff9b::192.0.2.45",
                "64:ff9b:1:2a::c000:22d",
            ],
            [
                "2001:0:4136:e378:8000:63bf:3fff:fdd3",
                "2002:c000:22e::1",
                "2001:db8::3fff:fdd2",
                "64:ff9b::c000:22e",
                "64:ff9b:2::c000:22d",
                "64:ff9b:0:1::c000:22d",
            ],
        ),
        ("192.0.2.0/24", ["2001:0:4136:e378:8000:63bf:3fff:fd37", "2002:c000:2c8::1"], []),
    ],
)
def test_networks_cover_their_addresses(cidr: str, inside: list[str], outside: list[str]) -> None:
    b = blocklist([ip(cidr)])
    assert b.has_ips
    for address in inside:
        blocked = b.ip_block(address)
        assert blocked is not None and blocked.ip == address, address
    for address in outside:
        assert b.ip_block(address) is None, address


@pytest.mark.parametrize(
    "cidr",
    [
        "10.0.0.0/15",  # wider than /16
        "0.0.0.0/0",
        "2001:db8::/47",  # wider than /48
        # NAT64 addresses of more than a /16 of IPv4 clients: every client of a translator.
        "64:ff9b::/96",
        "64:ff9b::/111",
        "64:ff9b:1::/48",
        "64:ff9b:1:2:3::/80",
        "::ffff:0.0.0.0/96",  # every IPv4 address, written as IPv6
        "127.0.0.0/24",  # covers the trusted loopback proxies
        "::1/128",
        "10.0.0.0/33",
        "10.0.0.0/ 24",
        "10.0.0.0/٢٤",
        "01.2.3.4/32",
        "fe80::1%eth0/64",
        "not an address",
        "",
    ],
)
def test_refused_networks(cidr: str, sqreen_log: pytest.LogCaptureFixture) -> None:
    b = blocklist([ip(cidr, id="x")])
    assert not b.has_ips
    assert "refusing block x" in sqreen_log.text


def test_a_nat64_network_of_a_slash_16_of_clients_or_fewer_is_enforced() -> None:
    b = blocklist([ip("64:ff9b::c000:0/112"), ip("64:ff9b:1:2:3:4::/120")])
    assert b.ip_block("64:ff9b::192.0.255.1") is not None
    assert b.ip_block("64:ff9b::192.1.0.1") is None
    assert b.ip_block("64:ff9b:1:2:3:4:0:ff") is not None


def test_a_network_covering_a_configured_proxy_is_refused() -> None:
    b = blocklist([ip("10.1.0.0/16"), ip("10.2.3.4")], trusted=["10.1.2.3"])
    assert b.ip_block("10.1.9.9") is None
    assert b.ip_block("10.2.3.4") is not None


@pytest.mark.parametrize(
    ("proxy", "refused", "kept"),
    [
        # A proxy reached over NAT64 (SIIT-DC in front of an IPv6-only site), or a Teredo or
        # 6to4 one: an IPv4 block of its client would refuse it, as it refuses them.
        ("64:ff9b::cb00:710a", "203.0.113.0/24", "203.0.114.0/24"),
        ("64:ff9b::cb00:7100/120", "203.0.113.128/25", "203.0.112.0/24"),
        ("64:ff9b:1::cb00:710a", "203.0.113.10", "203.0.113.11"),
        ("2002:cb00:710a::/48", "203.0.113.10", "203.0.113.11"),
        (TEREDO, "192.0.2.45", "192.0.2.46"),
    ],
)
def test_an_ipv4_block_of_a_proxy_s_carried_client_is_refused(
    proxy: str, refused: str, kept: str
) -> None:
    b = blocklist([ip(refused, id="r"), ip(kept, id="k")], trusted=[proxy])
    assert "covers a trusted proxy" in b.refused["r"] and "k" not in b.refused


def test_garbage_addresses_are_not_blocked() -> None:
    b = blocklist([ip("203.0.113.0/24")])
    for address in ("", "unknown", "203.0.113", "::zz", "203.0.113.9.1"):
        assert b.ip_block(address) is None
    assert b.ip_block("203.0.113.9:443") is not None  # read as the middleware reads a peer


# -- expiry, order, versions --------------------------------------------------------------------


def test_each_block_expires_on_its_own_deadline() -> None:
    clock = Clock()
    b = blocklist(
        [ip("203.0.113.0/24", 10, "short"), ip("203.0.113.9", 60, "long"), user("7", 30)],
        clock=clock,
    )
    assert b.ip_block("203.0.113.9").action_id == "short"  # type: ignore[union-attr]
    clock.now += 10
    assert b.ip_block("203.0.113.9").action_id == "long"  # type: ignore[union-attr]
    assert b.ip_block("203.0.113.8") is None
    assert b.user_block({"uid": "7"}) is not None
    clock.now += 20
    assert b.user_block({"uid": "7"}) is None
    clock.now += 29.9
    assert b.ip_block("203.0.113.9") is not None
    clock.now += 0.1
    assert b.ip_block("203.0.113.9") is None


def test_a_teredo_or_6to4_address_is_answered_by_the_first_block_covering_it_or_its_client() -> (
    None
):
    b = blocklist([{**ip("2002:c000:22d::/48"), "id": "v6"}, {**ip("192.0.2.45"), "id": "v4"}])
    assert [b.ip_block(a).action_id for a in ("2002:c000:22d::1", TEREDO)] == ["v6", "v4"]
    b = blocklist([{**ip("192.0.2.45"), "id": "v4"}, {**ip("2002:c000:22d::/48"), "id": "v6"}])
    blocked = b.ip_block("2002:c000:22d::1")
    assert blocked is not None and (blocked.action_id, blocked.ip) == ("v4", "2002:c000:22d::1")


def test_the_first_matching_block_of_the_set_answers() -> None:
    b = blocklist(
        [
            {**ip("203.0.113.9"), "id": "first", "reason": "a"},
            {**ip("203.0.113.0/24"), "id": "second"},
            {**user("7"), "id": "u1", "reason": "spam"},
            {**user("7", tenant="t"), "id": "u2"},
        ]
    )
    blocked = b.ip_block("203.0.113.9")
    assert blocked is not None and (blocked.action_id, blocked.reason) == ("first", "a")
    blocked = b.user_block({"uid": "7", "tenant": "t"})
    assert blocked is not None and (blocked.action_id, blocked.reason) == ("u1", "spam")


def test_apply_replaces_the_index_whole_and_ignores_a_known_version() -> None:
    b = blocklist([ip("203.0.113.9"), user("7")])
    before = b._index
    b.apply({"version": 1, "items": []})  # the same version: ignored
    assert b._index is before and b.ip_block("203.0.113.9") is not None
    b.apply({"version": 2, "items": [user("8")]})
    assert b._index is not before and b.version == 2
    assert before.has_ips and before.users  # readers holding the old index see it whole
    assert not b.has_ips and b.ip_block("203.0.113.9") is None
    assert b.user_block({"uid": "7"}) is None and b.user_block({"uid": "8"}) is not None
    b.apply({"version": 3, "items": "nope"})
    b.apply(None)
    assert b.version == 2


def test_a_new_version_reuses_the_networks_it_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    b = blocklist([ip("203.0.113.9"), ip("10.0.0.0/8", id="wide")])
    parsed: list[str] = []
    original = b._network
    monkeypatch.setattr(
        b, "_network", lambda text, action_id: parsed.append(text) or original(text, action_id)
    )
    b.apply({"version": 2, "items": [ip("203.0.113.9"), ip("10.0.0.0/8"), ip("198.51.100.1")]})
    assert parsed == ["198.51.100.1"]
    assert b.ip_block("203.0.113.9") is not None and b.ip_block("10.1.1.1") is None
    assert set(b._networks) == {"203.0.113.9", "10.0.0.0/8", "198.51.100.1"}


def test_blocks_survive_a_fork() -> None:
    b = blocklist([ip("203.0.113.9"), user("7")])
    b.after_fork_in_child()
    assert b.ip_block("203.0.113.9") is not None and b.user_block({"uid": "7"}) is not None


# -- the index answers as a scan would ----------------------------------------------------------


def scan(items: list[dict[str, Any]], uid: str | None, address: str | None) -> set[str]:
    """The ids of the blocks a linear scan finds matching (the reference)."""
    found = set()
    for item in items:
        if item["type"] == "block_user" and uid is not None:
            wanted = {k: v.strip().casefold() for k, v in item["user"].items()}
            if wanted == {"uid": uid.strip().casefold()}:
                found.add(item["id"])
        elif item["type"] == "block_ip" and address is not None:
            if ipaddress.ip_address(address) in ipaddress.ip_network(item["ip"], strict=False):
                found.add(item["id"])
    return found


NETWORKS = st.builds(
    lambda a, b, plen: f"198.{18 + a % 2}.{b}.0/{plen}",
    st.integers(0, 1),
    st.integers(0, 3),
    st.sampled_from([16, 20, 23, 24, 30, 32]),
) | st.builds(
    lambda b, plen: f"2001:db8:{b}::/{plen}", st.integers(0, 3), st.sampled_from([48, 64, 128])
)
ADDRESSES = st.builds(
    lambda a, b, c: f"198.{18 + a % 2}.{b}.{c}",
    st.integers(0, 1),
    st.integers(0, 3),
    st.integers(0, 3),
) | st.builds(lambda b, c: f"2001:db8:{b}::{c}", st.integers(0, 3), st.integers(0, 3))
UIDS = st.sampled_from(["alice", "Alice ", "bob", "BOB", "carol"])


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(
        st.tuples(
            st.one_of(NETWORKS, UIDS), st.one_of(st.none(), st.sampled_from([5.0, 10.0, 20.0]))
        ),
        max_size=25,
    ),
    elapsed=st.sampled_from([0.0, 7.0, 15.0, 30.0]),
    uid=UIDS,
    address=ADDRESSES,
)
def test_lookups_answer_as_a_linear_scan(
    blocks: list[tuple[str, float | None]], elapsed: float, uid: str, address: str
) -> None:
    items = []
    for i, (target, expires_in) in enumerate(blocks):
        item = ip(target, expires_in) if "/" in target else user(target, expires_in)
        items.append({**item, "id": str(i)})
    clock = Clock()
    b = blocklist(items, clock=clock)
    clock.now += elapsed
    live = [i for i in items if i.get("expires_in") is None or i["expires_in"] > elapsed]
    for found, expected in (
        (b.user_block({"uid": uid}), scan(live, uid, None)),
        (b.ip_block(address), scan(live, None, address)),
    ):
        if expected:
            assert found is not None and found.action_id == min(expected, key=int)
        else:
            assert found is None


def test_public_records_keep_their_shape() -> None:
    assert UserBlock._fields == ("user", "deadline", "reason", "action_id")
    assert IPBlock._fields == ("network", "deadline", "reason", "action_id")
    assert issubclass(Blocked, BaseException) and not issubclass(Blocked, Exception)


def test_refusals_are_logged_once_per_network(sqreen_log: pytest.LogCaptureFixture) -> None:
    b = blocklist([ip("10.0.0.0/8", id="wide")])
    b.apply({"version": 2, "items": [ip("10.0.0.0/8", id="wide")]})
    records = [r for r in sqreen_log.records if r.levelno == logging.WARNING]
    assert len(records) == 1 and "too wide" in records[0].getMessage()


def test_refused_blocks_are_kept_with_their_reason_and_reported_in_the_heartbeat() -> None:
    items = [
        ip("10.0.0.0/8", id="wide"),
        ip("127.0.0.1", id="proxy"),
        ip("not an ip", id="junk"),
        {"id": "nobody", "type": "block_user", "user": {}},
        ip("203.0.113.7", id="fine"),
    ]
    b = blocklist(items)
    assert b.refused == {
        "wide": "10.0.0.0/8 is too wide",
        "proxy": "127.0.0.1/32 covers a trusted proxy",
        "junk": "invalid network",
        "nobody": "it needs a non-empty user",
    }
    b.apply({"version": 2, "items": items[1:]})  # a new version: the known networks reused
    assert set(b.refused) == {"proxy", "junk", "nobody"}
    b.apply({"version": 3, "items": [items[-1]]})
    assert b.refused == {} and b.ip_block("203.0.113.7") is not None

    beats: list[dict[str, Any]] = []
    transport = ScriptedTransport(
        lambda call: (
            (beats.append(call.payload) if call.kind == "heartbeat" else None)
            or Reply("ok", actions={"version": 1, "items": items})
        )
    )
    client = sqreen.init(transport=transport, heartbeat_interval=0.05)
    client.start()
    deadline = time.monotonic() + 5
    while not any("refused_blocks" in b["stats"] for b in beats) and time.monotonic() < deadline:
        time.sleep(0.02)
    reported = next(b["stats"]["refused_blocks"] for b in beats if "refused_blocks" in b["stats"])
    assert reported["proxy"] == "127.0.0.1/32 covers a trusted proxy" and "fine" not in reported


def test_refusals_are_logged_once_a_set_in_one_line_their_ids_written_out(
    sqreen_log: pytest.LogCaptureFixture,
) -> None:
    """A collector's ids cannot make log lines of their own nor act on a terminal; a set
    repeating the refusals of the one before logs nothing again (a set changing at every
    reply logged each refused block again: 7 MB of log a second)."""
    forged = "x\n2099-01-01 CRITICAL root: FORGED\x1b[2J"
    items = [{"id": f"{forged}{n}", "type": "block_user", "user": {}} for n in range(50)]
    b = Blocklist(TrustedProxies(None))
    b.apply({"version": 1, "items": items})
    lines = [r.getMessage() for r in sqreen_log.records if "refusing block" in r.getMessage()]
    assert len(lines) == 1
    assert "\n" not in lines[0] and "\x1b" not in lines[0] and "\\x1b" in lines[0]
    assert "(and 45 more)" in lines[0] and len(b.refused) == 50
    sqreen_log.clear()
    b.apply({"version": 2, "items": items})
    assert not [r for r in sqreen_log.records if "refusing block" in r.getMessage()]


def test_an_action_set_s_odd_blocks_are_refused_alone(sqreen_log: pytest.LogCaptureFixture) -> None:
    """A refused block without an id, an expiry of 400 digits (no float holds it) and a
    reason or id of a megabyte: each is refused or bounded, never an error, and the set's
    other blocks are enforced."""
    huge = int("1" + "0" * 400)
    b = blocklist(
        [
            {"type": "block_user", "user": {}},  # refused, and no id
            ip("203.0.113.9", id="far", expires_in=huge),
            {**ip("203.0.113.10", id="y" * 1_000_000), "reason": "r" * 1_000_000},
            ip("203.0.113.11", id="fine"),
        ]
    )
    assert b.version == 1
    assert b.ip_block("203.0.113.9") is None
    long = b.ip_block("203.0.113.10")
    assert long is not None and len(long.reason or "") == MAX_REASON
    assert len(long.action_id or "") == MAX_ID and len(str(long)) < 2 * MAX_REASON
    assert b.ip_block("203.0.113.11") is not None
    assert b.refused == {
        "": "it needs a non-empty user",
        "far": "its expires_in is no finite number of seconds",  # reported to the collector
    }
    b.apply({"version": 2, "since": 1, "add": [], "remove": ["y" * 1_000_000]})
    assert b.ip_block("203.0.113.10") is None  # removed by its id, as long as it came


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("alice",), "user_identifiers: must be a dict, not str"),
        (({"uid": None},), "user_identifiers.uid: "),
        ((None, 3232235777), "ip: must be a str, not int"),
    ],
)
def test_is_blocked_given_what_it_cannot_read_raises_in_strict_mode_only(
    args: tuple[Any, ...], said: str
) -> None:
    """A mistake in the call answers "not blocked" in production, as ever; under tests it is
    said, naming the argument, rather than passing as an unblocked user."""
    sqreen.init(transport="memory:")
    assert sqreen.is_blocked(*args) is False
    sqreen.shutdown()
    sqreen.init(transport="memory:", strict=True)
    with pytest.raises(sqreen.InvalidEvent, match="^" + said.replace(".", r"\.")):
        sqreen.is_blocked(*args)
    assert sqreen.is_blocked({"uid": "7"}, "198.51.100.7") is False
