"""The collector's web application: a Starlette app over one :class:`~.storage.Storage`.

``create_app(storage)`` builds it; ``sqreen serve`` runs it on uvicorn. Every route but
``/healthz`` (its ``?verbose=1`` does) needs an API key; the blocks API needs an ``admin``
one (an SDK's ``ingest`` key sits on every app server: it must not be able to lift the
blocks that stop an attacker).
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
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from ._api_blocks import create_block_endpoint, delete_block_endpoint, list_blocks_endpoint
from ._api_sdk import actions_endpoint, events_endpoint, heartbeat_endpoint
from ._signals import stop_signals_call
from .actions import MAX_POLLS_PER_KEY, ActionFeed
from .auth import CACHE_TTL, KeyChecker, authenticate
from .blocks import MAX_ACTIVE_BLOCKS, BlockService
from .errors import EXCEPTION_HANDLERS, QuietDisconnects
from .ingest import MAX_BODY_BYTES
from .intel import DEFAULT_MAX_SPEED, ImpossibleTravel, IpIntel, Reputation
from .logs import RequestIds
from .metrics import (
    METRICS_ROUTES,
    count_at_cap,
    count_late,
    count_rejected,
    declare_playbooks,
    worker_stopped,
    write_lock_observer,
)
from .pipeline import AfterStoreHook, Enricher, IngestPipeline
from .playbooks import Notifier, PlaybookRunner, PlaybookSource, webhook_secret
from .probes import PROBE_ROUTES
from .storage import AGENT_TTL, Purged, Storage
from .storage.sqlite import SQLiteStorage
from .times import days as days_text
from .unavailable import UnavailableLog, away, unavailable_handlers

if TYPE_CHECKING:  # imported by `sqreen serve --export` only (protobuf's import is not free)
    from .export import Forwarder

__all__ = ["create_app"]

logger = logging.getLogger("sqreen.server")

PURGE_EVERY = 3600.0
#: How often playbook hits that no window reads any more are deleted (seconds).
PURGE_HITS_EVERY = 60.0


async def health_endpoint(request: Request) -> JSONResponse:
    """``{"status": "ok"}``, to anyone; with ``?verbose=1`` and an API key, also the IP
    intelligence data in use and its versions (file names and build dates, never paths:
    what a prober need not learn of which data decides what it is called)."""
    if request.query_params.get("verbose") not in ("1", "true", "yes"):
        return JSONResponse({"status": "ok"})
    await authenticate(request)
    intel: IpIntel | None = request.app.state.ip_intel
    if intel is None:
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


#: Seconds a stopping collector gives its webhooks to post the alerts waiting.
NOTIFY_AT_STOP: Final = 2.0


class _Job(NamedTuple):
    """A periodic job: every ``seconds``, ``run`` (in a thread); ``done`` says what it
    returned (None: nothing to say); ``what`` names it in a failure."""

    seconds: float
    run: Callable[[], Any]
    done: Callable[[Any], str | None]
    what: str


def _count(said: str) -> Callable[[int], str | None]:
    """``said`` with a job's count, when it is not 0."""
    return lambda n: said % n if n else None


def _purged(days: float) -> Callable[[Purged], str | None]:
    """What a purge of records says: each kind's count (one line summed them all as
    "alerts": an export lease released at a stop read as an alert over 90 days old)."""

    def said(purged: Purged) -> str | None:
        parts = [
            f"{n} {what}"
            for n, what in zip(
                purged,
                ("alerts", "ended blocks", "users' traits", "export cursors or leases"),
                strict=True,
            )
            if n
        ]
        return f"sqreen: purged {', '.join(parts)} unused for {days_text(days)}" if parts else None

    return said


async def _every(job: _Job) -> None:
    """Run ``job`` now, then every ``job.seconds``. A database away (PostgreSQL stopped, a
    SQLite file locked) is said once a minute at most, as requests meeting it are, not with a
    traceback at each try; anything else is logged with its traceback."""
    outage = UnavailableLog(f"{job.what}: tried again every {job.seconds:g} s")
    while True:
        try:
            said = job.done(await run_in_threadpool(job.run))
            if said:
                logger.info("%s", said)
        except Exception as exc:
            if away(exc):
                outage.met(exc)
            else:
                logger.exception("sqreen: %s failed", job.what)
        await asyncio.sleep(job.seconds)


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
    ``purge_every`` seconds, and alerts, ended blocks, users' traits and export cursors as
    old (:meth:`~.storage.ControlStore.purge_records`; SDK processes silent for
    :data:`~.storage.AGENT_TTL`, always).
    The caller closes ``storage``, unless ``owns_storage``: then the app's shutdown does.
    ``workers``: how many processes serve the port (see :func:`_rebalance`). ``enrichers``
    and ``hooks`` plug into the ingest pipeline (:mod:`.pipeline`); by default the enrichers
    are IP intelligence (``ip_intel``, else one with no ``.mmdb`` file) and, when ``ip_intel``
    reads ``.mmdb`` files, impossible travel above ``travel_speed`` km/h (None: off), and a
    list given replaces them (include them to
    keep them). ``playbooks`` adds the playbooks' hook (webhooks posted by ``notifier``, or
    one made for them). At most ``max_blocks`` blocks are in force at once (None: no limit),
    and an API key holds at most ``max_polls_per_key`` action long-polls at once (see
    :mod:`.actions`). ``forwarder`` (``--export``) runs from startup to shutdown, off the
    ingest path (:mod:`.export.forwarder`). ``GET /metrics`` takes an admin key, or
    ``metrics_token``."""
    blocks = BlockService(storage, max_blocks)
    if isinstance(storage, SQLiteStorage):  # the one back end with a database-wide lock
        storage.on_write_lock = write_lock_observer()
    if enrichers is None:
        if ip_intel is None:
            ip_intel = IpIntel(reputation=Reputation(storage))
        enrichers = [ip_intel]
        # Logins are placed by a City file's coordinates alone: without one, none has a
        # place, and the enricher would only read every login to find that out.
        if travel_speed is not None and ip_intel.geoip:
            enrichers.append(ImpossibleTravel(storage, max_speed=travel_speed))
    else:
        ip_intel = next((e for e in enrichers if isinstance(e, IpIntel)), None)
    source = playbooks or PlaybookSource()
    feed = ActionFeed(storage, source.watched, max_polls_per_key=max_polls_per_key)
    jobs = [
        _Job(
            purge_every,
            storage.purge_agents,
            _count(f"sqreen: forgot %d SDK processes silent for over {AGENT_TTL.days} days"),
            "forgetting silent SDK processes",
        )
    ]
    if retention_days is not None:
        days = retention_days
        jobs.append(
            _Job(
                purge_every,
                lambda: storage.purge_older_than(days),
                _count(f"sqreen: purged %d events received over {days_text(days)} ago"),
                f"purging events received over {days_text(days)} ago",
            )
        )
        jobs.append(
            _Job(
                purge_every,
                lambda: storage.purge_records(days),
                _purged(days),
                f"purging alerts, ended blocks, users' traits and export cursors over "
                f"{days_text(days)} old",
            )
        )
    if playbooks is not None:
        notifier = notifier or Notifier(lambda: source.playbooks.webhook_secret or webhook_secret())
        runner = PlaybookRunner(
            storage,
            source,
            notifier,
            on_block=feed.changed,
            max_blocks=max_blocks,
            on_cap=count_at_cap,
            on_late=count_late,
            events=storage.events_by_seq,
        )
        declare_playbooks(p.id for p in source.playbooks.playbooks)
        hooks = [*hooks, runner]
        jobs.append(
            _Job(
                PURGE_HITS_EVERY,
                runner.purge,
                _count("sqreen: purged %d playbook hits"),
                "purging playbook hits out of their windows",
            )
        )
    if explorer:
        # The Event Explorer (sqreen/server/explorer) at /explorer, and / leading there: its
        # own login, session cookie and CSRF checks; the /v1 API keeps its bearer tokens.
        from .explorer import explorer_routes

        pages = explorer_routes(storage, blocks=blocks, playbooks=source, ip_intel=ip_intel)
        routes = [*routes, *pages]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_every(job)) for job in jobs]
        # The playbook file re-read as it changes and on SIGHUP, in a thread, at once:
        # never on the ingest path, nor waiting for the next batch to say a bad edit.
        tasks.append(asyncio.create_task(source.watch()))
        # Its watched event names recorded before the first reply carries them.
        await run_in_threadpool(feed.cache.watched.record_now)
        if forwarder is not None:
            forwarder.start()
        try:
            # A stop signal answers the action long-polls at once: else the server's
            # graceful shutdown would wait for them, and cut them with an ERROR line.
            with stop_signals_call(feed.stop):
                yield
        finally:
            if forwarder is not None:
                await run_in_threadpool(forwarder.close)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await feed.close()
            if notifier is not None:  # what waits posted, within the server's grace
                await run_in_threadpool(notifier.close, NOTIFY_AT_STOP)
            if owns_storage:
                storage.close()
            worker_stopped()

    app = _Collector(
        routes=[*API_ROUTES, *routes],
        exception_handlers={**EXCEPTION_HANDLERS, **unavailable_handlers()},
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
