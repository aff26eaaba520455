"""The passive, capped tees: they keep what the app read, and read nothing by themselves."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from sqreen.middleware._tee import ASGIReceiveTee, WSGIInputTee


class Stream(io.BytesIO):
    """A wsgi.input that records every call made to it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls: list[str] = []

    def read(self, *args: Any) -> bytes:
        self.calls.append("read")
        return super().read(*args)


def test_keeps_what_the_app_read_and_nothing_more() -> None:
    stream = Stream(b"a=1&b=2&c=3")
    tee = WSGIInputTee(stream, 1024)
    assert tee.capture() == ((), False)
    assert stream.calls == []  # creating the tee reads nothing
    assert tee.read(3) == b"a=1"
    assert tee.capture() == ((b"a=1",), False)
    assert tee.read() == b"&b=2&c=3"
    assert b"".join(tee.capture()[0]) == b"a=1&b=2&c=3"


def test_keeps_references_not_copies() -> None:
    tee = WSGIInputTee(io.BytesIO(b"x" * 100), 1024)
    chunk = tee.read(50)
    assert tee.capture()[0][0] is chunk


def test_cap_and_truncated_flag() -> None:
    tee = WSGIInputTee(io.BytesIO(b"0123456789" * 10), 25)
    data = tee.read(20) + tee.read(20) + tee.read()
    assert data == b"0123456789" * 10  # the app gets everything
    chunks, truncated = tee.capture()
    assert b"".join(chunks) == (b"0123456789" * 10)[:25]
    assert truncated


def test_exactly_the_cap_is_not_truncated() -> None:
    tee = WSGIInputTee(io.BytesIO(b"x" * 10), 10)
    assert tee.read() == b"x" * 10
    assert tee.capture() == ((b"x" * 10,), False)
    assert tee.read() == b""
    assert tee.capture()[1] is False


def test_readline_readlines_iteration_and_readinto() -> None:
    body = b"one\ntwo\nthree\nfour\n"
    tee = WSGIInputTee(io.BytesIO(body), 1024)
    assert tee.readline() == b"one\n"
    assert tee.readlines(1) == [b"two\n"]
    buffer = bytearray(3)
    assert tee.readinto(buffer) == 3 and bytes(buffer) == b"thr"
    assert list(tee) == [b"ee\n", b"four\n"]
    assert b"".join(tee.capture()[0]) == body


def test_other_attributes_come_from_the_stream() -> None:
    stream = io.BytesIO(b"abc")
    tee = WSGIInputTee(stream, 10)
    assert tee.seekable() is True
    tee.close()
    assert stream.closed


def test_asgi_tee_keeps_request_bodies_only() -> None:
    messages = [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"defgh", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    tee = ASGIReceiveTee(receive, 6)

    async def main() -> list[dict[str, Any]]:
        return [await tee.receive() for _ in range(4)]

    got = asyncio.run(main())
    assert [m["type"] for m in got] == ["http.request"] * 3 + ["http.disconnect"]
    assert got[2]["body"] == b"defgh"  # the app's messages are untouched
    assert tee.capture() == ((b"abc", b"def"), True)
