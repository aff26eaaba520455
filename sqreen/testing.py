"""A pytest plugin for your own tests: capture the events your app tracks.

Installed with the package (a ``pytest11`` entry point), it adds one fixture::

    def test_failed_login_is_tracked(client, sqreen_events):
        client.post("/login", data={"username": "alice", "password": "wrong"})
        assert sqreen_events.names() == ["auth.login.failure"]
        assert sqreen_events[0]["user"] == {"username": "alice"}

Within the fixture the SDK runs in strict mode (bad input to ``track()`` raises
:class:`sqreen.InvalidEvent`), events stay in memory, and reading the fixture first waits
for the queue to drain, so what you assert on is exactly what a collector would receive.
Internal errors of the SDK fail the test.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import pytest

import sqreen
from sqreen import _hub
from sqreen._client import Client
from sqreen._wire import IDENTIFY
from sqreen.transports.memory import MemoryTransport

__all__ = ["CapturedEvents", "sqreen_events"]


class CapturedEvents(Sequence[dict[str, Any]]):
    """The events tracked so far, as the collector would receive them (wire form); the traits
    that :func:`sqreen.identify` sends are in :meth:`identities`."""

    def __init__(self, client: Client, transport: MemoryTransport) -> None:
        self._clients = [client]
        self.transport = transport

    @property
    def client(self) -> Client:
        """The client in use, when it is one of the fixture's (it sends to its transport).

        An app set up after the fixture may bring a configuration (``SQREEN_*`` keys, Django's
        ``SQREEN``) that completes the fixture's options: that makes a new client, which keeps
        the fixture's transport and strict mode (``init()``'s keywords win), and this follows.
        """
        active = _hub.active
        if active is not None and active.transport is self.transport:
            if active is not self._clients[-1]:
                self._clients.append(active)
            return active
        return self._clients[-1]

    @property
    def clients(self) -> list[Client]:
        """Every client the fixture had, oldest first."""
        self.client  # noqa: B018  (follows the client in use)
        return list(self._clients)

    def _delivered(self) -> list[dict[str, Any]]:
        if not self.client.flush(timeout=10.0):
            raise AssertionError("sqreen: events were still queued after 10 s")
        return list(self.transport.events)

    def _events(self) -> list[dict[str, Any]]:
        return [e for e in self._delivered() if e["name"] != IDENTIFY]

    def identities(self) -> list[dict[str, Any]]:
        """What :func:`sqreen.identify` sent of users' traits: ``{"user", "traits"}`` each."""
        return [
            {"user": e["user"], "traits": e["properties"]}
            for e in self._delivered()
            if e["name"] == IDENTIFY
        ]

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self._events()[index]

    def __len__(self) -> int:
        return len(self._events())

    def names(self) -> list[str]:
        return [e["name"] for e in self._events()]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self._events() if e["name"] == name]

    def clear(self) -> None:
        self.client.flush(timeout=10.0)
        self.transport.clear()

    def block(self, items: list[dict[str, Any]]) -> None:
        """Apply an action set, as the collector would send it (to test blocking).

        It applies to the client in use, and it holds when an app set up afterwards replaces
        that client (Django's test ``Client`` and Starlette's middleware are set up at the
        first request): a client made for the same transport starts from the blocks of the
        one it replaces. The version is newer than any the fixture's clients hold.
        """
        items = [_action(n, item) for n, item in enumerate(items)]
        client = _hub.active or self.client
        held = [c.blocklist.version for c in (*self.clients, client)]
        previous = self.transport.actions
        if isinstance(previous, dict) and isinstance(previous.get("version"), int):
            held.append(previous["version"])
        self.transport.actions = {"version": max(held) + 1, "items": items}
        client.blocklist.apply(self.transport.actions)
        refused = {i: why for i, why in client.blocklist.refused.items() if i in _ids(items)}
        if refused:  # as the SDK would refuse it from a collector: the test would pass for naught
            raise ValueError(f"sqreen_events.block: the SDK refuses {refused}")

    def __repr__(self) -> str:
        return f"<CapturedEvents {self.names()!r}>"


_SHAPES = (
    '{"type": "block_user", "user": {"uid": "42"}} or '
    '{"type": "block_ip", "ip": "203.0.113.0/24"} (an "id" and "expires_in" optional)'
)


def _action(n: int, item: object) -> dict[str, Any]:
    """``item``, an action of the set, checked for the shape the SDK reads (a wrong one was
    ignored, and the test of a block passed without any), with an id if it has none."""
    ok = isinstance(item, dict) and (
        (item.get("type") == "block_user" and isinstance(item.get("user"), dict))
        or (item.get("type") == "block_ip" and isinstance(item.get("ip"), str))
    )
    if not ok:
        raise ValueError(f"sqreen_events.block: item {n} must be {_SHAPES}, not {item!r:.200}")
    assert isinstance(item, dict)
    if item["type"] == "block_user":  # integers as the collector takes them: their text
        user = {}
        for key, value in item["user"].items():
            if type(value) is int:
                value = str(value)
            elif not isinstance(value, str):
                raise ValueError(
                    f"sqreen_events.block: item {n}'s identifier {key!r} must be text or an "
                    f"integer, not {type(value).__name__}"
                )
            user[key] = value
        item = {**item, "user": user}
    return {"id": f"test-{n + 1}", **item}


def _ids(items: list[dict[str, Any]]) -> set[str]:
    return {str(item["id"]) for item in items}


@pytest.fixture
def sqreen_events() -> Iterator[CapturedEvents]:
    """Capture the events tracked during the test, in strict mode."""
    transport = MemoryTransport()
    captured = CapturedEvents(
        sqreen.init(transport=transport, strict=True, flush_interval=0.05), transport
    )
    try:
        yield captured
    finally:
        clients = captured.clients
        sqreen.shutdown(timeout=1.0)
    errors = sum(client.internal_errors for client in clients)
    if errors:
        pytest.fail(f"sqreen logged {errors} internal error(s) during the test")
