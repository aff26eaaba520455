"""A worker of ``sqreen serve --workers N`` started again while PostgreSQL is away (after a
crash, or one killed) waits for it, saying so, rather than dying at once with a traceback
and being started again twice a second for the whole outage; its sibling keeps answering
(503 for what needs the database, 200 for ``/livez``), and once the database is back the
worker serves."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest

from .conftest import ServeProcess, wait_for
from .test_serve_signals import _children

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(not Path("/proc").is_dir(), reason="/proc")]


class Proxy:
    """A TCP relay to PostgreSQL that can be cut (every connection dropped, new ones closed
    at once: the server gone) and mended."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.refused = 0  # connections closed at once while cut (a worker's tries)
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                self.refused += 1
                continue
            server = socket.create_connection(self.target)
            with self.lock:
                self.pairs.append((client, server))
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select():
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for a, b in self.pairs:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self.pairs.clear()

    def mend(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def proxy(postgres_db: str) -> Iterator[tuple[Proxy, str]]:
    url = urlsplit(postgres_db)
    relay = Proxy((url.hostname or "127.0.0.1", url.port or 5432))
    via = url._replace(netloc=f"{url.username}@127.0.0.1:{relay.port}").geturl()
    yield relay, via
    relay.close()


def _workers(supervisor: int) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    out = []
    for pid in _children(supervisor):
        try:
            command = (Path("/proc") / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in command:
            out.append(pid)
    return out


def test_a_worker_started_again_during_an_outage_waits_for_the_database(
    proxy: tuple[Proxy, str], serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    """A worker killed during an outage: its successor waits (a reload meanwhile leaves it
    waiting), its sibling answers, and it serves once the database is back. Then, in a
    second outage, a stop of the collector stops a waiting worker too (uvicorn holds
    SIGTERM while the app is being made, which the wait is part of)."""
    relay, dsn = proxy
    log = tmp_path / "serve.log"
    server = serve(dsn, None, "--workers", "2", "--log-level", "info", log=log)
    assert server.proc is not None

    def said(text: str) -> int:
        return log.read_text(errors="replace").count(text)

    wait_for(lambda: said("Application startup complete") == 2)  # both workers serve
    relay.cut()
    first, second = _workers(server.proc.pid)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: said("waits for the database") == 1)
    (waiting,) = set(_workers(server.proc.pid)) - {second}
    os.kill(waiting, signal.SIGHUP)  # a reload meanwhile (new playbooks) leaves it waiting
    # Tries of its own while the database stays away: the same worker still waits (not one
    # started again twice a second), said once, with no traceback, its sibling answering.
    tried = relay.refused
    wait_for(lambda: relay.refused >= tried + 2)
    assert httpx.get(server.url + "/livez", timeout=10).status_code == 200
    assert waiting in _workers(server.proc.pid)
    assert said("waits for the database") == 1
    assert said("Application startup complete") == 2  # none started again
    assert said("Traceback") == 0, log.read_text(errors="replace")
    relay.mend()
    # Back: the waiting worker serves.
    wait_for(lambda: said("Application startup complete") == 3)
    wait_for(lambda: httpx.get(server.url + "/readyz").status_code == 200)
    assert set(_workers(server.proc.pid)) == {waiting, second}
    # A second outage, a worker killed again, and the collector stopped during the wait.
    relay.cut()
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: said("waits for the database") == 2)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    assert not _workers(server.proc.pid)
