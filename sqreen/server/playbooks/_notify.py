"""Webhooks: each alert posted as JSON to the playbook's ``notify`` URLs, signed.

Off the ingest path: :meth:`Notifier.submit` only appends to a bounded queue (a full queue
drops and counts, never waits), and a thread per webhook URL posts, with a timeout and a
few retries (network errors, 408, 429 and 5xx; backing off 1, 2, 4 s). A dead or slow
webhook therefore never slows or fails an ingest reply, nor delays the other webhooks.

Each post carries ``X-Sqreen-Signature: t=<unix time>,v1=<hex>``, where ``v1`` is
HMAC-SHA256 of ``"<t>.<body>"`` under the file's ``webhook_secret`` (or
``SQREEN_WEBHOOK_SECRET``): the receiver recomputes it, compares in constant time and
refuses an old ``t`` (:func:`verify_signature` does both).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx2 as httpx

from ..._threads import start_thread
from ._config import SECRET_VARIABLE

__all__ = ["Notifier", "sign", "verify_signature", "webhook_secret"]

logger = logging.getLogger("sqreen.server")

SIGNATURE_HEADER: Final = "X-Sqreen-Signature"
MAX_PENDING: Final = 1000
TRIES: Final = 4
TIMEOUT: Final = 5.0
TOLERANCE: Final = 300.0


def webhook_secret() -> str | None:
    """``SQREEN_WEBHOOK_SECRET``, when the playbook file names no ``webhook_secret``."""
    return os.environ.get(SECRET_VARIABLE) or None


def sign(secret: str, body: bytes, at: int) -> str:
    """The signature header's value for ``body`` posted at unix time ``at``."""
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def verify_signature(
    secret: str, body: bytes, header: str, now: float | None = None, tolerance: float = TOLERANCE
) -> bool:
    """For receivers: whether ``header`` signs ``body`` under ``secret``, recently."""
    parts = dict(p.partition("=")[::2] for p in header.split(","))
    try:
        at = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - at) > tolerance:
        return False
    expected = sign(secret, body, at).partition("v1=")[2]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class Notifier:
    """Posts alerts in the background; ``secret`` signs them (unsigned without one: a file
    with ``notify`` needs one, see :func:`~._config.parse_playbooks`). ``secret`` may be a
    function giving the secret in force, read at each post: the collector's follows the
    playbook file as it is reloaded, so a leaked secret is rotated by editing the file."""

    def __init__(
        self,
        secret: str | Callable[[], str | None] | None = None,
        *,
        timeout: float = TIMEOUT,
        tries: int = TRIES,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.secret = secret
        self.timeout = timeout
        self.tries = tries
        self.backoff = backoff
        self._sleep = sleep
        self._lanes: dict[str, queue.Queue[bytes | None]] = {}
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def submit(self, urls: tuple[str, ...], payload: Mapping[str, Any]) -> None:
        """Queue ``payload`` for each URL; never blocks (a full queue drops, counted)."""
        if not urls:
            return
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        for url in urls:
            try:
                self._lane(url).put_nowait(body)
            except queue.Full:
                self.dropped += 1
                logger.warning("sqreen: webhook queue full, alert not posted to %s", url)

    def _lane(self, url: str) -> queue.Queue[bytes | None]:
        lane = self._lanes.get(url)
        if lane is None:
            with self._lock:
                lane = self._lanes.get(url)
                if lane is None:
                    lane = self._lanes[url] = queue.Queue(MAX_PENDING)
                    start_thread(self._run, "sqreen-webhook", (url, lane))
        return lane

    def _run(self, url: str, lane: queue.Queue[bytes | None]) -> None:
        with httpx.Client(timeout=self.timeout, trust_env=False) as client:
            while True:
                body = lane.get()
                try:
                    if body is None:
                        return
                    self._post(client, url, body)
                finally:
                    lane.task_done()

    def _post(self, client: httpx.Client, url: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "sqreen-collector"}
        for attempt in range(self.tries):
            secret = self.secret() if callable(self.secret) else self.secret
            if secret:
                headers[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
            else:
                headers.pop(SIGNATURE_HEADER, None)
            try:
                response = client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= response.status_code < 300:
                    self.sent += 1
                    return
                outcome = f"HTTP {response.status_code}"
                if response.status_code not in (408, 429) and response.status_code < 500:
                    break  # the receiver refused this body: sending it again will not help
            if attempt + 1 < self.tries:
                self._sleep(self.backoff * 2**attempt)
        self.failed += 1
        logger.warning("sqreen: webhook %s failed: %s", url, outcome)

    def join(self, timeout: float) -> bool:
        """Wait until what is queued was posted (or gave up); False if ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while any(lane.unfinished_tasks for lane in list(self._lanes.values())):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        for lane in list(self._lanes.values()):
            try:
                lane.put_nowait(None)
            except queue.Full:
                pass
