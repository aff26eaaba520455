"""The alerts page, one alert's page, and the playbooks page.

Alerts are what playbooks raised (:meth:`~..storage.ControlStore.update_windows`), read
newest first by id, one keyset page at a time (``before=<id>``), optionally of one playbook
(the ``alerts (playbook, id)`` index). Each row links what it names: the group key to the
events of that IP or user, the playbook to its place on the playbooks page, the block to the
blocks page with its state read once for the page (:meth:`blocks_by_id`). One alert's page
lists the events behind it by their seqs (:meth:`events_by_seq`: one primary-key lookup
each, at most the 100 an alert keeps).

The playbooks page shows the file in force (``sqreen serve --playbooks FILE``), re-read when
it changed as ingest does, with each playbook's alert count from one grouped read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..._event import NAME_RE
from ..playbooks import Playbook, PlaybookSource
from ..storage import Alert, Block, Storage, StoredEvent
from ..storage.model import ip_selection
from ._query import MAX_PAIRS, MAX_SEQ_DIGITS
from ._render import pairs, render

__all__ = ["alert_page", "alerts_page", "block_state", "playbooks_page"]

PAGE_SIZE: Final = 50
MAX_PLAYBOOK: Final = 256


@dataclass(frozen=True, slots=True)
class Group:
    """An alert's group key as the page shows it, and the events it links to."""

    label: str
    href: str | None


@dataclass(frozen=True, slots=True)
class AlertRow:
    alert: Alert
    group: Group
    block: Block | None
    #: "active", "lifted" or "expired" (None without a block).
    block_state: str | None


def block_state(block: Block, now: datetime) -> str:
    if block.lifted_at is not None:
        return "lifted"
    return "active" if block.is_active(now) else "expired"


def group_of(base: str, group_by: str, key: str) -> Group:
    """``key`` (a value of the playbook's ``group_by`` field; all of a user's identifiers for
    ``user``, as JSON) for people, with a link to the events it stands for when the events
    page can filter on that field."""
    kind, _, field = group_by.partition(".")
    params: list[tuple[str, str]] = []
    label = key
    if group_by == "ip":
        try:  # an address, or an IPv6 network the events page cannot list (a /64)
            ip_selection(key)
        except ValueError:
            pass
        else:
            params = [("ip", key)]
    elif group_by == "user":
        user = _identifiers(key)  # the canonical JSON of all the user's identifiers
        if user:
            label = pairs(user)
            params = [("user", f"{k}={v}") for k, v in list(user.items())[:MAX_PAIRS]]
    elif kind == "user" and field:
        params = [("user", f"{field}={key}")]
    elif kind == "properties" and field:
        params = [("prop", f"{field}={key}")]
    elif group_by in ("name", "app"):
        params = [(group_by, key)]
    return Group(label, f"{base}/events?{urlencode(params)}" if params else None)


def _identifiers(key: str) -> dict[str, str] | None:
    try:
        user = json.loads(key)
    except ValueError:
        return None
    if not isinstance(user, dict) or not all(isinstance(v, str) for v in user.values()):
        return None
    return user


def _rows(storage: Storage, alerts: list[Alert], base: str) -> list[AlertRow]:
    """Blocking: the rows of ``alerts``, their blocks read at once."""
    now = storage.now()
    blocks = storage.blocks_by_id({a.block_id for a in alerts if a.block_id is not None})
    rows = []
    for a in alerts:
        block = None if a.block_id is None else blocks.get(a.block_id)
        state = None if block is None else block_state(block, now)
        rows.append(AlertRow(a, group_of(base, a.group_by, a.group_key), block, state))
    return rows


def _playbook_param(request: Request) -> str | None:
    value = request.query_params.get("playbook", "").strip()
    if not value:
        return None
    if len(value) > MAX_PLAYBOOK or not NAME_RE.fullmatch(value):
        raise HTTPException(400, f"playbook: at most {MAX_PLAYBOOK} characters, no control ones")
    return value


def _before_param(request: Request) -> int | None:
    value = request.query_params.get("before", "").strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > MAX_SEQ_DIGITS:
        raise HTTPException(400, "before: must be an alert number (digits)")
    return int(value)


def alerts_url(path: str, playbook: str | None = None, before: int | None = None) -> str:
    params = [("playbook", playbook), ("before", None if before is None else str(before))]
    kept = [(k, v) for k, v in params if v]
    return f"{path}?{urlencode(kept)}" if kept else path


async def alerts_page(request: Request) -> Response:
    playbook, before = _playbook_param(request), _before_param(request)
    canonical = alerts_url(request.url.path, playbook, before)
    if request.url.query and canonical != f"{request.url.path}?{request.url.query}":
        return RedirectResponse(canonical, status_code=303)  # "All playbooks" sends playbook=
    storage: Storage = request.app.state.storage
    source: PlaybookSource = request.app.state.playbooks
    base = str(request.scope.get("root_path", ""))

    def load() -> dict[str, Any]:
        alerts = storage.list_alerts(playbook=playbook, before_id=before, limit=PAGE_SIZE + 1)
        older = None
        if len(alerts) > PAGE_SIZE:
            alerts = alerts[:PAGE_SIZE]
            older = alerts_url(request.url.path, playbook, alerts[-1].id)
        known = {p.id for p in source.current().playbooks.playbooks}
        return {
            "rows": _rows(storage, alerts, base),
            "older": older,
            "choices": sorted(known | set(storage.alert_counts())),
            "now": storage.now(),
        }

    context = await run_in_threadpool(load)
    context.update(
        nav="alerts",
        playbook=playbook,
        before=before,
        newest=alerts_url(request.url.path, playbook),
    )
    return render(request, "alerts.html", context)


async def alert_page(request: Request) -> Response:
    raw = request.path_params["alert_id"]
    if not raw.isdigit() or len(raw) > MAX_SEQ_DIGITS:
        raise HTTPException(404, "no such alert")
    storage: Storage = request.app.state.storage
    base = str(request.scope.get("root_path", ""))

    def load() -> tuple[AlertRow, list[StoredEvent]] | None:
        alert = storage.get_alert(int(raw))
        if alert is None:
            return None
        return _rows(storage, [alert], base)[0], storage.events_by_seq(alert.seqs)

    found = await run_in_threadpool(load)
    if found is None:
        raise HTTPException(404, "no such alert")
    row, events = found
    context = {"nav": "alerts", "row": row, "events": events, "now": storage.now()}
    return render(request, "alert.html", context)


@dataclass(frozen=True, slots=True)
class PlaybookRow:
    playbook: Playbook
    alerts: int
    last: datetime | None
    #: The hosts its webhooks post to (a webhook's path is often its secret: never shown).
    notify_hosts: tuple[str, ...]


async def playbooks_page(request: Request) -> Response:
    storage: Storage = request.app.state.storage
    source: PlaybookSource = request.app.state.playbooks

    def load() -> dict[str, Any]:
        loaded = source.current().playbooks
        counts = storage.alert_counts()
        rows = [
            PlaybookRow(
                p,
                *counts.get(p.id, (0, None)),
                tuple(dict.fromkeys(urlsplit(url).hostname or "?" for url in p.notify)),
            )
            for p in loaded.playbooks
        ]
        in_file = {p.id for p in loaded.playbooks}
        retired = sorted((pid, n, last) for pid, (n, last) in counts.items() if pid not in in_file)
        return {"rows": rows, "retired": retired, "now": storage.now()}

    context = await run_in_threadpool(load)
    context.update(nav="playbooks", path=None if source.path is None else str(source.path))
    return render(request, "playbooks.html", context)
