"""The wire form of events: built by the SDK, checked by the collector, in one place.

The SDK encodes each queued event on its flusher thread with :func:`encode_event` (resolving
the client IP, parsing and scrubbing the request's parameters); the collector checks each one
with :func:`parse_event`, which applies the same rules as :func:`sqreen.track`
(:mod:`sqreen._event`) so that neither side accepts what the other would refuse. Anything the
SDK itself adds (the request snapshot) is bounded here too, since a client is not trusted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypedDict, cast

from ._event import (
    LIMITS,
    InvalidEvent,
    QueuedEvent,
    validate_name,
    validate_properties,
    validate_target,
    validate_user,
)
from ._ip_syntax import canonical_ip
from ._ip_warnings import counting_done, watch_peer
from ._json import dumps_utf8
from ._params import scrubbed_params
from ._request import text
from ._request_params import multipart_names
from ._text import utf8_text
from ._values import TRUNCATED
from ._wire_time import format_timestamp, normal_timestamp

if TYPE_CHECKING:
    from ._config import Config
    from ._request import RequestSnapshot

__all__ = [
    "IDENTIFY",
    "WireEvent",
    "WireRequest",
    "encode_event",
    "encode_request",
    "parse_envelope",
    "parse_event",
    "parse_sender",
]

#: The record ``identify()`` sends with a user's traits (in ``properties``): stored on the
#: user, not as an event. The only name under the reserved ``sq.`` prefix.
IDENTIFY: Final = "sq.identify"
MAX_REQUEST_BYTES: Final = 256 * 1024
#: Request strings the SDK sends (user agent, path, route) are clipped to this many characters.
CLIP: Final = 2048
REQUEST_STR_FIELDS: Final = ("ip", "user_agent", "path", "route", "method")


class WireRequest(TypedDict, total=False):
    ip: str | None
    user_agent: str | None
    path: str | None
    route: str | None
    method: str | None
    params: dict[str, Any]
    body: dict[str, Any] | None


class WireEvent(TypedDict):
    id: str
    name: str
    timestamp: str
    properties: dict[str, Any]
    user: dict[str, str] | None
    target: dict[str, str] | None
    request: WireRequest | None


def encode_event(event: QueuedEvent, event_id: str, config: Config) -> WireEvent:
    """The wire form of a queued event (on the flusher thread): properties scrubbed, the
    request's IP resolved and its parameters parsed and scrubbed."""
    request = event.request
    return {
        "id": event_id,
        "name": event.name,
        "timestamp": format_timestamp(event.ts),
        "properties": config.scrubber.scrub_properties(event.properties)
        if event.properties
        else {},
        "user": event.user,
        "target": None
        if event.target is None
        else {k: config.scrubber.scrub_value(v) for k, v in event.target.items()},
        "request": None if request is None else encode_request(request, config, event.collect_body),
    }


def encode_request(snapshot: RequestSnapshot, config: Config, collect_body: bool) -> WireRequest:
    """The request part of an event, from its frozen snapshot."""
    # Written out for the flusher (every event tracked in a request comes here): the
    # snapshot's strings decoded and clipped in place rather than through helpers.
    scrubber, trusted, header = config.scrubber, config.trusted, config.client_ip_header
    forwarded, agent, route = snapshot.forwarded, snapshot.user_agent, snapshot.route
    if type(forwarded) is not str:
        forwarded = text(forwarded)  # bytes from ASGI headers, or None
    if type(agent) is not str:
        agent = text(agent)
    if agent is not None:  # scrubbed whole, then cut (a secret across the cut went out)
        agent = scrubber.scrub_agent(agent)
        if len(agent) > CLIP:
            agent = agent[:CLIP]
    peer, rewritten = snapshot.peer, snapshot.peer_rewritten
    key = (id(trusted), peer, forwarded, header, rewritten, trusted)
    last_key, ip = _last_client
    if key != last_key:
        ip = _client_ip(key)
    content_type = snapshot.media_type()
    body = snapshot.body()
    path = scrubber.scrub_path(snapshot.decoded_path(), snapshot.path_params)
    wire: WireRequest = {
        "ip": ip,
        "user_agent": agent,
        "path": path if len(path) <= CLIP else path[:CLIP],
        "route": route if route is None or len(route) <= CLIP else route[:CLIP],
        "method": snapshot.method,
        "params": scrubbed_params(snapshot, scrubber, body, content_type),
        "body": None,
    }
    if collect_body and body:
        if content_type.startswith("multipart/"):
            # Field names only: the values are files and passwords.
            content = "[multipart: " + ", ".join(multipart_names(body, content_type)) + "]"
        else:
            content = scrubber.scrub_text_body(body.decode("utf-8", "replace"), content_type)
        wire["body"] = {"content": content, "truncated": snapshot.body_truncated}
    # Text escapes in JSON up to six times its length (a control byte is \u0001): a request
    # that might not fit is measured, and cut down field by field, never dropped. (A query
    # string as bytes is decoded as latin-1: as many characters as bytes.)
    if (len(body) + len(snapshot.query)) * 6 + _FIXED_PART > MAX_REQUEST_BYTES:
        _fit(wire)
    snapshot.share()
    return wire


#: The last peer and forwarded header with their proxies (a key of :func:`_client_ip`) and
#: the client IP they give, when :func:`watch_peer` has nothing more to say of them: a
#: header that is there once the events without one are counted no more (the first 200, or
#: the warning; whether its peer looks like an untrusted proxy is decided by them alone,
#: and logged once), or a rewritten peer (logged once). Most events of a batch come from
#: the same proxy with the same header: one tuple compared, not the peer's address parsed
#: and the IP looked up (the flusher's time for a login event -7 %, then -3 % for the IP:
#: bench_flusher_ab.py).
#: One tuple, replaced whole (the flushers of several clients), the proxies by identity (a
#: new client's are new: its first events are watched) and held (an id is not reused while
#: its object lives).
_last_client: tuple[tuple[Any, ...], str | None] = ((), None)


def _client_ip(key: tuple[Any, ...]) -> str | None:
    """The client IP of ``(id(trusted), peer, forwarded, header, rewritten, trusted)``,
    the peer watched, and remembered in :data:`_last_client` when that is settled."""
    global _last_client
    _, peer, forwarded, header, rewritten, trusted = key
    ip: str | None = trusted.client_ip(peer, forwarded, header, rewritten)
    watch_peer(peer, forwarded, trusted, header, rewritten)
    if rewritten or (forwarded and forwarded.strip() and counting_done()):
        _last_client = (key, ip)
    return ip


#: What the other fields of a request take at most in JSON (clipped to CLIP, escaped).
_FIXED_PART: Final = 4 * CLIP * 6 + 1024


def _fit(wire: WireRequest) -> None:
    """Cut ``wire`` until its JSON is at most MAX_REQUEST_BYTES characters: the largest
    parameters first (each replaced by a note of its size, the others kept), then the body
    (cut, ``truncated`` set)."""
    size = len(dumps_utf8(wire))
    if size <= MAX_REQUEST_BYTES:
        return
    params = dict(wire.get("params", {}))
    sizes = sorted(((len(dumps_utf8(v)), k) for k, v in params.items()), reverse=True)
    for value_size, key in sizes:
        if size <= MAX_REQUEST_BYTES:
            break
        params[key] = f"{TRUNCATED} {value_size} characters of JSON"
        size -= value_size - len(params[key]) - 2
    wire["params"] = params
    body = wire.get("body")
    if body is None:
        return
    content = body["content"]
    while content and len(dumps_utf8(wire)) > MAX_REQUEST_BYTES:
        # Each character cut saves one to six: cut by the excess, and again if needed.
        excess = len(dumps_utf8(wire)) - MAX_REQUEST_BYTES
        content = content[: max(0, len(content) - max(excess, 1024))]
        wire["body"] = {"content": content + TRUNCATED, "truncated": True}


def _fit_received(wire: WireRequest) -> None:
    """:func:`_fit` for a request the collector received: then, if it is still too large
    (thousands of small parameters, which notes of their sizes do not make smaller), its
    parameters as one note of how many there were. The event is kept, with what it said."""
    _fit(wire)
    size = len(dumps_utf8(wire))
    if size > MAX_REQUEST_BYTES:
        count = len(wire.get("params", {}))
        wire["params"] = {TRUNCATED: f"{count} parameters, {size} characters of JSON"}


_EVENT_KEYS: Final = frozenset(WireEvent.__annotations__)
_REQUEST_KEYS: Final = frozenset(WireRequest.__annotations__)


def received_ip(ip: str) -> str | None:
    """``request.ip`` as stored: an address's canonical text (IPv6 compressed, lower-case,
    IPv4-mapped unmapped), as SDKs send it; None for anything else (a network, a name,
    ``unknown``), as an SDK sends an address it could not read: blocks and playbooks act on
    this field, and a network in it would have a playbook block the whole network. Not
    malformed enough to refuse the event (a peer's login failure with a proxy's
    ``unknown`` is still a login failure)."""
    return canonical_ip(ip)


def _request(value: object, dumps: Callable[[Any], str] = dumps_utf8) -> WireRequest | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidEvent("request", "type", "must be an object or null")
    out: WireRequest = {}
    for key in REQUEST_STR_FIELDS:
        v = value.get(key)
        if v is not None and not isinstance(v, str):
            raise InvalidEvent(f"request.{key}", "value", "must be a string or null")
        if v is not None and len(v) > LIMITS.request_field_max:
            # Too long is not malformed: cut, as the SDK clips it (an attacker's user agent
            # must not keep their event out).
            v = v[: LIMITS.request_field_max]
        out[key] = v  # type: ignore[literal-required,unused-ignore]
    ip = out["ip"]
    if ip is not None:
        out["ip"] = received_ip(ip)
    params = value.get("params", {})
    if not isinstance(params, dict):
        raise InvalidEvent("request.params", "type", "must be an object")
    out["params"] = params
    body = value.get("body")
    if body is not None and (
        not isinstance(body, dict)
        or not isinstance(body.get("content"), str)
        or not isinstance(body.get("truncated", False), bool)
    ):
        raise InvalidEvent(
            "request.body", "type", "must be null or {'content': str, 'truncated': bool}"
        )
    out["body"] = body
    if not _REQUEST_KEYS.issuperset(value):
        unknown = set(value) - _REQUEST_KEYS
        raise InvalidEvent("request", "keys", f"unknown keys {sorted(map(str, unknown))[:5]}")
    dumped = dumps(out)
    if len(dumped) > MAX_REQUEST_BYTES:
        # The last resort, as the SDK's own: the largest parts cut, the event kept.
        _fit_received(out)
        dumped = dumps_utf8(out)
    if not dumped.isascii():
        # Lone surrogates, anywhere in it (the parameters are any JSON), as U+FFFD: replaced
        # in its JSON, where they can only be characters of strings, and read back.
        fixed = utf8_text(dumped)
        if fixed is not dumped:
            return cast(WireRequest, json.loads(fixed))
    return out


def parse_event(obj: object, dumps: Callable[[Any], str] = dumps_utf8) -> WireEvent:
    """Validate one event of a batch; raise :class:`InvalidEvent` naming the field.

    ``dumps`` measures parts of the event in compact JSON: :func:`~._json.dumps_utf8`, or a
    stand-in with the same verdicts (a text of the same length, or an ASCII text too short
    for any limit when the value's JSON is ASCII: the collector's, in C).
    """
    if not isinstance(obj, dict):
        raise InvalidEvent("event", "type", f"must be an object, not {type(obj).__name__}")
    if not _EVENT_KEYS.issuperset(obj):
        unknown = set(obj) - _EVENT_KEYS
        raise InvalidEvent("event", "keys", f"unknown keys {sorted(map(str, unknown))[:5]}")
    event_id = obj.get("id")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= LIMITS.id_max:
        raise InvalidEvent("id", "type", f"must be a string of 1 to {LIMITS.id_max} characters")
    properties, _ = validate_properties(obj.get("properties") or {})
    # Sizes are counted in characters of compact JSON, as the SDK's estimate counts them.
    if len(dumps([properties, obj.get("user"), obj.get("target")])) > LIMITS.max_event_bytes:
        raise InvalidEvent(
            "event",
            "event_too_large",
            f"an event is at most {LIMITS.max_event_bytes} characters of JSON",
        )
    return {
        "id": event_id,
        "name": _name(obj),
        "timestamp": normal_timestamp(obj.get("timestamp")),
        "properties": properties,
        "user": validate_user(obj.get("user"), "user"),
        "target": validate_target(obj.get("target")),
        "request": _request(obj.get("request"), dumps),
    }


def _name(obj: dict[str, Any]) -> str:
    name = obj.get("name")
    if name == IDENTIFY:
        if not obj.get("user"):
            raise InvalidEvent("user", "missing", f"{IDENTIFY} needs the user it identifies")
        return IDENTIFY
    return validate_name(name)


def parse_sender(obj: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``sdk`` and ``app`` objects of a batch or a heartbeat: short strings and integers.
    Raise :class:`InvalidEvent` when malformed."""
    if not isinstance(obj, dict):
        raise InvalidEvent("body", "type", "must be a JSON object")
    sdk = obj.get("sdk") or {}
    app = obj.get("app") or {}
    if not isinstance(sdk, dict):
        raise InvalidEvent("sdk", "type", "must be an object")
    if not isinstance(app, dict):
        raise InvalidEvent("app", "type", "must be an object")
    for field, d in (("sdk", sdk), ("app", app)):
        for k, v in d.items():
            if not isinstance(v, str | int | None) or (isinstance(v, str) and len(v) > 256):
                raise InvalidEvent(f"{field}.{k}", "value", "must be a short string or an integer")
    return sdk, app


def parse_envelope(obj: object) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """Split a batch into (sdk, app, raw events); raise :class:`InvalidEvent` when malformed.

    The events themselves are checked one by one with :func:`parse_event`, so that a mixed
    batch keeps its valid events.
    """
    sdk, app = parse_sender(obj)
    events = cast(dict[str, Any], obj).get("events")  # a dict: parse_sender checked
    if not isinstance(events, list):
        raise InvalidEvent("events", "type", "must be a list")
    if len(events) > LIMITS.max_batch_events:
        raise InvalidEvent(
            "events", "too_many", f"{len(events)} events, at most {LIMITS.max_batch_events} a batch"
        )
    return sdk, app, events
