"""Leaving: how :class:`~sqreen._queue.Queue` delivers what it holds when asked to
(``flush()``), at an ASGI lifespan's shutdown (what is left also written to the spool), and
at exit (the flusher stopped, the rest sent on the calling thread within a timeout, then
spooled and said); and where an event tracked after that goes (the spool, for the next
process, or dropped and said). Its attributes are the queue's.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ._delivery import Delivery
from ._drops import AFTER_SHUTDOWN, DropNotes
from ._reserve import Reserve

if TYPE_CHECKING:
    from ._event import QueuedEvent

__all__ = ["Exit"]

logger = logging.getLogger("sqreen")


class Exit(Delivery):
    """The queue's delivery on demand and at exit (mixed into :class:`~sqreen._queue.Queue`)."""

    _send_lock: threading.Lock
    _wake: threading.Event
    _drained: threading.Condition
    _thread: threading.Thread | None
    _closing: bool
    _flush_requested: bool
    _max_pending: int
    _late_noted: bool
    _late_kept: int
    _reserve: Reserve
    _drop_notes: DropNotes

    def start(self) -> None:
        raise NotImplementedError

    def _after_shutdown(self, event: QueuedEvent) -> bool:
        """An event tracked once the delivery at exit has begun (a thread still running, a
        request of a replaced client): nothing will send it from here. Kept in the spool for
        the next process (as accepted) when there is one, else dropped (False) and said."""
        kept = None
        if self.spool is not None and self.spool.enabled:
            with self.errors.guard("spooling an event tracked after shutdown"):
                kept = self.spool.write([self._encode(event)])
        with self._lock:
            if kept is not None:  # waiting, as what the exit kept in the spool
                self._pending += 1
                self._pending_bytes += event.size
                self._late_kept += 1
            else:
                self.dropped[AFTER_SHUTDOWN] = self.dropped.get(AFTER_SHUTDOWN, 0) + 1
            first, self._late_noted = not self._late_noted, True
        if kept is not None and first and self.spool is not None:
            logger.warning(
                "sqreen: event %r tracked after the delivery at shutdown: kept in %s for the "
                "next process, as are the ones that follow",
                event.name,
                self.spool.directory,
            )
        elif kept is None:
            self._note_drops(self._clock(), first)
        return kept is not None

    def flush(self, timeout: float, *, until_failure: bool = False) -> bool:
        """Wait until everything queued so far is delivered or dropped; False on timeout,
        and with ``until_failure`` as soon as a send fails (the collector down: the retries
        that would follow wait longer than a shutdown should)."""
        deadline = self._clock() + timeout
        failed = self._failed_sends
        if self._thread is None or not self._thread.is_alive():
            if self._thread is None:
                self.start()
            if self._thread is None:  # closing: deliver inline
                return self._drain(deadline)
        with self._drained:
            self._flush_requested = True
            self._wake.set()
            while self._pending:
                remaining = deadline - self._clock()
                if remaining <= 0 or (until_failure and self._failed_sends != failed):
                    return False
                self._drained.wait(min(remaining, 0.05))
                self._flush_requested = True
                self._wake.set()
        return True

    def flush_or_spool(self, timeout: float) -> bool:
        """Deliver what is queued within ``timeout`` (:meth:`flush`); what is left is written
        to the spool too, and said. It stays queued: sent from here if the process goes on (the
        files go once it is), from the spool by the next process if this one dies now (an ASGI
        server's lifespan shutdown, after which uvicorn kills its process with SIGTERM). A
        send that fails ends the wait: the collector is down, and the spool keeps them."""
        if self._closing:  # the delivery at exit came first, and said what it left
            return not self._pending
        failed = self._failed_sends
        began = self._clock()
        self._gave_up = None  # each lifespan's shutdown decides anew
        if self.flush(timeout, until_failure=True):
            return True
        self._gave_up = (began + timeout, self._failed_sends != failed)
        when = (
            "at the lifespan shutdown (a send failed: the collector is down or refusing)"
            if self._failed_sends != failed
            else f"within {timeout:g}s of the lifespan shutdown"
        )
        kept = 0
        if self.spool is not None and self.spool.enabled:
            with self.errors.guard("spooling at lifespan shutdown"):
                self._spool_all()
                kept = sum(len(batch) for batch in list(self._ready) if batch.spooled)
        logger.warning(
            "sqreen: %d events not delivered %s; %s",
            self._pending,
            when,
            f"{kept} kept in {self.spool.directory} for the next process should this one end"
            if kept and self.spool is not None
            else "still queued",
        )
        return False

    def shutdown(self, timeout: float) -> bool:
        """Stop the thread and deliver what is left on the calling thread, within ``timeout``.
        After a lifespan shutdown that gave up (:meth:`flush_or_spool`), within what is left
        of its ``timeout``, and with one try if a send failed then: what it kept in the spool
        waited a second whole timeout (a collector down or hung stopped an ASGI server in
        twice ``shutdown_timeout``)."""
        deadline = self._clock() + timeout
        retry = True
        if self._gave_up is not None:
            deadline = min(deadline, self._gave_up[0])
            retry = not self._gave_up[1]
        with self._lock:
            self._closing = True
            self._max_pending = -1  # put() after this: see _after_shutdown
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - self._clock()))
        delivered = self._drain(deadline, retry)
        # The last stats: short-lived processes show up, not those that did nothing at all.
        if (thread is not None or self.tracked or self.recovered) and self._clock() < deadline:
            with self.errors.guard("the last heartbeat"):
                self._heartbeat(deadline)
        self._note_drops(self._clock(), final=True)
        self._say_refused(final=True)
        if self._pending:
            kept = self._spool_the_rest() + self._late_kept
            spooling = self.spool is not None and self.spool.enabled
            lost = self._pending - kept  # (nothing is kept without a spool)
            logger.warning(
                "sqreen: %d events not delivered at shutdown%s%s",
                self._pending,
                f"; {kept} kept in {self.spool.directory} for the next process"
                if kept and self.spool is not None
                else "",
                f"; {lost} lost{'' if spooling else ' (no spool: SQREEN_SPOOL=off)'}"
                if lost > 0
                else "",
            )
        if self.spool is not None:
            self.spool.close()
        self.transport.close()
        return delivered

    def _note_drops(self, now: float, final: bool = False) -> None:
        self._drop_notes.say(self.dropped, now, final, watched=self._reserve.dropped)

    def _notify_drained(self) -> None:
        with self._drained:
            self._drained.notify_all()

    def _drain(self, deadline: float, retry: bool = True) -> bool:
        """Deliver what is left on the calling thread, retrying until ``deadline`` (once
        only, without ``retry``)."""
        if not self._send_lock.acquire(timeout=max(0.0, deadline - self._clock())):
            return False
        try:
            with self.errors.guard("the delivery at shutdown"):
                while self._pending and self._clock() < deadline:
                    if self._send_all(deadline) or not retry:
                        break
                    time.sleep(max(0.0, min(self._retry_at, deadline) - self._clock()))
                return not self._pending
            return False
        finally:
            self._send_lock.release()
