"""Which users' traits were sent lately: ``identify()`` queues an ``sq.identify`` event only
when a user's traits changed, or when the same were sent more than :data:`TRAITS_RESEND`
seconds ago (the collector takes them as the user's "last seen"). An app that identifies the
user on every request so sends its traits once every ten minutes, not once a request.
"""

from __future__ import annotations

import time
from typing import Any, Final

__all__ = ["TRAITS_CACHE", "TRAITS_RESEND", "SentTraits"]

#: A user's unchanged traits are sent again after this many seconds (their "last seen").
TRAITS_RESEND: Final = 600.0
#: (user, traits) pairs remembered; all forgotten at once when full.
TRAITS_CACHE: Final = 4096

_monotonic = time.monotonic


class SentTraits:
    """When each (user, traits) pair was last sent, bounded."""

    __slots__ = ("_sent",)

    def __init__(self) -> None:
        self._sent: dict[tuple[Any, str], float] = {}

    def due(self, user: dict[str, str], traits: dict[str, Any]) -> bool:
        """Whether ``traits`` are to be sent for ``user`` now; if so, noted as sent."""
        key = (tuple(sorted(user.items())), repr(traits))
        now = _monotonic()
        sent = self._sent.get(key)
        if sent is not None and now - sent < TRAITS_RESEND:
            return False
        if len(self._sent) >= TRAITS_CACHE:
            self._sent.clear()
        self._sent[key] = now
        return True
