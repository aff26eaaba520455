"""Playbooks as written in a TOML file, checked into :class:`Playbook` values.

::

    [[playbook]]
    id = "brute-force-ip"                 # stable, unique
    events = ["auth.login.failure"]       # one or more event names
    where = { "request.route" = "/login" }  # optional: equality (a list: any of), or for a
                                          # number { at_least = n }: "ip.score" = { at_least = 60 }
    group_by = "ip"                       # ip, user, user.<key>, properties.<key>, ...
                                          # (ip: an IPv6 address counts as its /64)
    threshold = 5                         # matching events in the window ...
    # distinct = "user"                   # ... or distinct values of a field (stuffing)
    window = "5m"
    action = "block_ip"                   # block_ip, block_user, or alert
    duration = "1h"                       # how long a block lasts
    mode = "enforce"                      # or monitor: the alert, no block

A file that does not hold is refused whole, with the line and the reason
(:class:`PlaybookError`): at start, ``sqreen serve`` stops; on a reload, the previous set is
kept and the error logged.

Here: the file read, its TOML parsed, each table's fields put together into a
:class:`Playbook` (the rules between fields), and the line of an error found. Each field's
own value is checked in :mod:`._values`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal

from ...events import DERIVED_EVENTS
from ._fields import IPV6_PREFIX, FieldPath
from ._values import (
    FieldError,
    check_duration,
    check_events,
    check_exempt_ips,
    check_exempt_users,
    check_field,
    check_int,
    check_notify,
    check_where,
    required,
)

__all__ = [
    "After",
    "Playbook",
    "PlaybookError",
    "PlaybookSet",
    "load_playbooks",
    "parse_playbooks",
    "read_playbooks",
]

Action = Literal["block_ip", "block_user", "alert"]
Mode = Literal["enforce", "monitor"]

ACTIONS: Final = ("block_ip", "block_user", "alert")
MODES: Final = ("enforce", "monitor")
MAX_PLAYBOOKS: Final = 256
MAX_THRESHOLD: Final = 1_000_000
MAX_WINDOW: Final = timedelta(days=30)
MAX_FILE_BYTES: Final = 1024 * 1024
#: The widest IPv6 network a playbook groups by: SDKs refuse blocks of wider ones.
MIN_IPV6_PREFIX: Final = 48
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEYS: Final = frozenset(
    {
        "id", "description", "events", "where", "group_by", "threshold", "distinct",
        "max_per_value", "after", "window", "action", "duration", "mode", "cooldown",
        "exempt_ips", "exempt_users", "notify", "ipv6_prefix", "block_private",
    }
)  # fmt: skip
_TOP_KEYS: Final = frozenset({"playbook", "webhook_secret"})
#: The webhooks' secret when the file names none.
SECRET_VARIABLE: Final = "SQREEN_WEBHOOK_SECRET"


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
    #: Whether a ``block_ip`` playbook blocks private, carrier-grade NAT and link-local
    #: addresses too (:data:`~..blocks.INTERNAL_NETWORKS`): by default it alerts on them
    #: without a block, as such an address is most often a proxy the SDKs do not trust,
    #: which every client would then share.
    block_private: bool = False

    @property
    def blocks(self) -> bool:
        """Whether a firing creates a block (an enforcing block action)."""
        return self.mode == "enforce" and self.action != "alert"

    @property
    def counts_once(self) -> bool:
        """Whether the events behind an alert count for nothing again for its key (an
        ``alert`` playbook): a new alert needs ``threshold`` matching events after them (an
        ``after`` rule: a new event of its own), however soon. A time of quiet instead
        would let anybody holding an ingest key pre-empt a real attack's alert with forged
        events."""
        return self.action == "alert"

    @property
    def quiet_for(self) -> timedelta:
        """How long one group key stays quiet after an alert: while its block lasts (a
        block action), or the cooldown; default, for an ``alert`` playbook, none (see
        :attr:`counts_once`)."""
        if self.cooldown is not None:
            return self.cooldown
        if self.action != "alert" and self.duration is not None:
            return self.duration
        return timedelta(0) if self.counts_once else self.window

    @property
    def quiet_id(self) -> str:
        """What its quiet times are kept under: its id, and another name in monitor mode
        (``@`` is in no id), so that what it alerted on while monitoring is not left quiet
        once it enforces: switched to ``enforce``, it blocks a key it had alerted on at its
        next event, as it would a new one."""
        return self.id if self.mode == "enforce" else f"{self.id}@monitor"

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
        """The event names SDKs send at once rather than on their flush interval: those the
        playbooks read (those that block, by default), an event the collector derives
        (``security.impossible_travel``) as those it derives it from (``auth.login.success``:
        :data:`sqreen.events.DERIVED_EVENTS`), which are what SDKs send."""
        return frozenset(
            source
            for p in self.playbooks
            if p.blocks or not enforcing_only
            for name in p.watched
            for source in DERIVED_EVENTS.get(name, (name,))
        )


def load_playbooks(path: str | Path) -> PlaybookSet:
    """Read and check the playbook file at ``path``; :class:`PlaybookError` if it does not
    hold (the message names the file and the line)."""
    return parse_playbooks(read_playbooks(path), str(path))


def read_playbooks(path: str | Path) -> str:
    """The text of the playbook file at ``path``, unchecked; :class:`PlaybookError` if it
    cannot be read, is too large, or is not UTF-8."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PlaybookError(f"cannot read it: {exc.strerror or exc}", source=source) from None
    if len(data) > MAX_FILE_BYTES:
        raise PlaybookError(f"over {MAX_FILE_BYTES // 1024} KiB", source=source)
    try:
        # utf-8-sig: the byte-order mark some editors (Notepad) write first is no TOML.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PlaybookError(
            f"not UTF-8 (byte 0x{data[exc.start]:02x}: {exc.reason}): save it as UTF-8",
            line,
            source,
        ) from None
    return text


def parse_playbooks(text: str, source: str = "playbooks.toml") -> PlaybookSet:
    try:
        return _parse_playbooks(text, source)
    except RecursionError:  # tomllib (or a value's check) past Python's recursion limit
        raise PlaybookError(
            "a value nests too deeply to read (no field takes more than a list of values)",
            None,
            source,
        ) from None


def _parse_playbooks(text: str, source: str) -> PlaybookSet:
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
        except FieldError as exc:
            name = table.get("id") if isinstance(table, dict) else None
            # (an id refused for its length is said by its start: it may be 10 000 characters)
            shown = name if not isinstance(name, str) or len(name) <= 64 else name[:64] + "..."
            label = f"playbook {shown!r}" if isinstance(name, str) else f"playbook #{index + 1}"
            misplaced = _misplaced(table, exc.key)
            if misplaced is not None:  # a field written after a [playbook.where] header
                key, sub = misplaced
                raise PlaybookError(
                    f"{label}: {key} is inside [playbook.{sub}]: TOML puts every line after a "
                    f"table's header in that table; write {key} above the header",
                    locate.field(index, key),
                    source,
                ) from None
            raise PlaybookError(f"{label}: {exc}", locate.field(index, exc.key), source) from None
        if playbook.id in seen:
            raise PlaybookError(
                f"playbook {playbook.id!r}: id: used twice", locate.field(index, "id"), source
            )
        seen.add(playbook.id)
        playbooks.append(playbook)
        if playbook.notify and secret is None and not os.environ.get(SECRET_VARIABLE):
            # An unsigned post is one anybody who can reach the receiver can forge.
            raise PlaybookError(
                f"playbook {playbook.id!r}: notify: its posts are signed, so the file needs "
                f"webhook_secret at its top (or {SECRET_VARIABLE} in the environment)",
                locate.field(index, "notify"),
                source,
            )
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


def _misplaced(table: object, key: str) -> tuple[str, str] | None:
    """``(field, sub-table)`` when the error on ``key`` comes of a playbook's field written in
    its ``where`` or ``after`` table (after their ``[playbook.where]`` header): the field
    missing from the playbook and found there, or the sub-table refusing a playbook field."""
    if not isinstance(table, dict):
        return None
    for sub in ("where", "after"):
        inner = table.get(sub)
        if not isinstance(inner, dict):
            continue
        if key in _KEYS and key not in table and key in inner:
            return key, sub
        if key == sub:
            stray = sorted(k for k in inner if k in _KEYS and k not in table)
            if stray:
                return stray[0], sub
    return None


def _playbook(table: object) -> Playbook:
    if not isinstance(table, dict):
        raise FieldError("playbook", "must be a table")
    for key in table:
        if key not in _KEYS:
            raise FieldError(key, f"unknown field; known: {', '.join(sorted(_KEYS))}")
    pid = required(table, "id")
    if not isinstance(pid, str) or not _ID_RE.fullmatch(pid):
        raise FieldError("id", "letters, digits, '.', '_' and '-', at most 64")
    events = check_events(table, "events", required(table, "events"))
    group_by = check_field(table, "group_by", required(table, "group_by"))
    threshold = check_int(table, "threshold", required(table, "threshold"), 1, MAX_THRESHOLD)
    window = check_duration("window", required(table, "window"), MAX_WINDOW)
    action = required(table, "action")
    if action not in ACTIONS:
        raise FieldError("action", f"{action!r} is not one of {', '.join(ACTIONS)}")
    mode = table.get("mode", "enforce")
    if mode not in MODES:
        raise FieldError("mode", f"{mode!r} is not one of {', '.join(MODES)}")
    duration = None
    if action != "alert":
        duration = check_duration("duration", required(table, "duration"), None)
    elif "duration" in table:
        raise FieldError("duration", "an alert creates no block: remove it")
    if action == "block_ip" and group_by.kind != "ip":
        raise FieldError("group_by", 'block_ip blocks the group\'s IP: use group_by = "ip"')
    if action == "block_user" and group_by.kind != "user":
        raise FieldError("group_by", 'block_user needs group_by = "user" or "user.<key>"')
    distinct = None
    if "distinct" in table:
        distinct = check_field(table, "distinct", table["distinct"])
        if distinct == group_by:
            raise FieldError("distinct", "must differ from group_by")
    max_per_value = None
    if "max_per_value" in table:
        if distinct is None:
            raise FieldError("max_per_value", "counts each distinct value: set distinct too")
        max_per_value = check_int(table, "max_per_value", table["max_per_value"], 1, MAX_THRESHOLD)
    after = _after(table) if "after" in table else None
    if after is not None and distinct is not None:
        raise FieldError("after", "cannot be combined with distinct")
    prefix = _ipv6_prefix(table, group_by, distinct)
    if group_by.kind == "ip":
        group_by = replace(group_by, ipv6_prefix=prefix)
    if distinct is not None and distinct.kind == "ip":
        distinct = replace(distinct, ipv6_prefix=prefix)
    cooldown = check_duration("cooldown", table["cooldown"], None) if "cooldown" in table else None
    description = table.get("description", "")
    if not isinstance(description, str) or len(description) > 1024:
        raise FieldError("description", "must be a string of at most 1024 characters")
    block_private = table.get("block_private", False)
    if not isinstance(block_private, bool):
        raise FieldError("block_private", "must be true or false")
    if "block_private" in table and action != "block_ip":
        raise FieldError("block_private", 'applies to action = "block_ip" only')
    return Playbook(
        id=pid,
        events=events,
        group_by=group_by,
        threshold=threshold,
        window=window,
        action=action,
        duration=duration,
        mode=mode,
        where=check_where(table),
        distinct=distinct,
        max_per_value=max_per_value,
        after=after,
        cooldown=cooldown,
        exempt_ips=check_exempt_ips(table),
        exempt_users=check_exempt_users(table),
        notify=check_notify(table),
        description=description,
        block_private=block_private,
    )


def _ipv6_prefix(table: dict[str, Any], group_by: FieldPath, distinct: FieldPath | None) -> int:
    """``ipv6_prefix``: the IPv6 network an address counts under where the playbook groups
    by ``ip`` or counts distinct ones (64 by default; 128: each address apart)."""
    if "ipv6_prefix" not in table:
        return IPV6_PREFIX
    if group_by.kind != "ip" and (distinct is None or distinct.kind != "ip"):
        raise FieldError("ipv6_prefix", 'applies to group_by = "ip" or distinct = "ip" only')
    return check_int(table, "ipv6_prefix", table["ipv6_prefix"], MIN_IPV6_PREFIX, 128)


def _after(table: dict[str, Any]) -> After:
    after = table["after"]
    if not isinstance(after, dict) or set(after) - {"events", "threshold"}:
        raise FieldError("after", "must be { events = [...], threshold = n }")
    events = check_events(table, "after", required(after, "events"))
    threshold = check_int(table, "after", required(after, "threshold"), 1, MAX_THRESHOLD)
    return After(events, threshold)


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
