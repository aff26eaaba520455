"""One field of a ``[[playbook]]`` table checked into its value (:mod:`._config` puts them
together into a :class:`~._config.Playbook`): integers in range, durations, event names,
field paths, ``where`` clauses, exemptions and webhook URLs. Each refuses a value with a
:class:`FieldError` naming the field, which the loader turns into an error with the line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlsplit

from ..._blocking import fold_identifier
from ..._event import InvalidEvent, validate_name, validate_user
from ..._ip_syntax import normalize_ip
from ..._text import visible
from ...events import stored_name
from ..blocks import InvalidBlock, parse_duration
from ..storage import clean
from ..storage.model import MAX_SCORE, ip_info_value
from ._fields import AtLeast, FieldPath, InNetwork, parse_field, user_key

__all__ = [
    "FieldError",
    "check_duration",
    "check_events",
    "check_exempt_ips",
    "check_exempt_users",
    "check_field",
    "check_int",
    "check_notify",
    "check_where",
    "required",
    "shown",
]

MAX_EVENTS: Final = 32
MAX_WHERE: Final = 16
MAX_VALUES: Final = 256
MAX_NOTIFY: Final = 8
MAX_EXEMPT: Final = 1024


class FieldError(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def required(table: dict[str, Any], key: str) -> Any:
    if key not in table:
        raise FieldError(key, "missing")
    return table[key]


def check_int(table: dict[str, Any], key: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise FieldError(key, f"must be an integer from {low} to {high}, not {value!r}"[:200])
    return value


def check_duration(key: str, value: object, most: timedelta | None) -> timedelta:
    try:
        return parse_duration(value, key, *(() if most is None else (most,)))
    except InvalidBlock as exc:
        raise FieldError(key, exc.message) from None


def check_events(table: dict[str, Any], key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_EVENTS:
        raise FieldError(key, f"must be a list of 1 to {MAX_EVENTS} event names")
    names = []
    for name in value:
        try:
            # LiteSOC's other spellings are stored under the standard name: read as it.
            names.append(stored_name(validate_name(name)))
        except InvalidEvent as exc:
            raise FieldError(key, f"{name!r}: {str(exc).partition(': ')[2]}"[:200]) from None
    return tuple(dict.fromkeys(names))


def check_field(table: dict[str, Any], key: str, value: object) -> FieldPath:
    try:
        return parse_field(value)
    except ValueError as exc:
        raise FieldError(key, str(exc)) from None


def check_where(table: dict[str, Any]) -> tuple[tuple[FieldPath, frozenset[str]], ...]:
    where = table.get("where", {})
    if not isinstance(where, dict) or len(where) > MAX_WHERE:
        raise FieldError("where", f"must be a table of at most {MAX_WHERE} fields")
    out = []
    for name, wanted in where.items():
        path = check_field(table, "where", name)
        if (
            path.kind == "user"  # identifiers, as blocks and groups compare them
            or (path.kind == "ip_info" and path.key == "provider")  # a name, in any case
            or (path.kind == "request" and path.key == "method")  # "post" is POST
        ):
            path = dataclasses.replace(path, fold=True)
        values = wanted if isinstance(wanted, list) else [wanted]
        if not values or len(values) > MAX_VALUES:
            raise FieldError("where", f"{name}: 1 to {MAX_VALUES} values")
        texts: set[str] = set()
        for value in values:
            if isinstance(value, dict):  # { at_least = 60 }: a lower bound, for numbers
                bound = value.get("at_least")
                if (
                    set(value) != {"at_least"}
                    or not isinstance(bound, int | float)
                    or isinstance(bound, bool)
                ):
                    raise FieldError("where", f"{name}: a table must be {{ at_least = <number> }}")
                texts.add(_lower_bound(path, name, bound))
                continue
            text = _as_text(value)
            if text is None:
                raise FieldError("where", f"{name}: {value!r} is not a string, number or bool")
            texts.add(_as_stored(path, name, text))
        out.append((path, frozenset(texts)))
    return tuple(out)


def _lower_bound(path: FieldPath, name: str, bound: float) -> AtLeast:
    """``{ at_least = bound }`` for the field ``name``: of IP intelligence's fields only
    the numbers take one, the score within its range (a bound no event can reach is
    refused rather than never matching)."""
    if path.kind == "ip_info":
        if path.key not in ("score", "asn"):
            raise FieldError("where", f"{name}: at_least is for numbers (ip.score, ip.asn)")
        if path.key == "score" and not 0 <= bound <= MAX_SCORE:
            raise FieldError("where", f"{name}: at_least must be from 0 to {MAX_SCORE}")
    return AtLeast(bound)


def _as_stored(path: FieldPath, name: str, text: str) -> str:
    """A ``where`` value as events store it, where the collector stores one spelling: an
    event name's standard one (``login.failure`` is stored as ``auth.login.failure``), an IP
    field's as the explorer's filters take it (``"ip.country" = "gb"`` is ``GB``), an
    address's canonical text (``2001:DB8:0::1`` is ``2001:db8::1``); a user's identifiers
    folded as blocks and groups compare them (``Admin`` is ``admin``); a value no event can
    have is refused rather than never matching."""
    if path.kind == "name":
        return stored_name(text)
    if path.kind == "ip":
        return _address(name, text)
    if path.kind == "user":
        return clean(fold_identifier(text)) if path.key is not None else _user(name, text)
    if path.fold:
        return text.casefold()
    if path.kind == "ip_info" and path.key is not None:
        try:
            return ip_info_value(path.key, text)
        except ValueError as exc:
            raise FieldError("where", f"{name}: {text[:60]!r} {exc}") from None
    return text


def _address(name: str, text: str) -> str:
    """An address in ``where`` as events store one (their canonical text), or a network
    that holds the addresses it matches (:class:`~._fields.InNetwork`)."""
    if "/" in text:
        try:
            return InNetwork(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            pass
    else:
        address = normalize_ip(text)
        if address is not None:
            return address
    raise FieldError(
        "where", f"{name}: {text[:60]!r} is not an IP address or network (CIDR, e.g. 10.0.0.0/8)"
    )


def _user(name: str, text: str) -> str:
    """``where.user``: all of a user's identifiers, as JSON (``'{"uid": "42"}'``), as a
    ``group_by = "user"`` key holds them (folded, keys sorted)."""
    try:
        identifiers = json.loads(text)
    except ValueError:
        identifiers = None
    if not isinstance(identifiers, dict) or not identifiers:
        raise FieldError(
            "where",
            f"{name}: {text[:60]!r} is not a user's identifiers as a JSON object "
            '(e.g. \'{"uid": "42"}\'); for one identifier, use user.<key>',
        )
    try:
        user = validate_user(identifiers, "where")
    except InvalidEvent as exc:
        raise FieldError("where", f"{name}: {exc}") from None
    return user_key(user or {})


def _as_text(value: object) -> str | None:
    """A ``where`` value as the text events are compared in (as the storage indexes them)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def check_exempt_ips(
    table: dict[str, Any],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    raw = table.get("exempt_ips", [])
    if not isinstance(raw, list) or len(raw) > MAX_EXEMPT:
        raise FieldError("exempt_ips", f"must be a list of at most {MAX_EXEMPT} networks")
    out = []
    for entry in raw:
        try:
            out.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise FieldError("exempt_ips", f"{str(entry)[:60]!r} is not an IP or CIDR") from None
    return tuple(out)


def check_exempt_users(table: dict[str, Any]) -> tuple[dict[str, str], ...]:
    raw = table.get("exempt_users", [])
    if not isinstance(raw, list) or len(raw) > MAX_EXEMPT:
        raise FieldError("exempt_users", f"must be a list of at most {MAX_EXEMPT} tables")
    out = []
    for entry in raw:
        try:
            user = validate_user(entry, "exempt_users")
        except InvalidEvent as exc:
            raise FieldError("exempt_users", str(exc).partition(": ")[2]) from None
        if not user:
            raise FieldError("exempt_users", "each entry names identifiers, e.g. { uid = '1' }")
        out.append(user)
    return tuple(out)


def check_notify(table: dict[str, Any]) -> tuple[str, ...]:
    raw = table.get("notify", [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or len(raw) > MAX_NOTIFY:
        raise FieldError("notify", f"must be a list of at most {MAX_NOTIFY} URLs")
    urls: dict[tuple[Any, ...], str] = {}  # one receiver -> its URL as first written
    for url in raw:
        try:
            parts = urlsplit(url) if isinstance(url, str) else None
            port = None if parts is None else parts.port
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            # Said as logs say a webhook (its token is often in the path or the query).
            said = shown(url) if isinstance(url, str) else f"a value of type {type(url).__name__}"
            raise FieldError("notify", f"not an http(s) URL: {said}")
        # The same receiver named twice (its host in another case, an empty query, the
        # scheme's own port) is sent each alert once.
        port = port or (443 if parts.scheme == "https" else 80)
        same = (parts.scheme, parts.username, parts.password, parts.hostname, port)
        # (A fragment is never sent: the same receiver too.)
        urls.setdefault((*same, parts.path or "/", parts.query), url)
    return tuple(urls.values())


def shown(url: str) -> str:
    """``url`` as logs say it: its scheme, host and port, the rest elided. A webhook's URL
    is often its secret (Slack's and Teams' carry their token in the path; others put one
    in the query, or credentials before the host)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[bad": nothing of it is said
        return "a URL that cannot be read"
    if not parts.netloc:  # "xoxb-token:x", "bot:password@hooks...": no scheme nor host to say
        return "a text that is no URL"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    rest = "/..." if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return visible(f"{parts.scheme}://{host}{port}{rest}")[:200]
