"""The events pages: the filtered list with its histogram and group counts, one event's
detail (with its user's latest traits, from ``identify(user, traits=...)``), and the JSON
query API the live update polls.

Cost is bounded whatever the filter and however many events are stored: the list is one
keyset page (``seq`` descending, ``before=`` for older pages) walked down an index, and the
histogram and the group counts cover at most the newest :data:`SAMPLE` matching events (the
page says so when that bound is reached), never a scan of the whole table.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ..._event import LIMITS
from ...events import severity
from ..storage import Storage, StoredEvent, histogram_of, span_of
from ._chart import Chart, bucketing, draw
from ._query import MAX_SEQ_DIGITS, Query, QueryError, parse_query
from ._render import event_url, one_pair, pairs, render, shown, summary, when

__all__ = ["event_api", "event_page", "events_page"]

PAGE_SIZE: Final = 50
#: Histogram and group counts look at no more than this many (newest) matching events.
SAMPLE: Final = 10_000
GROUP_LIMIT: Final = 25
#: The histogram spans at least this much when no ``since`` is given.
MIN_RANGE: Final = timedelta(hours=1)
MAX_ID: Final = 256
#: "Group by" shortcuts offered for user identifier keys at most.
USER_KEYS: Final = 3


@dataclass(frozen=True, slots=True)
class Group:
    value: str | None
    count: int
    href: str | None


@dataclass(frozen=True, slots=True)
class EventsView:
    events: list[StoredEvent]
    older: str | None
    chart: Chart | None
    sampled: int
    bounded: bool
    groups: list[Group] | None
    #: The user identifier keys of the events shown, most common first: the "Group by"
    #: shortcuts for users (an app's users are ``email`` or ``username``, not always ``uid``).
    user_keys: list[str]

    @property
    def user_groups(self) -> list[tuple[str, str]]:
        """The ``group=`` values and labels of :attr:`user_keys`."""
        return [(f"user:{k}", f"user {k}") for k in self.user_keys]


def user_keys(events: list[StoredEvent], limit: int = USER_KEYS) -> list[str]:
    """The identifier keys that ``events`` carry, most common first (``uid`` when none)."""
    counted = Counter(
        k for e in events for k in e.user or () if k == k.strip() and 0 < len(k) <= LIMITS.key_max
    )
    return [k for k, _ in counted.most_common(limit)] or ["uid"]


def load(storage: Storage, query: Query, path: str, now: datetime) -> EventsView:
    """Everything the events page shows (blocking: runs in the thread pool); ``path`` is the
    page's URL path, for its links."""
    f = query.filters
    events = storage.query_events(f, before_seq=query.before, limit=PAGE_SIZE + 1)
    older = None
    if len(events) > PAGE_SIZE:
        events = events[:PAGE_SIZE]
        older = query.url(path, before=str(events[-1].seq))
    times = storage.sample_times(f, newest=SAMPLE)  # read once: the span and the chart
    sampled, oldest, newest = span_of(times)
    bounded = sampled >= SAMPLE
    chart = None
    if oldest is not None and newest is not None:
        # The chart covers the filter's range, or what the sample reaches when it is bounded.
        since = f.since if f.since is not None and not bounded else oldest
        until = f.until or max(now, newest + timedelta(microseconds=1))
        if f.since is None and not bounded:
            since = min(since, until - MIN_RANGE)  # a few fresh events: the last hour
        start, buckets, step, per = bucketing(since, until, align=f.since is None)
        end = f.until or start + step * buckets
        points = histogram_of(times, buckets, start, end)
        chart = draw(points, end, per, lambda **kw: query.url(path, drop=["before"], **kw))
    groups = None
    if query.group_field is not None:
        counted = storage.count_by(query.group_field, f, GROUP_LIMIT, newest=SAMPLE)
        groups = [Group(v, n, _group_href(query, path, v)) for v, n in counted]
    return EventsView(events, older, chart, sampled, bounded, groups, user_keys(events))


def _group_href(query: Query, path: str, value: str | None) -> str | None:
    """The view narrowed to one group's value (no longer grouped)."""
    if value is None or query.group is None:
        return None
    kind, _, key = query.group.partition(":")
    if key:
        return query.url(path, drop=["group", "before"], add=[(kind, f"{key}={value}")])
    return query.url(path, drop=["group", "before", kind], add=[(kind, value)])


def _parse(request: Request, *, api: bool = False) -> tuple[Query, list[QueryError]]:
    return parse_query(request.query_params.multi_items(), datetime.now(UTC), api=api)


async def events_page(request: Request) -> Response:
    query, errors = _parse(request)
    canonical = query.url(request.url.path)
    if not errors and request.url.query and canonical != _path_qs(request):
        # Blank form fields and repeated parameters: one canonical, shareable URL.
        return RedirectResponse(canonical, status_code=303)
    context: dict[str, Any] = {
        "query": query,
        "nav": "events",
        "SAMPLE": SAMPLE,
        "GROUP_LIMIT": GROUP_LIMIT,
    }
    if errors:
        context.update(errors=errors, view=None)
        return render(request, "events.html", context, status_code=400)
    storage: Storage = request.app.state.storage
    view = await run_in_threadpool(load, storage, query, request.url.path, datetime.now(UTC))
    live = query.filter_only().url(request.scope.get("root_path", "") + "/api/events")
    context.update(view=view, live=live if query.before is None else None)
    return render(request, "events.html", context)


def _path_qs(request: Request) -> str:
    query = request.url.query
    return request.url.path + ("?" + query if query else "")


def display(base: str, event: StoredEvent) -> dict[str, Any]:
    """What a row of the events table shows, for the live update to build the same row
    (with the text's control characters written out, as the page writes them), and the
    filter each of its links adds: ``users`` (``[filter, text]`` an identifier),
    ``country``, ``kind`` and ``score``."""
    info = _ip_info(event)
    return {
        "url": event_url(event, base),
        "time": when(event.timestamp),
        "user": shown(pairs(event.user, 40)),
        "users": [[f"{k}={v}", shown(one_pair(k, v, 40))] for k, v in (event.user or {}).items()],
        "summary": shown(summary(event.properties)),
        "network": network(event),
        **{k: str(info[k]) for k in ("country", "kind", "score") if info.get(k)},
        "severity": severity(event.name),
    }


def _ip_info(event: StoredEvent) -> dict[str, Any]:
    info = event.enrichment.get("ip_info") if event.enrichment else None
    return info if isinstance(info, dict) else {}


def network(event: StoredEvent) -> str:
    """The row's network cell as text: country, network kind, threat score (if above 0)."""
    info = _ip_info(event)
    return " ".join(str(info[k]) for k in ("country", "kind", "score") if info.get(k))


async def event_api(request: Request) -> JSONResponse:
    """``GET /api/events``: the same filters as the page, JSON; ``after=<seq>`` for newer
    events, ``before=<seq>`` for older ones, ``limit`` up to 500."""
    query, errors = _parse(request, api=True)
    if errors:
        first = errors[0]
        return JSONResponse(
            {"error": str(first), "field": first.field, "errors": [str(e) for e in errors]},
            status_code=400,
        )
    storage: Storage = request.app.state.storage
    events = await run_in_threadpool(
        lambda: storage.query_events(
            query.filters, before_seq=query.before, after_seq=query.after, limit=query.limit
        )
    )
    base = request.scope.get("root_path", "")
    return JSONResponse(
        {
            "events": [
                {**e.to_json(), "ip": e.ip, "key_id": e.key_id, "display": display(base, e)}
                for e in events
            ],
            "newest_seq": events[0].seq if events else query.after,
            # The next page: the same filters, the same size (``after`` asks for newer ones).
            "older": (
                query.url(
                    base + "/api/events",
                    drop=["after"],
                    before=str(events[-1].seq),
                    limit=str(query.limit),
                )
                if len(events) == query.limit
                else None
            ),
        }
    )


#: What a ``key=value`` line cannot carry as it is: the form splits lines at commas and
#: newlines, and strips each one.
_NOT_A_PAIR: Final = (",", "\n", "\r")


def _block_user_query(user: dict[str, str]) -> str:
    """The block form's query for ``user``: its ``key=value`` lines, or, when an identifier
    cannot be written so (a comma, a line break, spaces at its ends, ``=`` in a key), its
    JSON (``user_json=``). Written as lines, ``user3@example.com,`` (an attacker's typing)
    became a block of ``user3@example.com``: the account's owner, not the attacker."""
    plain = all(
        not any(c in text for c in _NOT_A_PAIR) and text == text.strip()
        for pair in user.items()
        for text in pair
    ) and all(k and "=" not in k for k in user)
    if plain:
        return "?" + "&".join(f"user={quote(f'{k}={v}', safe='')}" for k, v in user.items())
    return "?user_json=" + quote(json.dumps(user, ensure_ascii=False), safe="")


async def event_page(request: Request) -> Response:
    # ``/events/?id=..``: the ids a path segment cannot carry (see _render.event_url).
    event_id = request.path_params["event_id"] or request.query_params.get("id", "")
    if len(event_id) > MAX_ID:
        raise HTTPException(404, "no such event")
    raw_seq = request.query_params.get("seq", "")
    digits = raw_seq.isascii() and raw_seq.isdigit() and len(raw_seq) <= MAX_SEQ_DIGITS
    if raw_seq and not digits:
        raise HTTPException(404, "no such event")
    seq = int(raw_seq) if raw_seq else None
    storage: Storage = request.app.state.storage
    event = await run_in_threadpool(lambda: storage.get_event(event_id, seq=seq))
    if event is None:
        raise HTTPException(404, "no such event")
    traits = await run_in_threadpool(storage.get_user, event.user) if event.user else None
    key = None
    if event.key_id:
        keys = await run_in_threadpool(storage.list_keys)
        key = next((k for k in keys if k.id == event.key_id), None)
    block_user = _block_user_query(event.user) if event.user else None
    context = {
        "event": event,
        "traits": traits,
        "key": key,
        "raw": event.to_json(),
        "nav": "events",
        "block_user": block_user,
        "block_ip": "?ip=" + quote(event.ip, safe="") if event.ip else None,
    }
    return render(request, "event.html", context)
