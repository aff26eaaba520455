"""A real HTTP receiver on 127.0.0.1 that speaks the collector's wire protocol.

It stands in for the collector where a test needs to script failures (a 500, a 429 with
``Retry-After``, a 413, being down for a while, never answering) or to inspect exactly what
the SDK sent. Tests that need the real collector use ``sqreen serve`` instead.
"""

from __future__ import annotations

import contextlib
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
        self.script: deque[tuple[int, dict[str, str], str | None, bytes | None]] = deque()
        self.hang = False
        self.polls = 0
        #: The version each long-poll said it held (a process polls again with the version it
        #: applied: how many hold a set is how many polls name it, within a poll's wait).
        self.polled_versions: list[int] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        #: The connections open to it (an HTTP/1.1 client keeps one alive between requests).
        self._connections: set[socket.socket] = set()
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
                    status, extra, raw = receiver._scripted(self.path)
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
                data = raw if raw is not None else json.dumps(reply).encode()
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                """The action long-poll: at once if the version differs, else on a change
                or after ``wait`` seconds."""
                from urllib.parse import parse_qs, urlsplit

                query = parse_qs(urlsplit(self.path).query)
                version = int(query.get("version", ["-1"])[0])
                wait = min(float(query.get("wait", ["0"])[0]), 30.0)
                deadline = time.monotonic() + wait
                with receiver._cond:
                    receiver.polls += 1
                    receiver.polled_versions.append(version)
                    while receiver.actions["version"] == version:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        receiver._cond.wait(min(left, 0.05))
                    actions = receiver.actions
                if actions["version"] == version:
                    actions = {"version": version, "unchanged": True}
                data = json.dumps({"actions": actions}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            # socketserver's listen backlog is 5: nine processes connecting at once (a forking
            # master's workers) under load overflowed it, and a dropped SYN is sent again only
            # after 1 s, then 3 s more. Servers listen with far more (uvicorn: 2048).
            request_queue_size = 128

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up mid-reply (a long-poll at shutdown): not news

            def process_request(self, request: Any, client_address: Any) -> None:
                # Known from its accept, before its thread runs: stop() cuts it then too.
                with receiver._lock:
                    receiver._connections.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request: Any) -> None:
                with receiver._lock:
                    receiver._connections.discard(request)
                super().shutdown_request(request)

        server = Server(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.allow_reuse_address = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        """Go down: the port refuses connections until :meth:`start`, and the connections
        open are cut (a client's kept-alive connection delivered batches to a receiver that
        was "down")."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            open_now = list(self._connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def respond(
        self,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
        path: str | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer the next ``times`` POSTs (to ``path``, or any) with ``status``, ``headers``
        and ``body`` (a JSON reply of its own making by default)."""
        with self._lock:
            self.script.extend([(status, headers or {}, path, body)] * times)

    def _scripted(self, path: str) -> tuple[int, dict[str, str], bytes | None]:
        for entry in self.script:
            if entry[2] in (None, path):
                self.script.remove(entry)
                return entry[0], entry[1], entry[3]
        return 200, {}, None

    def block(self, items: list[dict[str, Any]], watch: list[str] | None = None) -> None:
        """Replace the action set the receiver hands back (bumping its version)."""
        with self._lock:
            self.actions = {"version": self.actions["version"] + 1, "items": items}
            if watch is not None:
                self.actions["watch"] = watch
            self._cond.notify_all()

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
        accept_each(self.sock, self._take)

    def _take(self, conn: socket.socket) -> None:
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


class RawServer:
    """A collector that answers in bytes of its own choosing, as slowly as it likes: each
    request (its head read, and its body by ``Content-Length``) is handed to
    ``answer(conn, method, target, body)`` on the connection's thread (``target``: the path
    and its query), which writes what it wants; the connection then serves its next request.
    ``requests`` lists ``(method, path)``; :meth:`wait_for` waits for a count of them."""

    def __init__(self, answer: Any, closed: threading.Event | None = None) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str]] = []
        #: Set by :meth:`close`: what an answer that never ends waits on.
        self.closed = threading.Event() if closed is None else closed
        self._cond = threading.Condition()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, count: int, path: str | None = None, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(path in (None, p) for _, p in self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def _accept(self) -> None:
        accept_each(self.sock, self._take)

    def _take(self, conn: socket.socket) -> None:
        with self._cond:
            self._conns.append(conn)
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        try:
            while not self.closed.is_set():
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(data) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                body, data = data[:length], data[length:]
                path = target.partition("?")[0]
                with self._cond:
                    self.requests.append((method, path))
                    self._cond.notify_all()
                self.answer(conn, method, target, body)
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
        with self._cond:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


def http_reply(
    status: str, body: bytes = b"{}", headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """The bytes of a whole HTTP/1.1 response."""
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    return head.encode() + b"\r\n" + body


def accept_each(sock: socket.socket, take: Any) -> None:
    """Hand each connection ``sock`` accepts to ``take``, until ``sock`` is closed."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        take(conn)
