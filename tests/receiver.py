"""A real HTTP receiver on 127.0.0.1 that speaks the collector's wire protocol.

It stands in for the collector where a test needs to script failures (a 500, a 429 with
``Retry-After``, a 413, being down for a while, never answering) or to inspect exactly what
the SDK sent. Tests that need the real collector use ``sqreen serve`` instead.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.requests: list[tuple[float, str, int]] = []  # (time, path, status answered)
        self.headers: list[dict[str, str]] = []
        self.actions: dict[str, Any] = {"version": 0, "items": []}
        self.script: deque[tuple[int, dict[str, str], str | None]] = deque()
        self.hang = False
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if receiver.hang:
                    time.sleep(3600)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with receiver._lock:
                    status, extra = receiver._scripted(self.path)
                    receiver.requests.append((time.monotonic(), self.path, status))
                    receiver.headers.append(dict(self.headers))
                    payload = json.loads(body)
                    if status == 200:
                        if self.path == "/v1/events":
                            receiver.batches.append(payload)
                            receiver.events.extend(payload["events"])
                            reply = {
                                "accepted": len(payload["events"]),
                                "duplicates": 0,
                                "rejected": [],
                            }
                        else:
                            receiver.heartbeats.append(payload)
                            reply = {}
                        reply["actions"] = receiver.actions
                    else:
                        reply = {"error": f"scripted {status}"}
                    receiver._cond.notify_all()
                data = json.dumps(reply).encode()
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.allow_reuse_address = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        """Go down: the port refuses connections until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def respond(
        self,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``times`` POSTs (to ``path``, or any) with ``status`` and ``headers``."""
        with self._lock:
            self.script.extend([(status, headers or {}, path)] * times)

    def _scripted(self, path: str) -> tuple[int, dict[str, str]]:
        for entry in self.script:
            if entry[2] in (None, path):
                self.script.remove(entry)
                return entry[0], entry[1]
        return 200, {}

    def block(self, items: list[dict[str, Any]]) -> None:
        """Replace the action set the receiver hands back (bumping its version)."""
        with self._lock:
            self.actions = {"version": self.actions["version"] + 1, "items": items}

    def wait_for(
        self, count: int, timeout: float = 10.0, name: str | None = None
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [e for e in self.events if name is None or e["name"] == name]
                if len(got) >= count or time.monotonic() >= deadline:
                    return got
                self._cond.wait(0.05)

    def ids(self) -> list[str]:
        with self._lock:
            return [e["id"] for e in self.events]


class SilentServer:
    """Accepts TCP connections and never answers: a collector that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self.conns.append(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self.conns = self.conns, []
        for c in conns:
            c.close()
        self.sock.close()
