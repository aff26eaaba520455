"""The HTTP transport: batches to the collector with httpx2, gzip and a bearer token.

Status codes map to what the queue does next: 2xx delivered; 408, 429 and 5xx (and network
errors) retried, honouring ``Retry-After``; 413 split; any other 4xx dropped and counted,
since sending the same bytes again cannot succeed.
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (see below)
import json
import logging
import threading
import zlib
from email.utils import parsedate_to_datetime
from time import time
from typing import Any

import httpx2 as httpx

from .._version import __version__
from .base import Reply

__all__ = ["HTTPTransport"]

logger = logging.getLogger("sqreen")

GZIP_MIN_BYTES = 1024


class HTTPTransport:
    def __init__(self, endpoint: str, token: str | None, timeout: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        # Built now, on the thread calling init(): httpx2 finishes its own lazy imports here
        # rather than on the flusher thread, where a fork() in the middle of an import
        # would leave the child a half-initialised module. The same goes for the "idna"
        # codec, which socket.getaddrinfo() imports on first use (a child forked while the
        # flusher was importing it failed every connection with "unknown encoding: idna"):
        # it is imported with this module.
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._client = self.client

    @property
    def client(self) -> httpx.Client:
        """One client (a pool of connections) for the flusher and the action long-poll."""
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    headers = {"User-Agent": f"sqreen-sdk-python/{__version__}"}
                    if self.token:
                        headers["Authorization"] = f"Bearer {self.token}"
                    client = self._client = httpx.Client(
                        headers=headers, timeout=self.timeout, trust_env=False
                    )
        return client

    def send(
        self, envelope: dict[str, Any], events: list[bytes], timeout: float | None = None
    ) -> Reply:
        head = json.dumps(envelope, separators=(",", ":"))[:-1].encode()
        body = head + b',"events":[' + b",".join(events) + b"]}"
        return self._post("/v1/events", body, timeout)

    def heartbeat(self, payload: dict[str, Any]) -> Reply:
        return self._post("/v1/heartbeat", json.dumps(payload, separators=(",", ":")).encode())

    def poll_actions(self, version: int, wait: float) -> Reply:
        """The action set, as soon as its version differs from ``version``, or after ``wait``
        seconds (``{"version": n, "unchanged": true}``): a long-poll."""
        try:
            response = self.client.get(
                self.endpoint + "/v1/actions",
                params={"version": str(version), "wait": f"{wait:g}"},
                timeout=httpx.Timeout(wait + 10.0, connect=5.0),
            )
        except httpx.HTTPError as exc:
            return Reply("retry", detail=f"{type(exc).__name__}: {exc}")
        return self._reply(response)

    def _post(self, path: str, body: bytes, timeout: float | None = None) -> Reply:
        headers = {"Content-Type": "application/json"}
        if len(body) >= GZIP_MIN_BYTES:
            body = _gzip(body)
            headers["Content-Encoding"] = "gzip"
        try:
            response = self.client.post(
                self.endpoint + path,
                content=body,
                headers=headers,
                timeout=self.timeout if timeout is None else httpx.Timeout(max(timeout, 0.05)),
            )
        except httpx.HTTPError as exc:
            return Reply("retry", detail=f"{type(exc).__name__}: {exc}")
        return self._reply(response)

    def _reply(self, response: httpx.Response) -> Reply:
        status = response.status_code
        if 200 <= status < 300:
            try:
                data = response.json()
            except ValueError:
                data = {}
            if not isinstance(data, dict):
                data = {}
            rejected = [
                r["index"]
                for r in data.get("rejected") or ()
                if isinstance(r, dict) and isinstance(r.get("index"), int)
            ]
            return Reply("ok", actions=data.get("actions"), rejected=rejected)
        detail = f"HTTP {status}: {response.text[:200]}"
        if status in (408, 429) or status >= 500:
            return Reply("retry", retry_after=_retry_after(response), detail=detail)
        if status == 413:
            return Reply("split", detail=detail)
        return Reply("drop", detail=detail)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def after_fork(self) -> None:
        # The parent's connections must not be shared: forget them without closing them.
        self._client = None
        self._lock = threading.Lock()


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None
