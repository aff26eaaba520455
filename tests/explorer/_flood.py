"""A flood of logins against a running ``sqreen serve``, and what it costs the collector:
shared by tests/explorer/test_login_attacks.py (which asserts bounds) and
bench/bench_login_flood.py (which prints the figures)."""

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

from sqreen.server.explorer._guard import COOKIE
from tests.server.conftest import envelope, wire_event

from .conftest import csrf_of

__all__ = ["IngestProbe", "flood", "rss_peaks"]

_HWM = re.compile(r"^VmHWM:\s+(\d+) kB", re.MULTILINE)


def rss_peaks(pid: int) -> dict[int, int]:
    """The peak resident memory (bytes, ``VmHWM``) of process ``pid`` and of its children
    (``--workers``), by pid, from /proc."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry))
    peaks = {}
    for p in pids:
        try:
            found = _HWM.search(Path(f"/proc/{p}/status").read_text())
        except OSError:
            continue
        if found:
            peaks[p] = int(found[1]) * 1024
    return peaks


@dataclass
class IngestProbe:
    """Posts a one-event batch every 50 ms and times each reply, until stopped: whether
    ingest answers during a flood, and (for the benchmark) how fast."""

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


def flood(url: str, headers: Callable[[int], dict[str, str]], n: int) -> list[int | str]:
    """``n`` wrong passwords posted at once, each on its own connection, with one session and
    its CSRF token (what a script does); their status codes (or what went wrong).

    Raw sockets, all connected first, then every request written in one loop: the burst
    arrives at once, and the sending process stays quiet while the collector is measured."""
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
