"""Playbooks as written in a TOML file, checked into :class:`Playbook` values.

::

    [[playbook]]
    id = "brute-force-ip"                 # stable, unique
    events = ["auth.login.failure"]       # one or more event names
    where = { "request.path" = "/login" } # optional: equality (a list: any of), or for a
                                          # number { at_least = n }: "ip.score" = { at_least = 60 }
    group_by = "ip"                       # ip, user, user.<key>, properties.<key>, ...
    threshold = 5                         # matching events in the window ...
    # distinct = "user"                   # ... or distinct values of a field (stuffing)
    window = "5m"
    action = "block_ip"                   # block_ip, block_user, or alert
    duration = "1h"                       # how long a block lasts
    mode = "enforce"                      # or monitor: the alert, no block

A file that does not hold is refused whole, with the line and the reason
(:class:`PlaybookError`): at start, ``sqreen serve`` stops; on a reload, the previous set is
kept and the error logged.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from ..._event import InvalidEvent, validate_name, validate_user
from ..blocks import InvalidBlock, parse_duration
from ._fields import AtLeast, FieldPath, parse_field

__all__ = [
    "After",
    "Playbook",
    "PlaybookError",
    "PlaybookSet",
    "load_playbooks",
    "parse_playbooks",
]

Action = Literal["block_ip", "block_user", "alert"]
Mode = Literal["enforce", "monitor"]

ACTIONS: Final = ("block_ip", "block_user", "alert")
MODES: Final = ("enforce", "monitor")
MAX_PLAYBOOKS: Final = 256
MAX_EVENTS: Final = 32
MAX_WHERE: Final = 16
MAX_VALUES: Final = 256
MAX_NOTIFY: Final = 8
MAX_EXEMPT: Final = 1024
MAX_THRESHOLD: Final = 1_000_000
MAX_WINDOW: Final = timedelta(days=30)
MAX_FILE_BYTES: Final = 1024 * 1024
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEYS: Final = frozenset(
    {
        "id", "description", "events", "where", "group_by", "threshold", "distinct",
        "max_per_value", "after", "window", "action", "duration", "mode", "cooldown",
        "exempt_ips", "exempt_users", "notify",
    }
)  # fmt: skip
_TOP_KEYS: Final = frozenset({"playbook", "webhook_secret"})


class PlaybookError(ValueError):
    """A playbook file that cannot be used: ``line`` (1-based, or None) and the reason."""

    def __init__(self, message: str, line: int | None = None, source: str = "") -> None:
        where = f"{source}:{line}: " if source and line else (f"{source}: " if source else "")
        super().__init__(f"{where}{message}")
        self.line = line
        self.reason = message


@dataclass(frozen=True, slots=True)
class After:
    """``after = { events = [...], threshold = n }``: the playbook fires on one of its events
    when at least ``threshold`` of these came first, for the same group, in the window
    (a success after failures: an account taken over)."""

    events: tuple[str, ...]
    threshold: int


@dataclass(frozen=True, slots=True)
class Playbook:
    id: str
    events: tuple[str, ...]
    group_by: FieldPath
    threshold: int
    window: timedelta
    action: Action
    duration: timedelta | None
    mode: Mode = "enforce"
    where: tuple[tuple[FieldPath, frozenset[str]], ...] = ()
    distinct: FieldPath | None = None
    max_per_value: int | None = None
    after: After | None = None
    cooldown: timedelta | None = None
    exempt_ips: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    exempt_users: tuple[dict[str, str], ...] = ()
    notify: tuple[str, ...] = ()
    description: str = ""

    @property
    def blocks(self) -> bool:
        """Whether a firing creates a block (an enforcing block action)."""
        return self.mode == "enforce" and self.action != "alert"

    @property
    def quiet_for(self) -> timedelta:
        """How long one group key stays quiet after an alert: while its block lasts, else
        the cooldown (default: the window)."""
        if self.cooldown is not None:
            return self.cooldown
        if self.action != "alert" and self.duration is not None:
            return self.duration
        return self.window

    @property
    def watched(self) -> frozenset[str]:
        """Every event name this playbook reads."""
        return frozenset(self.events) | frozenset(self.after.events if self.after else ())


@dataclass(frozen=True, slots=True)
class PlaybookSet:
    playbooks: tuple[Playbook, ...] = ()
    webhook_secret: str | None = None
    source: str = ""
    by_event: Mapping[str, tuple[Playbook, ...]] = field(default_factory=dict)

    def watched(self, enforcing_only: bool = True) -> frozenset[str]:
        """The event names the playbooks read (those that block, by default): SDKs send
        them at once rather than on their flush interval."""
        return frozenset(
            name for p in self.playbooks if p.blocks or not enforcing_only for name in p.watched
        )


def load_playbooks(path: str | Path) -> PlaybookSet:
    """Read and check the playbook file at ``path``; :class:`PlaybookError` if it does not
    hold (the message names the file and the line)."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PlaybookError(f"cannot read it: {exc.strerror or exc}", source=source) from None
    if len(data) > MAX_FILE_BYTES:
        raise PlaybookError(f"over {MAX_FILE_BYTES // 1024} KiB", source=source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlaybookError(f"not UTF-8 ({exc.reason})", source=source) from None
    return parse_playbooks(text, source)


def parse_playbooks(text: str, source: str = "playbooks.toml") -> PlaybookSet:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = _decode_line(message, text)
        raise PlaybookError(f"not valid TOML: {message}", line, source) from None
    locate = _Locator(text)
    for key in doc:
        if key not in _TOP_KEYS:
            raise PlaybookError(
                f"unknown key {key!r} (a playbook starts with [[playbook]])",
                locate.top(key),
                source,
            )
    secret = doc.get("webhook_secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise PlaybookError(
            "webhook_secret: must be a non-empty string", locate.top("webhook_secret"), source
        )
    raw = doc.get("playbook", [])
    if not isinstance(raw, list):
        raise PlaybookError(
            "playbook: write each one as [[playbook]]", locate.top("playbook"), source
        )
    if len(raw) > MAX_PLAYBOOKS:
        raise PlaybookError(f"{len(raw)} playbooks, at most {MAX_PLAYBOOKS}", None, source)
    playbooks: list[Playbook] = []
    seen: set[str] = set()
    for index, table in enumerate(raw):
        try:
            playbook = _playbook(table)
        except _FieldError as exc:
            name = table.get("id") if isinstance(table, dict) else None
            label = f"playbook {name!r}" if isinstance(name, str) else f"playbook #{index + 1}"
            raise PlaybookError(f"{label}: {exc}", locate.field(index, exc.key), source) from None
        if playbook.id in seen:
            raise PlaybookError(
                f"playbook {playbook.id!r}: id: used twice", locate.field(index, "id"), source
            )
        seen.add(playbook.id)
        playbooks.append(playbook)
    by_event: dict[str, list[Playbook]] = {}
    for playbook in playbooks:
        for name in sorted(playbook.watched):
            by_event.setdefault(name, []).append(playbook)
    return PlaybookSet(
        tuple(playbooks),
        secret,
        source,
        {name: tuple(found) for name, found in by_event.items()},
    )


class _FieldError(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _playbook(table: object) -> Playbook:
    if not isinstance(table, dict):
        raise _FieldError("playbook", "must be a table")
    for key in table:
        if key not in _KEYS:
            raise _FieldError(key, f"unknown field; known: {', '.join(sorted(_KEYS))}")
    pid = _required(table, "id")
    if not isinstance(pid, str) or not _ID_RE.fullmatch(pid):
        raise _FieldError("id", "letters, digits, '.', '_' and '-', at most 64")
    events = _events(table, "events", _required(table, "events"))
    group_by = _field(table, "group_by", _required(table, "group_by"))
    threshold = _int(table, "threshold", _required(table, "threshold"), 1, MAX_THRESHOLD)
    window = _duration("window", _required(table, "window"), MAX_WINDOW)
    action = _required(table, "action")
    if action not in ACTIONS:
        raise _FieldError("action", f"{action!r} is not one of {', '.join(ACTIONS)}")
    mode = table.get("mode", "enforce")
    if mode not in MODES:
        raise _FieldError("mode", f"{mode!r} is not one of {', '.join(MODES)}")
    duration = None
    if action != "alert":
        duration = _duration("duration", _required(table, "duration"), None)
    elif "duration" in table:
        raise _FieldError("duration", "an alert creates no block: remove it")
    if action == "block_ip" and group_by.kind != "ip":
        raise _FieldError("group_by", 'block_ip blocks the group\'s IP: use group_by = "ip"')
    if action == "block_user" and group_by.kind != "user":
        raise _FieldError("group_by", 'block_user needs group_by = "user" or "user.<key>"')
    distinct = None
    if "distinct" in table:
        distinct = _field(table, "distinct", table["distinct"])
        if distinct == group_by:
            raise _FieldError("distinct", "must differ from group_by")
    max_per_value = None
    if "max_per_value" in table:
        if distinct is None:
            raise _FieldError("max_per_value", "counts each distinct value: set distinct too")
        max_per_value = _int(table, "max_per_value", table["max_per_value"], 1, MAX_THRESHOLD)
    after = _after(table) if "after" in table else None
    if after is not None and distinct is not None:
        raise _FieldError("after", "cannot be combined with distinct")
    cooldown = _duration("cooldown", table["cooldown"], None) if "cooldown" in table else None
    description = table.get("description", "")
    if not isinstance(description, str) or len(description) > 1024:
        raise _FieldError("description", "must be a string of at most 1024 characters")
    return Playbook(
        id=pid,
        events=events,
        group_by=group_by,
        threshold=threshold,
        window=window,
        action=action,
        duration=duration,
        mode=mode,
        where=_where(table),
        distinct=distinct,
        max_per_value=max_per_value,
        after=after,
        cooldown=cooldown,
        exempt_ips=_exempt_ips(table),
        exempt_users=_exempt_users(table),
        notify=_notify(table),
        description=description,
    )


def _required(table: dict[str, Any], key: str) -> Any:
    if key not in table:
        raise _FieldError(key, "missing")
    return table[key]


def _int(table: dict[str, Any], key: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _FieldError(key, f"must be an integer from {low} to {high}, not {value!r}"[:200])
    return value


def _duration(key: str, value: object, most: timedelta | None) -> timedelta:
    try:
        duration = parse_duration(value, key)
    except InvalidBlock as exc:
        raise _FieldError(key, exc.message) from None
    if most is not None and duration > most:
        raise _FieldError(key, f"at most {most.days} days")
    return duration


def _events(table: dict[str, Any], key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_EVENTS:
        raise _FieldError(key, f"must be a list of 1 to {MAX_EVENTS} event names")
    names = []
    for name in value:
        try:
            names.append(validate_name(name))
        except InvalidEvent as exc:
            raise _FieldError(key, f"{name!r}: {str(exc).partition(': ')[2]}"[:200]) from None
    return tuple(dict.fromkeys(names))


def _field(table: dict[str, Any], key: str, value: object) -> FieldPath:
    try:
        return parse_field(value)
    except ValueError as exc:
        raise _FieldError(key, str(exc)) from None


def _where(table: dict[str, Any]) -> tuple[tuple[FieldPath, frozenset[str]], ...]:
    where = table.get("where", {})
    if not isinstance(where, dict) or len(where) > MAX_WHERE:
        raise _FieldError("where", f"must be a table of at most {MAX_WHERE} fields")
    out = []
    for name, wanted in where.items():
        path = _field(table, "where", name)
        values = wanted if isinstance(wanted, list) else [wanted]
        if not values or len(values) > MAX_VALUES:
            raise _FieldError("where", f"{name}: 1 to {MAX_VALUES} values")
        texts: set[str] = set()
        for value in values:
            if isinstance(value, dict):  # { at_least = 60 }: a lower bound, for numbers
                bound = value.get("at_least")
                if (
                    set(value) != {"at_least"}
                    or not isinstance(bound, int | float)
                    or isinstance(bound, bool)
                ):
                    raise _FieldError("where", f"{name}: a table must be {{ at_least = <number> }}")
                texts.add(AtLeast(bound))
                continue
            text = _as_text(value)
            if text is None:
                raise _FieldError("where", f"{name}: {value!r} is not a string, number or bool")
            texts.add(text)
        out.append((path, frozenset(texts)))
    return tuple(out)


def _as_text(value: object) -> str | None:
    """A ``where`` value as the text events are compared in (as the storage indexes them)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _after(table: dict[str, Any]) -> After:
    after = table["after"]
    if not isinstance(after, dict) or set(after) - {"events", "threshold"}:
        raise _FieldError("after", "must be { events = [...], threshold = n }")
    events = _events(table, "after", _required(after, "events"))
    threshold = _int(table, "after", _required(after, "threshold"), 1, MAX_THRESHOLD)
    return After(events, threshold)


def _exempt_ips(table: dict[str, Any]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    raw = table.get("exempt_ips", [])
    if not isinstance(raw, list) or len(raw) > MAX_EXEMPT:
        raise _FieldError("exempt_ips", f"must be a list of at most {MAX_EXEMPT} networks")
    out = []
    for entry in raw:
        try:
            out.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise _FieldError("exempt_ips", f"{str(entry)[:60]!r} is not an IP or CIDR") from None
    return tuple(out)


def _exempt_users(table: dict[str, Any]) -> tuple[dict[str, str], ...]:
    raw = table.get("exempt_users", [])
    if not isinstance(raw, list) or len(raw) > MAX_EXEMPT:
        raise _FieldError("exempt_users", f"must be a list of at most {MAX_EXEMPT} tables")
    out = []
    for entry in raw:
        try:
            user = validate_user(entry, "exempt_users")
        except InvalidEvent as exc:
            raise _FieldError("exempt_users", str(exc).partition(": ")[2]) from None
        if not user:
            raise _FieldError("exempt_users", "each entry names identifiers, e.g. { uid = '1' }")
        out.append(user)
    return tuple(out)


def _notify(table: dict[str, Any]) -> tuple[str, ...]:
    raw = table.get("notify", [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or len(raw) > MAX_NOTIFY:
        raise _FieldError("notify", f"must be a list of at most {MAX_NOTIFY} URLs")
    for url in raw:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise _FieldError("notify", f"{str(url)[:80]!r} is not an http(s) URL")
    return tuple(raw)


_AT_LINE: Final = re.compile(r"\(at line (\d+), column \d+\)")


def _decode_line(message: str, text: str) -> int | None:
    match = _AT_LINE.search(message)
    if match:
        return int(match[1])
    if "end of document" in message:
        return len(text.splitlines()) or 1
    return None


class _Locator:
    """Finds the line a key sits on, for error messages (tomllib gives values, not lines)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.blocks: list[int] = [
            n for n, line in enumerate(self.lines) if line.strip().startswith("[[playbook]]")
        ]

    def _find(self, key: str, start: int, end: int) -> int | None:
        pattern = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*=""")
        for n in range(start, min(end, len(self.lines))):
            if pattern.match(self.lines[n]):
                return n + 1
        return None

    def top(self, key: str) -> int | None:
        end = self.blocks[0] if self.blocks else len(self.lines)
        found = self._find(key, 0, end)
        if found is None and key == "playbook" and self.blocks:
            return self.blocks[0] + 1
        return found

    def field(self, index: int, key: str) -> int | None:
        if index >= len(self.blocks):
            return None
        start = self.blocks[index]
        end = self.blocks[index + 1] if index + 1 < len(self.blocks) else len(self.lines)
        return self._find(key, start, end) or start + 1
