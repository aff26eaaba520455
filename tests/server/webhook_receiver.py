"""A webhook on 127.0.0.1 for the notifier's tests: every post's body and signature kept."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """Answers 204 to every post, after :meth:`handle` (a subclass may hold or read it)."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str | None]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.handle(body, self.headers.get("X-Sqreen-Signature"))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, body: bytes, signature: str | None) -> None:
        self.received.append((body, signature))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
