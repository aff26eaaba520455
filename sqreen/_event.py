"""Events: the limits, the validation rules and the wire form.

This module is shared by the SDK and the collector, so that an event the SDK accepts is an
event the collector stores, and the reverse. One table of limits, :data:`LIMITS`, drives both.

Validation runs on the caller's thread and is the only real work :func:`sqreen.track` does
there, so it is written for speed: names already seen valid are cached, property values are
walked once (which also copies them) and the serialised size is bounded by an estimate that
the flusher thread checks exactly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._request import RequestSnapshot

__all__ = ["LIMITS", "InvalidEvent", "Limits", "QueuedEvent"]


@dataclass(frozen=True, slots=True)
class Limits:
    name_max: int = 128
    max_properties: int = 16
    key_max: int = 128
    str_value_max: int = 4096
    max_depth: int = 3
    max_list_items: int = 256
    max_event_bytes: int = 64 * 1024
    max_identifiers: int = 16
    identifier_max: int = 256
    target_field_max: int = 256
    id_max: int = 64
    request_field_max: int = 8 * 1024
    max_batch_events: int = 1000


LIMITS: Final = Limits()

NAME_RE: Final = re.compile(r"[A-Za-z0-9._:\-]+")
RESERVED_PREFIX: Final = "sq."
TARGET_KEYS: Final = frozenset({"id", "type", "name"})


class InvalidEvent(ValueError):
    """An event broke one of the rules of :data:`LIMITS`.

    ``field`` names what was wrong (``"name"``, ``"properties.foo"``, ``"timestamp"``...) and
    ``rule`` is a short stable identifier of the rule (``"too_long"``, ``"max_properties"``...),
    used to log each (event name, rule) pair once.
    """

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.rule = rule


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
_SCALARS: Final = (str, int, float, bool, type(None))


def validate_name(name: object) -> str:
    if type(name) is str and name in _valid_names:
        return name
    if not isinstance(name, str):
        raise InvalidEvent("name", "type", f"must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidEvent("name", "empty", "must not be empty")
    if len(name) > LIMITS.name_max:
        raise InvalidEvent(
            "name", "too_long", f"is {len(name)} characters, at most {LIMITS.name_max}"
        )
    if not NAME_RE.fullmatch(name):
        raise InvalidEvent("name", "charset", "may contain only letters, digits and '._:-'")
    if name.startswith(RESERVED_PREFIX):
        raise InvalidEvent(
            "name", "reserved", f"names starting with {RESERVED_PREFIX!r} are reserved"
        )
    if len(_valid_names) < 10_000:
        _valid_names.add(name)
    return name


def _value(field: str, value: object, depth: int) -> tuple[Any, int]:
    """Validate and copy one property value; return it with an estimate of its JSON size."""
    t = type(value)
    if t is str:
        n = len(value)  # type: ignore[arg-type]
        if n > LIMITS.str_value_max:
            raise InvalidEvent(
                field, "value_too_long", f"string of {n} characters, at most {LIMITS.str_value_max}"
            )
        return value, n + 2
    if t is int or t is bool or value is None:
        return value, 8
    if t is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise InvalidEvent(field, "not_finite", f"{value!r} is not a finite number")
        return value, 24
    if t is dict or t is list or t is tuple:
        if depth > LIMITS.max_depth:
            raise InvalidEvent(
                field, "too_deep", f"nested deeper than {LIMITS.max_depth} levels (or a cycle)"
            )
        if t is dict:
            return _mapping(field, value, depth + 1)  # type: ignore[arg-type]
        items: list[Any] | tuple[Any, ...] = value  # type: ignore[assignment]
        if len(items) > LIMITS.max_list_items:
            raise InvalidEvent(
                field, "too_many_items", f"{len(items)} items, at most {LIMITS.max_list_items}"
            )
        out = []
        size = 2
        for i, item in enumerate(items):
            v, s = _value(f"{field}[{i}]", item, depth + 1)
            out.append(v)
            size += s + 1
        return out, size
    if isinstance(value, _SCALARS):  # subclasses: str/int/float enums, numpy-free ints...
        if isinstance(value, bool):
            return bool(value), 8
        if isinstance(value, int):
            return int(value), 24
        if isinstance(value, float):
            return _value(field, float(value), depth)
        return _value(field, str(value), depth)
    raise InvalidEvent(
        field, "type", f"{t.__name__} is not JSON: use str, int, float, bool, None, list or dict"
    )


_KEY_MAX: Final = LIMITS.key_max
_STR_MAX: Final = LIMITS.str_value_max


def _mapping(field: str, value: dict[Any, Any], depth: int) -> tuple[dict[str, Any], int]:
    # The hot loop of track(): str and int values, the common case, are checked inline and
    # the field name for an error message is only built when there is an error.
    out: dict[str, Any] = {}
    size = 2
    for k, v in value.items():
        if type(k) is not str or not 0 < len(k) <= _KEY_MAX:
            if type(k) is not str:
                raise InvalidEvent(
                    f"{field}.{k!r}", "key_type", f"keys must be str, not {type(k).__name__}"
                )
            raise InvalidEvent(
                f"{field}.{k[:40]}", "key_length", f"keys must be 1 to {_KEY_MAX} characters"
            )
        t = type(v)
        if t is str and len(v) <= _STR_MAX:
            out[k] = v
            size += len(k) + len(v) + 6
        elif t is int or t is bool or v is None:
            out[k] = v
            size += len(k) + 12
        else:
            out[k], s = _value(f"{field}.{k}", v, depth)
            size += len(k) + s + 4
    return out, size


def validate_properties(properties: object) -> tuple[dict[str, Any], int]:
    """Return a validated deep copy of ``properties`` and an estimate of its JSON size."""
    if properties is None:
        return {}, 2
    if not isinstance(properties, dict):
        raise InvalidEvent("properties", "type", f"must be a dict, not {type(properties).__name__}")
    if len(properties) > LIMITS.max_properties:
        raise InvalidEvent(
            "properties",
            "max_properties",
            f"{len(properties)} properties, at most {LIMITS.max_properties}",
        )
    props, size = _mapping("properties", properties, 1)
    if size > LIMITS.max_event_bytes:
        raise InvalidEvent(
            "properties",
            "event_too_large",
            f"about {size} bytes, an event is at most {LIMITS.max_event_bytes}",
        )
    return props, size


def validate_user(user: object, field: str = "user_identifiers") -> dict[str, str] | None:
    if user is None:
        return None
    if not isinstance(user, dict):
        raise InvalidEvent(field, "type", f"must be a dict of str, not {type(user).__name__}")
    if len(user) > LIMITS.max_identifiers:
        raise InvalidEvent(
            field, "too_many", f"{len(user)} identifiers, at most {LIMITS.max_identifiers}"
        )
    out: dict[str, str] = {}
    for k, v in user.items():
        if type(k) is not str or not k or len(k) > LIMITS.key_max:
            raise InvalidEvent(
                f"{field}.{k!r}",
                "key_type",
                f"keys must be str of 1 to {LIMITS.key_max} characters",
            )
        if type(v) is str:
            s = v
        elif type(v) is int:
            s = str(v)
        else:
            raise InvalidEvent(
                f"{field}.{k}", "value_type", f"values must be str (or int), not {type(v).__name__}"
            )
        if not s or len(s) > LIMITS.identifier_max:
            raise InvalidEvent(
                f"{field}.{k}",
                "value_length",
                f"values must be 1 to {LIMITS.identifier_max} characters",
            )
        out[k] = s
    return out or None


def validate_timestamp(timestamp: object) -> float:
    """Return the POSIX time of ``timestamp``; a naive datetime is taken as UTC."""
    if not isinstance(timestamp, datetime):
        raise InvalidEvent(
            "timestamp", "type", f"must be a datetime, not {type(timestamp).__name__}"
        )
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    return timestamp.timestamp()


def validate_target(target: object) -> dict[str, str] | None:
    if target is None:
        return None
    if not isinstance(target, dict):
        raise InvalidEvent(
            "target",
            "type",
            f"must be a dict with 'id', 'type' and 'name', not {type(target).__name__}",
        )
    extra = set(target) - TARGET_KEYS
    if extra:
        raise InvalidEvent(
            "target", "keys", f"unknown keys {sorted(map(str, extra))}; allowed: id, type, name"
        )
    if "id" not in target:
        raise InvalidEvent("target.id", "missing", "a target needs an 'id'")
    out: dict[str, str] = {}
    for k, v in target.items():
        if type(v) is int:
            v = str(v)
        if type(v) is not str or not v or len(v) > LIMITS.target_field_max:
            raise InvalidEvent(
                f"target.{k}",
                "value",
                f"must be a str of 1 to {LIMITS.target_field_max} characters",
            )
        out[k] = v
    return out


def format_timestamp(when: float | datetime) -> str:
    """The wire form of a time: ISO 8601 in UTC to the microsecond, ``Z`` for the zone (a POSIX
    time or an aware datetime; the one formatter of the SDK and the collector)."""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    elif when.utcoffset():
        when = when.astimezone(UTC)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_timestamp(value: object, field: str = "timestamp") -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidEvent(field, "type", "must be an ISO 8601 string")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(field, "format", f"{value[:64]!r} is not ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)
