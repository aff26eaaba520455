"""Where the forwarder sends: ``--export URL``, one syntax for three transports.

- ``otlp+http://host:4318/v1/logs`` (or ``otlp+https://``): OpenTelemetry logs over
  OTLP/HTTP (protobuf), one request a batch (:mod:`.otlp`);
- ``jsonl+http://host/path`` (or ``jsonl+https://``): one POST a batch, a JSON document a
  line (``application/x-ndjson``);
- ``jsonl+tcp://host:port``: the same lines on a TCP connection (syslog-ng's or Vector's
  ``tcp`` source, Logstash's ``json_lines`` codec).

A batch is acknowledged by a 2xx answer over HTTP; over TCP only by the peer's kernel taking
the bytes (the protocol has no answer): a receiver that crashes after reading may lose what
it had not written, which HTTP cannot. Any failure raises :class:`SinkError`, and the
forwarder sends the same batch again later.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import urlsplit

import httpx2 as httpx

from ...transports._deadline import Deadline, DeadlineTransport
from ...transports.http import trust
from ..storage import Alert, StoredEvent
from .otlp import CONTENT_TYPE, encode_logs
from .records import FORMATS, Format, Kind, document

__all__ = [
    "SCHEMES",
    "Destination",
    "Record",
    "Sink",
    "SinkError",
    "open_sink",
    "parse_destination",
]

SCHEMES: Final = ("otlp+http", "otlp+https", "jsonl+http", "jsonl+https", "jsonl+tcp")
TIMEOUT: Final = 10.0
#: Characters of an error's text logged at most.
ERROR_TEXT: Final = 200
Record = tuple[Kind, StoredEvent | Alert]


class SinkError(Exception):
    """A batch was not acknowledged (the message says why)."""


@dataclass(frozen=True, slots=True)
class Destination:
    scheme: str
    url: str  # what the transport connects to (http(s) URL, or host:port)
    format: Format

    @property
    def name(self) -> str:
        """The destination as cursors are named: the URL without credentials or query."""
        return f"{self.scheme}://{self.url.split('://')[-1].rpartition('@')[2].split('?')[0]}"


def parse_destination(value: str, format: str = "ecs") -> Destination:
    """``--export``'s URL; :class:`ValueError` saying what is wrong."""
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"{_shown(value)!r}: the URL starts with one of {', '.join(SCHEMES)}")
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    transport = scheme.partition("+")[2]
    parts = urlsplit(f"{transport}://{rest}")
    if not parts.hostname or (transport == "tcp" and parts.port is None):
        raise ValueError(f"{_shown(value)!r}: no host{' and port' if transport == 'tcp' else ''}")
    url = f"{parts.hostname}:{parts.port}" if transport == "tcp" else f"{transport}://{rest}"
    return Destination(scheme, url, format)


def _shown(url: str) -> str:
    """``url`` for an error message, without what may be secret: its user and password
    (``//user:password@``) and its query (``?token=``), which go to a terminal or a log."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    _, at, rest = rest.split("?")[0].rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{rest}"[:80]


class Sink(Protocol):
    def send(self, records: Sequence[Record]) -> None:
        """Deliver ``records``, or raise :class:`SinkError`."""
        ...

    def close(self) -> None: ...


class HttpSink:
    """OTLP/HTTP or JSON lines POSTed: acknowledged by a 2xx answer."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.otlp = destination.scheme.startswith("otlp")
        # No proxy nor .netrc from the environment, but SSL_CERT_FILE/SSL_CERT_DIR for an
        # endpoint of a private CA, as the SDK reads them (without, its CA could not be named).
        # Each send ends within TIMEOUT, whole: an endpoint trickling its status line a byte
        # at a time held the forwarder for ever (httpx's timeouts are each a read's).
        self._deadline = Deadline()
        transport = DeadlineTransport(trust(None), self._deadline)
        self._client = httpx.Client(timeout=TIMEOUT, trust_env=False, transport=transport)

    def body(self, records: Sequence[Record]) -> tuple[bytes, str]:
        if self.otlp:
            return encode_logs((k, document(k, r, "ecs")) for k, r in records), CONTENT_TYPE
        return lines(records, self.destination.format), "application/x-ndjson"

    def send(self, records: Sequence[Record]) -> None:
        body, content_type = self.body(records)
        headers = {"Content-Type": content_type, "User-Agent": "sqreen-collector"}
        try:
            # The status is the acknowledgement: the reply's body is never read. Read whole
            # (``post``), an endpoint answering with an endless body took the collector to
            # 4.7 GB of memory in 12 s; one stalling mid-body failed the batch at the read
            # timeout, again and again. Closed unread, the connection is dropped, not reused.
            with (
                self._deadline.within(TIMEOUT),
                self._client.stream(
                    "POST", self.destination.url, content=body, headers=headers
                ) as response,
            ):
                status = response.status_code
        except httpx.HTTPError as exc:
            raise SinkError(_described(exc)) from None
        if not 200 <= status < 300:
            raise SinkError(f"HTTP {status}")

    def close(self) -> None:
        self._client.close()


class TcpSink:
    """JSON lines on one TCP connection, opened again after an error."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self._socket: socket.socket | None = None

    def send(self, records: Sequence[Record]) -> None:
        host, _, port = self.destination.url.rpartition(":")
        try:
            if self._socket is None:
                self._socket = socket.create_connection((host, int(port)), timeout=TIMEOUT)
            self._socket.sendall(lines(records, self.destination.format))
        except OSError as exc:
            self.close()
            raise SinkError(_described(exc)) from None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _described(exc: Exception) -> str:
    """An error for the log: its class and the start of its text, which can quote what the
    endpoint sent (an unparsable status line quotes kilobytes of the peer's bytes)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text[:ERROR_TEXT]}{'...' if len(text) > ERROR_TEXT else ''}"


def lines(records: Sequence[Record], format: Format) -> bytes:
    return b"".join(
        json.dumps(document(k, r, format), separators=(",", ":")).encode() + b"\n"
        for k, r in records
    )


def open_sink(destination: Destination) -> Sink:
    if destination.scheme == "jsonl+tcp":
        return TcpSink(destination)
    return HttpSink(destination)
