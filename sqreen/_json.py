"""Compact JSON, fast: the C encoder built once instead of on every ``json.dumps`` call.

``json.dumps(value, separators=...)`` builds a new encoder for every call, which costs more
than encoding the few small dicts of an event (measured: about 3x the C encoder alone). The
values encoded here never hold cycles (they come from ``json.loads`` or from the SDK's own
validation, which copies and bounds their depth), so the cycle check is off.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from ._text import utf8_text

_T = TypeVar("_T")

__all__ = [
    "Encoded",
    "ReprFloat",
    "dumps_ascii",
    "dumps_fields",
    "dumps_utf8",
    "use_speedups",
    "wire_bytes",
    "wire_float",
]


def _make(ensure_ascii: bool) -> Callable[[Any], str]:
    fallback = json.JSONEncoder(separators=(",", ":"), ensure_ascii=ensure_ascii)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return fallback.encode
    encode = make(
        None,  # markers: no cycle check
        fallback.default,  # raises TypeError naming the type, like json.dumps
        json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring,
        None,  # indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan, as json.dumps (values are checked finite before)
    )
    return lambda value: "".join(encode(value, 0))


#: ``json.dumps(value, separators=(",", ":"))``: ASCII only, so any text survives any store.
dumps_ascii: Callable[[Any], str] = _make(ensure_ascii=True)
#: The same with non-ASCII characters left as they are (smaller; encode to UTF-8 after).
dumps_utf8: Callable[[Any], str] = _make(ensure_ascii=False)


class Encoded(dict[str, Any]):
    """A dict that gives its own compact ASCII JSON (:meth:`json`, equal to what
    :data:`dumps_ascii` writes for it), so that the storage writes a text encoded once
    instead of encoding the dict again for each event that holds it (:func:`dumps_fields`;
    measured: ~5.5 µs to encode a full ``ip_info``, most of it the coordinates' float
    formatting). IP intelligence's shared, immutable ``ip_info`` is one: it encodes itself
    once (``sqreen/server/intel/_info.py``)."""

    __slots__ = ()

    def json(self) -> str:
        """The compact ASCII JSON of this dict (subclasses keep it once made)."""
        return dumps_ascii(self)

    def derived(self, make: Callable[[Encoded], _T]) -> _T:
        """``make(self)``: what a reader derives from this dict (the storage's columns).
        An immutable subclass keeps the last one made, so that a value shared by many
        events is derived once, not once an event."""
        return make(self)


def dumps_fields(fields: Mapping[str, Any]) -> str:
    """``dumps_ascii(fields)``, each :class:`Encoded` value (or subclass: IP intelligence's
    shared ``ip_info``) written by its :meth:`~Encoded.json`."""
    if len(fields) == 1:  # the usual case (only IP intelligence): no loop, no join
        ((key, value),) = fields.items()
        if isinstance(value, Encoded) and type(key) is str:
            return "{" + _key(key) + ":" + value.json() + "}"
        return dumps_ascii(fields)
    if not any(isinstance(value, Encoded) for value in fields.values()):
        return dumps_ascii(fields)
    parts = []
    for key, value in fields.items():
        if type(key) is not str:
            return dumps_ascii(fields)  # let the encoder convert or refuse such keys
        text = value.json() if isinstance(value, Encoded) else dumps_ascii(value)
        parts.append(f"{_key(key)}:{text}")
    return "{" + ",".join(parts) + "}"


_key: Callable[[str], str] = json.encoder.encode_basestring_ascii


# -- the wire's bytes, in C when the ``speedups`` extra is installed -----------------------


class ReprFloat(float):
    """A float of an event that the C encoder would write otherwise than Python's ``repr``
    (``1e16`` for ``1e+16``, ``0.00001`` for ``1e-05``; NaN and the infinities are None):
    the scrubber, which every value of a wire dict goes through, gives such floats as this
    subclass, which
    the standard encoder writes as any float and ``msgspec`` refuses, so that
    :func:`wire_bytes` falls back for them. The others (0 and 1e-4 <= abs(x) < 1e16) are
    written alike by both (``tests/test_wire_json.py``)."""

    __slots__ = ()


def wire_float(value: float) -> float | None:
    """``value``, as a :class:`ReprFloat` where the C encoder would write it otherwise; None
    for NaN and the infinities (a client's JSON body may hold them: ``{"x": NaN}``), which
    JSON has no token for and which the collector once refused with the whole batch, as
    properties already had them."""
    if value == 0.0 or 1e-4 <= abs(value) < 1e16:
        return value
    if value != value or value in _INFINITIES:
        return None
    return ReprFloat(value)


_INFINITIES: Final = (float("inf"), float("-inf"))


try:  # the optional extra: pip install sqreen-sdk[speedups]
    import msgspec

    _C_ENCODE: Callable[[Any], bytes] | None = msgspec.json.Encoder().encode
    _C_FAILS: tuple[type[BaseException], ...] = (msgspec.MsgspecError, TypeError, UnicodeError)
except ImportError:  # pragma: no cover - the speedups extra not installed
    _C_ENCODE, _C_FAILS = None, ()

_encode_c = None if os.environ.get("SQREEN_NO_SPEEDUPS") else _C_ENCODE


def wire_bytes(value: Any) -> bytes:
    """``dumps_utf8(value)`` as UTF-8, lone surrogates written as U+FFFD: an event's bytes on
    the wire. ``value`` is a wire dict: str keys; str, int, bool, None, lists, dicts, and
    floats through :func:`wire_float` (the scrubber's).

    With ``msgspec`` (the ``speedups`` extra) the bytes come from its C encoder: it writes
    strings, integers, ``true``/``false``/``null``, the floats :func:`wire_float` lets
    through, and every escape as the standard encoder does (``\\u001f``, ``\\n``;
    non-ASCII, DEL and U+2028 as they are), and refuses what it would write otherwise (lone
    surrogates, :class:`ReprFloat`): then the standard encoder writes the event. (It would
    write some types the standard encoder refuses, ``bytes`` or ``datetime``: a wire dict
    holds none, the SDK's validation converts them.)
    ``tests/test_wire_json.py`` holds the two equal over hostile values, and
    ``tests/test_wire_golden.py`` runs its corpus both ways."""
    encode = _encode_c
    if encode is not None:
        try:
            return encode(value)
        except _C_FAILS:
            pass
    text = dumps_utf8(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (from a client's JSON): U+FFFD
        return utf8_text(text).encode("utf-8")


def use_speedups(enabled: bool) -> bool:
    """Encode the wire in C (when ``msgspec`` is installed) or not; the previous setting. For
    tests and benches, which run both ways (``SQREEN_NO_SPEEDUPS=1`` starts without)."""
    global _encode_c
    previous = _encode_c is not None
    _encode_c = _C_ENCODE if enabled else None
    return previous
