"""A deadline for a whole HTTP exchange, which httpx's timeouts (each a read's, a write's, a
connect's) are not: a server sending a byte a second keeps a request alive for ever.

:class:`DeadlineTransport` is httpx2's transport over connections of a network backend of
ours, whose every read and write gets no more than the time left to the request the thread
is making (:class:`Deadline`, per thread; ``with deadline.within(seconds): client.post(...)``).
The SDK's transport, the collector's webhooks and its export use it.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any

import httpcore2 as httpcore
import httpx2 as httpx

__all__ = ["Deadline", "DeadlineTransport"]


class Deadline(threading.local):
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

    @contextmanager
    def within(self, limit: float) -> Iterator[float]:
        """The requests this thread makes meanwhile end ``limit`` seconds from now, whole;
        gives when (:func:`time.monotonic`)."""
        self.at = ends = monotonic() + limit
        try:
            yield ends
        finally:
            self.at = None


class _Stream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the deadline of the request."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: Deadline) -> None:
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

    def __init__(self, deadline: Deadline) -> None:
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


class DeadlineTransport(httpx.HTTPTransport):
    """httpx2's transport over a pool of connections from :class:`_Backend`.

    Its ``__init__`` is not called: it would build a pool (and an SSL context) of its own,
    with no way to hand it a network backend; the pool is built here instead, as it builds
    one without a proxy (httpx2's default limits), and the transport's methods use nothing
    else."""

    def __init__(self, verify: ssl.SSLContext | bool, deadline: Deadline) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_Backend(deadline),
        )
