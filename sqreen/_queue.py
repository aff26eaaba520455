"""The bounded event queue and its flusher thread.

``put()`` is the only part on the caller's thread: a lock, a length and byte check, an append.
Everything else runs on one flusher thread: building each event's wire form (parsing request
parameters, scrubbing, serialising), batching by count, bytes and interval, delivering through
the transport, retrying with exponential backoff and jitter, and applying the action set that
comes back. Memory is bounded by ``max_queue_size`` events and ``max_queue_bytes`` (counting
the batch being retried); past either bound the *new* event is dropped and counted, so that
``sent + dropped == tracked`` always holds. A tenth of each bound is kept for the events the
collector's playbooks watch (:mod:`sqreen._reserve`): a flood of others cannot crowd them out.

The thread starts lazily on the first ``put()`` (or with the first request a middleware
sees), never at import or in ``init()``, from any thread: an event tracked by a cron job,
a Celery task or a management command leaves within one ``flush_interval``. ``fork()`` is
safe at any moment: the queue's lock is held across it (``os.register_at_fork``), and the
child starts afresh with new locks, an empty queue and a new connection pool, while the
parent keeps, and delivers, what it had queued: every event is delivered once. Delivery on
demand and at exit: :mod:`sqreen._exit`.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._delivery import DEFAULT_WATCH, Batch, spellings
from ._drops import DropNotes
from ._errors import InternalErrors
from ._exit import Exit
from ._reserve import Reserve
from ._threads import start_thread
from .events import stored_name

if TYPE_CHECKING:
    from ._blocking import Blocklist
    from ._config import Config
    from ._event import QueuedEvent
    from ._spool import Spool
    from .transports import Transport

__all__ = ["Clock", "Queue"]

#: The queue's time source (``time.monotonic``), and its random jitter in [a, b] (uniform,
#: from a generator of its own): tests substitute both to run retries and expiry at once.
Clock = Callable[[], float]
Jitter = Callable[[float, float], float]


#: How long a watched event waits for others to share its batch.
URGENT_DELAY = 0.1
#: The longest the flusher sleeps at once (it wakes earlier when there is work).
MAX_WAIT = 60.0
DROP_REASONS = ("queue_full", "invalid", "retry_expired", "rejected")
_DEFAULT_URGENT = spellings(DEFAULT_WATCH)
#: Names whose urgency a queue keeps (see :meth:`Queue._urgency_of`).
_MAX_NAMES_KNOWN = 1024


class Queue(Exit):
    """The bounded queue and its flusher. ``encode`` turns an event into its JSON bytes (on
    the flusher thread); ``envelope`` gives the batch's ``sdk`` and ``app`` objects."""

    def __init__(
        self,
        config: Config,
        transport: Transport,
        blocklist: Blocklist,
        encode: Callable[[QueuedEvent], bytes],
        envelope: Callable[[], dict[str, Any]],
        errors: InternalErrors | None = None,
        *,
        clock: Clock = time.monotonic,
        jitter: Jitter | None = None,
        on_start: Callable[[], None] | None = None,
        report: Callable[[], dict[str, Any]] | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.config = config
        self.transport = transport
        self.blocklist = blocklist
        self.errors = InternalErrors() if errors is None else errors
        self._encode = encode
        self._envelope = envelope
        #: Event names the collector's enforcing playbooks read: sent within URGENT_DELAY,
        #: and kept in the queue's reserve. Until the collector (or the spool) says which,
        #: its templates' (:data:`~._delivery.DEFAULT_WATCH`).
        self.watched: frozenset[str] = DEFAULT_WATCH
        #: The names tracked under which an event is one of those (LiteSOC's spellings too).
        self.urgent = _DEFAULT_URGENT
        #: Set once an action set came from the collector (a set the spool kept is enforced
        #: at once, but may be stale: ``block_on_start_timeout`` waits for the collector's),
        #: or once it cannot come soon (the long-poll found the collector unreachable, or
        #: refusing the token: :meth:`Client._first_ask_failed`).
        self.first_actions = threading.Event()
        self._clock = clock
        # A generator of its own: the app's global random state is the app's.
        self._jitter = random.Random().uniform if jitter is None else jitter
        self._on_start = on_start
        self._report = report  # what a heartbeat reports (default: the queue's stats)
        self.spool = spool
        self._flusher_guard = self.errors.guard("the flusher")
        self._reset_state()

    @property
    def urgent(self) -> frozenset[str]:
        """The names tracked under which an event is one the collector's enforcing playbooks
        read (:attr:`watched`, with LiteSOC's spellings: :func:`~._delivery.spellings`).
        A standard name in any other case is one too (:func:`~sqreen.events.stored_name`,
        as the collector stores it): known once a name (:meth:`_urgency_of`)."""
        return self._urgent

    @urgent.setter
    def urgent(self, names: frozenset[str]) -> None:
        self._urgent = names
        self._urgency: dict[str, bool] = {}

    def _urgency_of(self, name: str) -> bool:
        """Whether an event tracked as ``name`` is urgent, kept for the next one (bounded:
        names are the app's, a few; dropped whole when full). Any thread."""
        urgency = self._urgency
        if len(urgency) >= _MAX_NAMES_KNOWN:
            urgency = self._urgency = {}
        urgent = self._urgent
        known = urgency[name] = name in urgent or stored_name(name) in urgent
        return known

    def _reset_state(self) -> None:
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._drained = threading.Condition(threading.Lock())
        self._queue: deque[QueuedEvent] = deque()
        self._ready: deque[Batch] = deque()  # prepared batches, oldest first
        self._pending = 0  # events queued or in a prepared batch
        self._pending_bytes = 0
        # An ordinary event's bounds (see _reserve); on events -1 once closing: put() finds
        # out in the branch it takes when full, and an accepted event's path is unchanged.
        self._reserve = Reserve(self.config.max_queue_size, self.config.max_queue_bytes)
        self._max_pending = self._reserve.ordinary_events
        self._max_bytes = self._reserve.ordinary_bytes
        self._spool_lock = threading.Lock()  # one thread writes a batch to the spool
        self._thread: threading.Thread | None = None
        self._urgent_at: float | None = None  # a watched event waits until then, at most
        self._closing = False
        self._flush_requested = False
        self._attempt = 0
        self._failed_sends = 0  # ever: a flush at shutdown stops waiting at the next one
        self._retry_at = 0.0
        self._answered = False  # the collector answered another request: retry at once
        self._asked_wait = False  # the last failure came with a Retry-After
        self._last_flush = self._clock()
        self._next_heartbeat = self._last_flush  # fetch the action set at once
        self._recovering = True  # the first round takes over what dead processes spooled
        self._rejections: set[str] = set()
        #: Events refused by the receiver (400, 413, 422) not said yet, and when they last were.
        self._refused_unsaid = 0
        self._refused_said_at = -float("inf")
        self._refused_detail = ""
        self._refused_lock = threading.Lock()
        self.tracked = 0
        self.recovered = 0
        self.adjusted = 0
        self.sent = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self._drop_notes = DropNotes(self.config)  # the flusher's lines on drops
        self._late_noted = False  # an event tracked after the delivery at exit was said
        self._late_kept = 0  # and how many such events the spool holds
        self._gave_up = None  # a lifespan shutdown's delivery gave up (see Exit.shutdown)

    @property
    def running(self) -> bool:
        """Whether the flusher thread was started (and has not ended)."""
        return self._thread is not None

    @property
    def closing(self) -> bool:
        """Whether :meth:`shutdown` has begun: no thread starts any more."""
        return self._closing

    def before_fork(self) -> None:
        """Hold the queue's lock across ``fork()`` (see :mod:`sqreen._hub`): no other thread
        is then half-way through a ``put()`` or a batch when the child is made."""
        self._lock.acquire()

    def after_fork_in_parent(self) -> None:
        self._lock.release()

    def after_fork_in_child(self) -> None:
        """Start afresh in a forked child: the parent keeps its events and its thread (and
        delivers them); the child's locks, queue, connections and ``first_actions`` are new
        (the set it holds is the parent's as of the fork, not the collector's word)."""
        self._lock.release()
        self._reset_state()
        self.first_actions = threading.Event()
        self.transport.after_fork()

    # -- the caller's side -----------------------------------------------------------------

    def put(self, event: QueuedEvent, adjusted: bool = False) -> bool:
        """Queue ``event`` (``adjusted``: validation had to fix something, counted)."""
        cfg = self.config
        urgent = self._urgency.get(event.name)
        if urgent is None:
            urgent = self._urgency_of(event.name)
        with self._lock:
            self.tracked += 1
            if adjusted:
                self.adjusted += 1
            if (
                self._pending >= self._max_pending
                or self._pending_bytes + event.size > self._max_bytes
            ) and (
                self._closing
                or not urgent
                or not self._reserve.admits(event, self._pending, self._pending_bytes)
            ):
                if not self._closing:
                    self.dropped["queue_full"] += 1  # said by the flusher (_note_drops)
                    return False
                queued = 0
            else:
                self._pending += 1
                self._pending_bytes += event.size
                event.enqueued = self._clock()
                self._queue.append(event)
                queued = len(self._queue)
        if not queued:  # outside the lock: what this logs may reach a handler that tracks
            return self._after_shutdown(event)
        if urgent and self._urgent_at is None:
            # A playbook waits for it: leave within URGENT_DELAY (what arrives meanwhile
            # goes in the same batch), not on the flush interval.
            self._urgent_at = event.enqueued + URGENT_DELAY
            self._wake.set()
        if self._thread is None:
            self.start()
        elif queued >= cfg.batch_size and not self._wake.is_set():
            self._wake.set()
        return True

    def count_invalid(self) -> None:
        with self._lock:
            self.tracked += 1
            self.dropped["invalid"] += 1

    def start(self) -> None:
        """Start the flusher thread unless it runs already (cheap then: no lock taken)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None or self._closing:
                return
            self._thread = start_thread(self._run, "sqreen-flusher")
        if self._on_start is not None:
            self._on_start()

    def _run(self) -> None:
        try:
            while not self._closing:
                wake_at = self.step()
                with self._flusher_guard:
                    self._wake.wait(min(MAX_WAIT, max(0.0, wake_at - self._clock())))
                self._wake.clear()
        finally:
            # Whatever ended the loop, the next put() (or request) starts a new flusher.
            if not self._closing and self._thread is threading.current_thread():
                self._thread = None

    def step(self) -> float:
        """One round of the flusher: a heartbeat when due, the batches when due (and no retry
        is pending); return when the next round is due. The thread calls it in a loop; tests
        call it directly with a fake clock."""
        cfg = self.config
        now = self._clock()
        errors = self.errors.count
        with self._flusher_guard:
            if self._recovering:
                self._recovering = False
                self._recover()
            if self._answered:  # (set by another thread: read and reset here only)
                self._answered = False
                if self._attempt and not self._asked_wait:
                    self._attempt, self._retry_at, self._flush_requested = 0, 0.0, True
            if now >= self._next_heartbeat:
                self._next_heartbeat = now + cfg.heartbeat_interval
                if now >= self._retry_at:
                    self._heartbeat()
            urgent = self._urgent_at is not None and now >= self._urgent_at
            everything = (
                self._flush_requested or urgent or now - self._last_flush >= cfg.flush_interval
            )
            if (everything or self._batch_full()) and now >= self._retry_at:
                self._flush_requested = False
                self._urgent_at = None
                self._last_flush = now
                with self._send_lock:
                    # Woken by a full batch: full batches only. What arrives while they go
                    # waits for the interval, not sent as a stream of small batches.
                    self._send_all(None, full_only=not everything)
            self._note_drops(self._clock())
            self._say_refused()
        if self.errors.count != errors:  # a bug of ours: do not spin on it
            self._back_off(None)
        self._notify_drained()
        wake_at = min(self._next_heartbeat, self._last_flush + cfg.flush_interval)
        if self._urgent_at is not None:
            wake_at = min(wake_at, self._urgent_at)
        if self._retry_at > now:
            wake_at = max(wake_at, self._retry_at)
        return wake_at

    def collector_answered(self) -> None:
        """The collector answered after failing (the action long-poll got through): what
        waits for its retry goes now, not at the end of a back-off of up to 30 s (the
        events a playbook waits for among them), unless the collector asked for a wait
        (``Retry-After``). Any thread."""
        if self._attempt:
            self._answered = True
            self._wake.set()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "queue_depth": self._pending,
                "queue_bytes": self._pending_bytes,
                "tracked": self.tracked,
                "recovered": self.recovered,
                "adjusted": self.adjusted,
                "sent": self.sent,
                "dropped": dict(self.dropped),
                "internal_errors": self.errors.count,
            }


def new_id_prefix() -> str:
    """A per-process random prefix for event ids (re-drawn after fork)."""
    return os.urandom(6).hex()
