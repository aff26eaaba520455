"""The collector's web application: a Starlette app over one :class:`~.storage.Storage`.

``create_app(storage)`` builds it; ``sqreen serve`` runs it on uvicorn. Every route but
``/healthz`` needs an API key; the blocks API needs an ``admin`` one (an SDK's ``ingest`` key
sits on every app server: it must not be able to lift the blocks that stop an attacker).
Storage calls block, so they run in the thread pool and never on the event loop. Extra
routes (the Event Explorer, mounted later) come in ``routes``.

Routes:

- ``POST /v1/events``: a batch from an SDK, through the ingest pipeline (:mod:`.pipeline`);
  the reply counts what was stored and carries the action set (:mod:`.action_cache`: what
  the SDK needs by the version it holds).
- ``POST /v1/heartbeat``: an SDK process's stats; the reply carries the action set.
- ``GET /v1/actions``: the action set alone, or a long-poll for its next change.
- ``GET /livez`` (the process answers) and ``GET /readyz`` (a write and read back of the
  database within 2 s, else 503 naming what failed): probes for load balancers, no key.
- ``GET /metrics``: Prometheus' text format (:mod:`.metrics`), for an admin key or the
  ``--metrics-token``.
- ``GET /v1/blocks`` (``?all=1`` to include the newest lifted and expired ones, ``limit=``
  of them, 1000 by default), ``POST /v1/blocks``,
  ``DELETE /v1/blocks/{id}``: blocks by hand, for the explorer and the playbooks. A POST on
  a target an active block covers answers that block (200, ``"outcome": "extended"`` or
  ``"kept"``) instead of adding another (201, ``"created"``); ``"warnings"`` lists what may
  keep SDKs from enforcing it as meant (a private network, where proxies usually are).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from .action_cache import unchanged
from .actions import MAX_POLLS_PER_KEY, MAX_WAIT, POLL_AGAIN, ActionFeed, TooManyPolls
from .auth import CACHE_TTL, KeyChecker, authenticate
from .blocks import (
    ENDED_LISTED,
    MAX_ACTIVE_BLOCKS,
    MAX_ENDED_LISTED,
    BlockLimitReached,
    BlockService,
    InvalidBlock,
    block_from_json,
    block_warnings,
    parse_block_id,
)
from .errors import EXCEPTION_HANDLERS, ApiError, QuietDisconnects
from .ingest import MAX_BODY_BYTES, Held, heartbeat, parse_json, read_body
from .intel import DEFAULT_MAX_SPEED, ImpossibleTravel, IpIntel, Reputation
from .logs import RequestIds
from .metrics import (
    METRICS_ROUTES,
    count_refusals,
    count_rejected,
    observe_batch,
    worker_stopped,
)
from .pipeline import AfterStoreHook, Enricher, IngestPipeline
from .playbooks import Notifier, PlaybookRunner, PlaybookSource, webhook_secret
from .probes import PROBE_ROUTES
from .storage import AGENT_TTL, Storage

if TYPE_CHECKING:  # imported by `sqreen serve --export` only (protobuf's import is not free)
    from .export import Forwarder

__all__ = ["create_app"]

logger = logging.getLogger("sqreen.server")

PURGE_EVERY = 3600.0
#: How often playbook hits that no window reads any more are deleted (seconds).
PURGE_HITS_EVERY = 60.0
#: Bodies parsed and stored at once by one process (see _one_at_a_time).
INGEST_CONCURRENCY = 1
#: Bodies waiting in one worker past which a sender is asked to reconnect (see _rebalance).
REBALANCE_BACKLOG = 1

T = TypeVar("T")


async def events_endpoint(request: Request) -> Response:
    key = await authenticate(request)
    pipeline: IngestPipeline = request.app.state.pipeline
    with count_refusals():
        body = await read_body(request, request.app.state.max_body_bytes)
        started = time.perf_counter()
        reply, held = await _one_at_a_time(request, partial(pipeline.ingest, key_id=key.id), body)
    response = await _with_actions(request, reply, held, _rebalance(request))
    observe_batch(reply["accepted"], reply["duplicates"], time.perf_counter() - started)
    return response


async def heartbeat_endpoint(request: Request) -> Response:
    key = await authenticate(request)
    handle = partial(heartbeat, request.app.state.storage, key_id=key.id)
    with count_refusals():
        body = await read_body(request, request.app.state.max_body_bytes)
        held = await _one_at_a_time(request, handle, body)
    return await _with_actions(request, {}, held)


async def _with_actions(
    request: Request, reply: dict[str, Any], held: Held, headers: dict[str, str] | None = None
) -> Response:
    """``reply`` with the ``actions`` the SDK needs, made outside the ingest slot (in a
    worker thread: one read of the version, the set itself only when it changed) and
    written in as encoded (the whole set is encoded once, not once a reply)."""
    feed: ActionFeed = request.app.state.actions
    actions = await run_in_threadpool(feed.encoded, held.version, held.diff)
    return _json(reply, actions, headers)


def _json(reply: dict[str, Any], actions: bytes, headers: dict[str, str] | None = None) -> Response:
    head = json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode()
    body = (head[:-1] + b"," if reply else b"{") + b'"actions":' + actions + b"}"
    return Response(body, media_type="application/json", headers=headers)


async def _one_at_a_time(request: Request, handle: Callable[[bytes], T], body: bytes) -> T:
    """Run ``handle`` (the ingest pipeline, or a heartbeat) in a thread, one body at a time
    per process.

    The work is Python, bound by the GIL: several bodies at once in one process go no faster,
    and a thread coming back from the database with the write lock held would wait for the
    GIL behind the threads parsing the next batches (up to 5 ms a statement), stretching the
    lock other processes wait for. One at a time, with ``--workers`` for parallelism,
    measured 14 000 -> 22 000 events/s with two workers on two cores, at less CPU an event.
    """
    state = request.app.state
    limiter = getattr(state, "ingest_limiter", None)
    if limiter is None:  # made here, in the event loop it belongs to
        limiter = state.ingest_limiter = anyio.CapacityLimiter(INGEST_CONCURRENCY)
    return await anyio.to_thread.run_sync(handle, body, limiter=limiter)


def _rebalance(request: Request) -> dict[str, str] | None:
    """``Connection: close`` when several workers share the port and this one has a backlog.

    A keep-alive connection stays with the process that accepted it, so eight SDK
    connections may well be six on one worker and two on the other: the first is the
    bottleneck while the second idles. A sender told to reconnect lands on whichever worker
    accepts first, usually the idler one, and a reconnect costs far less than the batch it
    carries. Measured with two workers on two cores: 16 000 to 21 600 events/s from eight
    senders without this, 22 000 to 24 700 with it; from four, 18 300 and 21 800.
    """
    state = request.app.state
    if state.rebalance and state.ingest_limiter.statistics().tasks_waiting >= REBALANCE_BACKLOG:
        return {"Connection": "close"}
    return None


async def actions_endpoint(request: Request) -> Response:
    """The action set; with ``version=n`` (the SDK's), ``unchanged`` when it is current (a
    diff with ``diff=1``, when smaller), and with ``wait=s`` too, a long-poll: the answer
    comes when the set changes, or after ``s`` seconds (at most 60). A key holding too many
    long-polls in this process has the next ones refused, 429 (see :mod:`.actions`)."""
    key = await authenticate(request)
    feed: ActionFeed = request.app.state.actions
    known = _int_param(request, "version")
    wait = _int_param(request, "wait", 0, int(MAX_WAIT))
    diff = request.query_params.get("diff") in ("1", "true")
    if known is None or not wait:
        return _json({}, await run_in_threadpool(feed.encoded, known, diff))
    try:
        actions = await feed.wait(known, wait, diff=diff, key=key.id)
    except TooManyPolls as exc:
        raise ApiError(429, str(exc), headers={"Retry-After": str(int(POLL_AGAIN))}) from None
    except asyncio.CancelledError:
        # The server is stopping and cuts what it still holds: answer, the SDK asks again.
        actions = unchanged(known)
    return _json({}, actions)


def _int_param(request: Request, name: str, low: int = -1, high: int = 2**62) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = int(float(raw)) if len(raw) < 32 else None
    except (ValueError, OverflowError):
        value = None
    if value is None or not low <= value <= high:
        raise ApiError(400, f"must be an integer from {low} to {high}", field=name)
    return value


async def list_blocks_endpoint(request: Request) -> JSONResponse:
    await authenticate(request, admin=True)
    storage: Storage = request.app.state.storage
    include = request.query_params.get("all", "") in ("1", "true", "yes")
    limit = _int_param(request, "limit", 1, MAX_ENDED_LISTED) or ENDED_LISTED
    blocks = await run_in_threadpool(lambda: storage.list_blocks(ended=limit if include else 0))
    actions = await run_in_threadpool(storage.action_set)
    return JSONResponse(
        {"version": actions.version, "blocks": [b.to_json(actions.now) for b in blocks]}
    )


async def create_block_endpoint(request: Request) -> JSONResponse:
    key = await authenticate(request, admin=True)
    body = parse_json(await read_body(request, 64 * 1024))
    try:
        wanted = block_from_json(body)
    except InvalidBlock as exc:
        raise ApiError(400, str(exc), field=exc.field) from None
    blocks: BlockService = request.app.state.blocks
    try:
        placed = await run_in_threadpool(
            lambda: blocks.apply(wanted, created_by=f"api-key:{key.id}:{key.name}")
        )
    except BlockLimitReached as exc:
        raise ApiError(409, str(exc), field=exc.field) from None
    # 201 for a new block; 200 for the active block on the same target, extended or kept.
    created = placed.outcome == "created"
    block = placed.block
    now = block.created_at if created else blocks.store.now()
    body = {**block.to_json(now), "outcome": placed.outcome, "warnings": block_warnings(wanted)}
    return JSONResponse(body, status_code=201 if created else 200)


async def delete_block_endpoint(request: Request) -> JSONResponse:
    key = await authenticate(request, admin=True)
    block_id = parse_block_id(request.path_params["block_id"])
    if block_id is None:
        raise ApiError(404, "no such block")
    blocks: BlockService = request.app.state.blocks
    block = await run_in_threadpool(
        lambda: blocks.lift(block_id, lifted_by=f"api-key:{key.id}:{key.name}")
    )
    if block is None:
        raise ApiError(404, "no active block with this id")
    return JSONResponse(block.to_json(blocks.store.now()))


async def health_endpoint(request: Request) -> JSONResponse:
    """``{"status": "ok"}``; with ``?verbose=1``, also the IP intelligence data in use and
    its versions (file names and build dates, never paths)."""
    intel: IpIntel | None = request.app.state.ip_intel
    if intel is None or request.query_params.get("verbose") not in ("1", "true", "yes"):
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "ok", "ip_intel": intel.sources()})


API_ROUTES: Sequence[BaseRoute] = (
    Route("/v1/events", events_endpoint, methods=["POST"]),
    Route("/v1/heartbeat", heartbeat_endpoint, methods=["POST"]),
    Route("/v1/actions", actions_endpoint, methods=["GET"]),
    Route("/v1/blocks", list_blocks_endpoint, methods=["GET"]),
    Route("/v1/blocks", create_block_endpoint, methods=["POST"]),
    Route("/v1/blocks/{block_id}", delete_block_endpoint, methods=["DELETE"]),
    Route("/healthz", health_endpoint, methods=["GET"]),
    *PROBE_ROUTES,
    *METRICS_ROUTES,
)


async def _every(seconds: float, job: Callable[[], int], done: str) -> None:
    """Run ``job`` in a thread every ``seconds``; log ``done`` with what it returns."""
    while True:
        try:
            count = await run_in_threadpool(job)
            if count:
                logger.info(done, count)
        except Exception:
            logger.exception("sqreen: periodic job %r failed", job)
        await asyncio.sleep(seconds)


class _Collector(Starlette):
    """Starlette with each request's id (:mod:`.logs`) given outside all else: Starlette
    puts its error handler outermost, and a 500 it answers should carry the id too."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestIds(super().build_middleware_stack())


def create_app(
    storage: Storage,
    *,
    routes: Sequence[BaseRoute] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    key_cache_ttl: float = CACHE_TTL,
    retention_days: float | None = None,
    purge_every: float = PURGE_EVERY,
    explorer: bool = True,
    owns_storage: bool = False,
    workers: int = 1,
    enrichers: Sequence[Enricher] | None = None,
    ip_intel: IpIntel | None = None,
    travel_speed: float | None = DEFAULT_MAX_SPEED,
    hooks: Sequence[AfterStoreHook] = (),
    playbooks: PlaybookSource | None = None,
    notifier: Notifier | None = None,
    max_blocks: int | None = MAX_ACTIVE_BLOCKS,
    max_polls_per_key: int = MAX_POLLS_PER_KEY,
    forwarder: Forwarder | None = None,
    metrics_token: str | None = None,
) -> Starlette:
    """The collector app. ``routes`` are added after the API's (the explorer mounts there);
    with ``retention_days``, events received longer ago than that are purged every
    ``purge_every`` seconds (and SDK processes silent for :data:`~.storage.AGENT_TTL`, always).
    The caller closes ``storage``, unless ``owns_storage``: then the app's shutdown does.
    ``workers``: how many processes serve the port (see :func:`_rebalance`). ``enrichers``
    and ``hooks`` plug into the ingest pipeline (:mod:`.pipeline`); by default the enrichers
    are IP intelligence (``ip_intel``, else one with no ``.mmdb`` file) and impossible travel
    above ``travel_speed`` km/h (None: off), and a list given replaces them (include them to
    keep them). ``playbooks`` adds the playbooks' hook (webhooks posted by ``notifier``, or
    one made for them). At most ``max_blocks`` blocks are in force at once (None: no limit),
    and an API key holds at most ``max_polls_per_key`` action long-polls at once (see
    :mod:`.actions`). ``forwarder`` (``--export``) runs from startup to shutdown, off the
    ingest path (:mod:`.export.forwarder`). ``GET /metrics`` takes an admin key, or
    ``metrics_token``."""
    blocks = BlockService(storage, max_blocks)
    if enrichers is None:
        if ip_intel is None:
            ip_intel = IpIntel(reputation=Reputation(storage))
        enrichers = [ip_intel]
        if travel_speed is not None:
            enrichers.append(ImpossibleTravel(storage, max_speed=travel_speed))
    else:
        ip_intel = next((e for e in enrichers if isinstance(e, IpIntel)), None)
    source = playbooks or PlaybookSource()
    feed = ActionFeed(storage, source.watched, max_polls_per_key=max_polls_per_key)
    jobs: list[tuple[float, Callable[[], int], str]] = [
        (
            purge_every,
            storage.purge_agents,
            f"sqreen: forgot %d SDK processes silent for over {AGENT_TTL.days} days",
        )
    ]
    if retention_days is not None:
        days = retention_days
        jobs.append(
            (
                purge_every,
                lambda: storage.purge_older_than(days),
                f"sqreen: purged %d events received over {days:g} days ago",
            )
        )
    if playbooks is not None:
        notifier = notifier or Notifier(source.playbooks.webhook_secret or webhook_secret())
        runner = PlaybookRunner(
            storage, source, notifier, on_block=feed.changed, max_blocks=max_blocks
        )
        hooks = [*hooks, runner]
        jobs.append((PURGE_HITS_EVERY, runner.purge, "sqreen: purged %d playbook hits"))
    if explorer:
        # The Event Explorer (sqreen/server/explorer) at /explorer, and / leading there: its
        # own login, session cookie and CSRF checks; the /v1 API keeps its bearer tokens.
        from .explorer import explorer_routes

        pages = explorer_routes(storage, blocks=blocks, playbooks=source, ip_intel=ip_intel)
        routes = [*routes, *pages]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_every(*job)) for job in jobs]
        if forwarder is not None:
            forwarder.start()
        try:
            yield
        finally:
            if forwarder is not None:
                await run_in_threadpool(forwarder.close)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await feed.close()
            if notifier is not None:
                notifier.close()
            if owns_storage:
                storage.close()
            worker_stopped()

    app = _Collector(
        routes=[*API_ROUTES, *routes],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(QuietDisconnects)],
        lifespan=lifespan,
    )
    app.state.storage = storage
    app.state.blocks = blocks
    app.state.ip_intel = ip_intel
    app.state.pipeline = IngestPipeline(
        storage, enrichers=enrichers, hooks=hooks, actions=feed.reply, on_rejected=count_rejected
    )
    app.state.actions = feed
    app.state.playbooks = source
    app.state.notifier = notifier
    app.state.forwarder = forwarder
    app.state.keys = KeyChecker(storage, key_cache_ttl)
    app.state.max_body_bytes = max_body_bytes
    app.state.metrics_token = metrics_token
    app.state.rebalance = workers > 1
    return app
