"""uvicorn rewrites ``scope["client"]`` from ``X-Forwarded-For`` before the app sees it: a
client must still not choose the IP sqreen records, or unblock itself with.

uvicorn trusts the connections from ``FORWARDED_ALLOW_IPS`` (127.0.0.1 and ::1 by default; FastAPI's
docs advise ``*`` behind a proxy, and then it takes the *left-most* hop, which the client
writes). sqreen reads the connection's own address from uvicorn's transport and applies its
own ``trusted_proxies``. Clients are played from other loopback addresses: 127.0.0.2 and
127.0.0.3 stand for clients on the internet, 127.0.0.1 for the proxy.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integrations._servers import wait_until
from tests.receiver import Receiver

from ._harness import Served

pytestmark = pytest.mark.slow

UVICORN = ["python", "-m", "uvicorn", "--port", "{port}", "--log-level", "warning"]
APP = "tests.servers.apps:asgi_app"
ATTACKER, CLIENT, PROXY = "127.0.0.2", "127.0.0.3", "127.0.0.1"
SETTINGS = {"SQREEN_FLUSH_INTERVAL": "0.05", "SQREEN_BLOCK_ON_START_TIMEOUT": "5"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.block(
        [
            {"id": "forged", "type": "block_ip", "ip": "6.6.6.6/32"},
            {"id": "attacker", "type": "block_ip", "ip": f"{ATTACKER}/32"},
        ]
    )
    yield r
    r.stop()


def _logins(receiver: Receiver, user: str) -> list[str | None]:
    def found() -> list[str | None]:
        return [
            e["request"]["ip"]
            for e in list(receiver.events)
            if e["name"] == "auth.login.failure" and e["user"] == {"username": user}
        ]

    wait_until(lambda: bool(found()), timeout=30)  # returns on delivery; 30 s for a loaded CI
    return found()


@pytest.fixture(scope="module")
def default_uvicorn(receiver: Receiver) -> Iterator[Served]:
    """uvicorn's default proxy headers (127.0.0.1 trusted); sqreen trusts no proxy."""
    server = Served([*UVICORN, APP], receiver, {**SETTINGS, "SQREEN_TRUSTED_PROXIES": "none"})
    yield server
    server.kill()


@pytest.fixture(scope="module")
def star_uvicorn(receiver: Receiver) -> Iterator[Served]:
    """``FORWARDED_ALLOW_IPS='*'``; sqreen trusts the proxy, 127.0.0.1, only."""
    env = {**SETTINGS, "SQREEN_TRUSTED_PROXIES": PROXY, "FORWARDED_ALLOW_IPS": "*"}
    server = Served([*UVICORN, APP], receiver, env)
    yield server
    server.kill()


def test_with_no_trusted_proxy_the_peer_is_the_client(
    default_uvicorn: Served, receiver: Receiver
) -> None:
    forged = {"X-Forwarded-For": "6.6.6.6"}
    # uvicorn hands the app 6.6.6.6, and 6.6.6.6 is blocked: not this client.
    answer = default_uvicorn.get("/login?user=default-local", forged, source=PROXY)
    assert answer != 403, "refused as 6.6.6.6"
    assert answer["peer"] == "6.6.6.6"  # what uvicorn believed
    assert _logins(receiver, "default-local") == [PROXY]
    # A client uvicorn does not trust is itself, whatever it forwards.
    assert default_uvicorn.get("/login?user=default-remote", forged, source=CLIENT) != 403
    assert _logins(receiver, "default-remote") == [CLIENT]
    # The blocked client is refused however it forwards.
    assert default_uvicorn.get("/ping", forged, source=ATTACKER) == 403


def test_with_forwarded_allow_ips_star_a_client_cannot_choose_its_ip(
    star_uvicorn: Served, receiver: Receiver
) -> None:
    forged = {"X-Forwarded-For": "6.6.6.6"}
    # The blocked attacker, straight to uvicorn, says it is someone else.
    assert star_uvicorn.get("/ping", forged, source=ATTACKER) == 403
    assert star_uvicorn.get("/ping", {"X-Forwarded-For": "203.0.113.9"}, source=ATTACKER) == 403
    # A failed login is recorded under the connection's address, not the one it forwarded.
    answer = star_uvicorn.get(
        "/login?user=star-direct", {"X-Forwarded-For": "198.51.100.7"}, source=CLIENT
    )
    assert answer["peer"] == "198.51.100.7"  # what uvicorn believed
    assert _logins(receiver, "star-direct") == [CLIENT]
    # Through the proxy, which appends the address it saw: the hop the proxy wrote counts,
    # not the left-most one uvicorn takes.
    through = {"X-Forwarded-For": f"198.51.100.7, {CLIENT}"}
    star_uvicorn.get("/login?user=star-proxied", through, source=PROXY)
    assert _logins(receiver, "star-proxied") == [CLIENT]
    through_attacker = {"X-Forwarded-For": f"6.6.6.6, {ATTACKER}"}
    assert star_uvicorn.get("/ping", through_attacker, source=PROXY) == 403
