"""A worker that has served nothing yet learns of a block all the same: the ASGI lifespan
starts sqreen's client when the server starts the app, so its long-poll brings a block to
every worker, and the first request of a blocked client is refused.

Before, the client started with a worker's first request: a block made while the worker
was idle (a deploy, a recycled worker, a quiet one) reached it only after that request, and
the first requests of the blocked client went through, a successful login among them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest

from tests.integrations._servers import http_request, wait_until
from tests.receiver import Receiver

from ._harness import Served

pytestmark = pytest.mark.slow

ATTACKER, CLIENT = "127.0.0.2", "127.0.0.3"
WORKERS = 2
#: An app behind the ASGI middleware (started at the lifespan), and a Django site under ASGI
#: (Django handles no lifespan: its middleware starts the client as the worker loads it).
APPS = {
    "asgi": ("tests.servers.apps:asgi_app", "/ping", {}),
    "django": (
        "tests.integrations.apps.django_auth_site.asgi:application",
        "/accounts/login/",
        {"DJANGO_SETTINGS_MODULE": "tests.integrations.apps.django_auth_site.settings"},
    ),
}


def pids(receiver: Receiver) -> set[object]:
    return {(h.get("app") or {}).get("pid") for h in list(receiver.heartbeats)}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.mark.parametrize("kind", sorted(APPS))
def test_idle_uvicorn_workers_refuse_a_blocked_ip_from_their_first_request(
    receiver: Receiver, kind: str
) -> None:
    app, path, extra = APPS[kind]
    with tempfile.TemporaryDirectory() as spool:
        env = {
            "SQREEN_SPOOL": spool,
            "SQREEN_TRUSTED_PROXIES": "none",
            "SQREEN_TEST_DB": f"{spool}/users.sqlite3",
            **extra,
        }
        server = Served(
            ["python", "-m", "uvicorn", "--port", "{port}", "--workers", str(WORKERS),
             "--log-level", "warning", app],
            receiver,
            env,
        )  # fmt: skip
        try:
            # No request yet: each worker's lifespan started its client, which fetched the
            # action set (a heartbeat each) and long-polls its changes.
            assert wait_until(lambda: len(pids(receiver)) == WORKERS, timeout=30), server.output()
            assert wait_until(lambda: receiver.polls >= WORKERS, timeout=30)
            receiver.block([{"id": "1", "type": "block_ip", "ip": f"{ATTACKER}/32"}])
            version = receiver.actions["version"]
            # Each long-poll answers with the block, and is made again, naming its version,
            # once it is applied. (Counting any polls made since, a worker slow to make its
            # first was counted by the other's second, and served its first request unblocked
            # under load.)
            assert wait_until(
                lambda: receiver.polled_versions.count(version) >= WORKERS, timeout=30
            ), server.output()
            # New connections, spread over both workers: every one refused, from the first.
            statuses = [
                http_request(server.port, "GET", path, source=ATTACKER).status for _ in range(4)
            ]
            assert statuses == [403] * 4
            assert http_request(server.port, "GET", path, source=CLIENT).status == 200
        finally:
            server.kill()


def test_a_preload_master_starts_nothing_and_its_workers_start_their_own(
    receiver: Receiver,
) -> None:
    """``gunicorn --preload -k uvicorn.workers.UvicornWorker``: the master loads the Django
    ASGI app with no event loop, then forks. A client started there would heartbeat for a
    process that serves nothing, and its workers inherited its set as of the fork, counted
    as the collector's (``block_on_start_timeout`` then waited for nothing)."""
    app, path, extra = APPS["django"]
    with tempfile.TemporaryDirectory() as spool:
        env = {
            "SQREEN_SPOOL": spool,
            "SQREEN_TRUSTED_PROXIES": "none",
            "SQREEN_TEST_DB": f"{spool}/users.sqlite3",
            "SQREEN_BLOCK_ON_START_TIMEOUT": "10",
            **extra,
        }
        server = Served(
            ["python", "-m", "gunicorn", "--preload", "-w", "1",
             "-k", "uvicorn.workers.UvicornWorker", "-b", "127.0.0.1:{port}",
             "--log-level", "warning", app],
            receiver,
            env,
        )  # fmt: skip
        try:
            receiver.block([{"id": "1", "type": "block_ip", "ip": f"{ATTACKER}/32"}])
            # The worker's first request waits for the collector's set: refused.
            assert http_request(server.port, "GET", path, source=ATTACKER).status == 403
            assert http_request(server.port, "GET", path, source=CLIENT).status == 200
            assert wait_until(lambda: bool(pids(receiver)), timeout=30)
            assert server.proc.pid not in pids(receiver), "the master heartbeats"
        finally:
            server.kill()


def test_a_gunicorn_worker_s_first_request_waits_for_the_collector_s_set(
    receiver: Receiver,
) -> None:
    """WSGI: sqreen starts with a worker's first request (a ``--preload`` master forks
    after loading the app), and by default (``block_on_start_timeout`` 1 s) that request
    waits for the collector's set, which comes in a few ms. Before, it was checked against
    the spool's set alone (here none): a block made while the worker was idle let it
    through."""
    with tempfile.TemporaryDirectory() as spool:
        env = {"SQREEN_SPOOL": spool, "SQREEN_TRUSTED_PROXIES": "none"}
        server = Served(
            ["python", "-m", "gunicorn", "-w", "1", "-b", "127.0.0.1:{port}",
             "--log-level", "warning", "tests.servers.apps:wsgi_app"],
            receiver,
            env,
        )  # fmt: skip
        try:
            receiver.block([{"id": "1", "type": "block_ip", "ip": f"{ATTACKER}/32"}])
            assert http_request(server.port, "GET", "/ping", source=ATTACKER).status == 403
            assert http_request(server.port, "GET", "/ping", source=CLIENT).status == 200
        finally:
            server.kill()
