"""Bodies that wait for the ingest slot go through it together, in fair turns.

A process parses and stores one thing at a time (see ``_api_sdk._slot``). Under load,
several ``POST /v1/events`` bodies arrive while it stores one: they used to take the
slot one after the other, each in a transaction of its own. Here they wait in a queue, and
the next turn of the slot takes several of them (at most :data:`MAX_GROUP`, and
:data:`MAX_GROUP_BYTES` of bodies) to :meth:`~.pipeline.IngestPipeline.ingest_many`, which
stores their events in one transaction: one commit, and the index pages that several
batches touch written once. Each body is still
parsed, stored and announced as if alone, and answered once its events are committed; a body
that fails fails alone. A body that arrives when nothing waits goes through at once: a quiet
collector answers as fast as before.

Bodies wait by *sender* (:func:`sender`: the API key and the client's network), and the
turns take them round-robin, a sender up to :data:`QUANTUM` of its oldest at a time (as
many as it has waiting: an app of many processes behind one address keeps a share like
theirs), the next turn going on where the last stopped, and no more than
:data:`QUANTUM_BYTES` of them but for the first: bodies cost their size, so a sender of
bodies that each inflate to megabytes takes one at its turn, not four. A sender that floods
the collector fills its own line only: a body posted meanwhile by another waits for at most
a quantum of the flood's, not for every body of the flood queued before it. One sender
alone has its bodies grouped oldest first, as when they all waited in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import anyio

from .ingest import Held, gunzip
from .metrics import observe_batch, observe_group
from .pipeline import IngestPipeline
from .playbooks._fields import IPV6_PREFIX, ip_group

__all__ = [
    "INFLATE_THREADS",
    "LINE_BYTES",
    "MAX_GROUP",
    "MAX_GROUP_BYTES",
    "QUANTUM",
    "QUANTUM_BYTES",
    "QUANTUM_SECONDS",
    "TURN_SECONDS",
    "IngestQueue",
    "Outcome",
    "sender",
]

#: Bodies stored in one transaction at most (an SDK sends at most 1 000 events a body).
MAX_GROUP: Final = 8
#: Bodies a sender takes at most when its turn comes, when it has that many waiting. One
#: gave an app of 16 processes behind one address (one sender) one body in nine against a
#: flood from 8 addresses, where one line in arrival order gave it 16 in 24: half its
#: batches waited past the SDK's timeout. Four gives it four in twelve, and still lets a
#: single process's body go after at most four of a flooding sender's.
QUANTUM: Final = 4
#: Their bytes at most (but for a group of one): a turn holds its bodies parsed at once, and
#: eight bodies of 10 MB parsed took 225 MB where one took 29. Eight bodies of 1 000 events
#: of 500 bytes fit.
MAX_GROUP_BYTES: Final = 4 * 1024 * 1024
#: The bytes of bodies a sender takes at most when its turn comes (but for the first body):
#: its quantum ends with the body that reaches them. A body costs about its size to parse
#: and store: a flood of bodies of 1 000 events padded to 9.5 MB (from 50 KB of gzip) cost
#: ~100 ms each, and four of them at the flooder's turn held an app's batch 0.4 s more, and
#: its next one (an SDK sends one at a time) as much again: the brute force of that run was
#: blocked 1.08 s (median) after its threshold, and 1.42 s at most. An SDK's bodies, up to
#: 1 000 events of about 500 bytes, still go four a turn.
QUANTUM_BYTES: Final = MAX_GROUP_BYTES
#: The time of the slot a sender's turn may take while others wait: each turn's CPU time is
#: charged to its senders (by their bodies' events), and a sender owing more than this at its
#: turn sits it out, owing this much less, while another sender's bodies wait. Bodies cheap to
#: send and dear to store (1 000 new events of 16 properties each: 400 KB, 80-100 ms) went
#: four a turn under the bytes' quantum, and held a brute force's block 2.8-3.5 s.
QUANTUM_SECONDS: Final = 0.05
#: Senders whose debts are remembered at most (those with no body in line are forgotten
#: past it).
MAX_DEBTS: Final = 10_000
#: A turn's time, as its senders' bodies cost before (seconds a byte, by sender), at most
#: but for its first body: the collector's (``IngestQueue(turn_seconds=...)``). Alone, a
#: flooding sender took turns of eight bodies of 100 ms each, and a body that came during
#: one waited for all eight, and the SDK's next batch behind it as long again.
TURN_SECONDS: Final = 0.1
#: What a byte of a sender not seen yet is taken to cost (an SDK's body of 500 events,
#: 250 KB, takes about 20 ms).
DEFAULT_BYTE_SECONDS: Final = 8e-8
#: The bytes a sender's line holds, past which its next gzip body waits to be inflated
#: (compressed: a few KB where inflated it may be 10 MB). Bodies that inflate 190 times
#: (50 KB of gzip, 9.5 MB of JSON) from 1 000 connections held 9.9 GB waiting in one line.
LINE_BYTES: Final = 4 * MAX_GROUP_BYTES
#: Threads inflating gzip bodies at once in a process: their own, not the threads that
#: Starlette's handlers share (where 200 connections posting gzip bombs, each inflated
#: 25-40 ms before its 413, held every other sender's body and reply 10 s).
INFLATE_THREADS: Final = 2

Outcome = tuple[dict[str, Any], Held]
#: A body waiting: its bytes, its API key's id, its reply to come, and its sender.
_Job = tuple[bytes, int, "asyncio.Future[Outcome]", Hashable]


def sender(key_id: int, host: str | None) -> tuple[int, str]:
    """Whose line a body waits in: its API key and its client's address (as uvicorn gives it,
    after ``--forwarded-allow-ips``), an IPv6 address as its /64 and one standing for an IPv4
    client as that address, as playbooks group them (``ip_group``). See docs/architecture.md
    (*Turns are fair between senders*) for why both."""
    return key_id, "" if host is None else ip_group(host, IPV6_PREFIX)


class IngestQueue:
    """The bodies of one process (one event loop) waiting for its ingest slot."""

    def __init__(
        self,
        pipeline: IngestPipeline,
        slot: anyio.CapacityLimiter,
        turn_seconds: float | None = None,
    ) -> None:
        """``turn_seconds``: the bound of :data:`TURN_SECONDS` (None: turns bounded by
        bodies and bytes only, as their order then depends on nothing measured)."""
        self._pipeline = pipeline
        self._slot = slot
        self._turn_seconds = turn_seconds
        #: What a byte of each sender's bodies took to store, lately (seconds).
        self._byte_seconds: dict[Hashable, float] = {}
        #: The event loop it belongs to (its futures and its runner are that loop's).
        self.loop = asyncio.get_running_loop()
        #: Each sender with bodies waiting, its bodies oldest first; the senders in the order
        #: the next turn serves them. A sender left with none is dropped.
        self._senders: OrderedDict[Hashable, deque[_Job]] = OrderedDict()
        #: What is left of the quantum of a sender whose turn a turn of the slot cut short:
        #: bodies, and bytes.
        self._credits: dict[Hashable, tuple[int, int]] = {}
        #: Bodies in those lines (a body whose request went away, until its turn comes).
        self._queued = 0
        #: What each sender owes of the slot's time, in seconds (see QUANTUM_SECONDS).
        self._debts: dict[Hashable, float] = {}
        #: The bytes of each sender's line (see :meth:`inflate`).
        self._line_bytes: dict[Hashable, int] = {}
        #: Set when bodies left the lines (then replaced): what :meth:`inflate` waits for.
        self._moved = asyncio.Event()
        #: Each sender inflating or waiting to: its lock (one body a sender at a time, in the
        #: order they came), and how many hold or wait for it.
        self._inflating: dict[Hashable, tuple[asyncio.Lock, list[int]]] = {}
        #: Threads of their own, made with the first gzip body: a body waiting for one is
        #: dropped when its client goes (its work cancelled), one inflating is not.
        self._inflaters: ThreadPoolExecutor | None = None
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
        return self._queued + sum(not job[2].done() for job in self._running)

    @property
    def senders(self) -> int:
        """Senders with bodies in line."""
        return len(self._senders)

    async def inflate(self, by: Hashable, raw: bytes, max_bytes: int) -> bytes:
        """The gzip body ``raw`` of sender ``by`` inflated (at most ``max_bytes``: else the
        :class:`~.errors.ApiError` of :func:`~.ingest.gunzip`): on this queue's threads, one
        body of a sender at a time, in the order they came, and once its line holds less
        than :data:`LINE_BYTES`. A sender that floods the collector with bodies that inflate
        a hundredfold (or to over the bound, to be refused) waits for its own: another's
        body waits for at most one of its inflations, and the flood's bodies wait small."""
        entry = self._inflating.get(by)
        if entry is None:
            entry = self._inflating[by] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        held = False
        try:
            await lock.acquire()
            held = True
            while self._line_bytes.get(by, 0) >= LINE_BYTES:
                await self._moved.wait()
            if self._inflaters is None:
                self._inflaters = ThreadPoolExecutor(INFLATE_THREADS, "sqreen-inflate")
            work = self._inflaters.submit(gunzip, raw, max_bytes)
            try:
                return await asyncio.wrap_future(work)
            except asyncio.CancelledError:
                # The body's client is gone. Waiting for a thread, it is dropped, never
                # inflated; being inflated, its thread runs on (nothing stops a gunzip), and
                # keeps its place among INFLATE_THREADS and its sender's turn until it ends.
                # Let go at once, a sender posting and hanging up had each of its bodies
                # inflated beside the last, any number at once; kept while waiting, bombs
                # of 3 000 senders hung up were all inflated, in turn, before others' bodies.
                if not work.cancel():
                    held = False
                    work.add_done_callback(lambda _: self._thread_ended(by, entry))
                raise
        finally:
            users[0] -= 1
            if held:
                lock.release()
            if not users[0] and not lock.locked():
                del self._inflating[by]

    def _thread_ended(self, by: Hashable, entry: tuple[asyncio.Lock, list[int]]) -> None:
        """(From the inflating thread.) Give back the turn of a sender gone."""

        def release() -> None:
            lock, users = entry
            lock.release()
            if not users[0] and self._inflating.get(by) is entry:
                del self._inflating[by]

        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self.loop.call_soon_threadsafe(release)

    @property
    def inflating(self) -> int:
        """Bodies being inflated, or waiting to."""
        return sum(users[0] for _, users in self._inflating.values())

    def line_bytes(self, by: Hashable) -> int:
        """The bytes of the bodies in the line of ``by``."""
        return self._line_bytes.get(by, 0)

    async def ingest(self, body: bytes, key_id: int, by: Hashable) -> Outcome:
        """The pipeline's reply for ``body`` (sent with API key ``key_id`` by the sender
        ``by``: :func:`sender`) once stored."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        line = self._senders.get(by)
        if line is None:
            line = self._senders[by] = deque()
        line.append((body, key_id, future, by))
        self._line_bytes[by] = self._line_bytes.get(by, 0) + len(body)
        self._queued += 1
        self.pending += 1
        try:
            if self._runner is None:
                self._runner = loop.create_task(self._run())
            return await future
        finally:
            self.pending -= 1

    async def _run(self) -> None:
        try:
            while self._senders:
                group = self._next_group()
                if group:
                    await self._turn(group)
        except BaseException:
            for line in self._senders.values():
                for job in line:
                    job[2].cancel()
            self._senders.clear()
            self._credits.clear()
            self._line_bytes.clear()
            self._queued = 0
            self._left()
            raise
        finally:
            self._runner = None

    def _next_group(self) -> list[_Job]:
        """The bodies of the next turn, taken from the lines in turn (deficit round-robin):
        a sender whose turn comes takes up to :data:`QUANTUM` bodies, as many as it has
        waiting, until their bytes reach :data:`QUANTUM_BYTES`, then goes last; at most
        :data:`MAX_GROUP` bodies a turn, and no more than :data:`MAX_GROUP_BYTES` of them
        but for the first: a sender whose next body does not
        fit lets the others' go, and comes first in the next turn, with what is left of its
        quantum. A body whose request went away before its turn is not stored (as before):
        it is dropped from its line on the way, taking no place. Each body taken costs O(1),
        however many senders wait."""
        senders, credits = self._senders, self._credits
        group: list[_Job] = []
        size = 0
        cost, bound = 0.0, self._turn_seconds
        stopped: list[tuple[Hashable, deque[_Job]]] = []
        while senders and len(group) < MAX_GROUP:
            by, line = next(iter(senders.items()))
            job = line[0]
            if job[2].done():  # gone: no place in the turn, no part of the quantum
                self._pop(by, line)
                continue
            if (debt := self._debts.pop(by, None)) is not None:
                # One that owes the slot time sits this turn out while others wait (in the
                # middle of its quantum too: what is left of it waits), owing a quantum less.
                debt -= QUANTUM_SECONDS
                if debt > 0 and len(senders) > 1:
                    self._debts[by] = debt
                    senders.move_to_end(by)
                    continue
            guess = 0.0
            if bound is not None:
                # Never below the default: a cheap rate learnt (padded bodies) cannot make
                # dear bodies look cheap.
                learnt = self._byte_seconds.get(by, DEFAULT_BYTE_SECONDS)
                guess = len(job[0]) * max(learnt, DEFAULT_BYTE_SECONDS)
            if group and (size + len(job[0]) > MAX_GROUP_BYTES or cost + guess > (bound or 0)):
                stopped.append((by, senders.pop(by)))  # first in the next turn
                continue
            cost += guess
            # What is left of the sender's quantum: bodies, and bytes.
            count, room = credits.get(by) or (min(len(line), QUANTUM), QUANTUM_BYTES)
            group.append(job)
            size += len(job[0])
            count, room = count - 1, room - len(job[0])
            if self._pop(by, line):
                continue  # its line is gone, with its credit
            if count > 0 and room > 0:
                credits[by] = (count, room)
            else:
                credits.pop(by, None)
                senders.move_to_end(by)
        for by, line in reversed(stopped):
            senders[by] = line
            senders.move_to_end(by, last=False)
        self._left()
        return group

    def _pop(self, by: Hashable, line: deque[_Job]) -> bool:
        """Take the first body of ``by``'s line out of it; whether the line is now gone."""
        self._line_bytes[by] -= len(line.popleft()[0])
        self._queued -= 1
        if line:
            return False
        del self._senders[by], self._line_bytes[by]
        self._credits.pop(by, None)
        return True

    def _left(self) -> None:
        """Wake the inflations waiting for their lines to shrink."""
        self._moved.set()
        self._moved = asyncio.Event()

    async def _turn(self, group: list[_Job]) -> None:
        bodies = [(job[0], job[1]) for job in group]
        self.groups += 1
        self.grouped += len(group)
        observe_group(len(group))
        self._running = group
        try:
            outcomes, spent = await anyio.to_thread.run_sync(
                self._timed_ingest, bodies, limiter=self._slot
            )
        except Exception as exc:  # a bug outside any one body's handling: every body's 500
            outcomes, spent = [exc] * len(group), 0.0
        except BaseException:  # cancelled: the server is stopping
            for job in group:
                job[2].cancel()
            raise
        finally:
            self._running = []
        self._charge(group, outcomes, spent)
        for job, outcome in zip(group, outcomes, strict=True):
            future = job[2]
            if future.done():  # its request went away meanwhile: what it stored still counts
                if not isinstance(outcome, Exception):
                    observe_batch(outcome[0]["accepted"], outcome[0]["duplicates"], None)
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _timed_ingest(self, bodies: list[tuple[bytes, int]]) -> tuple[list[Any], float]:
        """The pipeline's outcomes for ``bodies``, and the CPU time of this thread they took
        (not the time spent waiting for another process's write lock)."""
        start = time.thread_time()
        outcomes = self._pipeline.ingest_many(bodies)
        return outcomes, time.thread_time() - start

    def _charge(self, group: list[_Job], outcomes: list[Any], spent: float) -> None:
        """Charge each sender of the turn its share of the time it took, by the events of
        its bodies (a body that failed counts one): see :data:`QUANTUM_SECONDS`."""
        weights = [1 if isinstance(o, Exception) else max(1, _events_of(o[0])) for o in outcomes]
        total = sum(weights)
        if not total or spent <= 0:
            return
        debts, rates = self._debts, self._byte_seconds
        charged: dict[Hashable, list[float]] = {}
        for job, weight in zip(group, weights, strict=True):
            share = spent * weight / total
            seconds_bytes = charged.setdefault(job[3], [0.0, 0])
            seconds_bytes[0] += share
            seconds_bytes[1] += len(job[0])
        for by, (seconds, size) in charged.items():
            if by in self._senders:  # still waiting: an emptied line owes nothing (as in DRR)
                debts[by] = debts.get(by, 0.0) + seconds
            else:
                debts.pop(by, None)
            rate = seconds / max(size, 1)
            rates[by] = (rates[by] + rate) / 2 if by in rates else rate
        if len(debts) > MAX_DEBTS or len(rates) > MAX_DEBTS:
            self._debts = {by: d for by, d in debts.items() if by in self._senders}
            self._byte_seconds = {by: r for by, r in rates.items() if by in self._senders}


def _events_of(reply: dict[str, Any]) -> int:
    """The events a body's reply says it held: stored, duplicates and refused."""
    counts = (reply.get(k) for k in ("accepted", "duplicates", "rejected"))
    return sum(c if isinstance(c, int) else len(c) if isinstance(c, list) else 0 for c in counts)
