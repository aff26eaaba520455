"""The signals ``sqreen serve`` acts on, beyond the stop uvicorn handles itself.

- SIGTERM and SIGINT: uvicorn stops accepting, then waits (``timeout_graceful_shutdown``)
  for the requests in flight, and cancels those left with an ERROR line. The action
  long-polls (:mod:`.actions`) would be among them: held up to a minute, they would turn
  every stop with SDKs connected into "Cancel 3 running task(s), timeout graceful shutdown
  exceeded". :func:`stop_signals_call` runs a callback (the feed answering its polls) as the
  signal arrives, before uvicorn's own handler: the polls are answered at once, and the
  shutdown waits for nothing. ASGI tells an app of a stop only after that wait (the
  lifespan's shutdown), hence the signal.
- SIGTERM again, after the stop: uvicorn puts back the handler it found and raises the
  signal it caught once it has stopped, which by default ends the process by SIGTERM (status
  -15, 143 in a shell) where ``--workers N`` (whose supervisor handles SIGTERM itself) and
  Ctrl-C exit 0. :func:`exit_zero_after_sigterm` makes that handler a clean exit.
- SIGHUP: re-read the playbooks (:func:`reload_on_sighup`), where it would end the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .playbooks import PlaybookSource

__all__ = [
    "STOP_SIGNALS",
    "exit_zero_after_sigterm",
    "reload_on_sighup",
    "stop_signals_call",
    "stop_when_orphaned",
]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals_call(callback: Callable[[], None]) -> Iterator[None]:
    """While in the block, SIGINT and SIGTERM also run ``callback`` on the running event
    loop, then the handler in place (the server's). Only in the main thread (where signals
    are handled) and over a handler some server installed: with none (a test client's
    lifespan, in a thread), nothing changes. Entered from the app's lifespan, so inside
    uvicorn's own capture of the signals, which puts its handlers back when it is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    ours: dict[signal.Signals, Any] = {}
    for sig in STOP_SIGNALS:
        server = signal.getsignal(sig)
        if not callable(server):
            continue

        def handler(signum: int, frame: Any, server: Callable[[int, Any], Any] = server) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to answer
                loop.call_soon_threadsafe(callback)
            server(signum, frame)

        signal.signal(sig, handler)
        ours[sig] = (handler, server)
    try:
        yield
    finally:
        for stop, (ours_, theirs) in ours.items():
            if signal.getsignal(stop) is ours_:
                signal.signal(stop, theirs)


def exit_zero_after_sigterm() -> None:
    """SIGTERM, where no server handles it (before uvicorn starts, and as uvicorn raises it
    again once it has stopped), exits with status 0 (SystemExit unwinds as Ctrl-C's
    KeyboardInterrupt does)."""

    def stopped(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stopped)


def reload_on_sighup(source: PlaybookSource | None) -> None:
    """SIGHUP re-reads the playbooks at once (where SIGHUP would otherwise end the
    process, or be ignored: ``nohup`` ignores it, and ``kill -HUP`` then did nothing, said
    nowhere; a terminal's hang-up now re-reads the file, which changes nothing when it has
    not changed): the source's watcher wakes (see :meth:`PlaybookSource.request_reload`).
    A handler of someone else's is left in place. Without playbooks, SIGHUP is said and
    changes nothing (``systemctl reload`` and logrotate send it: it ended the collector, with
    status 129 and not a line)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, signal.SIG_IGN):

        def reload(signum: int, frame: object) -> None:
            if source is not None:
                source.request_reload()
            else:
                logging.getLogger("sqreen.server").info(
                    "sqreen: SIGHUP: no --playbooks to re-read; nothing else reloads"
                )

        signal.signal(signal.SIGHUP, reload)


#: How often a worker of ``--workers N`` looks whether its supervisor still runs (s).
ORPHAN_CHECK_EVERY: Final = 1.0


def stop_when_orphaned(parent: int, every: float = ORPHAN_CHECK_EVERY) -> None:
    """Stop this worker (SIGTERM: a clean stop, its queued work done) once its supervisor,
    process ``parent``, is gone (``kill -9``, an OOM kill): it is no longer its parent (also
    when it went while this worker started). Orphaned workers went on serving, holding the
    port (a new ``sqreen serve`` could not bind it), SQLite's serve lock and the playbooks
    of before."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        logging.getLogger("sqreen.server").warning(
            "sqreen: the supervisor (pid %d) is gone: this worker stops", parent
        )
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sqreen-orphan-watch", daemon=True).start()
