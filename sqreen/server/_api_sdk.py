"""The routes SDKs call: ``POST /v1/events``, ``POST /v1/heartbeat``, ``GET /v1/actions``.

Each reply carries the action set the SDK needs (:mod:`.action_cache`); batches and
heartbeats are handled one body at a time per process (:func:`_one_at_a_time`), and a
worker with a backlog asks senders to reconnect (:func:`_rebalance`). Mounted by
:func:`~.app.create_app`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ._ingest_queue import TURN_SECONDS, IngestQueue, Outcome, sender
from .action_cache import unchanged
from .actions import MAX_WAIT, POLL_AGAIN, ActionFeed, TooManyPolls
from .auth import authenticate
from .errors import ApiError, int_param
from .ingest import Held, heartbeat, read_body, read_raw
from .metrics import count_refusals, observe_batch

__all__ = [
    "INGEST_CONCURRENCY",
    "REBALANCE_BACKLOG",
    "actions_endpoint",
    "events_endpoint",
    "heartbeat_endpoint",
]

#: Bodies parsed and stored at once by one process (see _one_at_a_time).
INGEST_CONCURRENCY = 1
#: A heartbeat's body at most, inflated: its stats and at most 30 blocks' refusals are a few
#: KB (sqreen._refusals.MAX_REPORTED).
MAX_HEARTBEAT_BYTES = 64 * 1024
#: Bodies waiting in one worker past which a sender is asked to reconnect (see _rebalance).
REBALANCE_BACKLOG = 1

T = TypeVar("T")


async def events_endpoint(request: Request) -> Response:
    key = await authenticate(request)
    with count_refusals():
        limit = request.app.state.max_body_bytes
        raw, gzipped = await read_raw(request, limit)
        started = time.perf_counter()
        by = sender(key.id, request.client.host if request.client else None)
        queue = _queue(request)

        async def inflated_and_stored() -> Outcome:
            body = await queue.inflate(by, raw, limit) if gzipped else raw
            return await queue.ingest(body, key.id, by)

        # A body whose client hung up while it waited is neither inflated nor stored (one
        # being inflated then finishes on its thread, its result dropped: IngestQueue.inflate): its
        # line is not the place of a client gone (uvicorn does not cancel the request's
        # task, and bodies of clients gone, each held inflated, piled up beyond
        # --max-connections; gzip bombs posted on connections closed at once were each
        # inflated, in turn, to be refused).
        outcome = await _while_connected(request, inflated_and_stored())
    if outcome is None:
        return Response(status_code=499)  # (nobody reads it: the connection is gone)
    reply, held = outcome
    response = await _with_actions(request, reply, held, _rebalance(request))
    observe_batch(reply["accepted"], reply["duplicates"], time.perf_counter() - started)
    return response


async def heartbeat_endpoint(request: Request) -> Response:
    key = await authenticate(request)
    handle = partial(heartbeat, request.app.state.storage, key_id=key.id)
    with count_refusals():
        # A heartbeat is a few KB: one of megabytes held the ingest slot for its parse,
        # outside the fair turns of event bodies.
        limit = min(request.app.state.max_body_bytes, MAX_HEARTBEAT_BYTES)
        body = await read_body(request, limit)
        held = await _one_at_a_time(request, handle, body)
    return await _with_actions(request, {}, held)


async def _with_actions(
    request: Request, reply: dict[str, Any], held: Held, headers: dict[str, str] | None = None
) -> Response:
    """``reply`` with the ``actions`` the SDK needs, made outside the ingest slot (in a
    worker thread: one read of the version, the set itself only when it changed) and
    written in as encoded (the whole set is encoded once, not once a reply)."""
    feed: ActionFeed = request.app.state.actions
    actions = await run_in_threadpool(feed.encoded, held.version, held.diff)
    return _json(reply, actions, headers)


def _json(reply: dict[str, Any], actions: bytes, headers: dict[str, str] | None = None) -> Response:
    head = json.dumps(reply, ensure_ascii=False, separators=(",", ":")).encode()
    body = (head[:-1] + b"," if reply else b"{") + b'"actions":' + actions + b"}"
    return Response(body, media_type="application/json", headers=headers)


async def _one_at_a_time(request: Request, handle: Callable[[bytes], T], body: bytes) -> T:
    """Run ``handle`` (a heartbeat) in a thread, in the process's ingest slot
    (:func:`_slot`)."""
    return await anyio.to_thread.run_sync(handle, body, limiter=_slot(request))


def _slot(request: Request) -> anyio.CapacityLimiter:
    """The process's ingest slot: bodies (a group of them at a time: :mod:`._ingest_queue`)
    and heartbeats are handled one at a time per process.

    The work is Python, bound by the GIL: several bodies at once in one process go no faster,
    and a thread coming back from the database with the write lock held would wait for the
    GIL behind the threads parsing the next batches (up to 5 ms a statement), stretching the
    lock other processes wait for. One at a time, with ``--workers`` for parallelism,
    measured 14 000 -> 22 000 events/s with two workers on two cores, at less CPU an event.
    """
    state = request.app.state
    limiter = getattr(state, "ingest_limiter", None)
    if limiter is None:  # made here, in the event loop it belongs to
        limiter = state.ingest_limiter = anyio.CapacityLimiter(INGEST_CONCURRENCY)
    return limiter


def _queue(request: Request) -> IngestQueue:
    """The process's :class:`IngestQueue`, made in the event loop it belongs to (again
    should the app be served by another loop: a test's second client)."""
    state = request.app.state
    queue: IngestQueue | None = getattr(state, "ingest_queue", None)
    if queue is None or queue.loop is not asyncio.get_running_loop():
        queue = state.ingest_queue = IngestQueue(state.pipeline, _slot(request), TURN_SECONDS)
    return queue


def _rebalance(request: Request) -> dict[str, str] | None:
    """``Connection: close`` when several workers share the port and this one has a backlog.

    A keep-alive connection stays with the process that accepted it, so eight SDK
    connections may well be six on one worker and two on the other: the first is the
    bottleneck while the second idles. A sender told to reconnect lands on whichever worker
    accepts first, usually the idler one, and a reconnect costs far less than the batch it
    carries. Measured with two workers on two cores: 16 000 to 21 600 events/s from eight
    senders without this, 22 000 to 24 700 with it; from four, 18 300 and 21 800.
    """
    state = request.app.state
    if not state.rebalance:
        return None
    # Other bodies not answered yet: not those of the turn just run, answered though their
    # replies are not sent yet (each reply of a group but the last would say so otherwise).
    waiting = _queue(request).waiting + _slot(request).statistics().tasks_waiting
    return {"Connection": "close"} if waiting >= REBALANCE_BACKLOG else None


async def actions_endpoint(request: Request) -> Response:
    """The action set; with ``version=n`` (the SDK's), ``unchanged`` when it is current (a
    diff with ``diff=1``, when smaller), and with ``wait=s`` too, a long-poll: the answer
    comes when the set changes, or after ``s`` seconds (at most 60), or ends when the client
    hangs up. A key holding too many long-polls in this process has the next ones refused,
    429 (see :mod:`.actions`)."""
    key = await authenticate(request)
    feed: ActionFeed = request.app.state.actions
    known = int_param(request, "version")
    wait = int_param(request, "wait", 0, int(MAX_WAIT))
    diff = request.query_params.get("diff") in ("1", "true")
    if known is None or not wait:
        return _json({}, await run_in_threadpool(feed.encoded, known, diff))
    try:
        # None: the client hung up; the answer goes nowhere (the server drops it).
        actions = await _while_connected(request, feed.wait(known, wait, diff=diff, key=key.id))
        actions = unchanged(known) if actions is None else actions
    except TooManyPolls as exc:
        raise ApiError(429, str(exc), headers={"Retry-After": str(int(POLL_AGAIN))}) from None
    except asyncio.CancelledError:
        # The server is stopping and cuts what it still holds: answer, the SDK asks again.
        actions = unchanged(known)
    return _json({}, actions)


async def _while_connected(request: Request, poll: Awaitable[T]) -> T | None:
    """What ``poll`` answers, or None as soon as the client hangs up, ``poll`` then cancelled
    and done with (its slot of the key's ``--max-polls-per-key`` given back, an event body's
    place in its line) before this returns. Without it, a poll whose client was gone held
    its slot until its wait ended: a key's polls opened and closed at once had every later
    one refused for a minute. The hang-up is the server's ``http.disconnect``, awaited like
    the body: no polling."""
    waiting = asyncio.ensure_future(poll)
    gone = asyncio.ensure_future(_hung_up(request))
    try:
        await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not waiting.done():
            waiting.cancel()
            await asyncio.wait((waiting,))
    if waiting.cancelled():
        gone.result()  # raises what the server's receive raised, if it did
        return None
    return waiting.result()


async def _hung_up(request: Request) -> None:
    """Return when the server says the client of ``request`` is gone. A poll's body (none,
    or whatever a client sends: read and dropped, within the server's body timeout) comes
    first."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
