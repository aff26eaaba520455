"""The blocks page and the agents page.

Blocks are validated and created by :mod:`sqreen.server.blocks` (the service the CLI, the API
and playbooks use, with the rules every SDK enforces), recorded as created by
``explorer:admin``. Each form posts back and
redirects (post/redirect/get), so reloading a page never repeats an action. The blocks page
says who made each block (a playbook links to it) and how often it refused a request
(:class:`Hits`: the SDKs' heartbeats, and a bounded sample of their ``security.blocked``
events).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..blocks import (
    BlockRequest,
    BlockService,
    InvalidBlock,
    block_request,
    block_warnings,
    parse_block_id,
    parse_pairs,
)
from ..storage import AGENT_TTL, Agent, Block, EventFilter, Storage
from ._events import SAMPLE
from ._forms import Form, form_endpoint
from ._render import render

__all__ = ["agents_page", "block_create", "block_lift", "blocks_page"]

CREATED_BY: Final = "explorer:admin"
DURATIONS: Final = (("15m", "15 minutes"), ("1h", "1 hour"), ("1d", "1 day"), ("7d", "7 days"))
FOREVER: Final = "forever"
RECENT_ENDED: Final = 20
#: The events SDKs record when a block refuses a request (``block_id`` in their properties).
REFUSALS: Final = EventFilter(name="security.blocked")


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def _redirect(request: Request, path: str) -> RedirectResponse:
    return RedirectResponse(_base(request) + path, status_code=303)


def _field(form: Form, name: str) -> str:
    return form.get(name, [""])[0]


# -- blocks -----------------------------------------------------------------------------


@dataclass
class BlockForm:
    """The block form's fields, as typed (shown back after an error)."""

    kind: str = "user"
    user: str = ""
    ip: str = ""
    duration: str = "1h"
    custom: str = ""
    reason: str = ""


def _block_form(request: Request) -> BlockForm:
    """The form prefilled from the URL (the event page links ``?user=uid%3D42`` or ``?ip=``)."""
    params = request.query_params
    users = [u[:300] for u in params.getlist("user")[:16]]
    as_json = params.get("user_json", "")[:16384]  # identifiers no key=value line can carry
    ip = params.get("ip", "")[:64]
    reason = params.get("reason", "")[:512]
    return BlockForm(
        kind="ip" if ip and not (users or as_json) else "user",
        user=as_json or "\n".join(users),
        ip=ip,
        reason=reason,
    )


async def blocks_page(request: Request) -> Response:
    return await _blocks(request, _block_form(request), [])


@dataclass(frozen=True, slots=True)
class Hits:
    """How often each block (by id, as text) refused a request.

    ``refused``: the totals in the last heartbeat of each SDK process seen within
    ``stale_after`` (``live`` of them), each counted since that process started: a process
    gone takes its count with it. ``sampled``: the ``security.blocked`` events SDKs recorded
    (one every 20 s at most per block and process, standing for the refusals since the last),
    counted over the newest :data:`SAMPLE` of them (``sample_size``, since ``since``), as
    the events page counts groups. ``not_enforced``: the blocks some live SDK processes refuse
    to enforce (a network covering their trusted proxy, too wide...): how many, and why.
    """

    refused: dict[str, int]
    live: int
    sampled: dict[str, int]
    sample_size: int
    since: datetime | None
    not_enforced: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def bounded(self) -> bool:
        return self.sample_size >= SAMPLE


def hits(storage: Storage, now: datetime, stale_after: float) -> Hits:
    """Blocking: every block's :class:`Hits`, from one read of the agents and two bounded
    reads of the events."""
    refused: dict[str, int] = {}
    not_enforced: dict[str, tuple[int, str]] = {}
    live = 0
    for agent in storage.agents():
        if (now - agent.last_seen).total_seconds() > stale_after:
            continue
        live += 1
        counts = agent.stats.get("refused")
        for block_id, n in counts.items() if isinstance(counts, dict) else ():
            if type(n) is int and n > 0:
                refused[str(block_id)] = refused.get(str(block_id), 0) + n
        why = agent.stats.get("refused_blocks")
        for block_id, reason in why.items() if isinstance(why, dict) else ():
            count, _ = not_enforced.get(str(block_id), (0, ""))
            not_enforced[str(block_id)] = (count + 1, str(reason)[:200])
    sampled = storage.count_by("properties.block_id", REFUSALS, SAMPLE, newest=SAMPLE)
    size, since, _ = storage.span(REFUSALS, newest=SAMPLE)
    sampled_by_id = {v: n for v, n in sampled if v is not None}
    return Hits(refused, live, sampled_by_id, size, since, not_enforced)


async def _blocks(
    request: Request, form: BlockForm, errors: list[str], status: int = 200
) -> Response:
    storage: Storage = request.app.state.storage
    stale_after: float = request.app.state.stale_after
    now = storage.now()

    def load() -> tuple[list[Block], list[Block], Hits]:
        # The blocks in force (at most --max-blocks) and the latest ended, not every block
        # ever made.
        return (
            storage.list_blocks(),
            storage.ended_blocks(RECENT_ENDED),
            hits(storage, now, stale_after),
        )

    active, ended, found = await run_in_threadpool(load)
    context = {
        "nav": "blocks",
        "active": active,
        "ended": ended,
        "hits": found,
        "SAMPLE": SAMPLE,
        "stale_after": stale_after,
        "form": form,
        "errors": errors,
        "durations": DURATIONS,
        "now": now,
    }
    return render(request, "blocks.html", context, status_code=status)


def _request(form: BlockForm) -> BlockRequest:
    """The block the form asks for (:class:`InvalidBlock` naming the field at fault)."""
    choice = form.custom.strip() or form.duration
    duration = None if choice == FOREVER else choice
    reason = form.reason.strip()
    if form.kind == "user":
        if form.user.strip().startswith("{"):  # a JSON object: identifiers as they are
            user = _json_user(form.user)
        else:
            lines = [line.strip() for line in form.user.replace(",", "\n").splitlines()]
            user = parse_pairs([line for line in lines if line], "user")
        return block_request("block_user", user=user, duration=duration, reason=reason)
    if form.kind == "ip":
        return block_request("block_ip", ip=form.ip.strip(), duration=duration, reason=reason)
    raise InvalidBlock("kind", "choose a user or an IP to block")


def _json_user(text: str) -> dict[str, str]:
    """Identifiers given as a JSON object of text values (what the event page links for
    identifiers a ``key=value`` line cannot carry: a comma, a line break, spaces at an end)."""
    try:
        found = json.loads(text)
    except ValueError:
        raise InvalidBlock("user", "is not a JSON object (or key=value lines)") from None
    if (
        not isinstance(found, dict)
        or not found
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in found.items())
    ):
        raise InvalidBlock("user", 'must be a JSON object of text values: {"uid": "42"}')
    return found


@form_endpoint
async def block_create(request: Request, form: Form) -> Response:
    fields = BlockForm(**{k: _field(form, k) for k in BlockForm.__dataclass_fields__})
    blocks: BlockService = request.app.state.blocks
    try:
        wanted = _request(fields)
        placed = await run_in_threadpool(lambda: blocks.apply(wanted, created_by=CREATED_BY))
    except InvalidBlock as exc:  # (a BlockLimitReached too: as many blocks as allowed)
        return await _blocks(request, fields, [str(exc)], status=400)
    block = placed.block
    said = {
        "created": f"Block #{block.id} created: SDKs apply it within seconds.",
        "extended": f"Already blocked by #{block.id}: extended to the duration asked.",
        "kept": f"Already blocked by #{block.id}, for at least as long: unchanged.",
    }[placed.outcome]
    request.session["flash"] = " Warning: ".join([said, *block_warnings(wanted)])
    return _redirect(request, "/blocks")


@form_endpoint
async def block_lift(request: Request, form: Form) -> Response:
    raw = request.path_params["block_id"]
    blocks: BlockService = request.app.state.blocks
    block_id = parse_block_id(raw)
    lifted = None
    if block_id is not None:
        lifted = await run_in_threadpool(lambda: blocks.lift(block_id, lifted_by=CREATED_BY))
    request.session["flash"] = (
        f"Block #{lifted.id} lifted." if lifted else f"No active block #{raw[:20]} to lift."
    )
    return _redirect(request, "/blocks")


# -- agents -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentRow:
    agent: Agent
    age: float
    stale: bool
    queue_depth: int | None
    dropped: dict[str, int]
    dropped_total: int
    internal_errors: int
    #: The blocks this process refuses to enforce (by id, as text), each with why: what
    #: the blocks page counts as "Not enforced", process by process.
    refused_blocks: dict[str, str] = field(default_factory=dict)
    #: Its last heartbeat said it was stopping (a clean exit: not stale, not sending).
    stopped: bool = False


def agent_row(agent: Agent, now: datetime, stale_after: float) -> AgentRow:
    stats = agent.stats
    dropped = stats.get("dropped")
    drops = (
        {str(k): v for k, v in dropped.items() if isinstance(v, int) and v > 0}
        if isinstance(dropped, dict)
        else {}
    )
    depth = stats.get("queue_depth")
    errors = stats.get("internal_errors")
    age = (now - agent.last_seen).total_seconds()
    why = stats.get("refused_blocks")
    refused = (
        {str(k): str(v)[:200] for k, v in sorted(why.items(), key=_by_id)}
        if isinstance(why, dict)
        else {}
    )
    stopped = stats.get("stopped") == 1
    return AgentRow(
        agent=agent,
        age=age,
        stale=age > stale_after and not stopped,
        queue_depth=depth if isinstance(depth, int) else None,
        dropped=drops,
        dropped_total=sum(drops.values()),
        internal_errors=errors if isinstance(errors, int) else 0,
        refused_blocks=refused,
        stopped=stopped,
    )


def _by_id(item: tuple[object, object]) -> tuple[int, str]:
    """Block ids in numeric order (an id that is no number, last)."""
    text = str(item[0])
    return (int(text), "") if parse_block_id(text) is not None else (2**63, text)


async def agents_page(request: Request) -> Response:
    storage: Storage = request.app.state.storage
    stale_after: float = request.app.state.stale_after
    now = storage.now()
    agents = await run_in_threadpool(storage.agents)
    rows = [agent_row(a, now, stale_after) for a in agents]
    context = {
        "nav": "agents",
        "rows": rows,
        "now": now,
        "stale_after": stale_after,
        "live": sum(not r.stale and not r.stopped for r in rows),
        "stopped": sum(r.stopped for r in rows),
        "ttl_days": AGENT_TTL.days,
        "dropping": sum(r.dropped_total > 0 for r in rows),
        "refusing": sum(bool(r.refused_blocks) for r in rows),
        "intel": intel.sources() if (intel := request.app.state.ip_intel) else None,
    }
    return render(request, "agents.html", context)
