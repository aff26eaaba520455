"""Fixtures of the collector's tests: storage on both back ends, a live collector, events."""

from __future__ import annotations

import itertools
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from sqreen._wire_time import format_timestamp
from sqreen.server.app import create_app
from sqreen.server.auth import hash_token, new_token
from sqreen.server.storage import KeyScope, Storage, open_storage
from tests._postgres import postgres_cluster, postgres_db, postgres_dsn  # noqa: F401 (fixtures)
from tests.integrations._servers import UvicornThread, free_port

_ids = itertools.count(1)


def recent(**ago: float) -> str:
    """A wire timestamp `ago` before now (default one minute): no test ages with the calendar."""
    delta = timedelta(**ago) if ago else timedelta(minutes=1)
    return format_timestamp(datetime.now(UTC) - delta)


class Clock:
    """A storage clock that keeps the real time, moved forward on demand: expiry and retention
    are tested without sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def wire_event(**overrides: Any) -> dict[str, Any]:
    """A valid wire event with a fresh id."""
    event: dict[str, Any] = {
        "id": f"ev-{next(_ids):08d}",
        "name": "auth.login.failure",
        "timestamp": recent(),
        "properties": {"reason": "bad_password", "attempt": 2},
        "user": {"uid": "42"},
        "target": None,
        "request": {
            "ip": "203.0.113.7",
            "user_agent": "curl/8.0",
            "path": "/login",
            "route": "/login",
            "method": "POST",
            "params": {"username": "alice"},
            "body": None,
        },
    }
    event.update(overrides)
    return event


def envelope(events: list[Any], **app: Any) -> dict[str, Any]:
    return {
        "sdk": {"name": "sqreen-python", "version": "test"},
        "app": {"name": "shop", "host": "web1", "pid": 1234, "framework": "flask", **app},
        "events": events,
    }


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each back end (PostgreSQL: a new database in the session cluster)."""
    if request.param == "sqlite":
        return str(tmp_path / "sqreen.db")
    return str(request.getfixturevalue("postgres_db"))


@pytest.fixture
def storage(db_url: str, clock: Clock) -> Iterator[Storage]:
    s = open_storage(db_url, clock=clock)
    yield s
    s.close()


@pytest.fixture
def sqlite_storage(tmp_path: Path, clock: Clock) -> Iterator[Storage]:
    s = open_storage(str(tmp_path / "sqreen.db"), clock=clock)
    yield s
    s.close()


@dataclass
class Collector:
    url: str
    token: str
    storage: Storage
    client: httpx.Client  # with an ingest key, as an SDK has
    admin: httpx.Client  # with an admin key
    clock: Clock  # the storage's

    def post(
        self, path: str, body: Any = None, *, admin: bool = False, **kwargs: Any
    ) -> httpx.Response:
        if body is not None:
            kwargs["json"] = body
        return (self.admin if admin else self.client).post(self.url + path, **kwargs)

    def new_key(self, name: str = "test", scope: KeyScope = "ingest") -> tuple[int, str]:
        token = new_token()
        return self.storage.create_key(name, hash_token(token), scope).id, token


class Switch:
    """An ASGI app passing every request to the app a test set: one uvicorn server serves a
    whole test module (starting one per test would cost more than the tests)."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def live_app() -> Iterator[tuple[Switch, str]]:
    """A real uvicorn on 127.0.0.1 for a test module, serving the app each test sets."""
    switch = Switch()
    server = UvicornThread(switch, lifespan="off")
    yield switch, server.url
    server.stop()


@pytest.fixture
def collector(
    live_app: tuple[Switch, str], sqlite_storage: Storage, clock: Clock
) -> Iterator[Collector]:
    """The collector (``create_app``) on a real uvicorn on 127.0.0.1, on a fresh database
    with an ingest key and an admin key (valid keys cached 0.2 s)."""
    switch, url = live_app
    token, admin_token = new_token(), new_token()
    sqlite_storage.create_key("test", hash_token(token))
    sqlite_storage.create_key("admin", hash_token(admin_token), "admin")
    switch.app = create_app(sqlite_storage, key_cache_ttl=0.2)
    with (
        httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client,
        httpx.Client(headers={"Authorization": f"Bearer {admin_token}"}, timeout=30) as admin,
    ):
        yield Collector(url, token, sqlite_storage, client, admin, clock)


SQREEN = [sys.executable, "-m", "sqreen.server"]


class ServeProcess:
    """``sqreen serve`` as a subprocess on a chosen port (its output to ``log``, if given;
    ``preexec_fn`` runs in the child before it starts, e.g. to lower its limits; ``verify``,
    the client's trust when it serves HTTPS)."""

    def __init__(
        self,
        db: str,
        port: int | None = None,
        *extra: str,
        command: list[str] = SQREEN,
        log: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.command = command
        self.db = db
        self.port = port or free_port()
        self.url = f"{'https' if verify else 'http'}://127.0.0.1:{self.port}"
        self.verify = verify
        self.extra = extra
        self.log = log
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        out = None if self.log is None else self.log.open("ab")
        try:
            self.proc = subprocess.Popen(
                [
                    *self.command,
                    "serve",
                    "--db",
                    self.db,
                    "--port",
                    str(self.port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    *self.extra,
                ],
                stdout=out,
                stderr=out,
                preexec_fn=self.preexec_fn,
            )
        finally:
            if out is not None:
                out.close()
        try:
            wait_until_up(self.url, self.proc, verify=self.verify or True)
        except BaseException:
            self.stop()  # one that came up too late was left serving, test after test
            raise
        return self

    def kill(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_until_up(
    url: str,
    proc: subprocess.Popen[bytes],
    timeout: float = 20,
    verify: ssl.SSLContext | bool = True,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"sqreen serve exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("sqreen serve did not start")
        time.sleep(0.05)


@pytest.fixture
def serve() -> Iterator[Callable[..., ServeProcess]]:
    """Start ``sqreen serve`` subprocesses; all are stopped at the end of the test."""
    started: list[ServeProcess] = []

    def start(
        db: str, port: int | None = None, *extra: str, command: list[str] = SQREEN, **kw: Any
    ) -> ServeProcess:
        proc = ServeProcess(db, port, *extra, command=command, **kw).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def wait_for(check: Callable[[], bool], timeout: float = 30) -> None:
    """Return once ``check()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def action_version(url: str, token: str) -> int:
    """The action set's version the collector at ``url`` serves: what an SDK holding its set
    long-polls with (``sqreen serve`` starts it past the clock, not at 0)."""
    reply = httpx.get(url + "/v1/actions", headers={"Authorization": f"Bearer {token}"})
    return int(reply.json()["actions"]["version"])


def add_key(db: str, name: str = "test") -> str:
    token = new_token()
    s = open_storage(db)
    try:
        s.create_key(name, hash_token(token))
    finally:
        s.close()
    return token
