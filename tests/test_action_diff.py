"""The SDK applies the collector's diffs of the action set (block, lift, extend) to the set it
holds, ignores one made for another version (its next request says which it holds, and a
collector answers that with the whole set when the gap is wide), and spools the whole set."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqreen
from sqreen._blocking import Blocklist
from sqreen._client_ip import TrustedProxies
from sqreen.transports import Reply, ScriptedTransport
from sqreen.transports.scripted import Call


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ip(id: str, cidr: str, expires_in: float | None = None) -> dict[str, Any]:
    return {"id": id, "type": "block_ip", "ip": cidr, "expires_in": expires_in, "reason": id}


def user(id: str, uid: str) -> dict[str, Any]:
    return {"id": id, "type": "block_user", "user": {"uid": uid}, "expires_in": None}


def diff(
    version: int, since: int, add: Sequence[Any] = (), remove: Sequence[str] = ()
) -> dict[str, Any]:
    return {"version": version, "since": since, "add": list(add), "remove": list(remove)}


def holding(clock: Clock) -> Blocklist:
    b = Blocklist(TrustedProxies(None), clock)
    b.apply({"version": 1, "items": [ip("1", "203.0.113.0/24", 60), user("2", "7")]})
    return b


def test_a_diff_blocks_lifts_and_extends() -> None:
    clock = Clock()
    b = holding(clock)
    b.apply(diff(2, 1, add=[ip("3", "198.51.100.7")]))
    assert b.version == 2 and b.ip_block("198.51.100.7") is not None
    assert b.ip_block("203.0.113.9") is not None and b.user_block({"uid": "7"}) is not None

    b.apply(diff(3, 2, remove=["2"]))  # lifted
    assert b.version == 3 and b.user_block({"uid": "7"}) is None
    assert b.ip_block("198.51.100.7") is not None

    b.apply(diff(4, 3, add=[ip("1", "203.0.113.0/24", 600)]))  # extended: ten minutes
    clock.now += 120  # past its first deadline
    found = b.ip_block("203.0.113.9")
    assert b.version == 4 and found is not None and found.action_id == "1"
    assert [item["id"] for item in b.snapshot()["items"]] == ["1", "3"]  # its place kept
    clock.now += 500
    assert b.ip_block("203.0.113.9") is None


def test_a_diff_for_another_version_is_ignored_and_a_whole_set_follows() -> None:
    clock = Clock()
    b = holding(clock)
    b.apply(diff(6, 5, add=[ip("9", "192.0.2.1")], remove=["1"]))  # a gap: 2 to 5 missed
    assert b.version == 1 and b.ip_block("192.0.2.1") is None
    assert b.ip_block("203.0.113.9") is not None
    b.apply(diff(1, 0, add=[ip("9", "192.0.2.1")]))  # (the version it holds: nothing new)
    assert b.ip_block("192.0.2.1") is None
    b.apply({"version": 6, "items": [ip("9", "192.0.2.1")]})  # what the collector sends then
    assert b.version == 6 and b.ip_block("192.0.2.1") is not None
    assert b.ip_block("203.0.113.9") is None and b.user_block({"uid": "7"}) is None
    b.apply({"version": 7, "since": 6, "add": "nope", "remove": []})  # malformed: ignored
    assert b.version == 6


def test_a_refused_block_in_a_diff_is_reported_and_lifted_like_any_other() -> None:
    b = holding(Clock())
    b.apply(diff(2, 1, add=[ip("wide", "10.0.0.0/8")]))
    assert b.refused == {"wide": "10.0.0.0/8 is too wide"}
    assert "wide" in [item["id"] for item in b.snapshot()["items"]]
    b.apply(diff(3, 2, remove=["wide"]))
    assert b.refused == {} and "wide" not in [item["id"] for item in b.snapshot()["items"]]


def test_the_spool_keeps_the_whole_set_after_a_diff(tmp_path: Path) -> None:
    """The next process of the app starts from the spool: it holds a whole set, never a
    diff it could not apply."""
    replies = [
        {"version": 1, "items": [ip("1", "203.0.113.9")], "watch": ["a"]},
        {**diff(2, 1, add=[user("2", "7")]), "watch": ["a", "b"]},
    ]
    held: list[Any] = []

    def answer(call: Call) -> Reply:
        if call.kind != "events":
            return Reply("ok")
        held.append(call.payload["actions"])
        return Reply("ok", actions=replies.pop(0) if replies else None)

    client = sqreen.init(transport=ScriptedTransport(answer), spool=str(tmp_path))
    for name in ("one", "two"):
        sqreen.track(name)
        assert sqreen.flush(timeout=5)
    assert sqreen.is_blocked({"uid": "7"}) and client.blocklist.version == 2
    assert held == [{"version": -1, "diff": True}, {"version": 1, "diff": True}]
    assert client.spool is not None and client.spool.directory.parent == tmp_path
    saved = json.loads((client.spool.directory / "actions.json").read_text())["actions"]
    assert saved["version"] == 2 and "since" not in saved and saved["watch"] == ["a", "b"]
    assert [item["id"] for item in saved["items"]] == ["1", "2"]
    fresh = Blocklist(TrustedProxies(None))
    fresh.apply(saved)
    assert fresh.user_block({"uid": "7"}) is not None
    assert fresh.ip_block("203.0.113.9") is not None
