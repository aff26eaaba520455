"""The cost of the blocklist's lookups and of applying an action set, by number of blocks.

    .venv/bin/python bench/bench_blocking.py

For 0, 100 and 10 000 active blocks (half users, half IP networks: IPv4 /32 and /24, IPv6
/64), the cost of one call of ``ip_block`` and ``user_block`` (an address or a user
that is not blocked, the usual case on the request path, and one that is), beside a linear
scan of the same blocks (the blocklist before it was indexed), and the cost of ``apply()``.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sqreen._blocking import Blocklist, IPBlock, UserBlock
from sqreen._client_ip import TrustedProxies

SIZES = (0, 100, 10_000)
CALLS = 2000
ROUNDS = 5


def actions(n: int) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for i in range(n):
        j = i // 2
        if i % 2:
            ip = (
                f"198.{18 + j % 2}.{j // 256 % 256}.{j % 256}/32",
                f"10.{j // 65536 % 256}.{j // 256 % 256}.0/24",
                f"2001:db8:{j % 65536:x}::/64",
            )[j % 3]
            items.append({"id": f"i{i}", "type": "block_ip", "ip": ip, "expires_in": 3600})
        else:
            user = {"email": f"user{j}@example.com"} if j % 2 else {"uid": str(j), "tenant": "t1"}
            items.append({"id": f"u{i}", "type": "block_user", "user": user, "expires_in": 3600})
    return {"version": n + 1, "items": items}


def last_blocked(items: list[dict[str, Any]]) -> tuple[str, dict[str, str]]:
    """An IPv4 address and a user that the last blocks of their kind cover."""
    ip = next(i["ip"] for i in reversed(items) if i["type"] == "block_ip" and ":" not in i["ip"])
    user = next(i["user"] for i in reversed(items) if i["type"] == "block_user")
    return ip.partition("/")[0].replace(".0/", ".1/"), {**user, "name": "Mallory"}


class LinearScan:
    """The blocklist before the index: every lookup walks every block."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + 3600
        self.users = tuple(
            UserBlock(i["user"], deadline, None, i["id"]) for i in items if "user" in i
        )
        self.nets = tuple(
            IPBlock(ipaddress.ip_network(i["ip"], strict=False), deadline, None, i["id"])
            for i in items
            if "ip" in i
        )

    def ip_block(self, ip: str) -> IPBlock | None:
        if not self.nets:
            return None
        addr = ipaddress.ip_address(ip)
        now = time.monotonic()
        for block in self.nets:
            if (block.deadline is None or block.deadline > now) and addr in block.network:
                return block
        return None

    def user_block(self, user: dict[str, str]) -> UserBlock | None:
        if not self.users:
            return None
        now = time.monotonic()
        for block in self.users:
            if (block.deadline is None or block.deadline > now) and all(
                user.get(k) == v for k, v in block.user.items()
            ):
                return block
        return None


def per_call(fn: Callable[[], Any], calls: int = CALLS) -> float:
    """Seconds per call: the best of ROUNDS rounds of ``calls`` calls (the machine is shared)."""
    fn()
    rounds = []
    gc.disable()
    try:
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            rounds.append((time.perf_counter() - t0) / calls)
    finally:
        gc.enable()
    return min(rounds)


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:,.2f}" if seconds < 1e-3 else f"{seconds * 1e6:,.0f}"


def cases(
    indexed: Blocklist, linear: LinearScan, items: list[dict[str, Any]]
) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """(name, indexed call, linear call) for each lookup measured."""
    ip, user = "203.0.113.9", {"email": "bob@example.com", "uid": "42"}
    out: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("ip_block, not blocked", lambda: indexed.ip_block(ip), lambda: linear.ip_block(ip)),
        (
            "user_block, not blocked",
            lambda: indexed.user_block(user),
            lambda: linear.user_block(user),
        ),
    ]
    if items:
        hit_ip, hit_user = last_blocked(items)
        assert indexed.ip_block(hit_ip) is not None and linear.ip_block(hit_ip) is not None
        assert indexed.user_block(hit_user) and linear.user_block(hit_user) is not None
        out += [
            (
                "ip_block, blocked",
                lambda: indexed.ip_block(hit_ip),
                lambda: linear.ip_block(hit_ip),
            ),
            (
                "user_block, blocked",
                lambda: indexed.user_block(hit_user),
                lambda: linear.user_block(hit_user),
            ),
        ]
    return out


def main() -> None:
    trusted = TrustedProxies(None)
    rows: list[tuple[int, str, float, float | None]] = []
    for n in SIZES:
        action_set = actions(n)
        again = {**action_set, "version": -1}  # a new version repeats the blocks in force
        firsts, nexts = [], []
        for _ in range(ROUNDS):
            indexed = Blocklist(trusted)
            t0 = time.perf_counter()
            indexed.apply(action_set)
            t1 = time.perf_counter()
            indexed.apply(again)
            firsts.append(t1 - t0)
            nexts.append(time.perf_counter() - t1)
        linear = LinearScan(action_set["items"])
        for name, fast, slow in cases(indexed, linear, action_set["items"]):
            rows.append((n, name, per_call(fast), per_call(slow, 50 if n > 1000 else CALLS)))
        rows.append((n, "apply()", min(firsts), None))
        rows.append((n, "apply(), next version", min(nexts), None))

    print("\nBlocklist, µs per call (best of 5 rounds)\n")
    print(f"| {'blocks':>6} | {'call':<24} | {'indexed':>9} | {'linear scan':>11} |")
    print(f"|{'-' * 7}:|{'-' * 26}|{'-' * 10}:|{'-' * 12}:|")
    for n, name, fast, slow in rows:
        print(f"| {n:>6,} | {name:<24} | {fmt(fast):>9} | {fmt(slow) if slow else '':>11} |")


if __name__ == "__main__":
    main()
