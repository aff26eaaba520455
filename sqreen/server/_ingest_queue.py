"""Bodies that wait for the ingest slot go through it together.

A process parses and stores one thing at a time (see ``_api_sdk._slot``). Under
load, several ``POST /v1/events`` bodies arrive while it stores one: they used to take the
slot one after the other, each in a transaction of its own. Here they wait in a queue, and
the next turn of the slot takes all of them (at most :data:`MAX_GROUP`, and
:data:`MAX_GROUP_BYTES` of bodies) to :meth:`~.pipeline.IngestPipeline.ingest_many`, which
stores their events in one transaction: one commit, and the index pages that several
batches touch written once. Each body is still
parsed, stored and announced as if alone, and answered once its events are committed; a body
that fails fails alone. A body that arrives when nothing waits goes through at once: a quiet
collector answers as fast as before.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import anyio

from .ingest import Held
from .metrics import observe_group
from .pipeline import IngestPipeline

__all__ = ["MAX_GROUP", "MAX_GROUP_BYTES", "IngestQueue"]

#: Bodies stored in one transaction at most (an SDK sends at most 1 000 events a body).
MAX_GROUP: Final = 8
#: Their bytes at most (but for a group of one): a turn holds its bodies parsed at once, and
#: eight bodies of 10 MB parsed took 225 MB where one took 29. Eight bodies of 1 000 events
#: of 500 bytes fit.
MAX_GROUP_BYTES: Final = 4 * 1024 * 1024

Outcome = tuple[dict[str, Any], Held]
_Job = tuple[bytes, int, "asyncio.Future[Outcome]"]


class IngestQueue:
    """The bodies of one process (one event loop) waiting for its ingest slot."""

    def __init__(self, pipeline: IngestPipeline, slot: anyio.CapacityLimiter) -> None:
        self._pipeline = pipeline
        self._slot = slot
        #: The event loop it belongs to (its futures and its runner are that loop's).
        self.loop = asyncio.get_running_loop()
        self._waiting: list[_Job] = []
        self._runner: asyncio.Task[None] | None = None
        self._running: list[_Job] = []
        #: Bodies given and not answered yet.
        self.pending = 0
        #: Groups run, and bodies in them (``bench_ingest.py`` reports the mean size).
        self.groups = self.grouped = 0

    @property
    def waiting(self) -> int:
        """Bodies not answered yet, waiting for a turn or in the one running (not those of
        a turn that ended, answered though their requests did not resume yet). Read at each
        reply: those waiting are counted as queued, a request gone since among them."""
        return len(self._waiting) + sum(not job[2].done() for job in self._running)

    async def ingest(self, body: bytes, key_id: int) -> Outcome:
        """The pipeline's reply for ``body`` (sent with API key ``key_id``) once stored."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._waiting.append((body, key_id, future))
        self.pending += 1
        try:
            if self._runner is None:
                self._runner = loop.create_task(self._run())
            return await future
        finally:
            self.pending -= 1

    async def _run(self) -> None:
        try:
            while self._waiting:
                # A body whose request went away before its turn is not stored (as before).
                taken = self._next_group()
                group = [job for job in self._waiting[:taken] if not job[2].done()]
                del self._waiting[:taken]
                if group:
                    await self._turn(group)
        except BaseException:
            for *_, future in self._waiting:
                future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._runner = None

    def _next_group(self) -> int:
        """How many of the bodies waiting the next turn takes (at least one)."""
        taken = size = 0
        for body, *_ in self._waiting[:MAX_GROUP]:
            size += len(body)
            if taken and size > MAX_GROUP_BYTES:
                break
            taken += 1
        return taken

    async def _turn(self, group: list[_Job]) -> None:
        bodies = [(body, key_id) for body, key_id, _ in group]
        self.groups += 1
        self.grouped += len(group)
        observe_group(len(group))
        self._running = group
        try:
            outcomes = await anyio.to_thread.run_sync(
                self._pipeline.ingest_many, bodies, limiter=self._slot
            )
        except Exception as exc:  # a bug outside any one body's handling: every body's 500
            outcomes = [exc] * len(group)
        except BaseException:  # cancelled: the server is stopping
            for *_, future in group:
                future.cancel()
            raise
        finally:
            self._running = []
        for (*_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():  # its request went away meanwhile
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
