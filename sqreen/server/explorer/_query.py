"""What a view of the events was asked for, read from (and written back to) its URL.

Every filter lives in the query string, so that a view can be bookmarked and shared:
``/explorer/events?name=auth.login.failure&user=uid%3D42&ip=203.0.113.7&prop=reason%3Dlocked
&country=DE&kind=tor&asn=15169&since=1h&until=2026-11-22T10:00&group=ip&before=1234``
(``country``, ``kind`` and ``asn``: IP intelligence's, as stored with each event).
``since``/``until`` keep their raw spelling (``1h`` stays "the last hour" when the link is
opened tomorrow).

Bad input never reaches the database: each parameter is checked (length, shape) and a
:class:`QueryError` names the parameter and says what is expected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlencode

from ..._event import LIMITS, NAME_RE
from ...events import SEVERITIES, stored_name
from .. import blocks
from ..blocks import InvalidBlock
from ..storage import EventFilter
from ..storage.model import ip_info_value, ip_selection

__all__ = ["GROUPS", "Query", "QueryError", "parse_query"]

#: The longest user identifier a filter takes: one of ``identifier_max`` characters folded
#: (:func:`~..storage._side_rows.indexed_identifier`), each character NFKC's longest
#: expansion (U+FDFA is 18 characters).
FOLDED_MAX: Final = 18 * LIMITS.identifier_max

#: Parameters of a view, in the order links spell them.
FILTER_PARAMS: Final = (
    "name", "severity", "user", "ip", "prop", "app", "country", "kind", "asn", "since", "until",
)  # fmt: skip
VIEW_PARAMS: Final = (*FILTER_PARAMS, "group", "before")
#: The parameters read: a view's, and the API's paging (``/explorer/api/events`` refuses
#: any other; ``group`` is checked there as the page checks it, so that a page's URL works
#: there, and groups nothing; the pages ignore the others).
API_PARAMS: Final = (*VIEW_PARAMS, "after", "limit")
MAX_PAIRS: Final = 4
MAX_TEXT: Final = 256
MAX_WHEN: Final = 64
MAX_SEQ_DIGITS: Final = 18
MAX_LIMIT: Final = 500
#: ``group=`` values without a key, and the storage field each one counts.
GROUPS: Final = {
    "name": "name",
    "ip": "ip",
    "app": "app",
    "country": "ip.country",
    "kind": "ip.kind",
    "asn": "ip.asn",
}
#: ``group=user:<key>`` / ``group=prop:<key>`` prefixes, and the storage field prefix.
KEYED_GROUPS: Final = {"user": "user", "prop": "properties"}


class QueryError(ValueError):
    """A parameter that cannot be used; ``field`` is its name in the URL."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed view: the storage filter plus grouping and keyset paging."""

    filters: EventFilter
    #: (name, value) pairs of the URL, canonical order, empty values dropped.
    params: tuple[tuple[str, str], ...]
    group: str | None = None
    before: int | None = None
    after: int | None = None
    limit: int = 50

    def param(self, name: str) -> str:
        """The (first) value of parameter ``name``, as the view reads it ("" when absent):
        what its form field shows (an address canonical, a network as typed)."""
        return next((value for key, value in self.params if key == name), "")

    @property
    def group_field(self) -> str | None:
        """The storage field of ``group`` (``ip``, ``user.uid``, ``properties.reason``)."""
        if self.group is None:
            return None
        kind, _, key = self.group.partition(":")
        return f"{KEYED_GROUPS[kind]}.{key}" if key else GROUPS[kind]

    def url(
        self,
        path: str,
        *,
        drop: Iterable[tuple[str, str] | str] = (),
        add: Iterable[tuple[str, str]] = (),
        **set_: str,
    ) -> str:
        """``path`` with this view's parameters, less ``drop`` (names, or (name, value)
        pairs), plus ``add``, with ``set_`` replacing the parameters of those names."""
        dropped = set(drop) | set(set_)
        kept = [(k, v) for k, v in self.params if k not in dropped and (k, v) not in dropped]
        kept += [(k, v) for k, v in set_.items() if v]
        kept += [pair for pair in add if pair not in kept]
        kept.sort(key=lambda kv: VIEW_PARAMS.index(kv[0]) if kv[0] in VIEW_PARAMS else 99)
        return f"{path}?{urlencode(kept)}" if kept else path

    def filter_only(self) -> Query:
        """The same filters, first page, no grouping (what the live update polls)."""
        params = tuple((k, v) for k, v in self.params if k in FILTER_PARAMS)
        return replace(self, params=params, group=None, before=None)


def _text(field: str, value: str, limit: int = MAX_TEXT) -> str:
    if len(value) > limit:
        raise QueryError(field, f"is {len(value)} characters long, at most {limit}")
    return value


def _pair(field: str, value: str, value_max: int) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key.strip():
        raise QueryError(field, f"{value[:40]!r} is not key=value (e.g. uid=42)")
    _text(field, key.strip(), LIMITS.key_max)
    return key.strip(), _text(field, val, value_max)


def parse_when(field: str, value: str, now: datetime) -> datetime:
    """``15m``/``2h``/``7d`` (that long before ``now``) or an ISO 8601 time (naive is UTC)."""
    _text(field, value, MAX_WHEN)
    try:
        return blocks.parse_when(value, now, field)
    except InvalidBlock as exc:
        raise QueryError(field, exc.message) from None


def _ip(value: str) -> tuple[str | None, tuple[str, ...]]:
    """An address as the SDK records it (IPv4-mapped IPv6 unmapped), or a small network's
    addresses, as ``sqreen events --ip`` takes them (:func:`ip_selection`)."""
    try:
        return ip_selection(value)
    except ValueError as exc:
        raise QueryError("ip", str(exc)) from None


def _seq(field: str, value: str) -> int:
    if not value.isdigit() or len(value) > MAX_SEQ_DIGITS:
        raise QueryError(field, "must be an event sequence number (digits)")
    return int(value)


def _group(value: str) -> str:
    kind, sep, key = value.partition(":")
    if not sep and kind in GROUPS:
        return kind
    if sep and kind in KEYED_GROUPS and key.strip():
        return f"{kind}:{_text('group', key.strip(), LIMITS.key_max)}"
    raise QueryError("group", "must be name, ip, app, country, kind, asn, user:<key> or prop:<key>")


def parse_query(
    args: Iterable[tuple[str, str]], now: datetime | None = None, *, api: bool = False
) -> tuple[Query, list[QueryError]]:
    """The view ``args`` (the URL's (name, value) pairs) ask for, and every problem found.

    With problems, the query holds the parameters that were fine (so the page can show the
    form filled in) and must not be run.
    """
    now = now or datetime.now(UTC)
    errors: list[QueryError] = []
    params: list[tuple[str, str]] = []
    fields: dict[str, object] = {}
    users: list[tuple[str, str]] = []
    props: list[tuple[str, str]] = []
    group: str | None = None
    before = after = None
    limit = 50
    given: dict[str, str] = {}  # each single-valued parameter's value, as read
    for name, raw in args:
        value = raw.strip()
        if name not in API_PARAMS:  # parameters of nobody (utm_...): ignored by the pages
            if api:  # a client's typo (``reason=locked`` for ``prop=reason=locked``) is
                # said: ignored, it answered every event, as if filtered
                errors.append(QueryError(name, f"is not a parameter: {', '.join(API_PARAMS)}"))
            continue
        if not value:
            continue  # blank form fields
        try:
            if name == "name":
                if not NAME_RE.fullmatch(_text(name, value, LIMITS.name_max)):
                    raise QueryError(name, "may not contain control characters")
                fields["name"] = value = stored_name(
                    value
                )  # as stored: LiteSOC's spellings, any case
            elif name == "ip":
                address, network = _ip(_text(name, value, 64))
                if address is not None:
                    fields["ip"] = value = address
                else:
                    fields["ips"], value = network, value.strip()
            elif name == "app":
                fields["app"] = _text(name, value)
            elif name == "severity":
                value = value.lower()
                if value not in SEVERITIES:
                    raise QueryError(name, f"must be one of {', '.join(SEVERITIES)}")
                fields[name] = value
            elif name in ("country", "kind", "asn"):
                try:
                    fields[name] = value = ip_info_value(name, value)
                except ValueError as exc:
                    raise QueryError(name, str(exc)) from None
            elif name in ("user", "prop"):
                found = users if name == "user" else props
                if len(found) >= MAX_PAIRS:
                    raise QueryError(name, f"at most {MAX_PAIRS} {name} filters")
                # A user's value may be folded already (an alert's or a group's link), and
                # folding makes an identifier up to 18 times longer (NFKC's U+FDFA).
                limit_ = FOLDED_MAX if name == "user" else LIMITS.str_value_max
                key, val = _pair(name, raw, limit_)
                found.append((key, val))
                value = f"{key}={val}"
            elif name in ("since", "until"):
                fields[name] = parse_when(name, value, now)
            elif name == "group":
                group = value = _group(value)
            elif name == "before":
                before = _seq(name, value)
            elif name == "after" and api:
                after = _seq(name, value)
            elif name == "limit" and api:
                if not value.isdigit() or not 1 <= int(value[:6]) <= MAX_LIMIT:
                    raise QueryError(name, f"must be a number from 1 to {MAX_LIMIT}")
                limit = int(value)
            else:
                continue
        except QueryError as exc:
            errors.append(exc)
            continue
        if api and name not in ("user", "prop") and given.setdefault(name, value) != value:
            # The pages' links replace a value (the last one wins); a client that sends two
            # (``kind=tor&kind=vpn``) meant both, and got the events of the last.
            errors.append(QueryError(name, "given twice: one value (user= and prop= repeat)"))
            continue
        if name in VIEW_PARAMS:
            params = [p for p in params if p[0] != name or name in ("user", "prop")]
            params.append((name, value))
    since, until = fields.get("since"), fields.get("until")
    if isinstance(since, datetime) and isinstance(until, datetime) and since >= until:
        errors.append(QueryError("until", "must be later than since"))
    params.sort(key=lambda kv: VIEW_PARAMS.index(kv[0]))
    filters = EventFilter(
        name=_opt(fields, "name"),
        users=tuple(users),
        properties=tuple(props),
        ip=_opt(fields, "ip"),
        ips=_ips(fields),
        app=_opt(fields, "app"),
        severity=_opt(fields, "severity"),
        country=_opt(fields, "country"),
        kind=_opt(fields, "kind"),
        asn=_opt(fields, "asn"),
        since=since if isinstance(since, datetime) else None,
        until=until if isinstance(until, datetime) else None,
    )
    query = Query(filters, tuple(params), group, before, after, limit)
    return query, errors


def _ips(fields: Mapping[str, object]) -> tuple[str, ...]:
    found = fields.get("ips")
    return tuple(str(a) for a in found) if isinstance(found, tuple) else ()


def _opt(fields: Mapping[str, object], name: str) -> str | None:
    value = fields.get(name)
    return value if isinstance(value, str) else None
