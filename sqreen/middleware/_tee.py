"""Passive, size-capped tees of the request body: what the app reads, we keep (up to a cap).

The tee never reads a byte the app did not ask for: a request whose handler never touches its
body costs one wrapper object, and ``track()`` then sees no body. It keeps *references* to the
chunks the app was handed (no copy, except the one slice at the cap), so that the snapshot an
event freezes is a tuple of the same ``bytes`` objects. Both tees implement
:class:`sqreen._request.BodySource`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from .._context import unbound

__all__ = ["ASGIReceiveTee", "WSGIInputTee"]

Message = MutableMapping[str, Any]


class _Capped:
    __slots__ = ("_chunks", "_room", "_truncated")

    # Subclasses set the three slots in their own __init__ (one call less per request).
    _chunks: list[bytes]
    _room: int
    _truncated: bool

    def _keep(self, data: bytes) -> None:
        if not data:
            return
        if self._room <= 0:
            self._truncated = True
        elif len(data) <= self._room:
            self._chunks.append(data)
            self._room -= len(data)
        else:
            self._chunks.append(bytes(data[: self._room]))
            self._room = 0
            self._truncated = True

    def capture(self) -> tuple[tuple[bytes, ...], bool]:
        """The chunks the app has read so far (capped), and whether it read past the cap."""
        return tuple(self._chunks), self._truncated


class WSGIInputTee(_Capped):
    """Wraps ``wsgi.input`` (or any binary file-like object the app reads its body from)."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Any, cap: int) -> None:
        self._stream = stream
        self._chunks = []
        self._room = cap
        self._truncated = False

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = self._stream.read(*args, **kwargs)
        if data:
            self._keep(data)
        return data

    def readline(self, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = self._stream.readline(*args, **kwargs)
        if data:
            self._keep(data)
        return data

    def readlines(self, *args: Any, **kwargs: Any) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines(*args, **kwargs)
        for line in lines:
            self._keep(line)
        return lines

    def readinto(self, buffer: Any) -> int:
        # Through read(), so that the tee sees the bytes whatever the wrapped stream offers
        # (werkzeug's LimitedStream prefers readinto when the stream has it).
        data = self.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        return size

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def __getattr__(self, name: str) -> Any:
        # Anything else the server's stream offers (close, fileno, a server's own extras).
        if name == "_stream":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._stream, name)


class ASGIReceiveTee(_Capped):
    """Wraps an ASGI ``receive`` callable; keeps the ``http.request`` bodies the app pulls."""

    __slots__ = ("_receive",)

    def __init__(self, receive: Callable[[], Awaitable[Message]], cap: int) -> None:
        self._receive = receive
        self._chunks = []
        self._room = cap
        self._truncated = False

    async def receive(self) -> Message:
        # The server's receive, with no request bound (see sqreen._context.unbound).
        message = await unbound(self._receive)
        if message.get("type") == "http.request":
            body = message.get("body")
            if body:
                self._keep(body)
        return message
