"""uvicorn's h11 protocol under a :class:`~.connections.ConnectionGuard` (see
:mod:`.connections`): ``sqreen serve`` runs it as uvicorn's ``http`` protocol."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .connections import guard_of

__all__ = ["GuardedH11Protocol"]


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol: each request's headers and body timed, the connection closed
    when they are late, or when it is the one waiting longest for a request past the limit.

    A connection is in one of these phases: ``headers`` (accepted, or sending the headers of
    its next request: timed), ``idle`` (a keep-alive connection that has sent nothing since
    its last response: uvicorn's keep-alive timeout closes it), ``body`` (timed), or none
    (its request is all in, the app has it: not timed, not closed for the limit). Those
    ``idle`` or in ``headers`` are the guard's ``waiting``, oldest first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard_of(self.loop)
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._counted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self._guard
        guard.open += 1
        self._counted = True
        if guard.open > guard.limits.max_connections and not guard.shed(1, "over the limit"):
            self.cut("refused")  # every other one is in a request
            return
        self._set_phase("headers")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow(data=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow(data=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_phase(None)
        if self._counted:
            self._counted = False
            self._guard.open -= 1
        super().connection_lost(exc)

    def cut(self, why: str) -> None:
        """Close this connection now (it is late, or waiting longest past the limit)."""
        self._set_phase(None)
        self._guard.note(why)
        if not self.transport.is_closing():
            self.transport.close()

    def _follow(self, data: bool) -> None:
        """Time the part of a request still to come (or nothing, once it is all in)."""
        if self.transport.is_closing():
            self._set_phase(None)
            return
        state = self.conn.their_state
        if state is h11.IDLE:  # between requests: the next one has begun if bytes came
            self._set_phase("headers" if data or self._phase == "headers" else "idle")
        else:
            self._set_phase("body" if state is h11.SEND_BODY else None)

    def _set_phase(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        self._phase = phase
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting = self._guard.waiting
        waiting.pop(self, None)
        if phase in ("headers", "idle"):
            waiting[self] = None  # the newest waiting
        limits = self._guard.limits
        if phase in ("headers", "body"):
            delay = limits.header_timeout if phase == "headers" else limits.body_timeout
            self._timer = self.loop.call_later(delay, self.cut, "timed out")
