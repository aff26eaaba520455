"""Property values: validated, copied, converted to JSON, bounded; on the caller's thread.

Lenient where Sqreen's agent was lenient: its JSON encoder wrote a ``datetime`` as ISO 8601
and any other object as its text, and dropped nothing for its type. Here, with a ``notes``
list (production), what can be kept is kept and each fix is noted; with ``notes=None``
(strict mode, and the collector) a fix that loses something raises :class:`InvalidEvent`
naming the field and the rule instead.

Lossless conversions are made in both modes and noted in neither: ``datetime``, ``date`` and
``time`` as ISO 8601, ``UUID`` and ``Decimal`` as text, an ``Enum`` as its value, ``bytes``
that are UTF-8 as text, tuples and sets as lists, subclasses of ``str``/``int``/``float`` as
the base type. Lossy fixes: a string over 4 KiB truncated with a marker, bytes that are not
UTF-8 decoded with replacement characters, NaN and infinities as ``None``, containers deeper
than three levels or longer than 256 items cut, any other object as its text.

One lossy fix is made in both modes and noted in neither: each lone surrogate (what
``json.loads`` makes of ``"\\ud800"``, and no encoding can write) becomes U+FFFD
(:func:`~._text.utf8_text`), in keys and values alike. The collector must store such an event,
not refuse it: an attacker's own username would otherwise keep their failed logins out of
every count.
"""

from __future__ import annotations

import json
import math
from datetime import date, time
from decimal import Decimal
from enum import Enum
from typing import Any, Final
from uuid import UUID

from ._limits import LIMITS, InvalidEvent
from ._text import clipped, utf8_text

__all__ = ["TRUNCATED", "note", "validate_mapping", "validate_value"]

#: Ends a string that was cut, and replaces a container that was nested too deeply.
TRUNCATED: Final = "[truncated]"

_KEY_MAX: Final = LIMITS.key_max
_STR_MAX: Final = LIMITS.str_value_max
_INT_BITS: Final = 64


def note(notes: list[InvalidEvent] | None, field: str, rule: str, message: str) -> None:
    """Record a lossy fix (production), or raise it (``notes`` is None: strict)."""
    problem = InvalidEvent(field, rule, message)
    if notes is None:
        raise problem
    notes.append(problem)


def _truncated(notes: list[InvalidEvent] | None, field: str, value: str) -> str:
    note(notes, field, "value_too_long", f"string of {len(value)} characters, at most {_STR_MAX}")
    return clipped(value, _STR_MAX - len(TRUNCATED)) + TRUNCATED  # at a word: scrubbed after


def validate_value(
    field: str, value: object, depth: int, notes: list[InvalidEvent] | None
) -> tuple[Any, int]:
    """A JSON copy of one property value and an estimate of its JSON size."""
    t = type(value)
    if t is str:
        n = len(value)  # type: ignore[arg-type]
        if n > _STR_MAX:
            value = _truncated(notes, field, value)  # type: ignore[arg-type]
            n = _STR_MAX
        return utf8_text(value), n + 2  # type: ignore[arg-type]
    if t is int:
        if value.bit_length() > _INT_BITS:  # type: ignore[attr-defined]
            # Far past what JSON readers keep exactly (and text of over 4300 digits cannot
            # even be made): kept as a float, or nothing.
            note(notes, field, "int_too_large", "integers are kept up to 64 bits")
            try:
                return float(value), 24  # type: ignore[arg-type]
            except OverflowError:
                return None, 8
        return value, 24
    if t is bool or value is None:
        return value, 8
    if t is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            note(notes, field, "not_finite", f"{value!r} is not a finite number")
            return None, 8
        return value, 24
    if t is dict or t is list or t is tuple or t is set or t is frozenset:
        if depth > LIMITS.max_depth:
            note(
                notes,
                field,
                "too_deep",
                f"nested deeper than {LIMITS.max_depth} levels (or a cycle)",
            )
            return TRUNCATED, len(TRUNCATED) + 2
        if t is dict:
            return validate_mapping(field, value, depth + 1, notes)  # type: ignore[arg-type]
        return _sequence(field, value, depth, notes)
    return _convert(field, value, depth, notes)


def _sequence(
    field: str, items: Any, depth: int, notes: list[InvalidEvent] | None
) -> tuple[list[Any], int]:
    if type(items) is set or type(items) is frozenset:
        items = sorted(items, key=repr)  # a stable order
    if len(items) > LIMITS.max_list_items:
        note(notes, field, "too_many_items", f"{len(items)} items, at most {LIMITS.max_list_items}")
        items = list(items)[: LIMITS.max_list_items]
    out = []
    size = 2
    for i, item in enumerate(items):
        v, s = validate_value(f"{field}[{i}]", item, depth + 1, notes)
        out.append(v)
        size += s + 1
    return out, size


def _convert(
    field: str, value: object, depth: int, notes: list[InvalidEvent] | None
) -> tuple[Any, int]:
    """Everything that is not exactly a JSON type."""
    if isinstance(value, Enum):  # before str/int: a str-Enum's str() is "Role.ADMIN"
        return validate_value(field, value.value, depth, notes)
    if isinstance(value, bool):
        return bool(value), 8
    if isinstance(value, str):
        return validate_value(field, str(value), depth, notes)
    if isinstance(value, int):
        return validate_value(field, int(value), depth, notes)
    if isinstance(value, float):
        return validate_value(field, float(value), depth, notes)
    if isinstance(value, date | time):  # datetime is a date
        return validate_value(field, value.isoformat(), depth, notes)
    if isinstance(value, UUID | Decimal):
        return validate_value(field, str(value), depth, notes)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            note(notes, field, "bytes_not_utf8", "bytes that are not UTF-8")
            text = raw.decode("utf-8", "replace")
        return validate_value(field, text, depth, notes)
    if isinstance(value, dict | list | tuple | set | frozenset):
        plain = dict(value) if isinstance(value, dict) else list(value)
        return validate_value(field, plain, depth, notes)
    note(
        notes,
        field,
        "type",
        f"{type(value).__name__} is not JSON: use str, int, float, bool, None, list or dict",
    )
    try:
        text = str(value)
    except Exception:  # an object whose str() fails: nothing to keep
        return None, 8
    return validate_value(field, text, depth, notes)


def _key(field: str, raw: object, notes: list[InvalidEvent] | None) -> str | None:
    """A property key as text, or None to drop the entry."""
    if isinstance(raw, str):
        key = str(raw)
    elif isinstance(raw, int | float) and not isinstance(raw, Enum):
        key = json.dumps(raw)  # as json.dumps writes a dict's key: True is "true"
    else:
        note(
            notes,
            f"{field}.{raw!r}"[:200],
            "key_type",
            f"keys must be str, not {type(raw).__name__}",
        )
        try:
            key = str(raw)
        except Exception:
            return None
    if not key:
        note(notes, field, "key_length", f"keys must be 1 to {_KEY_MAX} characters")
        return None
    key = utf8_text(key)
    if len(key) > _KEY_MAX:
        note(notes, f"{field}.{key[:40]}", "key_length", f"keys must be 1 to {_KEY_MAX} characters")
        return key[:_KEY_MAX]
    return key


def validate_mapping(
    field: str, value: dict[Any, Any], depth: int, notes: list[InvalidEvent] | None
) -> tuple[dict[str, Any], int]:
    """A validated copy of a dict of properties (any depth) and an estimate of its size."""
    # The hot loop of track(): ASCII str and int values under ASCII str keys, the common case,
    # are checked inline, and the field name of a message is only built when there is
    # something to say (``isascii`` reads a flag of the string).
    out: dict[str, Any] = {}
    size = 2
    for k, v in value.items():
        if type(k) is not str or not 0 < len(k) <= _KEY_MAX or not k.isascii():
            k = _key(field, k, notes)
            if k is None:
                continue
        t = type(v)
        if t is str and len(v) <= _STR_MAX and v.isascii():
            out[k] = v
            size += len(k) + len(v) + 6
        elif t is bool or v is None or (t is int and v.bit_length() <= _INT_BITS):
            out[k] = v
            size += len(k) + 12
        else:
            out[k], s = validate_value(f"{field}.{k}", v, depth, notes)
            size += len(k) + s + 4
    return out, size
