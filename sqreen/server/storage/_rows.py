"""Turning validated wire events into event rows, and rows back into events.

An event's side rows are built in :mod:`._side_rows`, the rows of blocks, keys and agents
in :mod:`._entity_rows`.

Shared by both back ends so that they store the same bytes. Text that lands in an indexed
column is cleaned first: PostgreSQL refuses NUL characters in text, neither driver can encode
a lone surrogate (which ``json.loads`` happily produces from ``"\\ud800"``), and an index entry
must stay small. JSON columns need no cleaning: :data:`dumps` escapes everything non-ASCII.

Rows are read defensively, since a row may be older than the rules that now keep such values
out (or written by an older collector sharing the database): JSON holding an escaped lone
surrogate reads as U+FFFD (:func:`loads`), an event's time is never later than its receipt
(the rule :func:`event_us` applies when storing) and every time is within 1970 to 9000
(:func:`~.model.from_us`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple

from ..._json import Encoded, dumps_ascii, dumps_fields, dumps_utf8
from ..._text import utf8_text
from ..._wire import WireEvent
from ..._wire_time import time_us
from ..fastjson import dumps_ascii as dumps_event_part
from .model import InsertResult, StoredEvent, from_us, to_us

__all__ = [
    "EVENT_COLUMNS",
    "EventRecord",
    "clean",
    "dumps",
    "event_from_row",
    "event_record",
    "event_us",
    "loads",
    "loads_or_none",
    "new_event",
    "new_events",
    "plain",
]

#: A ``request.ip`` longer than this is no address; it is kept in ``request_json`` only.
IP_MAX: Final = 64

#: Compact, ASCII-only JSON (so that any text survives both databases' text columns).
dumps: Callable[[Any], str] = dumps_ascii


class EventRecord(NamedTuple):
    """An event row as inserted: every column but ``seq`` (which the database assigns), in
    order, the ``*_json`` ones serialised (``None`` stays NULL)."""

    id: str
    name: str
    ts: int
    received_at: int
    app: str | None
    host: str | None
    ip: str | None
    user_json: str | None
    properties_json: str
    target_json: str | None
    request_json: str | None
    enrichment_json: str | None
    key_id: int
    #: Copied out of ``ip_info`` for the explorer's filters and groups (text; NULL unknown).
    ip_country: str | None
    ip_kind: str | None
    ip_asn: str | None


#: The columns :func:`event_record` fills, in order.
EVENT_COLUMNS: Final = EventRecord._fields
_new_record: Final = tuple.__new__


def clean(text: str, limit: int | None = None) -> str:
    """``text`` made storable in an indexed text column of either database, deterministically
    (so that an event id cleaned twice still deduplicates)."""
    text = utf8_text(text)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text if limit is None else text[:limit]


def event_record(
    event: WireEvent,
    app: str | None,
    host: str | None,
    received_us: int,
    enrichment: Mapping[str, Any] | None = None,
    key_id: int = 0,
) -> EventRecord:
    """The row of ``event`` sent with API key ``key_id`` (``app`` and ``host`` already
    :func:`clean`)."""
    request = event["request"]
    user, target = event["user"], event["target"]
    if not enrichment:
        enriched: tuple[str | None, ...] = _NOT_ENRICHED
    else:
        info = enrichment.get("ip_info")
        if len(enrichment) == 1 and isinstance(info, Encoded):  # IP intelligence alone
            enriched = info.derived(_ip_info_columns)  # once an ip_info, not an event
        else:
            enriched = _enrichment_columns(enrichment)
    # tuple.__new__ with the values in field order: EventRecord(...) runs a Python-level
    # __new__ that costs ~3 000 instructions an event on the ingest path (a list, 1 500).
    return _new_record(
        EventRecord,
        (
            clean(event["id"]),
            event["name"],
            event_us(event, received_us),
            received_us,
            app,
            host,
            _ip(request),
            None if user is None else dumps_event_part(user),
            dumps_event_part(event["properties"]),
            None if target is None else dumps_event_part(target),
            None if request is None else dumps_event_part(request),
            enriched[0],
            key_id,
            enriched[1],
            enriched[2],
            enriched[3],
        ),
    )


#: ``(enrichment_json, ip_country, ip_kind, ip_asn)`` of an event without enrichment.
_NOT_ENRICHED: Final[tuple[None, None, None, None]] = (None, None, None, None)


def _enrichment_columns(enrichment: Mapping[str, Any]) -> tuple[str | None, ...]:
    """``(enrichment_json, ip_country, ip_kind, ip_asn)`` of an event's enrichment."""
    info = enrichment.get("ip_info")
    if not isinstance(info, Mapping):
        return (dumps_fields(enrichment), None, None, None)
    country, kind, asn = info.get("country"), info.get("kind"), info.get("asn")
    return (dumps_fields(enrichment), _short(country), _short(kind), _short(asn))


def _ip_info_columns(info: Encoded) -> tuple[str | None, ...]:
    """The same for an enrichment of ``{"ip_info": info}`` alone: derived once a shared
    ``ip_info`` (what every event from its address, or its group of addresses, holds), not
    once an event (about 1 µs an event of the JSON's wrapping and three cleaned columns,
    measured)."""
    return _enrichment_columns({"ip_info": info})


def _short(value: object) -> str | None:
    """An ``ip_info`` field as indexed text (what enrichers write is short already)."""
    if isinstance(value, str):
        return clean(value, 64)
    if type(value) is int:
        return str(value)
    return None


def new_event(
    seq: int,
    event: WireEvent,
    app: str | None,
    host: str | None,
    received_at: datetime,
    enrichment: Mapping[str, Any] | None = None,
    key_id: int = 0,
) -> StoredEvent:
    """The :class:`StoredEvent` that reading back ``event``, just stored under ``seq``, would
    give, without reading it (``app`` and ``host`` already :func:`clean`)."""
    return StoredEvent(
        seq=seq,
        id=clean(event["id"]),
        name=event["name"],
        timestamp=from_us(event_us(event, to_us(received_at))),
        received_at=received_at,
        app=app,
        host=host,
        ip=_ip(event["request"]),
        user=event["user"],
        properties=event["properties"],
        target=event["target"],
        request=None if event["request"] is None else dict(event["request"]),
        enrichment=dict(enrichment or {}),
        key_id=key_id,
    )


def new_events(
    events: Sequence[WireEvent],
    result: InsertResult,
    *,
    app: str | None = None,
    host: str | None = None,
    enrichment: Sequence[Mapping[str, Any]] | None = None,
    key_id: int = 0,
) -> list[StoredEvent]:
    """The events that ``result`` (of ``insert_events(events, app=, host=, enrichment=,
    key_id=)``) reports newly stored, in input order, as reading them back would give them."""
    app = None if app is None else clean(app)
    host = None if host is None else clean(host)
    extras: Sequence[Mapping[str, Any] | None] = (
        [None] * len(events) if enrichment is None else enrichment
    )
    return [
        new_event(seq, event, app, host, result.received_at, extra, key_id)
        for seq, (event, extra) in result.new(list(zip(events, extras, strict=True)))
    ]


def event_us(event: WireEvent, received_us: int) -> int:
    """The time ``event`` is stored under: its own, unless later than its receipt (a clock
    ahead, or a time that would keep it out of every recent view and from retention): then
    the time it was received."""
    us = time_us(event["timestamp"])
    return us if us < received_us else received_us


def _ip(request: Mapping[str, Any] | None) -> str | None:
    """The ``ip`` column: the request's address, unless it is too long to be one."""
    ip = request.get("ip") if request else None
    if ip is None or len(ip) > IP_MAX:
        return None
    return ip if plain(ip) else clean(ip)


def plain(text: str) -> bool:
    """True when :func:`clean` would leave ``text`` as it is (the common, cheap case)."""
    return text.isascii() and "\x00" not in text


def event_from_row(row: Sequence[Any]) -> StoredEvent:
    """A row of ``seq`` followed by :data:`EVENT_COLUMNS` as a :class:`StoredEvent`."""
    seq, *columns = row
    r = EventRecord._make(columns)
    return StoredEvent(
        seq=seq,
        id=r.id,
        name=r.name,
        timestamp=from_us(min(r.ts, r.received_at)),
        received_at=from_us(r.received_at),
        app=r.app,
        host=r.host,
        ip=r.ip,
        user=loads_or_none(r.user_json),
        properties=loads(r.properties_json),
        target=loads_or_none(r.target_json),
        request=loads_or_none(r.request_json),
        enrichment=loads_or_none(r.enrichment_json) or {},
        key_id=r.key_id,
    )


def loads(text: str) -> Any:
    """The value of a JSON column, with each lone surrogate as U+FFFD.

    Columns hold ASCII JSON, so a lone surrogate is stored escaped (``\\ud800``, which rows
    stored before ingest replaced them can hold): only JSON with such an escape is looked at
    again, through its text, where a surrogate can only be a character of a string.
    """
    value = json.loads(text)
    if "\\ud" in text or "\\uD" in text:
        dumped = dumps_utf8(value)
        fixed = utf8_text(dumped)
        if fixed is not dumped:
            return json.loads(fixed)
    return value


def loads_or_none(text: str | None) -> Any:
    """:func:`loads` of a nullable JSON column (NULL reads as None)."""
    return None if text is None else loads(text)
