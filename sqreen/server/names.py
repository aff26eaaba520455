"""Event names as the collector stores them: LiteSOC's other spellings as the standard name,
and the names only the collector raises refused from anyone else (ingest and ``sqreen
import`` alike), in their look-alike spellings too."""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Final

from .._event import InvalidEvent
from ..events import ALIASES, DERIVED_EVENTS

__all__ = ["derived_name", "standard_name"]

#: Separators a reader takes for one another in a name.
_SEPARATORS: Final = str.maketrans({"_": ".", "-": ".", "\u00b7": ".", "\u2024": "."})
#: Names remembered with the derived name each looks like.
SEEN_MAX: Final = 4096


def _skeleton(name: str) -> str:
    """``name`` as a reader sees it: compatibility forms (fullwidth letters), case, accents,
    separators alike, and what shows nothing (spaces, zero-width and format characters)
    gone."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    kept = "".join(c for c in decomposed if unicodedata.category(c) not in ("Mn", "Cf", "Cc", "Zs"))
    return "".join(kept.split()).translate(_SEPARATORS)


_DERIVED: Final = {_skeleton(name): name for name in DERIVED_EVENTS}


@lru_cache(maxsize=SEEN_MAX)
def derived_name(name: str) -> str | None:
    """The name the collector raises itself (:data:`sqreen.events.DERIVED_EVENTS`) that
    ``name`` is, or looks like (``security.impossible_travel`` with a trailing space, a
    zero-width space or fullwidth letters); None for any other name. (Remembered: a batch
    names a few names, again and again.)"""
    return _DERIVED.get(_skeleton(name))


def standard_name(name: str) -> str:
    """An event's name as the collector stores it: LiteSOC's other spellings as the standard
    name (:data:`sqreen.events.ALIASES`). A name the collector raises itself
    (:data:`sqreen.events.DERIVED_EVENTS`), or one that looks like it, is refused
    (:class:`InvalidEvent`): playbooks act on it as on the collector's own, so one forged
    impossible travel would block any user, and a look-alike would read as one in every
    list."""
    name = ALIASES.get(name, name)
    derived = derived_name(name)
    if derived is not None:
        sources = ", ".join(DERIVED_EVENTS[derived])
        said = f"{name!r}" if name == derived else f"{name!r} looks like {derived!r}, which"
        raise InvalidEvent(
            "name",
            "derived",
            f"{said} is raised by the collector itself (from {sources}), never sent by an SDK",
        )
    return name
