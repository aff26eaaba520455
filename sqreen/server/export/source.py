"""Reading the stored JSON an export maps: what ``sqreen events --json`` prints for an event
(with ``ip_info``) and ``sqreen alerts --json`` for an alert. Both schemas' mappings
(:mod:`.ecs`, :mod:`.ocsf`) take these plain dicts, so that a file of them maps the same as
the database does, and ask this module the same questions: when, who, from where, and how
it ended."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal

from ... import events as names

__all__ = [
    "Outcome",
    "Severity",
    "alert_address",
    "compact",
    "epoch_ms",
    "outcome",
    "request_field",
    "severity",
    "user_email",
    "user_id",
    "user_name",
]

Outcome = Literal["success", "failure", "unknown"]
Severity = names.Severity

#: The user identifier keys read as an id, a name and an email, first present wins (SDKs
#: send ``username`` from ``auth_track``, ``uid`` from ``track(user_identifiers=...)``).
ID_KEYS: Final = ("uid", "id", "user_id")
NAME_KEYS: Final = ("username", "name", "login", "email")
EMAIL_KEYS: Final = ("email",)


def epoch_ms(stamp: str) -> int:
    """A stored ISO 8601 time as milliseconds since the epoch (OCSF's ``timestamp_t``)."""
    return int(datetime.fromisoformat(stamp).timestamp() * 1000)


def _first(user: Mapping[str, Any] | None, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if user and user.get(key) not in (None, ""):
            return str(user[key])
    return None


def user_id(doc: Mapping[str, Any]) -> str | None:
    return _first(doc.get("user"), ID_KEYS)


def user_name(doc: Mapping[str, Any]) -> str | None:
    return _first(doc.get("user"), NAME_KEYS)


def user_email(doc: Mapping[str, Any]) -> str | None:
    return _first(doc.get("user"), EMAIL_KEYS)


def request_field(doc: Mapping[str, Any], key: str) -> Any:
    """A field of the captured request (``ip``, ``method``, ``path``, ``user_agent``...)."""
    request = doc.get("request")
    return request.get(key) if isinstance(request, Mapping) else None


def alert_address(doc: Mapping[str, Any]) -> str | None:
    """The address an alert grouped by ``ip`` is about, or None: a playbook groups IPv6
    addresses by network (``2001:db8:1:2::/64``), which no address field of ECS or OCSF
    holds (the network stays in the alert's ``group_key``)."""
    key = doc["group_key"]
    return key if doc["group_by"] == "ip" and "/" not in key else None


def outcome(name: str) -> Outcome:
    """How the event says its action ended, from its standard name's last word."""
    last = name.rpartition(".")[2]
    if last in ("success", "granted"):
        return "success"
    if last in ("failure", "denied", "blocked", "limited"):
        return "failure"
    return "unknown"


def severity(name: str) -> Severity:
    """``info``, ``warning`` or ``critical`` (:func:`sqreen.events.severity`)."""
    return names.severity(name)


def compact(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` without its None fields, and without the objects left empty by that (a
    field is emitted only when the stored record has it)."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            item = compact(item)
        if item is not None and item != {} and item != []:
            out[key] = item
    return out
