"""Where the forwarder sends: ``--export URL``, one syntax for three transports.

- ``otlp+http://host:4318/v1/logs`` (or ``otlp+https://``): OpenTelemetry logs over
  OTLP/HTTP (protobuf), one request a batch (:mod:`.otlp`);
- ``jsonl+http://host/path`` (or ``jsonl+https://``): one POST a batch, a JSON document a
  line (``application/x-ndjson``);
- ``jsonl+tcp://host:port``: the same lines on a TCP connection (syslog-ng's or Vector's
  ``tcp`` source, Logstash's ``json_lines`` codec).

A batch is acknowledged by a 2xx answer over HTTP; over TCP by the peer's kernel having
acknowledged every byte with the connection still open (the protocol has no answer): a
receiver that crashes after its kernel took the bytes may lose what it had not written,
which HTTP cannot. Any failure raises :class:`SinkError`, and the forwarder sends the same
batch again later; :class:`Refused` (HTTP 400, 413, 422) says the endpoint refused what the
batch holds, which sending it again will not change (the forwarder splits it), and
:class:`~.records.Unencodable` that a record could not be encoded (nothing was sent).
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import httpx2 as httpx

from ...transports._deadline import Deadline, DeadlineTransport
from ...transports.http import trust
from ..storage import Alert, StoredEvent
from .otlp import CONTENT_TYPE, encode_logs
from .records import FORMATS, Format, Kind, Unencodable, document

__all__ = [
    "SCHEMES",
    "Destination",
    "Record",
    "Refused",
    "Sink",
    "SinkError",
    "open_sink",
    "parse_destination",
    "peer_closed",
]

SCHEMES: Final = ("otlp+http", "otlp+https", "jsonl+http", "jsonl+https", "jsonl+tcp")
#: Seconds a batch may take to be acknowledged, at first; doubled after each batch that
#: timed out, up to :data:`MAX_TIMEOUT` (kept for the process): a receiver slower than that
#: (an index answering after 12 s) was sent the same batch again and again, never caught up.
TIMEOUT: Final = 10.0
MAX_TIMEOUT: Final = 120.0
#: Characters of an error's text logged at most.
ERROR_TEXT: Final = 200
Record = tuple[Kind, StoredEvent | Alert]


#: The HTTP statuses that refuse what a batch holds (sent again, it would be refused
#: again): 400 Bad Request, 413 Content Too Large, 422 Unprocessable Content. Every other
#: one (401, 403, 404, 408, 429, 5xx...) is about the endpoint or the credentials, and the
#: batch is sent again later as it is.
REFUSING: Final = frozenset({400, 413, 422})


class SinkError(Exception):
    """A batch was not acknowledged (the message says why)."""


class Refused(SinkError):
    """The endpoint refused the batch for what it holds (:data:`REFUSING`): 413, too large."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Destination:
    scheme: str
    url: str  # what the transport connects to (http(s) URL, or host:port)
    format: Format

    @property
    def name(self) -> str:
        """The destination as logs say it: the URL without credentials or query."""
        return f"{self.scheme}://{self.url.split('://')[-1].rpartition('@')[2].split('?')[0]}"

    @property
    def key(self) -> str:
        """The destination as its cursors and lease are named: :attr:`name`, and when the
        URL holds a user or a query, a digest of them, so that two tenants of one endpoint
        (``?tenant=a``, ``?tenant=b``) are two destinations, each sent every record (they
        shared one cursor: one got nothing). A digest keeps a query's token out of the
        database; a password is left out (changing it is the same destination)."""
        parts = urlsplit(self.url if "://" in self.url else f"tcp://{self.url}")
        extra = f"{parts.username or ''}?{parts.query}"
        if extra == "?":
            return self.name
        return f"{self.name}#{hashlib.sha256(extra.encode()).hexdigest()[:16]}"


def parse_destination(value: str, format: str = "ecs") -> Destination:
    """``--export``'s URL; :class:`ValueError` saying what is wrong."""
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"{_shown(value)!r}: the URL starts with one of {', '.join(SCHEMES)}")
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    transport = scheme.partition("+")[2]
    parts = urlsplit(f"{transport}://{rest}")
    try:
        port = parts.port
    except ValueError:  # its text quotes the "port": a password's start, perhaps
        port = None
        broken = True
    else:
        # An "@" after the host: the URL's password held a "/", "?" or "#", which ended the
        # host there (the rest of the password is then taken for a path, and the start for
        # a host and a port).
        broken = parts.username is None and "@" in rest
    if broken:
        raise ValueError(
            f"{_shown(value)!r}: not a host and a port; a user or password holding '/', "
            "'?' or '#' must be percent-encoded (%2F, %3F, %23)"
        )
    if not parts.hostname or (transport == "tcp" and port is None):
        raise ValueError(f"{_shown(value)!r}: no host{' and port' if transport == 'tcp' else ''}")
    url = f"{parts.hostname}:{parts.port}" if transport == "tcp" else f"{transport}://{rest}"
    return Destination(scheme, url, format)


def _shown(url: str) -> str:
    """``url`` for an error message, without what may be secret: its user and password
    (``//user:password@``) and its query (``?token=``), which go to a terminal or a log."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # Everything up to the last "@" may be credentials, wherever a "?" or "#" in a password
    # would put the query.
    _, at, rest = rest.rpartition("@")
    return f"{scheme}{sep}{'***@' if at else ''}{rest.split('?')[0].split('#')[0]}"[:80]


class Sink(Protocol):
    def send(self, records: Sequence[Record]) -> None:
        """Deliver ``records``, or raise :class:`SinkError` (:class:`Refused`), or
        :class:`~.records.Unencodable` before sending anything."""
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
        self.timeout = TIMEOUT
        transport = DeadlineTransport(trust(None), self._deadline)
        self._client = httpx.Client(timeout=MAX_TIMEOUT, trust_env=False, transport=transport)

    def body(self, records: Sequence[Record]) -> tuple[bytes, str]:
        if self.otlp:
            return encode_logs(documents(records, "ecs")), CONTENT_TYPE
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
                self._deadline.within(self.timeout),
                self._client.stream(
                    "POST", self.destination.url, content=body, headers=headers
                ) as response,
            ):
                status = response.status_code
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.TimeoutException):
                self.timeout = longer(self.timeout)
            raise SinkError(_described(exc)) from None
        if status in REFUSING:
            raise Refused(status)
        if not 200 <= status < 300:
            raise SinkError(f"HTTP {status}")

    def close(self) -> None:
        self._client.close()


class TcpSink:
    """JSON lines on one TCP connection, opened again after an error or once the peer
    closed it.

    A peer that closed the connection (a receiver closing idle ones, or restarted) does not
    make the next ``sendall`` fail: the bytes go into the kernel's buffer and the peer's
    reset comes back later, so the batch was lost while it seemed sent. Before a batch the
    connection is checked (:func:`peer_closed`: opened again if so), and after it the send
    waits until the peer's kernel acknowledged every byte (:func:`flushed`), failing if the
    connection was reset or closed meanwhile: the batch is then sent again, whole, on a new
    connection. Delivery is at least once: lines the peer read before closing are sent again.
    """

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self._socket: socket.socket | None = None
        self.timeout = TIMEOUT

    def send(self, records: Sequence[Record]) -> None:
        data = lines(records, self.destination.format)  # Unencodable: nothing sent
        host, _, port = self.destination.url.rpartition(":")
        try:
            if self._socket is not None and peer_closed(self._socket):
                self.close()
            if self._socket is None:
                self._socket = socket.create_connection((host, int(port)), timeout=self.timeout)
            self._socket.settimeout(self.timeout)
            self._socket.sendall(data)
            flushed(self._socket, time.monotonic() + self.timeout)
        except OSError as exc:
            if isinstance(exc, TimeoutError):  # (socket.timeout is TimeoutError)
                self.timeout = longer(self.timeout)
            self.close()
            raise SinkError(_described(exc)) from None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def longer(timeout: float) -> float:
    """The timeout after a batch that timed out (see :data:`TIMEOUT`)."""
    return min(timeout * 2, MAX_TIMEOUT)


def peer_closed(sock: socket.socket) -> bool:
    """Whether the peer closed or reset ``sock`` (what it may have sent is left unread)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False  # open, nothing to read
    except OSError:
        return True  # reset
    finally:
        sock.settimeout(timeout)


#: macOS's socket option for the bytes not yet acknowledged (Linux has an ioctl).
SO_NWRITE: Final = 0x1024


def _unacknowledged(sock: socket.socket) -> int | None:
    """Bytes sent on ``sock`` that the peer has not acknowledged (None: not known here)."""
    platform: str = sys.platform  # not narrowed: each branch is checked on any platform
    if platform == "linux":
        import fcntl
        import termios

        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))  # SIOCOUTQ
        return int.from_bytes(queued, sys.byteorder)
    if platform == "darwin":
        return sock.getsockopt(socket.SOL_SOCKET, SO_NWRITE)
    return None


def flushed(sock: socket.socket, deadline: float) -> None:
    """Wait until the peer's kernel acknowledged every byte sent on ``sock``; :class:`OSError`
    if the connection was reset or closed first, or at ``deadline``. Where the bytes not
    acknowledged cannot be counted (neither Linux nor macOS), only the connection is checked."""
    pause = 0.0005
    while True:
        left = _unacknowledged(sock)
        if left == 0:
            return
        if peer_closed(sock):  # the reset of a peer that had closed, or its FIN
            raise ConnectionResetError("the peer closed the connection before acknowledging")
        if left is None:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{left} bytes not acknowledged by the peer")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _described(exc: Exception) -> str:
    """An error for the log: its class and the start of its text, which can quote what the
    endpoint sent (an unparsable status line quotes kilobytes of the peer's bytes)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text[:ERROR_TEXT]}{'...' if len(text) > ERROR_TEXT else ''}"


def documents(records: Sequence[Record], format: Format) -> Iterator[tuple[Kind, dict[str, Any]]]:
    """Each record's document; :class:`~.records.Unencodable` for one that cannot be made."""
    for index, (kind, record) in enumerate(records):
        try:
            doc = document(kind, record, format)
        except Exception as exc:
            raise Unencodable(index, exc) from exc
        yield kind, doc


def lines(records: Sequence[Record], format: Format) -> bytes:
    out = []
    for index, (_, doc) in enumerate(documents(records, format)):
        try:
            out.append(json.dumps(doc, separators=(",", ":")).encode() + b"\n")
        except Exception as exc:
            raise Unencodable(index, exc) from exc
    return b"".join(out)


def open_sink(destination: Destination) -> Sink:
    if destination.scheme == "jsonl+tcp":
        return TcpSink(destination)
    return HttpSink(destination)
