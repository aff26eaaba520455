"""The transport seam: how a batch of events leaves the process.

A transport gets the envelope and the events already serialised (one JSON document each) by
the flusher thread, and answers with a :class:`Reply` that tells the queue what to do next.
It is only ever called from one thread at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["NullTransport", "Reply", "Transport"]

Outcome = Literal["ok", "retry", "split", "drop"]


@dataclass(slots=True)
class Reply:
    #: ``ok``: delivered; ``retry``: try again later; ``split``: too large, halve the batch;
    #: ``drop``: refused for good (400, 422: sending the same bytes again cannot succeed).
    outcome: Outcome
    #: Seconds to wait before retrying, when the receiver said (``Retry-After``).
    retry_after: float | None = None
    #: The action set of the reply, if any.
    actions: Any = None
    #: Indexes of events the receiver rejected as invalid.
    rejected: list[int] = field(default_factory=list)
    detail: str = ""
    #: Why they were rejected (the receiver's words), for the log.
    errors: list[str] = field(default_factory=list)
    #: The CPU seconds the caller's thread spent reading and parsing the reply: the caller
    #: waits for a multiple of it before its next request (a reply of 8 MiB of ``[]``, each
    #: saying nothing changed, took 0.65 s of the GIL each).
    cost: float = 0.0


@runtime_checkable
class Transport(Protocol):
    def send(
        self, envelope: dict[str, Any], events: list[bytes], timeout: float | None = None
    ) -> Reply:
        """Deliver ``events`` (each a serialised JSON object) with the batch ``envelope``."""
        ...

    def heartbeat(self, payload: dict[str, Any], timeout: float | None = None) -> Reply:
        """Send queue statistics; the reply may carry actions. ``timeout``: the seconds left
        for the last one, at shutdown (a transport written without the parameter still
        works: it is then not passed)."""
        ...

    def close(self) -> None: ...

    def after_fork(self) -> None:
        """Drop anything shared with the parent process (connections, descriptors)."""
        ...


class NullTransport:
    """Sends nothing: the transport of a disabled client (``SQREEN_DISABLE=1``)."""

    def send(
        self, envelope: dict[str, Any], events: list[bytes], timeout: float | None = None
    ) -> Reply:
        return Reply("ok")

    def heartbeat(self, payload: dict[str, Any], timeout: float | None = None) -> Reply:
        return Reply("ok")

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        pass
