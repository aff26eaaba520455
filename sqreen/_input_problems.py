"""Bad input to ``track()`` and ``identify()``: logged once per (event name, argument, rule),
counted, raised in strict mode.

In production, a fix that keeps the event (a name cut, a property dropped) is logged as "kept,
adjusted"; an event that cannot be kept is counted (the queue's ``invalid`` stat) and logged
as "dropped". Each (event name, argument, rule) is logged once, for at most 10 000 of them: an
app that repeats a mistake on every request logs it once, not on every request, and a wrong
type for the properties does not hide one for the user's identifiers or the timestamp of the
same event (the argument is the field's first part: ``properties``, ``user_identifiers``...).
In strict mode the :class:`~sqreen.InvalidEvent` raises instead. Only these paths pay for it:
an event without a problem never reaches this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from ._limits import InvalidEvent

__all__ = ["Call", "InputProblems"]

logger = logging.getLogger("sqreen")

#: (event name, argument, rule) remembered as logged; past them nothing more is logged.
_MAX_LOGGED: Final = 10_000


class InputProblems:
    """What one client logged of bad input, and what it does with more."""

    def __init__(self, strict: bool, count_invalid: Callable[[], None]) -> None:
        self._strict = strict
        self._count_invalid = count_invalid
        self._logged: set[tuple[str, str, str, bool]] = set()

    def _log_once(self, event_name: object, problem: InvalidEvent, what: str) -> None:
        # ``event_name`` is an event's name, or a call that is no event (``identify()``: a
        # str subclass, so that an event of that name is still said as an event).
        call = type(event_name) is Call
        argument = problem.field.partition(".")[0].partition("[")[0][:64]
        key = (str(event_name)[:128], argument, problem.rule, call)
        if key not in self._logged and len(self._logged) < _MAX_LOGGED:
            self._logged.add(key)
            if call:
                logger.warning("sqreen: %s %s: %s", key[0], what, problem)
            else:
                logger.warning("sqreen: event %r %s: %s", key[0], what, problem)

    def noted(self, event_name: str, notes: list[InvalidEvent]) -> None:
        """The fixes made to an event that is kept (production mode)."""
        for problem in notes:
            self._log_once(event_name, problem, "kept, adjusted")

    def invalid(self, event_name: object, exc: InvalidEvent) -> bool:
        """An event that cannot be kept: ``exc`` raised in strict mode, else counted, logged
        and False (what ``track()`` returns)."""
        if self._strict:
            raise exc
        self._count_invalid()
        self._log_once(event_name, exc, "dropped")
        return False


class Call(str):
    """A call that makes no event of that name (``identify()``), as the log says it."""

    __slots__ = ()
