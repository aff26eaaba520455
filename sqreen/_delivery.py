"""Delivery: batches out to the transport, replies back in; the flusher's half of the queue.

Everything here runs on the flusher thread (or on the exiting thread at shutdown), with the
state the :class:`~sqreen._queue.Queue` holds: preparing batches (the events' wire form, cut
at ``batch_size`` and about ``max_batch_bytes``), sending them, retrying with exponential
backoff and jitter, splitting on 413, dropping on 400, expiring what waited longer than
``max_retry_age``, keeping what the collector does not take in the spool, and applying the
action sets that replies carry.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from time import thread_time  # this thread's CPU time
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from ._blocking import MAX_BLOCKS, PACE
from ._drops import DROP_NOTE_INTERVAL
from ._errors import Guard, InternalErrors
from ._text import visible
from .events import (
    AUTH_LOGIN_FAILURE,
    AUTH_SIGNUP,
    STANDARD_EVENTS,
    canonical_name,
    spellings_of,
)

if TYPE_CHECKING:
    from ._blocking import Blocklist
    from ._config import Config
    from ._event import QueuedEvent
    from ._spool import Spool
    from .transports import Transport
    from .transports.base import Reply

__all__ = ["MAX_BACKOFF", "MAX_RETRY_AFTER", "Batch", "Delivery", "Prepared", "spellings"]

logger = logging.getLogger("sqreen")

MAX_BACKOFF = 30.0
#: The longest a ``Retry-After`` holds the queue (a day asked is five minutes obeyed).
MAX_RETRY_AFTER = 300.0
#: A pause after a batch whose reply changed the action set (``PACE`` times the CPU time of
#: the exchange) shorter than this is not made: a block in a reply costs far less.
MIN_PAUSE = 0.05


#: The names the collector's templates block on (``auth.login.failure``: brute force,
#: stuffing, spray; ``auth.signup``: sign-up abuse), watched until the collector says what
#: its playbooks read: a worker started while the collector is unreachable (a deploy, a new
#: container, no spool yet) keeps the queue's reserve for them, as the README promises.
DEFAULT_WATCH: Final = frozenset({AUTH_LOGIN_FAILURE, AUTH_SIGNUP})


def spellings(names: frozenset[str]) -> frozenset[str]:
    """Every name an app may track ``names`` under: each as the collector stores it, and
    for a standard name its usual other spellings (:func:`sqreen.events.spellings_of`:
    LiteSOC's, and other cases and separators), which the collector stores under it.
    Worked out when the watch list changes, so that ``put()`` compares the tracked name as
    it is, with no lookup."""
    standard = {canonical_name(name) for name in names}
    return frozenset(standard).union(
        *(spellings_of(name) for name in standard if name in STANDARD_EVENTS)
    )


class Batch(list["Prepared"]):
    """Prepared events sent together; ``spooled``: the spool file that holds them."""

    __slots__ = ("spooled",)

    def __init__(self, items: Iterable[Prepared] = (), spooled: str | None = None) -> None:
        super().__init__(items)
        self.spooled = spooled


class Prepared:
    __slots__ = ("data", "enqueued", "size")

    def __init__(self, data: bytes, enqueued: float, size: int) -> None:
        self.data = data
        self.enqueued = enqueued
        self.size = size


class Delivery:
    """The flusher's side of :class:`~sqreen._queue.Queue` (its attributes are the queue's)."""

    config: Config
    transport: Transport
    blocklist: Blocklist
    errors: InternalErrors
    spool: Spool | None
    watched: frozenset[str]
    urgent: frozenset[str]
    first_actions: threading.Event
    tracked: int
    recovered: int
    sent: int
    dropped: dict[str, int]
    _lock: threading.Lock
    _spool_lock: threading.Lock
    _queue: deque[QueuedEvent]
    _ready: deque[Batch]
    _pending: int
    _pending_bytes: int
    _attempt: int
    _failed_sends: int
    #: Set when a lifespan shutdown's delivery gave up (:meth:`Exit.flush_or_spool`): when
    #: its ``shutdown_timeout`` ends (the delivery at exit has what is left of it), and
    #: whether a send failed; unset by the next lifespan shutdown, and by any batch the
    #: collector takes.
    _gave_up: tuple[float, bool] | None
    _retry_at: float
    _rejections: set[str]
    _refused_unsaid: int
    _refused_said_at: float
    _refused_detail: str
    _refused_lock: threading.Lock
    _clock: Callable[[], float]
    _jitter: Callable[[float, float], float]
    _encode: Callable[[QueuedEvent], bytes]
    _envelope: Callable[[], dict[str, Any]]
    _report: Callable[[], dict[str, Any]] | None
    _flusher_guard: Guard

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def _recover(self) -> None:
        """Queue, first, the batches that processes of this app spooled before they died."""
        if self.spool is None:
            return
        now = self._clock()
        for name, events in self.spool.orphans():
            batch = Batch((Prepared(data, now, len(data) + 64) for data in events), name)
            with self._lock:
                self._pending += len(batch)
                self._pending_bytes += sum(p.size for p in batch)
                self.tracked += len(batch)
                self.recovered += len(batch)
            self._ready.append(batch)

    def _spool(self, batch: Batch) -> None:
        # The flusher, and the lifespan shutdown or the exit on another thread, may spool the
        # same batch at once: it gets one file.
        with self._spool_lock:
            if self.spool is not None and batch.spooled is None:
                batch.spooled = self.spool.write([p.data for p in batch])

    def _spool_all(self) -> None:
        """While the collector does not take them: every batch, and everything queued
        (prepared now), on disk; a process killed meanwhile loses nothing."""
        if self.spool is None or not self.spool.enabled:
            return
        while self._queue:
            prepared = self._prepare()
            if not prepared:
                break
            self._ready.append(Batch(prepared))
        for batch in list(self._ready):
            self._spool(batch)

    def _unspool(self, batch: Batch) -> None:
        if self.spool is not None and batch.spooled is not None:
            self.spool.remove(batch.spooled)
            batch.spooled = None

    def _send_all(self, deadline: float | None, full_only: bool = False) -> bool:
        """Send prepared and queued events until empty, a retry is due, or the deadline;
        ``full_only``: of the queued events, only full batches (``batch_size``), the rest
        waiting for the interval (under steady load, the events that arrive while a batch
        goes made a stream of batches of a few dozen: a request, and its cost on both sides,
        for each)."""
        while True:
            if deadline is None and self._retry_at > self._clock():
                return False  # paced (below): what is queued stays queued meanwhile
            if not self._ready:
                if full_only and not self._batch_full():
                    return True
                prepared = self._prepare()
                if not prepared:
                    return True
                self._ready.append(Batch(prepared))
            batch = self._ready[0]
            timeout = None if deadline is None else deadline - self._clock()
            if timeout is not None and timeout <= 0:
                return False
            held, spent = self.blocklist.version, thread_time()
            reply = self.transport.send(self._envelope(), [p.data for p in batch], timeout)
            self._take_actions(reply, held)
            if deadline is None:
                # A collector whose set changes with every reply, or whose replies are dear
                # to read, kept the flusher parsing and applying (the GIL held) as fast as
                # batches went: the next batch waits for what this reply cost, when that
                # is noticeable.
                changed = self.blocklist.version != held
                pause = PACE * (thread_time() - spent if changed else reply.cost)
                if pause >= MIN_PAUSE:
                    self._retry_at = max(self._retry_at, self._clock() + min(pause, MAX_BACKOFF))
            if reply.outcome != "retry":
                self._unspool(batch)
            if reply.outcome == "ok":
                self._ready.popleft()
                self._attempt = 0
                self._gave_up = None  # the collector takes them again (see Exit.shutdown)
                # Indexes of this batch only: a reply listing others (0-999 for one event)
                # made the counters say -999 sent.
                rejected = len({i for i in reply.rejected if 0 <= i < len(batch)})
                if rejected:
                    self._log_rejected(reply.errors)
                self._settle(batch, sent=len(batch) - rejected, reason="rejected", dropped=rejected)
            elif reply.outcome == "split" and len(batch) > 1:
                self._ready.popleft()
                half = len(batch) // 2
                self._ready.extendleft([Batch(batch[half:]), Batch(batch[:half])])
            elif reply.outcome in ("drop", "split"):
                self._ready.popleft()
                self._say_refused(len(batch), reply.detail)
                self._settle(batch, sent=0, reason="rejected", dropped=len(batch))
            else:
                self._spool_all()  # kept on disk while the collector does not take them
                delay = self._back_off(reply.retry_after)
                if self._attempt in (1, 5) or self._attempt % 20 == 0:
                    logger.warning(
                        "sqreen: delivery failed (%s), retrying in %.1fs (attempt %d%s)",
                        visible(reply.detail),  # the collector's words: no line of their own
                        delay,
                        self._attempt,
                        _to(self.transport),
                    )
                self._expire()
                return False

    def _say_refused(self, count: int = 0, detail: str | None = None, final: bool = False) -> None:
        """A line for events the receiver refused whole, at most one every
        DROP_NOTE_INTERVAL with the count since (a proxy answering 413 to every request made
        a line an event: its batches are split down to one event each); what is left unsaid
        is said by the flusher's next round past the interval, and at exit (``final``)."""
        with self._refused_lock:  # the flusher's rounds, and the exit's, on another thread
            self._refused_unsaid += count
            if detail is not None:
                self._refused_detail = detail
            now = self._clock()
            if not self._refused_unsaid or (
                not final and now < self._refused_said_at + DROP_NOTE_INTERVAL
            ):
                return
            unsaid, since = self._refused_unsaid, now - self._refused_said_at
            self._refused_unsaid, self._refused_said_at = 0, now
            shown = visible(self._refused_detail)
        logger.error(  # outside the lock: a handler of the app's may track
            "sqreen: %d events refused by the receiver: %s%s",
            unsaid,
            shown,
            f" (since the last such line, {since:.0f} s ago)" if since != float("inf") else "",
        )

    def _log_rejected(self, errors: list[str]) -> None:
        """Once per reason (its field and rule, as the collector worded them, written out:
        they cannot make log lines or terminal escapes of their own)."""
        for error in errors:
            reason = error.partition(":")[0][:80]
            if reason not in self._rejections and len(self._rejections) < 256:
                self._rejections.add(reason)
                logger.error("sqreen: the collector rejected an event: %s", visible(error))

    def _back_off(self, retry_after: float | None) -> float:
        self._asked_wait = bool(retry_after)  # the collector said how long: kept to
        self._attempt += 1
        self._failed_sends += 1
        backoff: float = min(MAX_BACKOFF, 0.5 * 2.0 ** min(self._attempt - 1, 16))
        delay = max(backoff * self._jitter(0.5, 1.0), min(retry_after or 0.0, MAX_RETRY_AFTER))
        self._retry_at = self._clock() + delay
        return delay

    def _batch_full(self) -> bool:
        """Whether a full batch is queued: ``batch_size`` events, or ``max_batch_bytes`` of
        them (as counted against ``max_queue_bytes``)."""
        cfg = self.config
        return len(self._queue) >= cfg.batch_size or self._pending_bytes >= cfg.max_batch_bytes

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
                data = self._encode(event)
            except Exception:
                self.errors.record(f"encoding event {event.name!r}")
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
        limit = self._clock() - self.config.max_retry_age
        for batch in list(self._ready):
            old = [p for p in batch if p.enqueued < limit]
            if old:
                batch[:] = [p for p in batch if p.enqueued >= limit]
                self._settle(old, 0, "retry_expired", len(old))
                if not batch:
                    self._unspool(batch)
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

    def _take_actions(self, reply: Reply, held: int) -> None:
        """:meth:`apply_actions` of a reply, guarded: a set this process cannot apply (a bug
        of ours, on whatever a collector sent) is counted and logged, and the batch it came
        with is delivered all the same (it was resent for ever)."""
        with self.errors.guard("applying the collector's action set"):
            self.apply_actions(reply.actions, held)

    def apply_actions(
        self, actions: Any, held: int | None = None, *, restored: bool = False
    ) -> None:
        """An action set from the collector (or a diff of it): the blocks, and the event
        names to send at once (``watch``); a reply saying ``unchanged`` keeps both. A new
        set is also kept in the spool, for the next process of the app to enforce from its
        first request (as a whole set: a diff is of no use to the next process).

        ``held``: the version this process held when it sent the request this reply answers.
        If another reply changed the set meanwhile, this one may be the older of the two
        (replies overtake each other: a batch's reply made before a block, read after the
        long-poll brought the block, lifted it until the next poll), so it is left out; the
        long-poll, which sends the version held, brings the newest at once.

        ``restored``: a set kept from before (the spool's, a replaced client's), enforced at
        once but not the collector's word: :attr:`first_actions` waits for that."""
        if isinstance(actions, dict) and actions.get("unchanged"):
            if not restored and self.blocklist.version >= 0:
                self.first_actions.set()  # the collector says the set held is its own
            return
        if held is not None and held != self.blocklist.version:
            return
        version = self.blocklist.version
        self.blocklist.apply(actions)
        if isinstance(actions, dict):
            watch = actions.get("watch")
            names = watch if isinstance(watch, list) else ()
            self.watched = frozenset(n for n in names[:256] if isinstance(n, str))
            self.urgent = spellings(self.watched)
            if self.spool is not None and self.blocklist.version != version:
                items = actions.get("items")
                capped = isinstance(items, list) and len(items) > MAX_BLOCKS
                # (a set past MAX_BLOCKS as the blocklist keeps it, not all 140 000 blocks)
                whole = actions if "items" in actions and not capped else self.blocklist.snapshot()
                if whole is not actions:
                    whole["watch"] = sorted(self.watched)
                self.spool.save_actions({"saved_at": time.time(), "actions": whole})
        if self.blocklist.version >= 0 and not restored:
            self.first_actions.set()

    def _heartbeat(self, deadline: float | None = None) -> None:
        """Send the stats; by ``deadline`` (the clock's) when given: the last one, at exit."""
        payload = self._envelope()
        payload["stats"] = stats = self.stats() if self._report is None else self._report()
        if deadline is not None:  # the last: the agents page shows the process stopped
            stats["stopped"] = 1
        send, held = self.transport.heartbeat, self.blocklist.version
        if deadline is not None and "timeout" in inspect.signature(send).parameters:
            reply = send(payload, timeout=max(0.0, deadline - self._clock()))
        else:
            reply = send(payload)
        self._take_actions(reply, held)
        if reply.outcome == "retry" and reply.retry_after:
            # Retry-After speaks for the whole collector: events wait too.
            wait = min(reply.retry_after, MAX_RETRY_AFTER)
            self._retry_at = max(self._retry_at, self._clock() + wait)

    def _spool_the_rest(self) -> int:
        """At exit: write what is still in memory to the spool; return how many events."""
        if self.spool is None or not self.spool.enabled:
            return 0
        kept = 0
        with self.errors.guard("spooling at shutdown"):
            with self._lock:
                queued = list(self._queue)
            if queued:
                self._ready.append(Batch(Prepared(self._encode(e), 0.0, 0) for e in queued))
            for batch in list(self._ready):  # the flusher may still hold one in a send
                self._spool(batch)
                kept += len(batch) if batch.spooled else 0
        return kept

    # -- the flusher's side ----------------------------------------------------------------


def _to(transport: object) -> str:
    """``; collector <where>`` for an HTTP transport: the collector's scheme, host, port and
    path, never its credentials or query (a typo in the port is read from the log)."""
    endpoint = getattr(transport, "endpoint", None)
    if not isinstance(endpoint, str):
        return ""
    try:
        parts = urlsplit(endpoint)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return ""
    if not parts.netloc:  # "http:user:pass@host": no host to say, only what may be secret
        return ""
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    return f"; collector {visible(f'{parts.scheme}://{host}{port}{parts.path}')[:200]}"
