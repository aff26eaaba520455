"""Reading what SDKs send: bounded bodies, bounded gzip, JSON; heartbeats.

Bodies are bounded twice: by ``Content-Length`` before reading, and by counting the bytes as
they stream in (a chunked body has no length). Gzip is inflated with a bound too, so a small
bomb cannot become a large allocation. A batch of events then goes through the ingest
pipeline (:mod:`.pipeline`); a heartbeat is stored here.
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any, Final, NamedTuple

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from .._event import InvalidEvent
from .._limits import LIMITS
from .._wire import parse_sender
from . import fastjson
from .errors import ApiError
from .names import standard_name
from .storage import ControlStore, Heartbeat

__all__ = [
    "MAX_BODY_BYTES",
    "Held",
    "gunzip",
    "heartbeat",
    "held_actions",
    "parse_json",
    "read_body",
    "read_raw",
    "standard_name",
    "text",
]

logger = logging.getLogger("sqreen.server")

MAX_BODY_BYTES: Final = 10 * 1024 * 1024
MAX_STATS: Final = 32
#: The stats that are not counters: the blocks an SDK process refuses to enforce, each with
#: why (``{"7": "10.0.0.0/8 is too wide"}``), a reason cut to this many characters.
TEXT_STATS: Final = frozenset({"refused_blocks"})
MAX_STAT_TEXT: Final = 200
MAX_PID: Final = 2**31


async def read_body(request: Request, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The request's JSON body, inflated if gzipped, never more than ``max_bytes``."""
    body, gzipped = await read_raw(request, max_bytes)
    if gzipped:  # up to max_bytes of inflating: not on the event loop
        return await run_in_threadpool(gunzip, body, max_bytes)
    return body


async def read_raw(request: Request, max_bytes: int = MAX_BODY_BYTES) -> tuple[bytes, bool]:
    """The request's JSON body as sent (never more than ``max_bytes``), and whether it is
    gzip (:func:`gunzip` inflates it)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, "the body must be JSON (Content-Type: application/json)")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise ApiError(415, f"unsupported Content-Encoding {encoding[:32]!r}: use gzip or none")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, "invalid Content-Length")
        if int(length) > max_bytes:
            raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks), encoding == "gzip"


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"the body is over {max_bytes} bytes: send smaller batches")


def gunzip(data: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, max_bytes)
    except zlib.error as exc:
        raise ApiError(400, f"invalid gzip body: {exc}") from None
    problem = None
    if inflater.unconsumed_tail or (len(out) == max_bytes and not inflater.eof):
        too_big = f"the body inflates to over {max_bytes} bytes: send smaller batches"
        problem = ApiError(413, too_big)
    elif not inflater.eof:
        problem = ApiError(400, "invalid gzip body: truncated")
    elif inflater.unused_data:
        problem = ApiError(400, "invalid gzip body: data after the end of the stream")
    if problem is not None:
        # Not held by the error's frame: a task's error is in a cycle with the task (its
        # traceback holds the frame that holds the task), freed by a collection only, and
        # the bombs of clients that hung up held up to --max-body-bytes each till then.
        del out
        raise problem
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _std_loads(body: bytes) -> Any:
    return json.loads(body, parse_constant=_no_constants)


def _constants_as_null(name: str) -> None:
    return None


def _int_or_null(digits: str) -> int | None:
    # Past Python's limit on an integer's digits (4300; an SDK whose process lifted it sent
    # a client's 5 000-digit number as it was), null, as a float out of range is.
    try:
        return int(digits)
    except ValueError:
        return None


def _lenient_loads(body: bytes) -> Any:
    return json.loads(body, parse_constant=_constants_as_null, parse_int=_int_or_null)


def parse_json(body: bytes, *, constants: bool = False) -> Any:
    """The JSON value of ``body`` (:class:`ApiError` 400 if it is none). With ``constants``
    (a batch of events), ``NaN``, ``Infinity`` and ``-Infinity`` are read as null, as a
    number too large for a float already is, and so is an integer of more digits than Python
    reads: earlier builds of the SDK wrote them from an
    HTTP client's JSON body (``{"password": NaN}``), and refusing the batch for them threw
    away every other event it held, which let an attacker blind the collector with one
    request a batch."""
    # In C; what C refuses is decoded again by json.loads, for its result or its error.
    try:
        return fastjson.loads(body, _lenient_loads if constants else _std_loads)
    except RecursionError:
        # Past the reader's depth (about 1 000 levels), the body has no events to keep.
        raise ApiError(
            400,
            "malformed JSON: nested too deeply to read (an event's properties nest "
            f"{LIMITS.max_depth} levels at most): no event of this body was stored",
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers...
        raise ApiError(400, f"malformed JSON: {exc}") from None


def text(value: object) -> str | None:
    """An optional sender field (``app.name``, ``sdk.version``...) as text."""
    return None if value is None else str(value)


#: The largest counter a heartbeat may report: 2**53 - 1, the largest integer a browser's
#: JSON reads exactly (the agents page). A process counting past it has sent garbage.
MAX_COUNTER = 2**53 - 1


def _counter(field: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNTER:
        raise ApiError(400, f"must be an integer from 0 to {MAX_COUNTER}", field=field)
    return value


def _reason(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ApiError(400, "must be a string", field=field)
    return value[:MAX_STAT_TEXT]


def _stats(stats: object) -> dict[str, Any]:
    if not isinstance(stats, dict) or len(stats) > MAX_STATS:
        raise ApiError(400, f"must be an object of at most {MAX_STATS} counters", field="stats")
    out: dict[str, Any] = {}
    for key, value in stats.items():
        field = f"stats.{key[:64]}"
        if len(key) > 64:
            raise ApiError(400, "names are at most 64 characters", field=field)
        if isinstance(value, dict):
            if len(value) > MAX_STATS or any(len(k) > 64 for k in value):
                raise ApiError(400, f"at most {MAX_STATS} short names", field=field)
            # A process refusing a block says so in every heartbeat: refusing its reasons (as
            # not counters) answered each of them 400, and the agents page never heard.
            check = _reason if key in TEXT_STATS else _counter
            out[key] = {k: check(f"{field}.{k}", v) for k, v in value.items()}
        else:
            out[key] = _counter(field, value)
    return out


class Held(NamedTuple):
    """The action set an SDK says it holds (``"actions": {"version": n, "diff": true}`` in
    a batch or a heartbeat): its version (None: none said), and whether it takes a diff."""

    version: int | None
    diff: bool


def heartbeat(storage: ControlStore, body: bytes, *, key_id: int = 0) -> Held:
    """Store one SDK process's stats, under the API key it came with (blocking); what its
    reply's action set is made from."""
    obj = parse_json(body)
    try:
        sdk, app = parse_sender(obj)
    except InvalidEvent as exc:
        raise ApiError(400, str(exc), field=exc.field) from None
    pid = app.get("pid") or 0
    if type(pid) is not int or not 0 <= pid < MAX_PID:
        raise ApiError(400, "must be a process id", field="app.pid")
    storage.record_heartbeat(
        Heartbeat(
            app=text(app.get("name")) or "",
            host=text(app.get("host")) or "",
            pid=pid,
            framework=text(app.get("framework")),
            sdk_name=text(sdk.get("name")),
            sdk_version=text(sdk.get("version")),
            stats=_stats(obj.get("stats", {})),
            key_id=key_id,
        )
    )
    return held_actions(obj)


def held_actions(obj: object) -> Held:
    """What a batch or a heartbeat says of the action set its SDK holds."""
    held = obj.get("actions") if isinstance(obj, dict) else None
    if not isinstance(held, dict):
        return Held(None, False)
    version = held.get("version")
    return Held(version if type(version) is int else None, held.get("diff") is True)
