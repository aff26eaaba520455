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
(:class:`_Deadline`, per thread: the flusher, the long-poll and the exiting thread each make
their own requests).
"""

from __future__ import annotations

import encodings.idna  # noqa: F401  (see below)
import json
import logging
import os
import ssl
import threading
import zlib
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from time import monotonic, time
from typing import Any

import httpcore2 as httpcore
import httpx2 as httpx

from .._text import visible
from .._version import __version__
from .base import Reply

__all__ = ["HTTPTransport", "trust"]

logger = logging.getLogger("sqreen")

GZIP_MIN_BYTES = 1024
#: The longest wait a ``Retry-After`` may impose (a collector asking for a day is obeyed for
#: five minutes, then asked again).
MAX_RETRY_AFTER = 300.0
#: A reply larger than this is not read (an action set of 10 000 blocks is under 1 MiB).
MAX_REPLY_BYTES = 8 * 1024 * 1024
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
        self._deadline = _Deadline()
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
                        transport=_Transport(self.verify, self._deadline),
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
                limit_read = MAX_REPLY_BYTES if 200 <= status < 300 else MAX_ERROR_BYTES
                body, whole = _read_bounded(response, limit_read)
        except httpx.HTTPError as exc:
            if monotonic() >= ends:
                why = f"no complete reply from {path} within {limit:.3g} s"
                return Reply("retry", detail=f"{why} ({type(exc).__name__})")
            return Reply("retry", detail=f"{type(exc).__name__}: {exc}")
        finally:
            deadline.at = None
        if 200 <= status < 300:
            if not whole:
                logger.warning("sqreen: a reply of over %d bytes was not read", MAX_REPLY_BYTES)
                return Reply("ok")  # delivered: its actions are not applied
            return _ok(body, path, response.headers.get("Content-Type"))
        detail = f"HTTP {status} from {path}: {_shown(body)}"
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
        self._deadline = _Deadline()


class _Deadline(threading.local):
    """When the request this thread is making must be over (:func:`time.monotonic`), if it
    is making one."""

    at: float | None = None

    def left(self, timeout: float | None, late: type[Exception]) -> float | None:
        """``timeout`` (a read's, a write's, a connect's), cut to the time left; ``late``
        raised when none is left."""
        at = self.at
        if at is None:
            return timeout
        left = at - monotonic()
        if left <= 0:
            raise late("the request's deadline passed")
        return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the deadline of the request."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # One send at a time, each given the time left: the stream's own loop gives each send
        # the whole timeout, and a collector reading a few bytes at a time would stretch it.
        sock = self._stream.get_extra_info("socket")
        if sock is None:  # (httpcore's streams all have one)
            self._stream.write(buffer, self._deadline.left(timeout, httpcore.WriteTimeout))
            return
        view = memoryview(buffer)
        try:
            while view:
                sock.settimeout(self._deadline.left(timeout, httpcore.WriteTimeout))
                view = view[sock.send(view) :]
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(exc) from exc
        except OSError as exc:
            raise httpcore.WriteError(exc) from exc

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        limit = self._deadline.left(timeout, httpcore.ConnectTimeout)
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, limit), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """httpcore's own (blocking sockets), its connections wrapped in :class:`_Stream`."""

    def __init__(self, deadline: _Deadline) -> None:
        self._backend = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        limit = self._deadline.left(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, limit, local_address, socket_options)
        return _Stream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:  # (unused: an endpoint is a URL)
        limit = self._deadline.left(timeout, httpcore.ConnectTimeout)
        return _Stream(
            self._backend.connect_unix_socket(path, limit, socket_options), self._deadline
        )

    def sleep(self, seconds: float) -> None:  # (unused: no retries)
        self._backend.sleep(seconds)


class _Transport(httpx.HTTPTransport):
    """httpx2's transport over a pool of connections from :class:`_Backend`.

    Its ``__init__`` is not called: it would build a pool (and an SSL context) of its own,
    with no way to hand it a network backend; the pool is built here instead, as it builds
    one without a proxy (httpx2's default limits), and the transport's methods use nothing
    else."""

    def __init__(self, verify: ssl.SSLContext | bool, deadline: _Deadline) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_Backend(deadline),
        )


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
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
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
