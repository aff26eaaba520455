"""Real servers on 127.0.0.1 for the integration tests, and a small HTTP client for them.

gunicorn runs in a subprocess (one worker, configured by ``SQREEN_*`` variables), uvicorn in a
thread of the test process (so the test's own sqreen client serves it).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests._ports import free_port as free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> bool:
    """Whether ``check()`` holds within ``timeout`` seconds (asked every 50 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Gunicorn:
    """``gunicorn APP`` with one worker of ``worker`` class, in a subprocess."""

    def __init__(self, app: str, env: dict[str, str], worker: str = "sync") -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
        full_env.update(env)
        full_env["PYTHONPATH"] = ROOT
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "1",
            "--worker-class",
            worker,
            "--timeout",
            "60",
            "--graceful-timeout",
            "3",
            "--log-level",
            "warning",
            app,
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=self.log, stderr=self.log)
        if not wait_for_port(self.port, 30, self.proc):
            self.stop()
            raise RuntimeError(f"gunicorn did not start:\n{self.output()}")
        self.url = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class UvicornThread:
    """uvicorn serving ``app`` from a thread; ``proxy_headers`` off unless asked."""

    def __init__(self, app: Any, **options: Any) -> None:
        import uvicorn

        options.setdefault("proxy_headers", False)
        options.setdefault("log_level", "warning")
        options.setdefault("ws", "none")
        # At stop, a request still running (an SDK's action long-poll) is cut after a second
        # rather than waited for: stop() waited its whole 10 s for one, module after module.
        options.setdefault("timeout_graceful_shutdown", 1)
        config = uvicorn.Config(app, **options)
        self.server = uvicorn.Server(config)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] = b"",
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
    chunked: bool = False,
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        data = response.read()
        return Response(response.status, data, {k.lower(): v for k, v in response.getheaders()})
    finally:
        conn.close()


def raw_request(port: int, request: bytes) -> Response:
    """Send bytes as they are (a request line a client library would refuse to build)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Response(int(lines[0].split()[1]), body, headers)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out
