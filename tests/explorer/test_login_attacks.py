"""The explorer's login under attack, against a real ``sqreen serve`` where it matters.

A burst of wrong passwords must be throttled at the limit however concurrent it is (the
attempt is reserved before the hash, in the database, for every ``--workers`` process), cost a
bounded amount of memory and leave ingest answering (scrypt runs a few at a time per process,
on threads of its own); the throttle's key is the connection's address, which no forwarded
header chooses; and a session ended (logout, a new password) is refused at once, cookie
copied or not.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from sqreen.server.explorer import _secrets, set_admin_password
from sqreen.server.explorer._guard import COOKIE
from sqreen.server.storage import Storage, open_storage
from tests.server.conftest import ServeProcess, add_key, envelope, serve, wire_event

from .conftest import PASSWORD, csrf_of, login, make_client

__all__ = ["serve"]  # the fixture, imported for this module's tests

LIMIT = 10
BURST = 150
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database whose admin password is hashed at scrypt's real cost (32 MiB, ~0.1 s)."""
    monkeypatch.setattr(_secrets, "LOG2_N", 15)
    path = str(tmp_path / "sqreen.db")
    storage = open_storage(path)
    try:
        set_admin_password(storage, PASSWORD)
    finally:
        storage.close()
    return path


def rss_peak(pid: int) -> int:
    """The peak resident memory (bytes) of process ``pid`` and its children, from /proc."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry))
    total = 0
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        total += int(found[1]) * 1024 if found else 0
    return total


@dataclass
class IngestProbe:
    """Posts a one-event batch every 50 ms and times each reply, until stopped."""

    url: str
    token: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> IngestProbe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        while not self.latencies and not self.errors:  # the key checked and cached first
            time.sleep(0.01)
        self.latencies.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(60)

    def _run(self) -> None:
        auth = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=auth, timeout=60) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                reply = client.post("/v1/events", json=envelope([wire_event()]))
                if reply.status_code != 200:
                    self.errors.append(reply.text)
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.05)


def flood(url: str, headers: Callable[[int], dict[str, str]], n: int = BURST) -> list[int | str]:
    """``n`` wrong passwords posted at once, each on its own connection, with one session and
    its CSRF token (what a script does); their status codes (or what went wrong).

    Raw sockets, all connected first, then every request written in one loop: the burst
    arrives at once, and the test process stays quiet while the collector is measured."""
    with httpx.Client(base_url=url) as first:
        token = csrf_of(first)  # type: ignore[arg-type]
        cookie = first.cookies.get(COOKIE)
    assert cookie
    host, port = url.removeprefix("http://").split(":")
    sockets = [socket.create_connection((host, int(port)), timeout=120) for _ in range(n)]
    for i, sock in enumerate(sockets):
        body = urlencode({"password": f"guess number {i}", "csrf_token": token}).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers(i).items())
        sock.sendall(
            f"POST /explorer/login HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Cookie: {COOKIE}={cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n".encode()
            + body
        )
    statuses: list[int | str] = []
    for sock in sockets:
        with sock:
            try:
                head = sock.recv(64)
                while len(head) < 12:
                    more = sock.recv(64)
                    if not more:
                        break
                    head += more
            except OSError as exc:
                statuses.append(repr(exc))
                continue
        status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/1.1 ") else b""
        statuses.append(int(status) if status.isdigit() else repr(head))
    return statuses


def wrong_then_right(url: str, headers: dict[str, str] | None = None) -> tuple[int, int]:
    """Wrong passwords one after the other until refused (how many were checked), then the
    right one's status."""
    checked = 0
    with httpx.Client(base_url=url, headers=headers or {}) as client:
        for _ in range(2 * LIMIT):
            status = login(client, "still not it", check=False).status_code  # type: ignore[arg-type]
            if status != 401:
                assert status == 429
                break
            checked += 1
        right = login(client, PASSWORD, check=False).status_code  # type: ignore[arg-type]
    return checked, right


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_burst_of_bad_logins_is_throttled_at_the_limit(
    db: str, serve: Callable[..., ServeProcess], workers: int
) -> None:
    """150 wrong passwords at once from one address: no more than the limit are checked, in
    any number of worker processes; the collector's memory stays bounded and ingest answers
    meanwhile."""
    token = add_key(db)
    collector = serve(db, None, "--workers", str(workers))
    assert collector.proc is not None
    with httpx.Client(base_url=collector.url) as warm:  # every worker has served a login page
        for _ in range(4 * workers):
            warm.get("/explorer/login")
    before = rss_peak(collector.proc.pid)
    with IngestProbe(collector.url, token) as probe:
        statuses = flood(collector.url, lambda i: {})
    grown = rss_peak(collector.proc.pid) - before

    assert grown < workers * 96 * 2**20, f"memory grew by {grown / 2**20:.0f} MiB"
    assert not probe.errors
    assert probe.latencies and max(probe.latencies) < 1.0, max(probe.latencies)
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= LIMIT
    # Sequentially now: the burst's checked attempts and these add up to the limit exactly.
    checked, right = wrong_then_right(collector.url)
    assert statuses.count(401) + checked == LIMIT
    assert right == 429  # locked out, even with the right password


@pytest.mark.slow
def test_a_burst_from_many_addresses_keeps_memory_and_ingest_in_bounds(
    db: str, serve: Callable[..., ServeProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """150 wrong passwords at once from 150 addresses (through a trusted proxy: no throttle
    applies): the hashes run a few at a time, the excess is told to come back."""
    monkeypatch.setenv("SQREEN_EXPLORER_TRUSTED_PROXIES", "127.0.0.1")
    token = add_key(db)
    collector = serve(db)
    assert collector.proc is not None
    before = rss_peak(collector.proc.pid)
    with IngestProbe(collector.url, token) as probe:
        statuses = flood(collector.url, lambda i: {"X-Forwarded-For": f"198.51.100.{i + 1}"})
    grown = rss_peak(collector.proc.pid) - before

    assert grown < 96 * 2**20, f"memory grew by {grown / 2**20:.0f} MiB"
    assert not probe.errors
    assert probe.latencies and max(probe.latencies) < 1.0, max(probe.latencies)
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) > 0 and statuses.count(429) > 0  # checked, or told to come back
    # The proxy's clients are throttled each on its own address.
    assert wrong_then_right(collector.url, {"X-Forwarded-For": "203.0.113.9"}) == (LIMIT, 429)
    with httpx.Client(base_url=collector.url) as client:  # and the connection's address too
        assert login(client, check=False).status_code == 303  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_loopback_client_cannot_choose_its_throttle_key(
    db: str, serve: Callable[..., ServeProcess]
) -> None:
    """uvicorn takes a loopback peer's X-Forwarded-For for the client: the throttle does not."""
    collector = serve(db)
    for i in range(LIMIT):
        with httpx.Client(base_url=collector.url, headers=forged(f"192.0.2.{i + 1}")) as client:
            assert login(client, "not the password", check=False).status_code == 401  # type: ignore[arg-type]
    with httpx.Client(base_url=collector.url, headers=forged("192.0.2.200")) as client:
        reply = login(client, PASSWORD, check=False)  # type: ignore[arg-type]
    assert reply.status_code == 429
    assert "Too many failed logins" in reply.text and int(reply.headers["retry-after"]) > 0


def forged(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


@pytest.mark.slow
def test_a_new_password_refuses_a_copied_cookie_at_once(
    db: str, serve: Callable[..., ServeProcess]
) -> None:
    """A new password set by another process (``sqreen admin-password``'s function): the
    running collector refuses every session opened before, on the very next request."""
    collector = serve(db)
    with httpx.Client(base_url=collector.url) as client:
        assert login(client).status_code == 303  # type: ignore[arg-type]
        cookie = client.cookies.get(COOKIE)
        assert client.get("/explorer/events").status_code == 200
    storage = open_storage(db)
    try:
        set_admin_password(storage, "a brand new password")
    finally:
        storage.close()
    with httpx.Client(base_url=collector.url, cookies={COOKIE: cookie}) as copied:
        assert copied.get("/explorer/events").status_code == 303
        assert copied.get("/explorer/api/events").status_code == 401


# -- in process -------------------------------------------------------------------------


def _copy(cookie: str | None, storage: Storage) -> TestClient:
    assert cookie
    other = make_client(storage)
    other.cookies.set(COOKIE, cookie, path="/explorer")
    return other


def test_logging_out_refuses_a_copied_cookie(storage: Storage, client: TestClient) -> None:
    cookie = client.cookies.get(COOKIE)
    with _copy(cookie, storage) as copied, _copy(cookie, storage) as elsewhere:
        assert copied.get("/explorer/events").status_code == 200
        token = csrf_of(client, "/explorer/events")
        client.post("/explorer/logout", data={"csrf_token": token})
        # The same app, and another process's (another app on the same database).
        assert copied.get("/explorer/events", follow_redirects=False).status_code == 303
        assert elsewhere.get("/explorer/api/events").status_code == 401


def test_a_session_ended_by_a_new_password_stays_ended(
    storage: Storage, client: TestClient
) -> None:
    """Setting the old password back brings no ended session back."""
    cookie = client.cookies.get(COOKIE)
    set_admin_password(storage, "a brand new password")
    set_admin_password(storage, PASSWORD)
    with _copy(cookie, storage) as copied:
        assert copied.get("/explorer/events", follow_redirects=False).status_code == 303
    assert client.get("/explorer/events", follow_redirects=False).status_code == 303


def test_logging_in_again_opens_a_new_session(storage: Storage, client: TestClient) -> None:
    """Each login is a session of its own: logging one out leaves the others."""
    with make_client(storage) as second:
        login(second)
        token = csrf_of(client, "/explorer/events")
        client.post("/explorer/logout", data={"csrf_token": token})
        assert second.get("/explorer/events").status_code == 200
