"""Webhooks: each alert posted as JSON to the playbook's ``notify`` URLs, signed.

Off the ingest path: :meth:`Notifier.submit` only appends to a bounded queue (never waits),
and a thread per webhook URL posts, with a timeout and a few retries (network errors, 408,
429 and 5xx; backing off 1, 2, 4 s). A dead or slow webhook therefore never slows or fails
an ingest reply, nor delays the other webhooks. A URL's alerts wait in a queue per playbook,
posted in turn (:class:`_Lane`): a flood of one playbook's alerts (a scan of a thousand
addresses) never holds back another's (the account takeover after it), and when too many
wait, the newest of the playbook with the most waiting is dropped (counted, logged).

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
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx2 as httpx

from ..._threads import start_thread
from ...transports._deadline import Deadline, DeadlineTransport
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


class _Lane:
    """The alerts waiting for one URL: a queue per playbook, served in turn; at most
    ``most`` waiting, past which the newest of the longest queue is dropped (the new alert
    itself when its playbook's is the longest): every queue keeps its oldest, so a flood of
    a playbook's alerts cannot push out an earlier one of its own, nor another's."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._queues: dict[str, deque[bytes]] = {}  # insertion order: the turn
        self._cond = threading.Condition()
        self._closed = False
        self.waiting = 0
        self.unfinished = 0  # waiting, or being posted

    def put(self, key: str, body: bytes) -> int:
        """Queue ``body`` under ``key``; return how many alerts were dropped for room."""
        with self._cond:
            queue_ = self._queues.setdefault(key, deque())
            if self.waiting >= self.most:
                longest = max(self._queues.values(), key=len)
                if len(queue_) >= len(longest):
                    return 1  # its own playbook's queue is the longest: the new one goes
                longest.pop()
                self.waiting -= 1
                self.unfinished -= 1
                dropped = 1
            else:
                dropped = 0
            queue_.append(body)
            self.waiting += 1
            self.unfinished += 1
            self._cond.notify()
        return dropped

    def get(self) -> bytes | None:
        """The next alert in turn (blocking), or None once closed."""
        with self._cond:
            while not self.waiting and not self._closed:
                self._cond.wait()
            if not self.waiting:
                return None
            key = next(k for k, q in self._queues.items() if q)
            queue_ = self._queues.pop(key)
            body = queue_.popleft()
            if queue_:
                self._queues[key] = queue_  # to the end of the turn
            self.waiting -= 1
            return body

    def done(self) -> None:
        with self._cond:
            self.unfinished -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


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
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.secret = secret
        self.timeout = timeout
        self.tries = tries
        self.backoff = backoff
        self.max_pending = max_pending
        self._sleep = sleep
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def submit(self, urls: tuple[str, ...], payload: Mapping[str, Any]) -> None:
        """Queue ``payload`` (``{"alert": {...}}``) for each URL, in its playbook's turn;
        never blocks (past ``max_pending``, the newest of the longest queue is dropped,
        counted)."""
        if not urls:
            return
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        alert = payload.get("alert")
        key = str(alert.get("playbook", "")) if isinstance(alert, Mapping) else ""
        for url in urls:
            if self._lane(url).put(key, body):
                self.dropped += 1
                logger.warning(
                    "sqreen: webhook queue full: an alert not posted to %s (%d dropped)",
                    url,
                    self.dropped,
                )

    def _lane(self, url: str) -> _Lane:
        lane = self._lanes.get(url)
        if lane is None:
            with self._lock:
                lane = self._lanes.get(url)
                if lane is None:
                    lane = self._lanes[url] = _Lane(self.max_pending)
                    start_thread(self._run, "sqreen-webhook", (url, lane))
        return lane

    def _run(self, url: str, lane: _Lane) -> None:
        # Each post ends within the timeout, whole: a receiver trickling its reply a byte at
        # a time held the lane (and the alerts behind it) for ever.
        deadline = Deadline()
        transport = DeadlineTransport(True, deadline)
        with httpx.Client(timeout=self.timeout, trust_env=False, transport=transport) as client:
            while (body := lane.get()) is not None:
                try:
                    self._post(client, deadline, url, body)
                finally:
                    lane.done()

    def _post(self, client: httpx.Client, deadline: Deadline, url: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "sqreen-collector"}
        for attempt in range(self.tries):
            secret = self.secret() if callable(self.secret) else self.secret
            if secret:
                headers[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
            else:
                headers.pop(SIGNATURE_HEADER, None)
            try:
                # The status is the answer: the reply's body is never read (an endless one
                # would be read into memory whole by post()).
                with (
                    deadline.within(self.timeout),
                    client.stream("POST", url, content=body, headers=headers) as response,
                ):
                    status = response.status_code
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    self.sent += 1
                    return
                outcome = f"HTTP {status}"
                if status not in (408, 429) and status < 500:
                    break  # the receiver refused this body: sending it again will not help
            if attempt + 1 < self.tries:
                self._sleep(self.backoff * 2**attempt)
        self.failed += 1
        logger.warning("sqreen: webhook %s failed: %s", url, outcome)

    def join(self, timeout: float) -> bool:
        """Wait until what is queued was posted (or gave up); False if ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while any(lane.unfinished for lane in list(self._lanes.values())):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        for lane in list(self._lanes.values()):
            lane.close()
