"""The SDK's background threads leave the process's signals to the app's threads.

A signal sent to the process (``kill PID``: SIGTERM from systemd, Kubernetes or a server's
master, SIGINT, SIGHUP...) is delivered by the kernel to any one thread that does not block
it (Linux prefers the main thread while it can take it; macOS picks any). Python runs its
handlers on the main thread only, and a main thread blocked in a long call (``time.sleep``,
``thread.join()``) is woken only by a signal delivered to that thread itself: one taken by
the flusher would leave the handler waiting until the main thread next runs Python code. So
every thread of ours starts with these signals blocked (the mask is inherited, and set around
``start()`` so that no signal reaches the new thread before it runs), and the kernel gives
them to the app's threads. Synchronous signals (SIGSEGV, SIGPIPE...) stay the faulting
thread's own.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any, Final

__all__ = ["PROCESS_SIGNALS", "start_thread"]

PROCESS_SIGNALS: Final = frozenset(
    getattr(signal, name)
    for name in (
        "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD",
        "SIGWINCH", "SIGTTIN", "SIGTTOU",
    )
    if hasattr(signal, name)
)  # fmt: skip


def start_thread(
    target: Callable[..., Any], name: str, args: tuple[Any, ...] = ()
) -> threading.Thread:
    """Start a daemon thread that no process-directed signal is delivered to."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:  # Windows: no signal masks
        thread.start()
        return thread
    previous = mask(signal.SIG_BLOCK, PROCESS_SIGNALS)
    try:
        thread.start()
    finally:
        mask(signal.SIG_SETMASK, previous)
    return thread
