"""Transports: where batches of events go (HTTP, a JSON-lines file, memory, a script)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .._config import ConfigError
from .base import NullTransport, Reply, Transport
from .file import FileTransport
from .memory import MemoryTransport
from .scripted import ScriptedTransport, replies

if TYPE_CHECKING:
    from .http import HTTPTransport

__all__ = [
    "FileTransport",
    "HTTPTransport",
    "MemoryTransport",
    "NullTransport",
    "Reply",
    "ScriptedTransport",
    "Transport",
    "from_config",
    "replies",
]

logger = logging.getLogger("sqreen")

DEFAULT_FILE = "sqreen-events.jsonl"
#: What the file events go to when nothing is configured may grow to: a deployment that
#: lost its ``SQREEN_ENDPOINT`` must not fill its disk with them, unseen. (A ``file://``
#: transport named on purpose has no bound: what is kept is its owner's choice.)
DEFAULT_FILE_MAX_BYTES = 64 * 1024 * 1024
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def from_config(
    transport: Any, endpoint: str | None, token: str | None, ca_bundle: str | None = None
) -> Transport:
    """Build the transport from ``init(transport=..., endpoint=..., token=..., ca_bundle=...)``."""
    if transport is not None and not isinstance(transport, str):
        if not isinstance(transport, Transport):
            raise TypeError(
                "transport must be a URL string or an object with send(), heartbeat(), "
                f"close() and after_fork(), not {type(transport).__name__}"
            )
        return transport
    url = transport or endpoint
    if url is None:
        return _DefaultFile(DEFAULT_FILE)
    if url == "memory:":
        return MemoryTransport()
    parts = urlsplit(url)
    if parts.scheme == "file":
        return FileTransport(unquote(parts.path))
    if parts.scheme in ("http", "https"):
        if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
            logger.warning(
                "sqreen: sending events to %s over plain HTTP: use https:// for any "
                "collector that is not on this machine",
                parts.hostname,
            )
        from .http import HTTPTransport  # httpx2 is imported only when used

        return HTTPTransport(url, token, ca_bundle=ca_bundle)
    # Config.resolve() refuses such a URL already; a Config made directly is not checked.
    raise ConfigError(f"transport must be http(s)://, file:///path.jsonl or memory:, not {url!r}")


class _DefaultFile(FileTransport):
    """The file events go to when nothing else is configured, which says so when it is first
    written: not when the client is made, since ``init()`` may be followed by a framework's
    configuration that names the endpoint (and replaces this client, see :mod:`sqreen._hub`)."""

    _warned = False

    def _open(self) -> int:
        if not self._warned:
            self._warned = True
            logger.warning(
                "sqreen: no endpoint configured: events go to ./%s "
                "(to send them to a collector, set SQREEN_ENDPOINT, or the endpoint option where "
                "the app configures sqreen: SQREEN_ENDPOINT in a Flask config before Sqreen(app), "
                "'endpoint' in "
                "Django's settings.SQREEN, add_middleware(SqreenMiddleware, endpoint=...), "
                "init(endpoint=...))",
                DEFAULT_FILE,
            )
        return super()._open()

    def send(
        self, envelope: dict[str, Any], events: list[bytes], timeout: float | None = None
    ) -> Reply:
        try:
            size = os.fstat(self._open()).st_size
        except OSError as exc:
            return Reply("retry", detail=f"{self.path}: {exc}")
        if size + sum(map(len, events)) + len(events) > DEFAULT_FILE_MAX_BYTES:
            return Reply(
                "drop",
                detail=f"./{DEFAULT_FILE} holds {DEFAULT_FILE_MAX_BYTES >> 20} MiB, its most "
                "with no endpoint configured: set SQREEN_ENDPOINT (or a file:// transport)",
            )
        return super().send(envelope, events, timeout)


def __getattr__(name: str) -> Any:
    if name == "HTTPTransport":
        from .http import HTTPTransport

        return HTTPTransport
    raise AttributeError(name)
