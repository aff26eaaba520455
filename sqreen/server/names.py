"""Event names as the collector stores them: LiteSOC's other spellings as the standard name,
and the names only the collector raises refused from anyone else (ingest and ``sqreen
import`` alike)."""

from __future__ import annotations

from .._event import InvalidEvent
from ..events import ALIASES, DERIVED_EVENTS

__all__ = ["standard_name"]


def standard_name(name: str) -> str:
    """An event's name as the collector stores it: LiteSOC's other spellings as the standard
    name (:data:`sqreen.events.ALIASES`). A name the collector raises itself
    (:data:`sqreen.events.DERIVED_EVENTS`) is refused (:class:`InvalidEvent`): playbooks act
    on it as on the collector's own, so one forged impossible travel would block any user."""
    name = ALIASES.get(name, name)
    sources = DERIVED_EVENTS.get(name)
    if sources is not None:
        raise InvalidEvent(
            "name",
            "derived",
            f"{name!r} is raised by the collector itself (from {', '.join(sources)}), "
            "never sent by an SDK",
        )
    return name
