"""The action long-poll: blocks and unblocks reach the SDK within a second, traffic or not.

Batches and heartbeats carry the action set in their replies, but a process that tracks
nothing (its clients are refused: a refused request tracks nothing) would learn of an
unblock only with its next heartbeat, a minute later. This thread asks the collector for the
action set with the version it holds (``GET /v1/actions?version=n&wait=30``); the collector
answers as soon as its version differs (a block, an unblock, by hand or by a playbook), or
after the wait with ``{"unchanged": true}``, and the thread asks again. A collector that does
not answer is retried with a backoff (1 s doubling, at most 30 s), and so is one that
answers at once with nothing new (an older collector, or one stopping). No work on the request
path: the blocklist is replaced whole, and readers take no lock.

Applying a set holds the GIL (10 000 blocks: about 0.1 s), so a collector whose set changes
at every answer would keep a core busy and every request waiting. After a change, the next
poll waits four times the CPU time the answer took this thread (reading, parsing, applying,
spooling: at most a fifth of a core), and a whole set (not a diff) comes at most once a
second. A change after a quiet spell is applied as it comes: only the poll after it waits.

Only a transport with ``poll_actions(version, wait)`` (HTTP) has one.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from ._blocking import PACE, Blocklist
from ._errors import InternalErrors
from ._text import visible
from ._threads import start_thread
from .transports.base import Reply

__all__ = ["ActionPoller"]

logger = logging.getLogger("sqreen")
#: Where a token is set, in each way an app configures sqreen.
_TOKEN_SETTINGS: Final = (
    "SQREEN_TOKEN in the environment or a Flask config, 'token' in Django's settings.SQREEN, "
    "add_middleware(SqreenMiddleware, token=...), or init(token=...)"
)

WAIT: Final = 30.0
MAX_BACKOFF: Final = 30.0
#: The longest wait between two polls that failed (s): one small request a few seconds,
#: so that the collector's return is seen soon (:meth:`ActionPoller._run`).
FAILED_BACKOFF: Final = 8.0
#: The least time between two whole sets (a diff is not held to it).
WHOLE_SET_EVERY: Final = 1.0


class ActionPoller:
    def __init__(
        self,
        poll: Callable[[int, float], Reply],
        blocklist: Blocklist,
        on_actions: Callable[[Any, int], None],
        errors: InternalErrors,
        wait: float = WAIT,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.thread_time,
        on_answer: Callable[[], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        tokenless: bool = False,
    ) -> None:
        self._poll = poll
        #: No token was set (an endpoint alone): the refusal says so, not "this token".
        self._tokenless = tokenless
        #: Told when the collector answers after failing (the delivery then retries at once).
        self._on_answer = on_answer
        #: Told when a poll fails (the first request then waits no longer for the set).
        self._on_failure = on_failure
        #: Whether the collector's refusal of the key was said (once a process).
        self._refusal_said = False
        self._blocklist = blocklist
        self._on_actions = on_actions
        self._errors = errors
        self._wait = wait
        self._clock = clock
        self._cpu = cpu  # this thread's CPU time: what an answer cost, waits excluded
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._guard = errors.guard("the action long-poll")
        self._random = random.Random()  # not the app's global generator

    def start(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = start_thread(self._run, "sqreen-actions")

    def stop(self) -> None:
        self._stop.set()

    def after_fork_in_child(self) -> None:
        self._thread = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _run(self) -> None:
        failures = 0
        quick = 0  # polls answered at once in a row, with nothing new
        last_whole = -float("inf")
        while not self._stop.is_set():
            reply = None
            version = self._blocklist.version
            started, spent = self._clock(), self._cpu()
            # After failures, a poll that is answered at once (a held one would say the
            # collector is back only when its wait ends, or the set changes).
            probe = failures > 0
            with self._guard:
                reply = self._poll(version, 0.0 if probe else self._wait)
                if reply.outcome == "ok":
                    self._on_actions(reply.actions, version)
            if reply is not None and reply.outcome == "ok":
                if probe and self._on_answer is not None:
                    self._on_answer()
                failures = 0
                if probe:
                    continue  # held from the next poll on
                # Applied at once; the next poll waits for what this one cost, changed or
                # not (an answer of 8 MiB saying nothing changed was asked again at once).
                pause = PACE * (self._cpu() - spent)
                if self._blocklist.version != version:
                    if isinstance(reply.actions, dict) and "items" in reply.actions:
                        now = self._clock()
                        pause = max(pause, last_whole + WHOLE_SET_EVERY - now)
                        last_whole = now
                elif self._clock() - started < 1.0:
                    # Nothing new, at once: a collector that does not hold the request (an
                    # older one), or one stopping (it answers the polls it holds as it
                    # stops: a restart, say to load playbooks). Ask again after 1 s, then
                    # 2, 4, ... up to the pace of a heartbeat, instead of in a loop; a
                    # collector back from a restart is asked within seconds, not 30.
                    pause = max(pause, min(self._wait, 2.0**quick))
                    quick += 1
                if self._clock() - started >= 1.0 or self._blocklist.version != version:
                    quick = 0  # a poll held, or a change: a collector that holds them
                if pause > 0:
                    self._stop.wait(min(pause, MAX_BACKOFF))
                continue
            failures += 1
            if self._on_failure is not None and _unreachable(reply):
                self._on_failure()
            if reply is not None:
                self._say_refused(reply)
            # At most FAILED_BACKOFF apart: a collector back from an outage is found within
            # seconds, and the events waiting for their own (longer) retry go then.
            delay = min(FAILED_BACKOFF, 2.0 ** (failures - 1))
            if reply is not None and reply.retry_after:
                delay = max(delay, min(reply.retry_after, MAX_BACKOFF * 10))
            self._stop.wait(delay * self._random.uniform(0.5, 1.0))

    def _say_refused(self, reply: Reply) -> None:
        """Say once that the collector refuses the key (HTTP 401 or 403): no block reaches
        this process then, and nothing else would say so until an event is tracked."""
        if self._refusal_said or not reply.detail.startswith(("HTTP 401 ", "HTTP 403 ")):
            return
        self._refusal_said = True
        if self._tokenless:
            logger.warning(
                "sqreen: the collector refuses requests without a token (%s), and none is "
                "set: no event nor block goes through until one is; create one with "
                "`sqreen keys create` on the collector and set it (%s)",
                visible(reply.detail[:200]),
                _TOKEN_SETTINGS,
            )
            return
        logger.warning(
            "sqreen: the collector refuses this token (%s): no block reaches this process "
            "until it is accepted; check the token set (%s; `sqreen keys list` on the "
            "collector)",
            visible(reply.detail[:200]),
            _TOKEN_SETTINGS,
        )


#: What a collector that is up answers while it cannot answer now: the set will come (with
#: this poll's retry, or a batch's or heartbeat's reply), so the first request waits on.
#: Not a 500, nor a proxy's 502 or 504 for a collector behind it that is down.
_BUSY: Final = ("HTTP 408 ", "HTTP 429 ", "HTTP 503 ")


def _unreachable(reply: Reply | None) -> bool:
    """Whether a failed poll says the set will not come soon: no answer at all (refused,
    no such host, a certificate refused), or a refusal of the key or the path (401, 403,
    404, 500, a proxy's 502), but not a collector that is up and busy (429 at its polls'
    bound, 503 while it starts)."""
    if reply is None:  # the poll raised (logged): nothing to wait for
        return True
    return not reply.detail.startswith(_BUSY)
