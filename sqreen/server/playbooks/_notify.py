"""Webhooks: each alert posted as JSON to the playbook's ``notify`` URLs, signed.

Off the ingest path: :meth:`Notifier.submit` only appends to a bounded queue (never waits),
and a thread per webhook URL posts, with a timeout and a few retries (network errors, 408,
429 and 5xx; backing off 1, 2, 4 s). A dead or slow webhook therefore never slows or fails
an ingest reply, nor delays the other webhooks. A URL's alerts wait in a queue per playbook,
posted in turn, at most ``burst`` of a playbook waiting alone, the next merged into one
summary post (:mod:`._lanes`): a flood of alerts (a scan of a thousand addresses, or alerts
forged with a leaked ingest key) never holds back another playbook's, nor another group
key's of its own, by more than a few posts, and no alert goes unsaid.

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
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx2 as httpx
from prometheus_client import Counter

from ..._text import visible
from ..._threads import start_thread
from ...transports._deadline import Deadline, DeadlineTransport
from ._config import SECRET_VARIABLE
from ._lanes import BURST, MOST_KEYS, Lane, Waiting
from ._values import shown

__all__ = ["ALERTS", "Notifier", "sign", "verify_signature", "webhook_secret"]

logger = logging.getLogger("sqreen.server")

SIGNATURE_HEADER: Final = "X-Sqreen-Signature"
MAX_PENDING: Final = 1000
TRIES: Final = 4
TIMEOUT: Final = 5.0
TOLERANCE: Final = 300.0

ALERTS: Final = Counter(
    "sqreen_webhook_alerts",
    "Alerts posted to webhooks, by post (alert: on its own; summary: merged with others of "
    "its playbook while more waited) and outcome (sent, failed: after its retries).",
    ["post", "outcome"],
)


def webhook_secret() -> str | None:
    """``SQREEN_WEBHOOK_SECRET``, when the playbook file names no ``webhook_secret``."""
    return os.environ.get(SECRET_VARIABLE) or None


def sign(secret: str, body: bytes, at: int) -> str:
    """The signature header's value for ``body`` posted at unix time ``at``."""
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def _encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


class _Body:
    """An alert's post, encoded once, when a lane first posts it: ``more`` (what the store
    holds of the events behind the alert) is read then, on the lane's thread, never on the
    ingest path, and never for an alert merged into a summary. Read by one lane or several
    (one a URL), it is read once; if it fails (the database away), the alert goes without."""

    __slots__ = ("_encoded", "_lock", "_more", "_payload", "what")

    def __init__(
        self, payload: Mapping[str, Any], more: Callable[[], Mapping[str, Any]] | None
    ) -> None:
        self._payload = payload
        self._more = more
        self._lock = threading.Lock()
        self._encoded: bytes | None = None
        alert = payload.get("alert")
        alert = alert if isinstance(alert, Mapping) else {}
        #: The alert as a failed post's line names it (``sqreen alerts`` finds it by id).
        self.what = visible(f"alert #{alert.get('id')} of {str(alert.get('playbook'))[:100]}")

    def __call__(self) -> bytes:
        with self._lock:
            if self._encoded is None:
                payload = self._payload
                if self._more is not None:
                    try:
                        payload = {**payload, **self._more()}
                    except Exception as exc:
                        said = str(exc).strip()
                        logger.warning(
                            "sqreen: a webhook alert is posted without its events' addresses "
                            "and users: %s: %s",
                            type(exc).__name__,
                            visible(said.splitlines()[0][:200]) if said else "",
                        )
                self._encoded = _encode(payload)
                self._payload, self._more = {}, None  # what a waiting post holds: its bytes
            return self._encoded


def verify_signature(
    secret: str,
    body: bytes,
    header: str | bytes | None,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> bool:
    """For receivers: whether ``header`` signs ``body`` under ``secret``, recently. False,
    never an error, for whatever a sender wrote there, or nothing (``headers.get(...)`` of
    an unsigned post: None)."""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if not isinstance(header, str) or not header.isascii() or len(header) > 1024:
        return False
    parts = dict(p.partition("=")[::2] for p in header.split(","))
    t = parts.get("t", "")
    if not (t.isdigit() and len(t) <= 12):  # ("1_0" and " 10" are ints to int())
        return False
    at = int(t)
    if abs((time.time() if now is None else now) - at) > tolerance:
        return False
    expected = sign(secret, body, at).partition("v1=")[2]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class Notifier:
    """Posts alerts in the background; ``secret`` signs them (unsigned without one: a file
    with ``notify`` needs one, see :func:`~._config.parse_playbooks`). ``secret`` may be a
    function giving the secret in force, read at each post: the collector's follows the
    playbook file as it is reloaded, so a leaked secret is rotated by editing the file.
    ``burst`` alerts of a playbook wait to be posted alone (``max_pending`` in all), the
    next are merged into one summary post, which names at most ``most_keys`` group keys."""

    def __init__(
        self,
        secret: str | Callable[[], str | None] | None = None,
        *,
        timeout: float = TIMEOUT,
        tries: int = TRIES,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        max_pending: int = MAX_PENDING,
        burst: int = BURST,
        most_keys: int = MOST_KEYS,
    ) -> None:
        self.secret = secret
        self.timeout = timeout
        self.tries = tries
        self.backoff = backoff
        self.max_pending = max_pending
        self.burst = burst
        self.most_keys = most_keys
        self._sleep = sleep
        self._lanes: dict[str, Lane] = {}
        self._lock = threading.Lock()
        self.sent = 0  # posts
        self.failed = 0
        self.merged = 0  # alerts queued into a summary rather than a post of their own
        for post in ("alert", "summary"):  # every series at 0 until counted (dashboards)
            for outcome in ("sent", "failed"):
                ALERTS.labels(post, outcome)

    def submit(
        self,
        urls: tuple[str, ...],
        payload: Mapping[str, Any],
        more: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        """Queue ``payload`` (``{"alert": {...}}``) for each URL, in its playbook's turn;
        never blocks (past ``burst`` of its playbook waiting, it joins their summary).
        ``more`` gives what else the post says (read when it is first posted, see
        :class:`_Body`)."""
        if not urls:
            return
        body = _Body(payload, more)
        alert = payload.get("alert")
        if not isinstance(alert, Mapping):
            alert = {}
        key = str(alert.get("playbook", ""))
        for url in urls:
            if self._lane(url).put(key, alert, body):
                self.merged += 1

    def _lane(self, url: str) -> Lane:
        lane = self._lanes.get(url)
        if lane is None:
            with self._lock:
                lane = self._lanes.get(url)
                if lane is None:
                    lane = self._lanes[url] = Lane(self.max_pending, self.burst, self.most_keys)
                    start_thread(self._run, "sqreen-webhook", (url, lane))
        return lane

    def _run(self, url: str, lane: Lane) -> None:
        # Each post ends within the timeout, whole: a receiver trickling its reply a byte at
        # a time held the lane (and the alerts behind it) for ever.
        deadline = Deadline()
        transport = DeadlineTransport(True, deadline)
        with httpx.Client(timeout=self.timeout, trust_env=False, transport=transport) as client:
            while (waiting := lane.get()) is not None:
                try:
                    self._send(client, deadline, url, waiting)
                finally:
                    lane.done()

    def _send(self, client: httpx.Client, deadline: Deadline, url: str, waiting: Waiting) -> None:
        summary = waiting.summary
        if summary is not None:
            body = _encode(summary.payload())
            what = f"a summary of {summary.alerts} alerts of {visible(summary.playbook[:100])}"
        else:
            body = waiting.body() if waiting.body is not None else b""
            what = getattr(waiting.body, "what", "an alert")
        sent = self._post(client, deadline, url, body, what)
        kind = "alert" if summary is None else "summary"
        ALERTS.labels(kind, "sent" if sent else "failed").inc(waiting.alerts)
        if summary is not None:
            logger.warning(
                "sqreen: webhook %s: %d alerts of playbook %s %s as one summary (%d group "
                "keys, %d alerts of others unlisted): more waited than it takes alone",
                shown(url),
                summary.alerts,
                visible(summary.playbook[:100]),
                "posted" if sent else "not posted",
                len(summary.keys),
                summary.unlisted,
            )

    def _post(
        self, client: httpx.Client, deadline: Deadline, url: str, body: bytes, what: str
    ) -> bool:
        """Post ``body`` (``what``: the alert or summary, for the log); whether the receiver
        took it. Said, when it did not, with the URL's scheme and host only (see
        :func:`shown`)."""
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
                outcome = f"{type(exc).__name__}: {str(exc).replace(url, shown(url))}"
            else:
                if 200 <= status < 300:
                    self.sent += 1
                    return True
                outcome = f"HTTP {status}"
                if 300 <= status < 400:  # not followed: the signed alert stays where it was sent
                    where = response.headers.get("location")
                    to = f" to {visible(shown(where)[:200])}" if where else ""
                    outcome += f", a redirect{to} (not followed: give the webhook its new URL)"
                if status not in (408, 429) and status < 500:
                    break  # the receiver refused this body: sending it again will not help
            if attempt + 1 < self.tries:
                self._sleep(self.backoff * 2**attempt)
        self.failed += 1
        logger.warning(
            "sqreen: webhook %s failed after %s (%.0f s each at most): %s; %s not posted",
            shown(url),
            "1 try" if attempt == 0 else f"{attempt + 1} tries",
            self.timeout,
            outcome,
            what,
        )
        return False

    def join(self, timeout: float) -> bool:
        """Wait until what is queued was posted (or gave up); False if ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while any(lane.unfinished for lane in list(self._lanes.values())):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, wait: float = 0.0) -> None:
        """Stop posting, once what waits was posted or within ``wait`` seconds: what was
        not is said, by receiver (`sqreen alerts` lists every alert)."""
        if wait > 0:
            self.join(wait)
        for url, lane in list(self._lanes.items()):
            left, posting = lane.close()
            if left or posting:
                logger.warning(
                    "sqreen: webhook %s: %d alerts not posted at stop, %d being posted "
                    "(`sqreen alerts` lists them all)",
                    shown(url),
                    left,
                    posting,
                )
