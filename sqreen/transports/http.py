"""The HTTP transport: batches to the collector with httpx2, gzip and a bearer token.

Status codes map to what the queue does next: 2xx delivered (when its body is the
collector's reply, a JSON object: a captive portal's page is no delivery); 413 split; 400 and
422 dropped and counted, since sending the same bytes again cannot succeed; everything else
retried with backoff, honouring ``Retry-After`` up to five minutes: network errors, 408, 429
and 5xx, and what a misconfigured endpoint or key answers (a redirect, 401, 403, 404), so
that fixing the configuration loses nothing queued meanwhile. Replies are read up to 8 MiB,
the body of an error up to 2 KiB (both as decompressed).

Every request has a deadline for the whole exchange (connecting, sending, the reply's
headers and body): httpx's timeouts are per read, and a collector sending a byte a second
kept the flusher (or the exit) waiting for ever. The connections come from a network
backend of ours whose reads and writes each get no more than the time left to the request
(:class:`~._deadline.Deadline`, per thread: the flusher, the long-poll and the exiting
thread each make their own requests).
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (see below)
import json
import logging
import os
import re
import ssl
import threading
import zlib
from email.utils import parsedate_to_datetime
from time import monotonic, thread_time, time
from typing import Any

import httpx2 as httpx

from .._text import visible
from .._version import __version__
from ._deadline import Deadline, DeadlineTransport
from .base import Reply

__all__ = ["HTTPTransport", "trust"]

logger = logging.getLogger("sqreen")

GZIP_MIN_BYTES = 1024
#: zlib's fastest level: a batch of varied login events (addresses, users, ids of their own)
#: takes 1.5 µs of the flusher's CPU an event at 1 against 3.4 at 6 (zlib's default), for
#: 16 % more bytes (58 against 50 an event: 14 % of the JSON against 12 %), which the
#: collector inflates as fast. CPU on the app's servers is what a tracked event costs; a
#: few bytes more to the collector are not.
GZIP_LEVEL = 1
#: The longest wait a ``Retry-After`` may impose (a collector asking for a day is obeyed for
#: five minutes, then asked again).
MAX_RETRY_AFTER = 300.0
#: A reply larger than this is not read (an action set of 10 000 blocks is under 1 MiB).
MAX_REPLY_BYTES = 8 * 1024 * 1024
#: The JSON arrays and objects a reply may open, at most (counted as ``[`` and ``{`` bytes
#: before parsing): the collector's set of 10 000 blocks opens about 21 000; 8 MiB of ``[]``
#: made 4 million lists, 250 MB of the app's memory at once.
MAX_REPLY_CONTAINERS = 250_000
#: How much of an error's body is read (decompressed), for the log.
MAX_ERROR_BYTES = 2048


class HTTPTransport:
    def __init__(
        self,
        endpoint: str,
        token: str | None,
        timeout: float = 10.0,
        *,
        ca_bundle: str | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.verify = trust(ca_bundle) if self.endpoint.startswith("https://") else True
        # The longest a request may take, all of it (the long-poll: its wait and this).
        self._limit = timeout
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        self._deadline = Deadline()
        # httpx2 logs every request at INFO: in an app that logs at INFO that is a line per
        # flush. Quiet unless the app set a level for it.
        quiet = logging.getLogger("httpx2")
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)
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
                        headers=headers,
                        timeout=self.timeout,
                        transport=DeadlineTransport(self.verify, self._deadline),
                        trust_env=False,
                    )
        return client

    def send(
        self, envelope: dict[str, Any], events: list[bytes], timeout: float | None = None
    ) -> Reply:
        head = json.dumps(envelope, separators=(",", ":"))[:-1].encode()
        body = head + b',"events":[' + b",".join(events) + b"]}"
        return self._post("/v1/events", body, timeout)

    def heartbeat(self, payload: dict[str, Any], timeout: float | None = None) -> Reply:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return self._post("/v1/heartbeat", body, timeout)

    def poll_actions(self, version: int, wait: float) -> Reply:
        """The action set (or what changed in it since ``version``: a diff), as soon as its
        version differs from ``version``, or after ``wait`` seconds (``{"version": n,
        "unchanged": true}``): a long-poll."""
        params = {"version": str(version), "wait": f"{wait:g}", "diff": "1"}
        limit = wait + self._limit
        timeout = httpx.Timeout(limit, connect=min(self._limit, 5.0))
        return self._call("GET", "/v1/actions", limit, params=params, timeout=timeout)

    def _post(self, path: str, body: bytes, timeout: float | None = None) -> Reply:
        headers = {"Content-Type": "application/json"}
        if len(body) >= GZIP_MIN_BYTES:
            body = _gzip(body)
            headers["Content-Encoding"] = "gzip"
        if timeout is None:
            limit, per_step = self._limit, self.timeout
        else:
            limit = max(timeout, 0.05)
            per_step = httpx.Timeout(limit)
        return self._call("POST", path, limit, content=body, headers=headers, timeout=per_step)

    def _call(self, method: str, path: str, limit: float, **kwargs: Any) -> Reply:
        """One request, all of it (the reply read) within ``limit`` seconds."""
        deadline = self._deadline
        deadline.at = ends = monotonic() + limit
        try:
            with self.client.stream(method, self.endpoint + path, **kwargs) as response:
                status = response.status_code
                began = thread_time()
                limit_read = MAX_REPLY_BYTES if 200 <= status < 300 else MAX_ERROR_BYTES
                body, whole = _read_bounded(response, limit_read)
        except httpx.HTTPError as exc:
            if monotonic() >= ends:
                why = f"no complete reply from {path} within {limit:.3g} s"
                return Reply("retry", detail=f"{why} ({type(exc).__name__})")
            return Reply("retry", detail=f"{type(exc).__name__}: {exc}{_hint(exc)}")
        finally:
            deadline.at = None
        if 200 <= status < 300:
            if not whole:
                logger.warning("sqreen: a reply of over %d bytes was not read", MAX_REPLY_BYTES)
                return Reply("ok", cost=thread_time() - began)  # its actions are not applied
            if _containers(body) > MAX_REPLY_CONTAINERS:
                logger.warning(
                    "sqreen: a reply of over %d JSON arrays and objects was not read",
                    MAX_REPLY_CONTAINERS,
                )
                return Reply("ok", cost=thread_time() - began)  # its actions are not applied
            reply = _ok(body, path, response.headers.get("Content-Type"))
            reply.cost = thread_time() - began
            return reply
        detail = f"HTTP {status} from {path}: {_shown(body)}"
        if status in (404, 405):
            detail += " (no such route there: is the endpoint the collector's address?)"
        if status == 413:
            return Reply("split", detail=detail)
        if status in (400, 422):
            return Reply("drop", detail=detail)
        # 5xx, 408, 429; and what a misconfigured endpoint or key answers (a redirect, 401,
        # 403, 404): kept and retried with backoff, logged, until max_retry_age.
        return Reply("retry", retry_after=_retry_after(response), detail=detail)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def after_fork(self) -> None:
        # The parent's connections must not be shared: forget them without closing them.
        self._client = None
        self._lock = threading.Lock()
        self._deadline = Deadline()


def _hint(exc: Exception) -> str:
    """What a failure to connect most likely means, when it says: an ``https://`` endpoint
    answered in plain HTTP (OpenSSL's "wrong version number")."""
    if "WRONG_VERSION_NUMBER" in str(exc):
        return " (the endpoint is https:// and the server answered in plain HTTP: use http://)"
    return ""


def trust(ca_bundle: str | None) -> ssl.SSLContext | bool:
    """What an ``https://`` endpoint's certificate is checked against: ``ca_bundle``, else
    ``SSL_CERT_FILE`` or ``SSL_CERT_DIR``, else the system's store (``True``).

    The client ignores the environment (``trust_env=False``: no ``HTTP_PROXY`` or ``.netrc``
    between an app and its collector), which in httpx2 also drops ``SSL_CERT_FILE``; these two
    are read here, since OpenSSL, requests and httpx all honour them and an operator who set
    them for a private CA expects every client of the machine to."""
    path = ca_bundle or os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")
    if not path:
        return True
    if not os.path.exists(path):  # ca_bundle is checked with the config: the environment's
        logger.warning(
            "sqreen: SSL_CERT_FILE or SSL_CERT_DIR names %r, which does not exist: "
            "the system's CAs are used",
            path,
        )
        return True
    if os.path.isdir(path):
        return ssl.create_default_context(capath=path)
    return ssl.create_default_context(cafile=path)


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def _read_bounded(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The body, decompressed, up to ``limit`` bytes, and whether that is all of it (the
    rest is not read). httpx2 inflates in pieces of at most 1 MiB, so a small compressed
    body cannot take more than that at once."""
    chunks = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            chunks.append(chunk[: len(chunk) - (size - limit)])
            return b"".join(chunks), False
        chunks.append(chunk)
    return b"".join(chunks), True


#: A JSON string, quotes included, or one left open up to the end: every match that starts
#: succeeds, so that none is tried again from the next quote (a string left open, tried so
#: from each of its quotes, was quadratic: 50 s for 128 kB), and possessive (no
#: backtracking). 8 MiB of the worst inputs found: 0.5 s at most.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)


def _containers(body: bytes) -> int:
    """How many JSON arrays and objects ``body`` opens, at most: its ``[`` and ``{``, then,
    when they are many, only those outside strings (a collector's honest set of user blocks
    named ``[[[...``, which an attacker can sign up as, is no padding)."""
    count = body.count(b"[") + body.count(b"{")
    if count <= MAX_REPLY_CONTAINERS or not json.detect_encoding(body).startswith("utf-8"):
        return count  # (in UTF-16, a character's bytes may hold a quote: counted as they are)
    outside = _STRING.sub(b"", body)
    return outside.count(b"[") + outside.count(b"{")


def _shown(body: bytes) -> str:
    """The start of a body, for the log: its control characters written out, so that a
    body cannot write log lines of its own or act on a terminal."""
    return visible(body[:200].decode("utf-8", "replace"))[:200]


def _ok(body: bytes, path: str, content_type: str | None) -> Reply:
    """A 2xx reply: delivered if its body is a JSON object, the collector's reply; else
    whatever answered is not the collector (a captive portal's page, a wrong endpoint's),
    and the request is retried."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past any sense
        data = None
    if not isinstance(data, dict):
        shown = _shown(body)
        kind = f"{visible(content_type[:100])}, " if content_type else ""
        detail = f"a 2xx from {path} that is not the collector's reply ({kind}{len(body)} bytes)"
        return Reply("retry", detail=f"{detail}: {shown}" if shown else detail)
    rejected = data.get("rejected")
    return Reply(
        "ok",
        actions=data.get("actions"),
        rejected=[
            r["index"]
            for r in (rejected if isinstance(rejected, list) else ())
            if isinstance(r, dict) and type(r.get("index")) is int
        ],
        errors=[
            str(r.get("error"))[:200]
            for r in (rejected if isinstance(rejected, list) else ())
            if isinstance(r, dict)
        ],
    )


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), at most MAX_RETRY_AFTER."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time()
        except (TypeError, ValueError, OverflowError):
            return None
    if not seconds > 0:  # also NaN
        return 0.0
    return min(seconds, MAX_RETRY_AFTER)
