"""Events: the validation rules and the queued record.

This module is shared by the SDK and the collector, so that an event the SDK accepts is an
event the collector stores, and the reverse. One table of limits, :data:`LIMITS`, drives both.

Every validator takes ``notes``: a list in production mode, where what can be kept is kept
(converted, truncated, the offending part dropped) and each fix is noted for one log line per
(event name, argument, rule); ``None`` in strict mode and in the collector, where a lossy fix raises
:class:`InvalidEvent` naming the field and the rule. Lossless conversions (a user id that is
an int, a ``UUID`` property) are made in both modes. Only what leaves nothing to record drops
an event: a name that is not a string, is empty, or starts with ``sq.``.

Validation runs on the caller's thread and is the only real work :func:`sqreen.track` does
there, so it is written for speed: names already seen valid are cached, property values are
walked once (which also copies them) and the serialised size is bounded by an estimate that
the collector checks exactly.

The times events carry, their bounds and wire form, are :mod:`sqreen._wire_time`'s.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from ._limits import LIMITS, InvalidEvent, Limits
from ._text import CONTROLS, REPLACEMENT, SURROGATES, clipped, utf8_text
from ._values import TRUNCATED, note, validate_mapping
from ._wire_time import in_range

if TYPE_CHECKING:
    from ._request import RequestSnapshot

__all__ = [
    "LIMITS",
    "NAME_RE",
    "InvalidEvent",
    "Limits",
    "QueuedEvent",
    "validate_name",
    "validate_properties",
    "validate_target",
    "validate_timestamp",
    "validate_user",
]

#: What a name may not hold: control characters, lone surrogates (no encoding can write
#: them) and the bidirectional overrides that would let a name disguise itself on a screen.
_FORBIDDEN: Final = CONTROLS + SURROGATES
#: A valid name: any other characters (spaces, ``/``, non-ASCII: "User Signed Up").
NAME_RE: Final = re.compile(f"[^{_FORBIDDEN}]+")
_FORBIDDEN_RE: Final = re.compile(f"[{_FORBIDDEN}]")
RESERVED_PREFIX: Final = "sq."
TARGET_KEYS: Final = frozenset({"id", "type", "name"})
_RANGE: Final = "must be between 1970 and 9000"
#: How far ahead of this host's clock a ``timestamp`` may be (clocks differ a little) before
#: it is taken for a mistake (a local time passed as UTC, a date's year): the collector stores
#: an event no later than its arrival, so the time given would be lost anyway.
FUTURE_SLACK_S: Final = 300.0
_MAX_PROPERTIES: Final = LIMITS.max_properties
_MAX_EVENT_BYTES: Final = LIMITS.max_event_bytes

Notes = list[InvalidEvent] | None


class QueuedEvent:
    """An event between ``track()`` and its wire form: validated and copied on the caller's
    thread, encoded on the flusher's (:func:`sqreen._wire.encode_event`)."""

    __slots__ = (
        "collect_body",
        "enqueued",
        "name",
        "properties",
        "request",
        "seq",
        "size",
        "target",
        "ts",
        "user",
    )

    def __init__(
        self,
        seq: int,
        name: str,
        ts: float,
        properties: dict[str, Any],
        user: dict[str, str] | None,
        target: dict[str, str] | None,
        request: RequestSnapshot | None,
        collect_body: bool,
        size: int,
    ) -> None:
        self.seq = seq
        self.name = name
        self.ts = ts
        self.properties = properties
        self.user = user
        self.target = target
        self.request = request
        self.collect_body = collect_body
        #: Bytes counted against ``max_queue_bytes`` while it waits.
        self.size = size
        #: When it was queued (the queue's clock): ``max_retry_age`` counts from here.
        self.enqueued = 0.0


_valid_names: set[str] = set()


def validate_name(name: object, notes: Notes = None) -> str:
    """The event's name. Any text of 1 to 255 characters without control characters;
    ``sq.`` is reserved. In production a name too long is cut and forbidden characters are
    replaced; a name that is not a string, is empty or reserved drops the event."""
    if type(name) is str and name in _valid_names:
        return name
    if not isinstance(name, str):
        raise InvalidEvent("name", "type", f"must be a str, not {type(name).__name__}")
    name = str(name)
    if not name:
        raise InvalidEvent("name", "empty", "must not be empty")
    if name.startswith(RESERVED_PREFIX):
        raise InvalidEvent(
            "name", "reserved", f"names starting with {RESERVED_PREFIX!r} are reserved"
        )
    if len(name) > LIMITS.name_max:
        note(notes, "name", "too_long", f"is {len(name)} characters, at most {LIMITS.name_max}")
        name = name[: LIMITS.name_max]
    if not NAME_RE.fullmatch(name):
        note(notes, "name", "charset", "control characters, lone surrogates and bidi overrides")
        return _FORBIDDEN_RE.sub(REPLACEMENT, name)
    if len(_valid_names) < 10_000:
        _valid_names.add(name)
    return name


def validate_properties(
    properties: object, notes: Notes = None, field: str = "properties"
) -> tuple[dict[str, Any], int]:
    """A validated deep copy of ``properties`` and an estimate of its JSON size.

    More than 16 properties: the first 16 by sorted key are kept (as Sqreen's agent did). An
    event over 64 KiB keeps its properties in that order while they fit. ``field`` names them
    in the notes (``traits`` for :func:`sqreen.identify`)."""
    if properties is None:
        return {}, 2
    if type(properties) is not dict and not isinstance(properties, Mapping):
        note(notes, field, "type", f"must be a dict, not {type(properties).__name__}")
        return {}, 2
    if len(properties) > _MAX_PROPERTIES:
        note(
            notes,
            field,
            "max_properties",
            f"{len(properties)} {field}, at most {LIMITS.max_properties}: "
            f"the first {LIMITS.max_properties} by sorted key are kept",
        )
        properties = dict(_sorted_items(properties)[: LIMITS.max_properties])
    elif type(properties) is not dict:
        properties = dict(properties)
    props, size = validate_mapping(field, properties, 1, notes)
    if size > _MAX_EVENT_BYTES:
        note(
            notes,
            field,
            "event_too_large",
            f"about {size} bytes, an event is at most {LIMITS.max_event_bytes}",
        )
        props, size = _fit(props)
    return props, size


def _sorted_items(properties: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    """The items by key, as Sqreen's agent sorted them (``sorted(properties.items())``: 2
    before 10); by the keys' text when they cannot be compared with each other (1 and "a")."""
    items = list(properties.items())
    try:
        return sorted(items, key=itemgetter(0))
    except Exception:  # TypeError, or whatever a key's own __lt__ raises
        return sorted(items, key=lambda item: str(item[0]))


def _fit(props: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The properties, in sorted key order, while they fit; the others marked."""
    budget = LIMITS.max_event_bytes - 2
    out: dict[str, Any] = {}
    for key in sorted(props):
        single, size = validate_mapping("properties", {key: props[key]}, 1, [])
        if size - 2 <= budget:
            out[key] = single[key]
            budget -= size - 2
        else:
            out[key] = TRUNCATED
            budget -= len(key) + len(TRUNCATED) + 6
    return out, LIMITS.max_event_bytes - budget


_ID_TYPES: Final = (str, int, float, Decimal, UUID)


def _identifier(field: str, value: object, notes: Notes) -> str | None:
    """An identifier value as text (any scalar), or None to drop it."""
    if type(value) is str:
        text = utf8_text(value)
    elif isinstance(value, Enum):
        return _identifier(field, value.value, notes)
    elif isinstance(value, _ID_TYPES):  # bool is an int: "True"
        text = utf8_text(str(value))
    else:
        note(
            notes,
            field,
            "value_type",
            f"values must be text or numbers, not {type(value).__name__}",
        )
        return None
    if not text:
        note(
            notes, field, "value_length", f"values must be 1 to {LIMITS.identifier_max} characters"
        )
        return None
    if len(text) > LIMITS.identifier_max:
        note(
            notes, field, "value_length", f"values must be 1 to {LIMITS.identifier_max} characters"
        )
        return text[: LIMITS.identifier_max]
    return text


def validate_user(
    user: object, field: str = "user_identifiers", notes: Notes = None
) -> dict[str, str] | None:
    """Identifiers as a flat dict of text (ids of any scalar type are written as text)."""
    if user is None:
        return None
    if type(user) is not dict and not isinstance(user, Mapping):
        note(notes, field, "type", f"must be a dict, not {type(user).__name__}")
        return None
    items = list(user.items())
    if len(items) > LIMITS.max_identifiers:
        note(
            notes, field, "too_many", f"{len(items)} identifiers, at most {LIMITS.max_identifiers}"
        )
        items = sorted(items, key=lambda item: str(item[0]))[: LIMITS.max_identifiers]
    out: dict[str, str] = {}
    for k, v in items:
        if not isinstance(k, str) or not k or len(k) > LIMITS.key_max:
            note(
                notes,
                f"{field}.{k!r}"[:200],
                "key_type",
                f"keys must be str of 1 to {LIMITS.key_max} characters",
            )
            continue
        text = _identifier(f"{field}.{k}", v, notes)
        if text is not None:
            out[utf8_text(str(k))] = text
    return out or None


def validate_timestamp(timestamp: object, notes: Notes = None) -> float | None:
    """The POSIX time of ``timestamp`` (a naive datetime is UTC); None when it cannot be used
    (not a datetime, out of range, or more than :data:`FUTURE_SLACK_S` ahead of this host's
    clock; production: the event then takes the current time)."""
    if not isinstance(timestamp, datetime):
        note(notes, "timestamp", "type", f"must be a datetime, not {type(timestamp).__name__}")
        return None
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
        _say_naive()
    if not in_range(timestamp):
        note(notes, "timestamp", "range", f"{_RANGE}: the current time is used")
        return None
    posix = timestamp.timestamp()
    ahead = posix - time.time()
    if ahead > FUTURE_SLACK_S:
        note(
            notes,
            "timestamp",
            "future",
            f"{_duration(ahead)} later than this host's clock (the collector stores no event "
            "later than its arrival): the current time is used",
        )
        return None
    return posix


_naive_said = False


def _say_naive() -> None:
    """Once a process, at INFO, as Sqreen's agent said it: a naive timestamp is UTC (a local
    time given so is hours off)."""
    global _naive_said
    if not _naive_said:
        _naive_said = True
        logging.getLogger("sqreen").info(
            "sqreen: a timestamp without a time zone is taken as UTC (said once): give an "
            "aware datetime (datetime.now(timezone.utc)) if it is a local time"
        )


def _duration(seconds: float) -> str:
    """``seconds`` in the unit that says it best: "3650 days", "7 hours", "12 minutes",
    "301 seconds" (near the slack, minutes would round to it)."""
    for unit, size in (("days", 86_400), ("hours", 3_600), ("minutes", 60)):
        if seconds >= 2 * size and (unit != "minutes" or seconds >= 600):
            return f"{round(seconds / size)} {unit}"
    return f"{round(seconds)} seconds"


def validate_target(target: object, notes: Notes = None) -> dict[str, str] | None:
    """``{"id", "type", "name"}`` (LiteSOC's target): text values, an ``id`` required."""
    if target is None:
        return None
    if not isinstance(target, Mapping):
        note(
            notes,
            "target",
            "type",
            f"must be a dict with 'id', 'type' and 'name', not {type(target).__name__}",
        )
        return None
    extra = set(target) - TARGET_KEYS
    if extra:
        note(
            notes,
            "target",
            "keys",
            f"unknown keys {sorted(map(str, extra))[:5]}; allowed: id, type, name",
        )
    if "id" not in target:
        note(notes, "target.id", "missing", "a target needs an 'id'")
        return None
    out: dict[str, str] = {}
    for k in ("id", "type", "name"):
        if k not in target:
            continue
        v = target[k]
        text = utf8_text(v) if type(v) is str else (str(v) if isinstance(v, _ID_TYPES) else None)
        if text is None or not text or len(text) > LIMITS.target_field_max:
            note(
                notes,
                f"target.{k}",
                "value",
                f"must be a str of 1 to {LIMITS.target_field_max} characters",
            )
            if not text:
                if k == "id":
                    return None
                continue
            text = clipped(text, LIMITS.target_field_max)  # at a word: scrubbed after
        out[k] = text
    return out
