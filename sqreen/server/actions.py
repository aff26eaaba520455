"""The action set as SDKs receive it: in every reply, and by long-poll within a second.

Every reply carries the action set (the blocks in force, versioned) and the event names the
enforcing playbooks watch; a reply to an SDK that already holds the current version says
``{"version": n, "unchanged": true}``, a few bytes.

``GET /v1/actions?version=n&wait=30`` answers as soon as the version differs from ``n``, or
after the wait with ``unchanged``. Any process (a ``--workers`` sibling, another collector on
PostgreSQL, ``sqreen block`` at a terminal) can change the set, so each process reads the
version (one small query) every :data:`POLL_EVERY` seconds while some request waits, and at
once when a block is made here. Waiting costs no thread: waiters sleep on an
:class:`asyncio.Event` that the version reader replaces at each change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from starlette.concurrency import run_in_threadpool

from .storage import ActionSet, ControlStore

__all__ = ["MAX_WAIT", "POLL_EVERY", "ActionFeed"]

logger = logging.getLogger("sqreen.server")

#: How often the version is read while a long-poll waits.
POLL_EVERY: Final = 0.25
#: The longest a long-poll is held.
MAX_WAIT: Final = 60.0


class ActionFeed:
    """The action set of one collector process, and its long-polls."""

    def __init__(
        self, store: ControlStore, watched: Callable[[], frozenset[str]] | None = None
    ) -> None:
        self.store = store
        self._watched = watched or frozenset
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters = 0

    # -- replies (blocking: called from worker threads) ---------------------------------------

    def reply(self, known: object = None) -> dict[str, Any]:
        """The ``actions`` of a reply to an SDK that holds version ``known``."""
        return self._json(self.store.action_set(), known)

    def _json(self, actions: ActionSet, known: object) -> dict[str, Any]:
        if known == actions.version and type(known) is int:
            return {"version": actions.version, "unchanged": True}
        out = actions.to_json()
        out["watch"] = sorted(self._watched())
        return out

    def changed(self) -> None:
        """The set changed in this process (a block was made): wake the long-polls now.
        Safe from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    # -- the long-poll (on the event loop) -----------------------------------------------------

    async def wait(self, known: int, wait: float) -> dict[str, Any]:
        """The ``actions`` for an SDK holding ``known``: at once if it is not current, else as
        soon as it changes, or ``unchanged`` after ``wait`` seconds."""
        self._attach()
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
        self._waiters += 1
        try:
            while True:
                changed = self._changed  # taken before the read: a change during it wakes us
                assert changed is not None
                actions = await run_in_threadpool(self.store.action_set)
                if actions.version != known:
                    return self._json(actions, known)
                left = deadline - time.monotonic()
                if left <= 0:
                    return {"version": known, "unchanged": True}
                try:
                    await asyncio.wait_for(changed.wait(), left)
                except TimeoutError:
                    return {"version": known, "unchanged": True}
        finally:
            self._waiters -= 1

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
                version = await run_in_threadpool(self.store.action_version)
            except Exception:
                logger.exception("sqreen: reading the action version failed")
                continue
            if seen is not None and version != seen:
                self._wake()
            seen = version

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
