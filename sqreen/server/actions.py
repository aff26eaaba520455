"""The action set as SDKs receive it: in every reply, and by long-poll within a second.

Every reply carries the ``actions`` an SDK needs by the version it holds (see
:mod:`.action_cache`: ``unchanged``, a diff, or the whole set, each encoded once and shared),
with the event names the enforcing playbooks watch.

``GET /v1/actions?version=n&wait=30`` answers as soon as the version differs from ``n``, or
after the wait with ``unchanged``. Any process (a ``--workers`` sibling, another collector on
PostgreSQL, ``sqreen block`` at a terminal) can change the set, so each process reads the
version (one small query) every :data:`POLL_EVERY` seconds while some request waits, and at
once when a block is made here. Waiting costs no thread: waiters sleep on an
:class:`asyncio.Event` that the version reader replaces at each change.

A long-poll is a legitimate long request, so it is not cut short; instead each API key may
hold at most ``max_polls_per_key`` of them at once in a process (:data:`MAX_POLLS_PER_KEY`:
a fleet of 50 app servers of 8 workers holds 400 with one key, on one collector process at
worst). A poll past that is refused at once (:class:`TooManyPolls`: a 429 asking to come
back in 30 s, which the SDK's poller obeys); its SDK still gets every change in the replies
to its batches and heartbeats. A key holding that many is logged once a minute. A poll whose
client hangs up ends then, its slot given back (the HTTP layer cancels :meth:`ActionFeed.wait`
on the server's ``http.disconnect``: ``_api_sdk._while_connected``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from starlette.concurrency import run_in_threadpool

from .action_cache import ActionCache, unchanged
from .storage import ControlStore
from .unavailable import UnavailableLog, unavailable
from .watched_names import WatchedNames

__all__ = [
    "MAX_POLLS_PER_KEY",
    "MAX_WAIT",
    "POLL_AGAIN",
    "POLL_EVERY",
    "ActionFeed",
    "TooManyPolls",
]

logger = logging.getLogger("sqreen.server")

#: How often the version is read while a long-poll waits.
POLL_EVERY: Final = 0.25
#: The longest a long-poll is held.
MAX_WAIT: Final = 60.0
#: Long-polls one API key may hold at once in one process, by default (``sqreen serve
#: --max-polls-per-key``).
MAX_POLLS_PER_KEY: Final = 1000
#: When a long-poll refused (429) may come again (seconds: the SDK's own wait).
POLL_AGAIN: Final = 30.0
#: A key over its long-polls is logged at most this often (seconds).
LOG_EVERY: Final = 60.0


class TooManyPolls(Exception):
    """A long-poll refused: its API key holds as many as allowed in this process."""

    def __init__(self, key: int, limit: int) -> None:
        super().__init__(
            f"API key #{key} holds {limit} action long-polls in this process, the most "
            "allowed (--max-polls-per-key): ask again later"
        )


class ActionFeed:
    """The action set of one collector process, and its long-polls."""

    def __init__(
        self,
        store: ControlStore,
        watched: Callable[[], frozenset[str]] | None = None,
        *,
        max_polls_per_key: int = MAX_POLLS_PER_KEY,
    ) -> None:
        self.store = store
        names = WatchedNames(store, watched or frozenset, on_change=self.changed)
        self.cache = ActionCache(store, names)
        self.max_polls_per_key = max_polls_per_key
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters = 0
        self._stopping = False
        self._unavailable = UnavailableLog("the action long-polls' version not read")
        #: Long-polls held, by API key id.
        self.held: dict[int, int] = {}
        self._logged: dict[int, float] = {}

    # -- replies (blocking: called from worker threads) ---------------------------------------

    def encoded(self, held: int | None, diff: bool = False) -> bytes:
        """The ``actions`` (JSON) of a reply to an SDK that holds version ``held`` and takes
        a diff when ``diff``."""
        return self.cache.encoded(held, diff)[1]

    def reply(self, known: object = None) -> dict[str, Any]:
        """The same as a dict (for an SDK that takes no diff)."""
        held = known if type(known) is int else None
        value: dict[str, Any] = json.loads(self.encoded(held))
        return value

    def changed(self) -> None:
        """The set changed in this process (a block was made): wake the long-polls now.
        Safe from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def stop(self) -> None:
        """The server is stopping: answer every long-poll now, and any that comes after at
        once (``unchanged``, or the change), so that its graceful shutdown waits for none
        (the SDK asks again after its own wait). On the event loop."""
        self._stopping = True
        self._wake()

    # -- the long-poll (on the event loop) -----------------------------------------------------

    async def wait(
        self, held: int, wait: float, *, diff: bool = False, key: int | None = None
    ) -> bytes:
        """The ``actions`` for an SDK holding ``held``: at once if it is not current, else as
        soon as it changes, or ``unchanged`` after ``wait`` seconds. :class:`TooManyPolls`
        when API key ``key`` holds as many as allowed already."""
        self._attach()
        if key is not None and self.held.get(key, 0) >= self.max_polls_per_key:
            self._log_over(key)
            raise TooManyPolls(key, self.max_polls_per_key)
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
        self._waiters += 1
        if key is not None:
            self.held[key] = self.held.get(key, 0) + 1
        try:
            while True:
                changed = self._changed  # taken before the read: a change during it wakes us
                assert changed is not None
                version, body = await run_in_threadpool(self.cache.encoded, held, diff)
                if version != held:
                    return body
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    return unchanged(held)
                try:
                    await asyncio.wait_for(changed.wait(), left)
                except TimeoutError:
                    return unchanged(held)
        finally:
            self._waiters -= 1
            if key is not None:
                self.held[key] -= 1
                if not self.held[key]:
                    del self.held[key]

    def _log_over(self, key: int) -> None:
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY) >= LOG_EVERY:
            self._logged[key] = now
            logger.warning(
                "sqreen: API key #%d holds %d action long-polls in this process, the most "
                "allowed (--max-polls-per-key): more are refused (429), and their SDKs ask "
                "again 30 s later",
                key,
                self.max_polls_per_key,
            )

    def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._changed = asyncio.Event()
            self._reader = None
        if self._reader is None or self._reader.done():
            self._reader = loop.create_task(self._read_forever())

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        if changed is not None:
            changed.set()

    async def _read_forever(self) -> None:
        """While long-polls wait, read the version; wake them when it moves."""
        seen: int | None = None
        while True:
            await asyncio.sleep(POLL_EVERY)
            if not self._waiters:
                seen = None
                continue
            try:
                version = await run_in_threadpool(self.cache.version)
            except Exception as exc:
                if unavailable(exc):  # said once a minute, not every quarter second
                    self._unavailable.met(exc)
                else:
                    logger.exception("sqreen: reading the action version failed")
                continue
            # The first read after a quiet spell wakes them too: a change may have come
            # between a waiter's own read and this one (it would then wait its whole wait).
            if version != seen:
                self._wake()
            seen = version

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
