"""One process of ``sqreen serve --workers N`` (:func:`worker_app`, a uvicorn factory, which
builds its app from the options ``serve`` passed in :data:`WORKER_ENV`), and what ``serve``
and its workers build alike: the playbooks, IP intelligence, the garbage collector's
settings.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Final

import click
from starlette.applications import Starlette

from ._cli_export import destination, forwarder
from ._signals import reload_on_sighup, stop_when_orphaned
from .intel import GeoIpError, IpIntel, Reputation
from .playbooks import PlaybookError, PlaybookSource
from .storage import DatabaseUnreachable, Storage

__all__ = [
    "GC_GEN0",
    "WORKER_ENV",
    "enrichment",
    "open_ip_intel",
    "playbook_source",
    "settle_gc",
    "worker_app",
]

WORKER_ENV: Final = "SQREEN_SERVE_WORKER"


def worker_app() -> Starlette:
    """The app of one ``sqreen serve --workers N`` process (a uvicorn factory)."""
    from .app import create_app
    from .storage import open_storage

    config = json.loads(os.environ[WORKER_ENV])
    stop_when_orphaned(config.get("supervisor") or os.getppid())
    handlers = {signum: signal.getsignal(signum) for signum in WAIT_SIGNALS}
    storage = _worker_storage(partial(open_storage, config["db"]))
    for signum, handler in handlers.items():  # as they were, if a wait replaced them
        signal.signal(signum, handler)
    # The supervisor watches the file, and passes SIGHUP on once it holds (_supervisor.py).
    # Read after the wait: the rules of now, whatever changed meanwhile.
    source = playbook_source(config.get("playbooks"), config.get("in_force"))
    app = create_app(
        storage,
        retention_days=config["retention_days"],
        owns_storage=True,
        workers=config["workers"],
        playbooks=source,
        max_blocks=config["max_blocks"],
        max_polls_per_key=config["max_polls_per_key"],
        **enrichment(
            config.get("ip_intel", True),
            open_ip_intel(config.get("geoip", ()), storage),
            config.get("travel_speed"),
        ),
        forwarder=forwarder(storage, destination(*config["export"] or (None, ""))),
        metrics_token=config.get("metrics_token"),
    )
    reload_on_sighup(source)
    settle_gc()
    return app


#: What a worker waiting for its database answers itself (:func:`_stop_on_signals`).
WAIT_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _stop_on_signals() -> None:
    """While a worker waits for its database, in the app factory, uvicorn holds SIGTERM and
    SIGINT for when the app is made (never, while the database is away): a stop (the
    supervisor's, or the orphan watch's) ends the wait, and the process, at once. A reload
    (SIGHUP, which the supervisor passes on when the playbooks change) is left for later:
    the worker reads the playbooks once its database is back."""

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


#: Seconds between a worker's tries at a database it cannot reach, and between its lines
#: saying so.
WORKER_RETRY: Final = 2.0
WORKER_SAY_EVERY: Final = 60.0


def _worker_storage(opener: Callable[[], Storage]) -> Storage:
    """A worker's storage. The supervisor opened (and migrated) it at start, so a database
    this worker cannot reach went away since: a worker started again meanwhile (after a
    crash, or one killed) waits for it, saying so once a minute, rather than dying at once
    with a traceback and being started again, twice a second, for the whole outage."""
    said: float | None = None
    while True:
        try:
            return opener()
        except DatabaseUnreachable as exc:
            if said is None:  # the first failure: the wait begins
                _stop_on_signals()
                said = -WORKER_SAY_EVERY
            now = time.monotonic()
            if now - said >= WORKER_SAY_EVERY:
                said = now
                logging.getLogger("sqreen.server").warning(
                    "sqreen: worker %d waits for the database (tried every %g s): %s",
                    os.getpid(),
                    WORKER_RETRY,
                    exc,
                )
            time.sleep(WORKER_RETRY)


#: The youngest generation's threshold in the collector (CPython's default: 700). A batch of
#: 500 events makes thousands of containers (parsed events, enrichment, rows, playbook views)
#: that live until it is stored: at 700 each is walked by several young collections and
#: promoted, and then walked again by full ones, along with the IP cache. Above a batch's
#: allocations most of them are freed before a collection sees them. bench/bench_gc.py (one
#: process, alternated, three runs at load 1-9 on 2 cores, CPU per event): lower in 9 of 12
#: comparisons, by 1.5 to 15 % (cold addresses with IP intelligence 134 -> 125, 114 -> 108 µs).
GC_GEN0: Final = 50_000


def settle_gc() -> None:
    gc.freeze()  # what startup built lives on: keep the collector's scans off it (-3% CPU)
    gc.set_threshold(GC_GEN0, *gc.get_threshold()[1:])


def playbook_source(path: str | None, in_force: str | None = None) -> PlaybookSource | None:
    """The playbooks of ``serve``, or of a worker of ``--workers N`` (``in_force`` given: the
    copy its supervisor keeps of the set in force; the worker re-reads on SIGHUP only). A
    worker that starts while the file does not hold (a bad edit saved while a worker was
    replaced) takes that copy, said: it died at start, again at each replacement, until the
    file was fixed."""
    if path is None:
        return None
    try:
        return PlaybookSource(path, supervised=in_force is not None)
    except PlaybookError as exc:
        if in_force is None or not os.path.exists(in_force):
            raise click.ClickException(f"playbooks not loaded: {exc}") from None
        refused = exc
    source = PlaybookSource(in_force, supervised=True)
    logging.getLogger("sqreen.server").error(
        "sqreen: playbooks not loaded at this worker's start: %s; the %d in force stay",
        refused,
        len(source.playbooks.playbooks),
    )
    return source


def open_ip_intel(paths: Iterable[str], storage: Storage | None = None) -> IpIntel:
    """IP intelligence with the ``--geoip-db`` files; a file that cannot be used stops the
    command with its path and the reason."""
    try:
        intel = IpIntel.open(paths)
    except GeoIpError as exc:
        raise click.ClickException(f"--geoip-db {exc}") from None
    if storage is not None:
        intel.reputation = Reputation(storage)
    return intel


def enrichment(on: bool, intel: IpIntel, travel_speed: float | None) -> dict[str, Any]:
    """What :func:`~.app.create_app` is given for ``--ip-intel`` and ``--travel-speed``
    (0: off): IP intelligence and impossible travel, or no enricher at all."""
    if not on:
        intel.close()
        return {"enrichers": []}
    return {"ip_intel": intel, "travel_speed": travel_speed or None}
