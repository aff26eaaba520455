"""Delivering at exit, wherever the process ends: ``atexit``, the finalizers of
``multiprocessing``'s workers, a SIGTERM whose disposition is the default, and the end of a
uvicorn server's shutdown (:func:`exit_hooks`). Every client made is in :data:`CLIENTS`
(:mod:`sqreen._hub` adds them); :func:`at_exit` shuts down those still open.
"""

from __future__ import annotations

import atexit

# Here, not in exit_hooks(): importing it reads the disk (os.getcwd()), and a middleware's
# set-up may run inside an event loop (Starlette builds its middlewares there).
import multiprocessing.util
import os
import signal
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, Final

from ._threads import start_thread

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["CLIENTS", "after_fork_in_child", "at_exit", "exit_hooks", "hooks_pending"]

#: Every client made (held weakly): those still open deliver at exit.
CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()

#: One delivery at exit at a time, and the others wait for it: a SIGTERM handler's thread may
#: be delivering while the main thread exits normally (uvicorn re-raises SIGTERM into the
#: handler it found, then returns), and an exit that found the clients closing and went on
#: would end the process in the middle of that delivery.
_exit_lock = threading.RLock()


def after_fork_in_child() -> None:
    """In a forked child: another thread may have held the exit's lock in the parent."""
    global _exit_lock
    _exit_lock = threading.RLock()


def at_exit() -> None:
    with _exit_lock:
        for client in list(CLIENTS):
            if not client.closed:
                client.shutdown()


#: The multiprocessing finalizer (see :func:`_register_finalizer`), and the process that made it.
_finalizer: multiprocessing.util.Finalize[None] | None = None
_finalizer_pid = 0
_after_fork_pid = 0  # the process that registered the "after fork" function of its workers
_signal_pid = 0  # the process whose SIGTERM disposition was looked at, on its main thread


def exit_hooks() -> None:
    """Deliver at exit where ``atexit`` does not run; cheap to call again.

    - Workers made by ``multiprocessing`` (granian's, hypercorn's...) end in ``os._exit``:
      their exit runs ``multiprocessing``'s finalizers instead of ``atexit``, so one is
      registered too, whenever the process has none of its own (:func:`_register_finalizer`).
    - A process whose SIGTERM is the default dies without any cleanup (``flask run``,
      waitress, wsgiref, a hypercorn worker; systemd stops with SIGTERM): a handler is
      installed there, and only there (a server's own handler is never replaced). It
      delivers on another thread, so that the interrupted main thread holds no lock it
      needs, then dies of SIGTERM as it would have. Python only lets the main thread set a
      handler, and WSGI servers (waitress, hypercorn serving WSGI) make the client on the
      thread of the first request: so the middlewares call this when they are built, which
      is when the app is imported, on the main thread.
    - Under uvicorn's own handler, the delivery follows the server's shutdown
      (:func:`_after_uvicorn`).
    """
    global _after_fork_pid, _signal_pid
    pid = os.getpid()
    _register_finalizer()
    if _after_fork_pid != pid:
        _after_fork_pid = pid
        # A worker multiprocessing starts clears the finalizers it has (inherited, or
        # registered while it imported ``__main__``), then runs its "after fork" functions:
        # there, this process's worker registers its own again.
        multiprocessing.util.register_after_fork(_FORKS, _register_after_fork)
    if _signal_pid != pid and threading.current_thread() is threading.main_thread():
        _signal_pid = pid
        try:
            handler = signal.getsignal(signal.SIGTERM)
            if handler is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
            else:
                _after_uvicorn(handler)
        except (ValueError, OSError):  # not the main interpreter, or no such signal
            pass


def hooks_pending() -> bool:
    """Whether :func:`exit_hooks` has not yet run on this process's main thread (a worker
    forked from a master that made its client: the hooks there were the master's)."""
    return _signal_pid != os.getpid()


def _after_uvicorn(handler: object) -> None:
    """Deliver at the end of the shutdown of the uvicorn server whose ``handle_exit`` is the
    SIGTERM handler (``handler``), when a signal stopped it.

    uvicorn (0.29 and later) takes SIGINT and SIGTERM while it serves; after its graceful
    shutdown it restores the handlers it found and raises the signal again. Our handler is
    what it restores only when the app was imported before it served (one worker, a raw ASGI
    app): FastAPI's and Starlette's middlewares are built at the first lifespan event or
    request, and with ``--workers N``, ``--reload`` or gunicorn's ``UvicornWorker`` the app
    is imported inside ``serve()``. It restores the default then, and SIGTERM kills the
    process: no ``atexit``, no ``multiprocessing`` finalizer. So this server's ``shutdown``
    (its connections closed, the lifespan shutdown done) is followed by the delivery at exit,
    on the main thread (its loop serves nothing any more), before the signal comes back. A
    server stopped otherwise (``--limit-max-requests``, ``should_exit`` set by a program) ends
    in a normal exit, where ``atexit`` or the finalizer delivers. Nothing is replaced but
    that one server's ``shutdown`` attribute; anything but uvicorn's handler is left alone.
    """
    module = sys.modules.get("uvicorn.server")
    owner = getattr(handler, "__self__", None)
    if (
        module is None
        or not isinstance(owner, getattr(module, "Server", ()))
        or getattr(handler, "__name__", None) != "handle_exit"
    ):
        return
    server: Any = owner
    shutdown = getattr(server, "shutdown", None)
    if shutdown is None:
        return

    async def shutdown_then_deliver(*args: Any, **kwargs: Any) -> None:
        try:
            await shutdown(*args, **kwargs)
        finally:
            # What uvicorn raises again once serve() ends; without it (another version), deliver.
            captured = getattr(server, "_captured_signals", None)
            if captured is None or captured:
                at_exit()

    server.shutdown = shutdown_then_deliver


class _Forks:
    """The key (held weakly) of the function multiprocessing runs in the workers it forks."""


_FORKS: Final = _Forks()


def _register_finalizer() -> None:
    """Deliver at the exit that multiprocessing's workers make (``os._exit`` after their
    finalizers): make sure this process has a finalizer of its own in the registry.

    The pid alone does not say it: a worker started by ``spawn`` or ``forkserver`` imports
    ``__main__`` (which may call ``sqreen.start()``, registering one for the worker's own
    pid) *before* ``BaseProcess._after_fork()`` clears the registry, and a ``forkserver``
    worker then ends in ``os._exit`` without ``atexit``. So it must still be registered too.
    One inherited through a plain ``os.fork`` is registered but does not run in the child
    (``Finalize`` checks the pid that made it): hence both checks.
    """
    global _finalizer, _finalizer_pid
    pid = os.getpid()
    if _finalizer is not None and _finalizer_pid == pid and _finalizer.still_active():
        return
    _finalizer = multiprocessing.util.Finalize(None, at_exit, exitpriority=100)
    _finalizer_pid = pid


def _register_after_fork(_: object) -> None:
    _register_finalizer()


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM: die at once

    def deliver_then_die() -> None:
        try:
            at_exit()
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    start_thread(deliver_then_die, "sqreen-sigterm")


atexit.register(at_exit)
