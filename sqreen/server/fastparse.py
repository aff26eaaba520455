"""A batch decoded straight into checked events, in C (``msgspec`` typed decoding), or None.

:func:`parse_batch` is a fast path for :meth:`~.pipeline.IngestPipeline.parse`'s common case: a
body whose every event is valid as the SDK sends it. The body is decoded into
:class:`msgspec.Struct` types whose constraints (lengths, counts, depths, integer ranges) are
*at least as strict* as the wire's rules (:func:`sqreen._wire.parse_event`), so that whatever
the decoder accepts, the wire's checks would have accepted, unchanged. Whatever it refuses, or
any rule left to Python here refuses, gives None: the caller then parses the body the usual
way, which accepts it, fixes it or rejects its events with the usual messages.

Why these types and not the wire's rules over again:

- ``Struct(forbid_unknown_fields=True)`` for an event, its request and its target: a
  ``TypedDict`` drops unknown keys silently, where the wire refuses them. For the envelope
  too, though the wire ignores its unknown keys: msgspec skips an unknown field's value
  without checking its UTF-8, which ``json.loads`` refuses (a 400).
- Integers within int64 (the wire keeps 64 bits, signed or not: msgspec bounds only fit int64).
- Properties' containers to three levels, as the wire's ``max_depth``; lists of 256 items.
- Strings: msgspec refuses lone surrogates (escaped or raw), so no text needs ``utf8_text``.
- Sizes: the wire estimates properties' size (:func:`sqreen._event.validate_properties`) and
  measures ``[properties, user, target]`` and the request in the standard encoder's JSON
  (:func:`sqreen._json.dumps_utf8`, in characters). Both are at most 13 times the bytes of
  msgspec's JSON of the same values (the estimate counts an integer item of a list, ``1,``,
  25; the standard text writes a character in at most 6, a float in at most 24, where msgspec
  takes at least 1 and 3 bytes): parts of at most 1/25 of the limit in msgspec's bytes pass
  both checks, larger ones are checked by the wire's own functions; a request of at most 1/8
  of its limit passes, a larger one is measured exactly.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, NamedTuple, TypeAlias

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from .._event import LIMITS, InvalidEvent, validate_name, validate_properties
from .._wire import IDENTIFY, MAX_REQUEST_BYTES, WireEvent, WireRequest, received_ip
from .._wire_time import normal_timestamp
from ..events import stored_name
from .fastjson import measure
from .ingest import Held, held_actions, text
from .names import derived_name

__all__ = ["FastBatch", "parse_batch"]

_Key: TypeAlias = Annotated[str, Meta(min_length=1, max_length=LIMITS.key_max)]
_Int: TypeAlias = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
_Str: TypeAlias = Annotated[str, Meta(max_length=LIMITS.str_value_max)]
_Items: Final = Meta(max_length=LIMITS.max_list_items)
_Scalar: TypeAlias = _Str | _Int | float | bool | None
# Containers at three levels of properties at most (the wire's max_depth), then scalars.
_Value3: TypeAlias = _Scalar | Annotated[list[_Scalar], _Items] | dict[_Key, _Scalar]
_Value2: TypeAlias = _Scalar | Annotated[list[_Value3], _Items] | dict[_Key, _Value3]
_Value1: TypeAlias = _Scalar | Annotated[list[_Value2], _Items] | dict[_Key, _Value2]
_Properties: TypeAlias = Annotated[dict[_Key, _Value1], Meta(max_length=LIMITS.max_properties)]
_Identifier: TypeAlias = Annotated[str, Meta(min_length=1, max_length=LIMITS.identifier_max)]
_User: TypeAlias = Annotated[dict[_Key, _Identifier], Meta(max_length=LIMITS.max_identifiers)]
_TargetField: TypeAlias = Annotated[str, Meta(min_length=1, max_length=LIMITS.target_field_max)]
_RequestField: TypeAlias = Annotated[str, Meta(max_length=LIMITS.request_field_max)] | None
_Sender: TypeAlias = dict[str, Annotated[str, Meta(max_length=256)] | int | bool | None]


class _Target(Struct, forbid_unknown_fields=True):
    id: _TargetField
    type: _TargetField | UnsetType = UNSET
    name: _TargetField | UnsetType = UNSET


class _Request(Struct, forbid_unknown_fields=True):
    ip: _RequestField = None
    user_agent: _RequestField = None
    path: _RequestField = None
    route: _RequestField = None
    method: _RequestField = None
    params: dict[str, Any] = {}
    body: dict[str, Any] | None = None


class _Event(Struct, forbid_unknown_fields=True):
    id: Annotated[str, Meta(min_length=1, max_length=LIMITS.id_max)]
    name: str
    timestamp: str
    properties: _Properties | None = None
    user: _User | None = None
    target: _Target | None = None
    request: _Request | None = None


class _Envelope(Struct, forbid_unknown_fields=True):
    events: Annotated[list[_Event], Meta(max_length=LIMITS.max_batch_events)]
    sdk: _Sender | None = None
    app: _Sender | None = None
    actions: Any = None


_decode: Final = msgspec.json.Decoder(_Envelope).decode
_encode: Final = msgspec.json.Encoder().encode
_FAILS: Final = (msgspec.MsgspecError, RecursionError, UnicodeError, InvalidEvent)
#: The largest JSON of ``[properties, user, target]`` whose size estimate surely fits.
_SURE_PARTS: Final = LIMITS.max_event_bytes // 25


class FastBatch(NamedTuple):
    """What :meth:`~.pipeline.IngestPipeline.parse` makes of a body whose events are valid."""

    app: str | None
    host: str | None
    events: list[WireEvent]
    identities: list[WireEvent]
    held: Held


def parse_batch(body: bytes) -> FastBatch | None:
    """The events of ``body`` as :func:`sqreen._wire.parse_event` makes them (names aliased),
    when they are all valid and within the fast path's bounds; None otherwise."""
    try:
        envelope = _decode(body)
        events: list[WireEvent] = []
        identities: list[WireEvent] = []
        for raw in envelope.events:
            event = _event(raw)
            if event is None:
                return None
            (identities if event["name"] == IDENTIFY else events).append(event)
    except _FAILS:
        return None
    app = envelope.app or {}
    return FastBatch(
        text(app.get("name")),
        text(app.get("host")),
        events,
        identities,
        held_actions({"actions": envelope.actions}),
    )


def _event(raw: _Event) -> WireEvent | None:
    properties: dict[str, Any] = raw.properties or {}
    user = raw.user or None
    target = None if raw.target is None else _target(raw.target)
    if len(_encode([properties, user, target])) > _SURE_PARTS:
        # Large: the wire's own checks, exact (the same values as it would be given).
        properties, _ = validate_properties(properties)
        if len(measure([properties, user, target])) > LIMITS.max_event_bytes:
            return None
    name = raw.name
    if name == IDENTIFY:
        if not user:
            return None
    else:
        name = validate_name(name)
        name = stored_name(name)
        if derived_name(name) is not None:  # the collector's own, or a look-alike: refused
            # the usual way, with its error
            return None
    request = None
    if raw.request is not None:
        request = _request(raw.request)
        if request is None:
            return None
    return {
        "id": raw.id,
        "name": name,
        "timestamp": normal_timestamp(raw.timestamp),
        "properties": properties,
        "user": user,
        "target": target,
        "request": request,
    }


def _target(raw: _Target) -> dict[str, str]:
    out = {"id": raw.id}
    if raw.type is not UNSET:
        out["type"] = raw.type
    if raw.name is not UNSET:
        out["name"] = raw.name
    return out


def _request(raw: _Request) -> WireRequest | None:
    """The request as the wire makes it, or None for the usual path."""
    body = raw.body
    if body is not None and (
        type(body.get("content")) is not str or type(body.get("truncated", False)) is not bool
    ):
        return None
    out: WireRequest = {
        "ip": None if raw.ip is None else received_ip(raw.ip),
        "user_agent": raw.user_agent,
        "path": raw.path,
        "route": raw.route,
        "method": raw.method,
        "params": raw.params,
        "body": body,
    }
    if len(_encode(out)) * 8 > MAX_REQUEST_BYTES and len(measure(out)) > MAX_REQUEST_BYTES:
        return None
    return out
