"""Loading past events from a JSON-lines file (the file transport's output, or any events).

Each line is one wire event, checked with the SDK's rules. A line without an ``id`` gets one
derived from its content and from how many identical lines came before it in the file: six
identical failed logins (a log with whole-second times writes them so) are six events, and
importing the same file twice stores nothing the second time, nor do events an SDK sent
already (ids are unique per API key; an import skips those stored under any key). Bad lines
are counted, the first :data:`MAX_BAD_KEPT` kept with their line numbers and messages (a
file of garbage costs no memory a line); good ones are stored in batches. A write the
database refuses (SQLite locked past its busy timeout, a full disk; PostgreSQL's lock or
statement timeout, a lost connection) stops the import with :class:`ImportStopped`, whose
report says how far it got: what was committed stays, and the same import run again skips
it. ``sq.identify`` records (``identify(user, traits=...)``) set their users' traits, as at
ingest, and are not stored as events. As at ingest too, LiteSOC's other spellings of a name
are stored as the standard name, and each event is stored with ``ip_info`` when an ``intel``
is given (the ``sqreen import`` command gives one: today's data, for events of the past).

The collector's own JSON lines (``sqreen events --json``, ``sqreen export --format jsonl``)
import back: a line holding both ``seq`` and ``received_at`` is one of those, and also may
hold ``app``, ``host``, ``severity``, ``ip_info`` and ``enrichment`` (:data:`COLLECTOR_KEYS`).
Its severity is left out (its name gives it again), its app and host kept (``app`` given to
:func:`import_lines` names only the app of lines without one), its ``ip_info`` and
``enrichment`` kept as stored (history is not enriched again), its ``seq`` ignored (the
database numbers what it stores), and its ``received_at`` kept only with ``keep_received``:
by default an imported event is received when imported, as every imported line is, so that
retention counts from the import (an archive older than the retention, imported with its old
receipt times, would be purged at the next purge). Any other line with one of those keys is
refused as before, naming the keys.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Final, NamedTuple

from .._event import InvalidEvent
from .._wire import IDENTIFY, WireEvent, parse_event
from .._wire_time import parse_timestamp
from ..events import stored_name
from .intel import IpIntel, checked_ip_info
from .names import standard_name
from .storage import MAX_IDS, Storage

__all__ = [
    "COLLECTOR_KEYS",
    "MAX_BAD_KEPT",
    "ImportReport",
    "ImportStopped",
    "Stored",
    "import_lines",
    "read_lines",
]

MAX_LINE_BYTES: Final = 1024 * 1024
BATCH: Final = 500
#: Bad lines whose messages a report keeps (and ``sqreen import`` prints); the rest counted.
MAX_BAD_KEPT: Final = 50
#: What the collector adds to a wire event in its JSON lines (``StoredEvent.to_json``).
COLLECTOR_KEYS: Final = frozenset(
    {"seq", "received_at", "app", "host", "severity", "ip_info", "enrichment"}
)
#: The longest app or host name kept from a line (as an SDK's batch may send).
MAX_NAME: Final = 256


class Stored(NamedTuple):
    """What a line of the collector's own JSON lines says beyond the wire event (None for
    what it does not say; every field None for any other line)."""

    app: str | None = None
    host: str | None = None
    received_at: datetime | None = None
    #: What the collector's enrichers had added (ip_info among them); None: not said.
    enrichment: dict[str, Any] | None = None


NOT_STORED: Final = Stored()


def read_lines(stream: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of ``stream``, a line longer than ``limit`` cut there (and then refused by
    :func:`import_lines`) instead of read whole into memory."""
    while line := stream.readline(limit + 1):
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := stream.readline(limit)) and not rest.endswith(b"\n"):
                pass
        yield line


@dataclass
class ImportReport:
    lines: int = 0
    stored: int = 0
    duplicates: int = 0
    traits: int = 0  # sq.identify records read (their users' traits)
    bad_lines: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)  # the first MAX_BAD_KEPT
    #: The lines read up to this one are all committed (their events, their traits).
    committed_lines: int = 0


class ImportStopped(Exception):
    """The database refused a write; ``report`` counts what was committed before it, and
    ``reason`` is the database's message."""

    def __init__(self, report: ImportReport, reason: str) -> None:
        super().__init__(reason)
        self.report = report
        self.reason = reason


def _event(line: bytes, seen: dict[int, int]) -> tuple[WireEvent, Stored]:
    """The event of ``line``, and what the collector had stored with it when ``line`` is one
    of its own JSON lines. One without an ``id`` gets ``imp_`` and 40 hex digits of the
    hash of its content; the nth identical line of the file (n > 1, counted in ``seen``)
    gets ``_n`` after them."""
    if len(line) > MAX_LINE_BYTES:
        raise InvalidEvent("line", "too_long", f"over {MAX_LINE_BYTES} bytes")
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise InvalidEvent("line", "json", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent("line", "json", "malformed JSON: nested too deeply") from None
    stored = _collector_fields(obj)
    if not isinstance(obj, dict) or "id" in obj:
        return parse_event(obj), stored
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).digest()
    # Counted by 8 bytes of the hash (about 90 bytes of memory a distinct line): two
    # contents that shared them would only number the second one's first copy 2, still an
    # id of its own and the same at every import of the file.
    key = int.from_bytes(digest[:8], "big")
    nth = seen.get(key, 0) + 1
    # The first copy keeps the id that earlier releases gave every copy: a file imported by
    # one of them, imported again, stores the copies they merged and nothing else.
    obj["id"] = f"imp_{digest.hex()[:40]}" + (f"_{nth}" if nth > 1 else "")
    event = parse_event(obj)
    seen[key] = nth  # a bad line counts for nothing
    return event, stored


def _collector_fields(obj: object) -> Stored:
    """When ``obj`` is one of the collector's JSON lines (it holds ``seq`` and
    ``received_at``, as every one does), take the collector's keys out of it and return
    what they say; any other ``obj`` is left whole, for :func:`parse_event` to refuse keys it
    does not know."""
    if not isinstance(obj, dict) or "seq" not in obj or "received_at" not in obj:
        return NOT_STORED
    fields = {key: obj.pop(key) for key in COLLECTOR_KEYS & obj.keys()}
    if type(fields["seq"]) is not int:
        raise InvalidEvent("seq", "type", "must be an integer")
    received_at = parse_timestamp(fields["received_at"], "received_at")
    names = []
    for key in ("app", "host"):
        value = fields.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_NAME):
            raise InvalidEvent(key, "type", f"must be a string of at most {MAX_NAME} characters")
        names.append(value)
    enrichment = fields.get("enrichment")
    if enrichment is not None and not isinstance(enrichment, dict):
        raise InvalidEvent("enrichment", "type", "must be an object")
    ip_info = fields.get("ip_info")
    if ip_info is not None:
        ip_info = checked_ip_info(ip_info)
    # What the collector stored, nothing added: a line without ip_info had none (no address,
    # or none known then), and history is not enriched again.
    kept = dict(enrichment or {})
    kept.pop("ip_info", None)  # to_json writes it apart: only that one is the event's
    if ip_info is not None:
        kept["ip_info"] = ip_info
    return Stored(names[0], names[1], received_at, kept)


def _refused(exc: Exception) -> bool:
    """Whether ``exc`` is the database refusing a write (its drivers' ``OperationalError``)
    rather than a bug; psycopg is looked at only once the storage has imported it."""
    if isinstance(exc, sqlite3.OperationalError):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.OperationalError)


def import_lines(
    storage: Storage,
    lines: Iterable[bytes],
    *,
    app: str | None = None,
    batch_size: int = BATCH,
    progress: Callable[[int], None] | None = None,
    intel: IpIntel | None = None,
    keep_received: bool = False,
) -> ImportReport:
    """Validate and store ``lines`` (blank ones skipped); ``progress`` gets each line's size.
    ``app`` names the app of events whose line does not; ``keep_received`` keeps the receipt
    times of the collector's own lines (else the import's time)."""
    report = ImportReport()
    batch: list[tuple[WireEvent, Stored]] = []
    identities: list[WireEvent] = []
    seen: dict[int, int] = {}  # the lines without an id so far, by their content's hash

    def enriched(event: WireEvent, stored: Stored) -> dict[str, Any]:
        if stored.enrichment is not None:  # as the collector stored it: not enriched again
            return stored.enrichment
        info = None if intel is None else intel.info((event["request"] or {}).get("ip"))
        return {"ip_info": info} if info is not None else {}

    def store(todo: list[tuple[WireEvent, Stored]]) -> None:
        # One insert for each app, host (and receipt time, when kept) in the batch.
        groups: dict[tuple[str | None, str | None, datetime | None], list[int]] = {}
        for n, (_, stored) in enumerate(todo):
            received = stored.received_at if keep_received else None
            groups.setdefault((stored.app or app, stored.host, received), []).append(n)
        for (group_app, host, received), members in groups.items():
            events = [todo[n][0] for n in members]
            extra = [enriched(*todo[n]) for n in members]
            result = storage.insert_events(
                events, app=group_app, host=host, received_at=received, enrichment=extra
            )
            report.stored += result.stored
            report.duplicates += result.duplicates

    def flush() -> None:
        try:
            if batch:
                # Ids are unique per API key, and an import has none: what an SDK sent
                # already (an export of this collector imported back) is skipped too.
                ids = [event["id"] for event, _ in batch]
                known = set[str]().union(
                    *(storage.stored_ids(ids[i : i + MAX_IDS]) for i in range(0, len(ids), MAX_IDS))
                )
                fresh = [item for item in batch if item[0]["id"] not in known]
                report.duplicates += len(batch) - len(fresh)
                if fresh:
                    store(fresh)
                batch.clear()
            if identities:
                storage.record_traits(identities)
                report.traits += len(identities)
                identities.clear()
        except Exception as exc:
            if _refused(exc):
                # The first line: PostgreSQL's next ones quote the statement.
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ImportStopped(report, reason) from exc
            raise
        report.committed_lines = report.lines

    for number, line in enumerate(lines, 1):
        report.lines = number
        if progress is not None:
            progress(len(line))
        if not line.strip():
            continue
        try:
            event, stored = _event(line, seen)
            if stored is NOT_STORED:  # a wire event: named as at ingest (never a derived name)
                event["name"] = standard_name(event["name"])
            else:  # the collector's own line: what it stores now (a derived name kept)
                event["name"] = stored_name(event["name"])
        except InvalidEvent as exc:
            report.bad_lines += 1
            if len(report.bad) < MAX_BAD_KEPT:
                report.bad.append((number, str(exc)))
            continue
        if event["name"] == IDENTIFY:
            identities.append(event)
        else:
            batch.append((event, stored))
        if len(batch) + len(identities) >= batch_size:
            flush()
    if batch or identities:
        flush()
    report.committed_lines = report.lines
    return report
