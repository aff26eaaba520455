"""Turning validated wire events into database rows, and rows back into values.

Shared by both back ends so that they store the same bytes. Text that lands in an indexed
column is cleaned first: PostgreSQL refuses NUL characters in text, neither driver can encode
a lone surrogate (which ``json.loads`` happily produces from ``"\\ud800"``), and an index entry
must stay small. JSON columns need no cleaning: :data:`dumps` escapes everything non-ASCII.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from ..._event import parse_timestamp
from ..._json import dumps_ascii
from ..._wire import WireEvent
from .base import StoredEvent, from_us, to_us

__all__ = [
    "EVENT_COLUMNS",
    "clean",
    "dumped",
    "dumps",
    "event_from_row",
    "event_record",
    "index_rows",
    "index_value",
]

#: Property values are indexed on this many characters (filters compare the same prefix).
INDEXED_VALUE_MAX: Final = 200
#: A ``request.ip`` longer than this is no address; it is kept in ``request_json`` only.
IP_MAX: Final = 64

#: Compact, ASCII-only JSON (so that any text survives both databases' text columns).
dumps: Callable[[Any], str] = dumps_ascii

#: The columns :func:`event_record` fills, in order (``seq`` is assigned by the database).
EVENT_COLUMNS: Final = (
    "id",
    "name",
    "ts",
    "received_at",
    "app",
    "host",
    "ip",
    "user_json",
    "properties_json",
    "target_json",
    "request_json",
)


def clean(text: str, limit: int | None = None) -> str:
    """``text`` made storable in an indexed text column of either database, deterministically
    (so that an event id cleaned twice still deduplicates)."""
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text if limit is None else text[:limit]


def event_record(
    event: WireEvent, app: str | None, host: str | None, received_us: int
) -> list[Any]:
    """The values of :data:`EVENT_COLUMNS` for ``event``; the ``*_json`` ones are still
    Python values (each back end serialises them its own way)."""
    request = event["request"]
    ip = request.get("ip") if request else None
    return [
        clean(event["id"]),
        event["name"],
        to_us(parse_timestamp(event["timestamp"])),
        received_us,
        app,
        host,
        None if ip is None or len(ip) > IP_MAX else clean(ip),
        event["user"],
        event["properties"],
        event["target"],
        request,
    ]


def dumped(record: list[Any]) -> list[Any]:
    """``record`` with its JSON columns serialised (``None`` stays NULL)."""
    return [*record[:7], *(None if v is None else dumps(v) for v in record[7:])]


def _plain(text: str) -> bool:
    """True when :func:`clean` would leave ``text`` as it is (the common, cheap case)."""
    return text.isascii() and "\x00" not in text


def index_value(value: object) -> str | None:
    """The text a top-level property value is indexed (and filtered) under, or None when the
    value is not indexed (floats, None, lists, dicts)."""
    if type(value) is str:
        return value[:INDEXED_VALUE_MAX] if _plain(value) else clean(value, INDEXED_VALUE_MAX)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)[:INDEXED_VALUE_MAX]
    return None


def index_rows(events: Iterable[WireEvent]) -> tuple[list[Any], list[Any]]:
    """The rows of ``event_props`` and ``event_users`` for ``events``, flattened
    (``position, key, value, position, key, value...``, ready for a multi-row INSERT once each
    position, the event's index in ``events``, is replaced by its seq)."""
    props: list[Any] = []
    users: list[Any] = []
    for position, event in enumerate(events):
        for key, value in event["properties"].items():
            text = index_value(value)
            if text is not None:
                props += (position, key if _plain(key) else clean(key), text)
        if event["user"]:
            for key, value in event["user"].items():
                users += (
                    position,
                    key if _plain(key) else clean(key),
                    value if _plain(value) else clean(value),
                )
    return props, users


def event_from_row(row: Sequence[Any]) -> StoredEvent:
    """A row of ``seq`` followed by :data:`EVENT_COLUMNS` as a :class:`StoredEvent`."""
    seq, id_, name, ts, received, app, host, ip, user, props, target, request = row
    return StoredEvent(
        seq=seq,
        id=id_,
        name=name,
        timestamp=from_us(ts),
        received_at=from_us(received),
        app=app,
        host=host,
        ip=ip,
        user=None if user is None else json.loads(user),
        properties=json.loads(props),
        target=None if target is None else json.loads(target),
        request=None if request is None else json.loads(request),
    )
