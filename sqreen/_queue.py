"""The bounded event queue and its flusher thread.

``put()`` is the only part on the caller's thread: a lock, a length and byte check, an append.
Everything else runs on one flusher thread: building each event's wire form (parsing request
parameters, scrubbing, serialising), batching by count, bytes and interval, delivering through
the transport, retrying with exponential backoff and jitter, and applying the action set that
comes back. Memory is bounded by ``max_queue_size`` events and ``max_queue_bytes`` (counting
the batch being retried); past either bound the *new* event is dropped and counted, so that
``sent + dropped == tracked`` always holds.

The thread starts lazily on the first ``put()``, never at import or in ``init()``. A put made
on the main thread outside any request (what a ``gunicorn --preload`` master does while it
imports the app) defers the start until a put inside a request, a full batch, a put made one
``flush_interval`` after the first waiting event, ``flush()``, or exit: such a master never
starts a thread that its forked workers would inherit half-way through a send. After
``fork()`` the child starts afresh: new locks, an empty queue, a new connection pool (the
parent still owns, and delivers, what it had queued).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._json import dumps_utf8

if TYPE_CHECKING:
    from ._blocking import Blocklist
    from ._config import Config
    from ._request import RequestSnapshot
    from .transports import Transport

__all__ = ["Event", "Queue"]

logger = logging.getLogger("sqreen")

MAX_BACKOFF = 30.0
DROP_REASONS = ("queue_full", "invalid", "retry_expired", "rejected")


class Event:
    """An event between ``track()`` and its delivery; built on the caller's thread."""

    __slots__ = (
        "collect_body",
        "enqueued",
        "name",
        "properties",
        "request",
        "seq",
        "size",
        "target",
        "ts",
        "user",
    )

    def __init__(
        self,
        seq: int,
        name: str,
        ts: float,
        properties: dict[str, Any],
        user: dict[str, str] | None,
        target: dict[str, str] | None,
        request: RequestSnapshot | None,
        collect_body: bool,
        size: int,
    ) -> None:
        self.seq = seq
        self.name = name
        self.ts = ts
        self.properties = properties
        self.user = user
        self.target = target
        self.request = request
        self.collect_body = collect_body
        self.size = size
        self.enqueued = 0.0


class Prepared:
    __slots__ = ("data", "enqueued", "size")

    def __init__(self, data: bytes, enqueued: float, size: int) -> None:
        self.data = data
        self.enqueued = enqueued
        self.size = size


class Queue:
    def __init__(
        self,
        config: Config,
        transport: Transport,
        blocklist: Blocklist,
        to_wire: Callable[[Event], dict[str, Any]],
        envelope: Callable[[], dict[str, Any]],
    ) -> None:
        self.config = config
        self.transport = transport
        self.blocklist = blocklist
        self._to_wire = to_wire
        self._envelope = envelope
        self._reset_state()

    def _reset_state(self) -> None:
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._drained = threading.Condition(threading.Lock())
        self._queue: deque[Event] = deque()
        self._ready: deque[list[Prepared]] = deque()  # prepared batches, oldest first
        self._pending = 0  # events queued or in a prepared batch
        self._pending_bytes = 0
        self._thread: threading.Thread | None = None
        self._deferred_since: float | None = None
        self._closing = False
        self._flush_requested = False
        self._attempt = 0
        self._retry_at = 0.0
        self._last_flush = time.monotonic()
        self.tracked = 0
        self.sent = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.internal_errors = 0

    def after_fork_in_child(self) -> None:
        """Start afresh in a forked child: the parent keeps its events and its thread."""
        self._reset_state()
        self.transport.after_fork()

    # -- the caller's side -----------------------------------------------------------------

    def put(self, event: Event, in_request: bool) -> bool:
        cfg = self.config
        with self._lock:
            self.tracked += 1
            if (
                self._pending >= cfg.max_queue_size
                or self._pending_bytes + event.size > cfg.max_queue_bytes
            ):
                self.dropped["queue_full"] += 1
                return False
            self._pending += 1
            self._pending_bytes += event.size
            event.enqueued = time.monotonic()
            self._queue.append(event)
            queued = len(self._queue)
        if self._thread is None:
            self._maybe_start(in_request, event.enqueued)
        elif queued >= cfg.batch_size and not self._wake.is_set():
            self._wake.set()
        return True

    def count_invalid(self) -> None:
        with self._lock:
            self.tracked += 1
            self.dropped["invalid"] += 1

    def _maybe_start(self, in_request: bool, now: float) -> None:
        if not in_request and threading.current_thread() is threading.main_thread():
            if self._deferred_since is None:
                self._deferred_since = now
            if (
                len(self._queue) < self.config.batch_size
                and now - self._deferred_since < self.config.flush_interval
            ):
                return
        self.start()

    def start(self) -> None:
        """Start the flusher thread unless it runs already (cheap then: no lock taken)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None or self._closing:
                return
            self._thread = threading.Thread(target=self._run, name="sqreen-flusher", daemon=True)
            self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is delivered or dropped; False on timeout."""
        deadline = time.monotonic() + timeout
        if self._thread is None or not self._thread.is_alive():
            if self._thread is None:
                self.start()
            if self._thread is None:  # closing: deliver inline
                return self._drain(deadline)
        with self._drained:
            self._flush_requested = True
            self._wake.set()
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._drained.wait(min(remaining, 0.05))
                self._flush_requested = True
                self._wake.set()
        return True

    def shutdown(self, timeout: float) -> bool:
        """Stop the thread and deliver what is left on the calling thread, within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closing = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        delivered = self._drain(deadline)
        if self._pending:
            logger.warning("sqreen: %d events not delivered at shutdown", self._pending)
        self.transport.close()
        return delivered

    # -- the flusher's side ----------------------------------------------------------------

    def _run(self) -> None:
        cfg = self.config
        next_heartbeat = time.monotonic()  # fetch the action set at once
        while not self._closing:
            now = time.monotonic()
            try:
                if now >= next_heartbeat:
                    next_heartbeat = now + cfg.heartbeat_interval
                    if now >= self._retry_at:
                        self._heartbeat()
                due = (
                    self._flush_requested
                    or len(self._queue) >= cfg.batch_size
                    or now - self._last_flush >= cfg.flush_interval
                )
                if due and now >= self._retry_at:
                    self._flush_requested = False
                    self._last_flush = now
                    with self._send_lock:
                        self._send_all(None)
            except Exception:
                self.internal_error("flusher")
                self._back_off(None)
            self._notify_drained()
            wait = min(next_heartbeat, self._last_flush + cfg.flush_interval)
            if self._retry_at > now:
                wait = max(wait, self._retry_at)
            self._wake.wait(max(0.0, wait - time.monotonic()))
            self._wake.clear()

    def _notify_drained(self) -> None:
        with self._drained:
            self._drained.notify_all()

    def _send_all(self, deadline: float | None) -> bool:
        """Send prepared and queued events until empty, a retry is due, or the deadline."""
        while True:
            if not self._ready:
                batch = self._prepare()
                if not batch:
                    return True
                self._ready.append(batch)
            batch = self._ready[0]
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                return False
            reply = self.transport.send(self._envelope(), [p.data for p in batch], timeout)
            self.blocklist.apply(reply.actions)
            if reply.outcome == "ok":
                self._ready.popleft()
                self._attempt = 0
                rejected = len(set(reply.rejected))
                self._settle(batch, sent=len(batch) - rejected, reason="rejected", dropped=rejected)
            elif reply.outcome == "split" and len(batch) > 1:
                self._ready.popleft()
                half = len(batch) // 2
                self._ready.extendleft([batch[half:], batch[:half]])
            elif reply.outcome in ("drop", "split"):
                self._ready.popleft()
                logger.error(
                    "sqreen: %d events refused by the receiver: %s", len(batch), reply.detail
                )
                self._settle(batch, sent=0, reason="rejected", dropped=len(batch))
            else:
                delay = self._back_off(reply.retry_after)
                if self._attempt in (1, 5) or self._attempt % 20 == 0:
                    logger.warning(
                        "sqreen: delivery failed (%s), retrying in %.1fs (attempt %d)",
                        reply.detail,
                        delay,
                        self._attempt,
                    )
                self._expire()
                return False

    def _back_off(self, retry_after: float | None) -> float:
        self._attempt += 1
        backoff: float = min(MAX_BACKOFF, 0.5 * 2.0 ** (self._attempt - 1))
        delay = max(backoff * random.uniform(0.5, 1.0), retry_after or 0.0)
        self._retry_at = time.monotonic() + delay
        return delay

    def _prepare(self) -> list[Prepared]:
        cfg = self.config
        # The events of a batch are taken under one acquisition of the lock that put() takes
        # too. Taken one by one, the two threads fell into a convoy while the flusher was busy
        # (each blocked on the lock the other held while waiting for the GIL): track() in a
        # request then took 40-90 us instead of 4.
        with self._lock:
            events = [self._queue.popleft() for _ in range(min(cfg.batch_size, len(self._queue)))]
        batch: list[Prepared] = []
        total = 0
        for i, event in enumerate(events):
            try:
                # A lone surrogate (from a client's JSON) is encoded as "?".
                data = dumps_utf8(self._to_wire(event)).encode("utf-8", "replace")
            except Exception:
                self.internal_error(f"serialising event {event.name!r}")
                self._settle([Prepared(b"", event.enqueued, event.size)], 0, "invalid", 1)
                continue
            batch.append(Prepared(data, event.enqueued, event.size))
            total += len(data) + 1
            if total >= cfg.max_batch_bytes - 70_000:  # room for one more event of any size
                with self._lock:  # the rest waits for the next batch, in its order
                    self._queue.extendleft(reversed(events[i + 1 :]))
                break
        return batch

    def _expire(self) -> None:
        """Drop events that have waited longer than ``max_retry_age`` since they were queued."""
        limit = time.monotonic() - self.config.max_retry_age
        for batch in list(self._ready):
            old = [p for p in batch if p.enqueued < limit]
            if old:
                batch[:] = [p for p in batch if p.enqueued >= limit]
                self._settle(old, 0, "retry_expired", len(old))
                if not batch:
                    self._ready.remove(batch)
        with self._lock:
            while self._queue and self._queue[0].enqueued < limit:
                event = self._queue.popleft()
                self._pending -= 1
                self._pending_bytes -= event.size
                self.dropped["retry_expired"] += 1

    def _settle(self, batch: list[Prepared], sent: int, reason: str, dropped: int) -> None:
        with self._lock:
            self._pending -= len(batch)
            self._pending_bytes -= sum(p.size for p in batch)
            self.sent += sent
            self.dropped[reason] += dropped

    def _heartbeat(self) -> None:
        payload = self._envelope()
        payload["stats"] = self.stats()
        reply = self.transport.heartbeat(payload)
        self.blocklist.apply(reply.actions)
        if reply.outcome == "retry" and reply.retry_after:
            # Retry-After speaks for the whole collector: events wait too.
            self._retry_at = max(self._retry_at, time.monotonic() + reply.retry_after)

    def _drain(self, deadline: float) -> bool:
        """Deliver what is left on the calling thread, retrying until ``deadline``."""
        if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        try:
            while self._pending and time.monotonic() < deadline:
                if self._send_all(deadline):
                    break
                time.sleep(max(0.0, min(self._retry_at, deadline) - time.monotonic()))
            return not self._pending
        except Exception:
            self.internal_error("shutdown")
            return False
        finally:
            self._send_lock.release()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "queue_depth": self._pending,
                "queue_bytes": self._pending_bytes,
                "tracked": self.tracked,
                "sent": self.sent,
                "dropped": dict(self.dropped),
                "internal_errors": self.internal_errors,
            }

    def internal_error(self, where: str) -> None:
        self.internal_errors += 1
        logger.exception("sqreen: internal error in %s", where)


def new_id_prefix() -> str:
    """A per-process random prefix for event ids (re-drawn after fork)."""
    return os.urandom(6).hex()
