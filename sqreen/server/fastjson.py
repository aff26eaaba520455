"""The collector's JSON, in C (``msgspec``), with the exact results of the standard library's.

The SDK's core stays on :mod:`json` (no dependency); the collector, which has ``msgspec``
through its ``[server]`` extra, decodes each body and encodes each stored event's JSON columns
with it. Measured per event of ``bench_ingest``'s typical batches (2 shared cores, load ~2):
decoding 7.8 -> 4.3 µs, encoding a request snapshot 4.9 -> 0.9 µs.

Both fall back to :mod:`json` wherever ``msgspec`` would answer differently, so that what is
accepted, refused (and with which message) and stored stays what it was:

- :func:`loads` returns what ``json.loads`` returns for every body ``msgspec`` decodes (JSON
  has one meaning); every body it refuses (lone surrogate escapes such as ``"\\ud800"``, a
  byte-order mark, ``NaN``, numbers out of range, nesting too deep...) is decoded again by
  ``json.loads``, which accepts it or raises its own error.
- :func:`dumps_ascii` is :func:`sqreen._json.dumps_ascii` (compact, ASCII only) for the values
  an event holds: ``msgspec`` writes UTF-8 and refuses lone surrogates, so anything but ASCII
  output is encoded again by the standard encoder. Floats are written in their shortest form
  by both, but not always alike (``1e16`` for ``1e+16``): the same numbers when read back.
  Only for values that came out of JSON and were checked finite (an event's parts).
- :func:`measure` stands in for :func:`sqreen._json.dumps_utf8` where the wire's checks
  (:func:`sqreen._wire.parse_event`) measure an event's parts against their limits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import msgspec

from .._json import dumps_ascii as _std_dumps_ascii
from .._json import dumps_utf8 as _std_dumps_utf8
from .._limits import LIMITS
from .._wire import MAX_REQUEST_BYTES

__all__ = ["dumps_ascii", "loads", "measure"]

_decode: Final = msgspec.json.Decoder().decode
_encode: Final = msgspec.json.Encoder().encode
_FAILS: Final = (msgspec.MsgspecError, RecursionError, UnicodeError)


def loads(body: bytes, fallback: Callable[[bytes], Any] = json.loads) -> Any:
    """``fallback(body)`` (by default ``json.loads``), decoded in C whenever C agrees."""
    try:
        return _decode(body)
    except _FAILS:
        return fallback(body)


def dumps_ascii(value: Any) -> str:
    """Compact ASCII JSON of a value decoded from JSON (dicts, lists, str, int, finite float,
    bool, None)."""
    try:
        data = _encode(value)
    except _FAILS:
        return _std_dumps_ascii(value)
    if data.isascii():
        return data.decode("ascii")
    return _std_dumps_ascii(value)


def measure(value: Any) -> str:
    """``dumps_utf8(value)``, or the C encoder's text when it is ASCII and at most an eighth
    of every limit it is measured against: then the standard text is ASCII too and under them
    (the two differ only in how floats are written, at most 24 characters against at least
    3: ``1e16`` for ``1e+16``, and escapes, at most 6 against 1), so every verdict is the
    same. Anything else (not ASCII, lone surrogates, long) is encoded by the standard one."""
    try:
        data = _encode(value)
    except _FAILS:
        return _std_dumps_utf8(value)
    if len(data) * 8 <= min(LIMITS.max_event_bytes, MAX_REQUEST_BYTES) and data.isascii():
        return data.decode("ascii")
    return _std_dumps_utf8(value)
