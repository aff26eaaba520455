"""``GET /metrics``: the collector in Prometheus' text format (``prometheus_client``).

Two kinds of metrics, so that ``sqreen serve --workers N`` reports one consistent set:

- **Counters of the ingest path**, counted by the process that served the request: once a
  batch (never once an event), a few increments of values that ``prometheus_client`` keeps
  in memory, or, with several workers, in a memory-mapped file of each process under
  ``PROMETHEUS_MULTIPROC_DIR`` (its multiprocess mode): a scrape answered by any worker sums
  the files of all, the dead ones' included, so no count is lost when a worker restarts.
  The export forwarder's records set aside are one more (``sqreen_export_set_aside``,
  defined with the forwarder: :data:`.export.delivery.SET_ASIDE`), and so are the alerts
  posted to webhooks (``sqreen_webhook_alerts``, :data:`.playbooks._notify.ALERTS`).
- **What the database holds** (active blocks, alerts, SDK processes, its size, the newest
  event's age, how far ``--export``'s destination is behind), read at scrape time by the
  one process answering: never counted twice, never stale, and nothing to keep up to date
  on the ingest path.

The route needs an admin key, or the ``--metrics-token`` (compared in constant time).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .auth import authenticate
from .errors import ApiError
from .export import export_lag
from .storage import Storage, by_playbook

__all__ = [
    "DIR_ENV",
    "METRICS_ROUTES",
    "STALE_AFTER",
    "count_at_cap",
    "count_late",
    "count_refusals",
    "count_rejected",
    "declare_playbooks",
    "multiprocess_dir",
    "observe_batch",
    "observe_group",
    "worker_stopped",
    "write_lock_observer",
]

logger = logging.getLogger("sqreen.server")

DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: Whether ``prometheus_client`` keeps its values in files: it decides when first imported.
MULTIPROCESS: Final = bool(os.environ.get(DIR_ENV))
#: An SDK process silent for longer than this is ``stale`` (as the explorer's agents page).
STALE_AFTER: Final = 180.0
_RULE: Final = re.compile(r"[a-z_]{1,40}")

EVENTS_ACCEPTED: Final = Counter(
    "sqreen_events_accepted", "Events stored, and identify records applied, as replied to SDKs."
)
EVENTS_DUPLICATES: Final = Counter(
    "sqreen_events_duplicates", "Events already stored under the same key (a retried batch)."
)
EVENTS_REJECTED: Final = Counter(
    "sqreen_events_rejected", "Invalid events left out of their batch, by rule.", ["reason"]
)
BATCH_SECONDS: Final = Histogram(
    "sqreen_ingest_batch_seconds",
    "Batches stored, by the time from their body read to their reply ready (waiting for "
    "the ingest slot, parsing, enriching, storing, playbooks, the action set).",
)
INGEST_GROUPS: Final = Histogram(
    "sqreen_ingest_group_bodies",
    "Turns of a process's ingest slot, by the event bodies they stored in one transaction "
    "(those that waited while the turn before ran).",
    buckets=(1, 2, 3, 4, 6, 8),
)
WRITE_LOCK: Final = Counter(
    "sqreen_storage_write_lock_seconds",
    "SQLite: seconds this collector's writers spent waiting for the database's write lock "
    "(waited) and holding it (held). Every writer of the file takes turns there: a rate of "
    "held near 1 means it is never free, and more --workers add no throughput. Waits "
    "include those behind reads on the writer's connection (impossible travel's), which "
    "count as no hold.",
    ["phase"],
)
REFUSED: Final = Counter(
    "sqreen_requests_refused",
    "Event and heartbeat bodies refused whole, by HTTP status (400, 413, 415).",
    ["status"],
)


BLOCKS_AT_CAP: Final = Counter(
    "sqreen_playbook_blocks_at_cap",
    "Playbook blocks asked for with --max-blocks blocks in force, by outcome: replaced (made "
    "in place of the oldest playbook block) or refused (every block in force a "
    "person's: the alert stored without its block).",
    ["outcome"],
)


LATE_EVENTS: Final = Counter(
    "sqreen_playbook_late_events",
    "Events that reached a playbook through ingest older than its window, by playbook: "
    "delivered late (a collector behind, an SDK's spool sent after an outage), they count "
    "for nothing.",
    ["playbook"],
)


def declare_playbooks(ids: Iterable[str]) -> None:
    """Serve the playbooks' counters at 0 until something is counted: a dashboard (and an
    alert rule on ``rate()``) then sees a series from the start, not nothing."""
    for outcome in ("replaced", "refused"):
        BLOCKS_AT_CAP.labels(outcome)
    for playbook in ids:
        LATE_EVENTS.labels(playbook)


def count_late(playbook: str, n: int) -> None:
    """Count ``n`` events that came to ``playbook`` older than its window."""
    LATE_EVENTS.labels(playbook).inc(n)


def count_at_cap(outcome: str, n: int) -> None:
    """Count ``n`` playbook blocks asked for at ``--max-blocks``: ``replaced`` or ``refused``."""
    BLOCKS_AT_CAP.labels(outcome).inc(n)


def count_rejected(reasons: Sequence[str]) -> None:
    """Count the events a batch left out, by their rule (``InvalidEvent.rule``)."""
    for reason, n in Tally(r if _RULE.fullmatch(r) else "other" for r in reasons).items():
        EVENTS_REJECTED.labels(reason).inc(n)


def write_lock_observer() -> Callable[[float, float], None]:
    """What SQLite's write lock tells of each hold (``waited`` seconds for it, ``held``
    with it), counted; its two series served from now on, at 0 until then. Each series is
    looked up once, not at every transaction (half the observer's cost)."""
    waited, held = WRITE_LOCK.labels("waited"), WRITE_LOCK.labels("held")

    def observe(waited_s: float, held_s: float) -> None:
        waited.inc(waited_s)
        held.inc(held_s)

    return observe


def observe_group(bodies: int) -> None:
    """Count a turn of the ingest slot that stored ``bodies`` bodies together."""
    INGEST_GROUPS.observe(bodies)


def observe_batch(accepted: int, duplicates: int, seconds: float | None) -> None:
    """Count a batch stored: a few increments a batch (``bench/bench_ingest.py``: within
    the noise of µs an event). ``seconds`` None: stored after its client hung up (counted,
    though no reply went out; its time is no request's)."""
    if accepted:
        EVENTS_ACCEPTED.inc(accepted)
    if duplicates:
        EVENTS_DUPLICATES.inc(duplicates)
    if seconds is not None:
        BATCH_SECONDS.observe(seconds)


@contextlib.contextmanager
def count_refusals() -> Iterator[None]:
    """Count a body refused whole (an :class:`ApiError` raised within) by its status."""
    try:
        yield
    except ApiError as exc:
        REFUSED.labels(str(exc.status)).inc()
        raise


class DatabaseCollector:
    """The gauges read from the database at scrape time, by the process answering."""

    def __init__(
        self, storage: Storage, export: str | None = None, max_blocks: int | None = None
    ) -> None:
        self.storage = storage
        self.export = export  # the forwarder's destination (its name), if any
        self.max_blocks = max_blocks  # --max-blocks (None: no limit)

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("sqreen_database_up", "1 if the scrape could read the database.")
        try:
            found = list(self._read())
        except Exception as exc:  # a scrape still reports the counters, and this
            logger.warning("sqreen: /metrics: database: %s", type(exc).__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *found]

    def _read(self) -> Iterator[Metric]:
        storage = self.storage
        now = storage.now()
        blocks = GaugeMetricFamily(
            "sqreen_blocks_active",
            "Blocks in force, by type and origin.",
            labels=["type", "origin"],
        )
        tally = Tally(
            (b.type.removeprefix("block_"), _origin(b.created_by))
            for b in storage.list_blocks()
            if b.is_active(now)
        )
        for kind in ("ip", "user"):
            for origin in ("hand", "playbook"):
                blocks.add_metric([kind, origin], tally[kind, origin])
        yield blocks
        if self.max_blocks is not None:
            yield GaugeMetricFamily(
                "sqreen_blocks_max",
                "The most blocks in force at once (--max-blocks): at it, a playbook's new "
                "block replaces a playbook block, and a person's is refused.",
                value=self.max_blocks,
            )
        alerts = CounterMetricFamily(
            "sqreen_alerts", "Alerts stored, by playbook.", labels=["playbook"]
        )
        for playbook, (count, _) in sorted(storage.alert_counts().items()):
            alerts.add_metric([playbook], count)
        yield alerts
        agents = GaugeMetricFamily(
            "sqreen_agents",
            f"SDK processes heard from within a week: fresh (within {STALE_AFTER:g} s) or stale.",
            labels=["state"],
        )
        ages = [(now - a.last_seen).total_seconds() for a in storage.agents()]
        stale = sum(age > STALE_AFTER for age in ages)
        agents.add_metric(["fresh"], len(ages) - stale)
        agents.add_metric(["stale"], stale)
        yield agents
        yield GaugeMetricFamily(
            "sqreen_database_bytes",
            "The database's size (SQLite: file and WAL; PostgreSQL: pg_database_size).",
            value=storage.database_bytes(),
        )
        newest = storage.newest_received_at()
        if newest is not None:
            yield GaugeMetricFamily(
                "sqreen_ingest_lag_seconds",
                "Seconds since the newest stored event was received (absent with no events).",
                value=max(0.0, (now - newest).total_seconds()),
            )
        if self.export is not None:
            # From the cursors in the database: whichever worker holds the lease, any answers.
            lag = export_lag(storage, self.export)
            behind = GaugeMetricFamily(
                "sqreen_export_lag_records",
                "Events and alerts stored that --export's destination has not acknowledged.",
                labels=["kind"],
            )
            behind.add_metric(["event"], lag.events)
            behind.add_metric(["alert"], lag.alerts)
            yield behind


def _origin(created_by: str) -> str:
    return "playbook" if by_playbook(created_by) else "hand"


def render(storage: Storage, export: str | None = None, max_blocks: int | None = None) -> bytes:
    """The text exposition: the counters (all workers' with several), then the gauges
    (``export``: the forwarder's destination, whose lag is one of them; ``max_blocks``:
    ``--max-blocks``)."""
    registry = CollectorRegistry()
    if MULTIPROCESS:
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        counters = generate_latest(registry)
    else:
        counters = generate_latest(REGISTRY)
    database = CollectorRegistry()
    database.register(DatabaseCollector(storage, export, max_blocks))
    return counters + generate_latest(database)


def _token_matches(header: str | None, token: str | None) -> bool:
    if not token or not header:
        return False
    scheme, _, presented = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode("utf-8", "surrogatepass"), token.encode("utf-8")
    )


async def metrics_endpoint(request: Request) -> Response:
    """The metrics, for an admin key or the metrics token; 401 without either."""
    state = request.app.state
    if not _token_matches(request.headers.get("authorization"), state.metrics_token):
        await authenticate(request, admin=True)
    started = time.perf_counter()
    forwarder = getattr(state, "forwarder", None)
    export = None if forwarder is None else forwarder.destination.key
    blocks = getattr(state, "blocks", None)
    max_blocks = None if blocks is None else blocks.max_active
    body = await run_in_threadpool(render, state.storage, export, max_blocks)
    logger.debug("sqreen: /metrics rendered in %.1f ms", (time.perf_counter() - started) * 1e3)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def worker_stopped() -> None:
    """Mark this process dead for the multiprocess mode (its live gauges dropped; its
    counters stay in the sums)."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """``PROMETHEUS_MULTIPROC_DIR`` for the worker processes about to start: the user's, or
    a private temporary directory (0700) made here and removed at the end."""
    given = os.environ.get(DIR_ENV)
    if given:
        yield given
        return
    path = tempfile.mkdtemp(prefix="sqreen-metrics-")
    os.environ[DIR_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(DIR_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


METRICS_ROUTES: Final[Sequence[BaseRoute]] = (Route("/metrics", metrics_endpoint, methods=["GET"]),)
