"""A block an SDK refuses to enforce reaches the collector: the real SDK, over HTTP, to the
real collector on 127.0.0.1. The heartbeat carries the refused blocks with their reasons (text,
not counters), which the collector once answered with a 400, so that no operator heard."""

from __future__ import annotations

import time

import sqreen
from sqreen.server.storage import Agent

from .conftest import Collector


def _reported(collector: Collector, timeout: float = 15) -> Agent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for agent in collector.storage.agents():
            if agent.stats.get("refused_blocks"):
                return agent
        time.sleep(0.05)
    raise AssertionError("no heartbeat reported the refused block")


def test_an_sdk_reports_the_block_it_refuses(collector: Collector) -> None:
    # The SDKs of this app trust their load balancers, on 10.0.0.0/24: a block on one of
    # them would refuse every client, so they refuse to enforce it, and say why.
    proxy = collector.storage.create_block("block_ip", ip="10.0.0.7", created_by="cli:bob")
    fine = collector.storage.create_block("block_ip", ip="203.0.113.7", created_by="cli:bob")
    client = sqreen.init(
        endpoint=collector.url,
        token=collector.token,
        app_name="shop",
        trusted_proxies=["10.0.0.0/24"],
        heartbeat_interval=0.05,
    )
    client.start()
    agent = _reported(collector)
    assert agent.stats["refused_blocks"] == {str(proxy.id): "10.0.0.7/32 covers a trusted proxy"}
    assert agent.app == "shop" and agent.key_id != 0
    assert client.is_blocked(ip="203.0.113.7") and str(fine.id) not in agent.stats["refused_blocks"]


def test_refused_block_reasons_must_be_text(collector: Collector) -> None:
    sender = {"sdk": {"name": "sqreen-python", "version": "0.1"}, "app": {"name": "shop"}}
    for bad in ({"1": 5}, {"1": None}, {str(n): "x" for n in range(33)}):
        reply = collector.post("/v1/heartbeat", {**sender, "stats": {"refused_blocks": bad}})
        assert reply.status_code == 400, reply.text
        assert reply.json()["field"].startswith("stats.refused_blocks")
    long = {"1": "y" * 1000}
    assert collector.post("/v1/heartbeat", {**sender, "stats": {"refused_blocks": long}}).is_success
    (agent,) = collector.storage.agents()
    assert agent.stats["refused_blocks"] == {"1": "y" * 200}
    # The counters stay counters.
    reply = collector.post("/v1/heartbeat", {**sender, "stats": {"refused": {"1": "many"}}})
    assert reply.status_code == 400
