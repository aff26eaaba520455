"""Event names as the collector stores them: LiteSOC's other spellings as the standard name,
and the names only the collector raises refused from anyone else (ingest and ``sqreen
import`` alike), in their look-alike spellings too."""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Final

from .._event import InvalidEvent
from ..events import DERIVED_EVENTS, canonical_name, stored_name

__all__ = ["derived_name", "standard_name"]

#: Capitals of other scripts that read as a Latin capital (Cyrillic and Greek): mapped
#: before the case is folded, as their lower-case forms read otherwise (Greek capital nu
#: reads as N, its small letter as v; Cyrillic capital te as T, its small letter as a small
#: capital).
_CAPITALS: Final = str.maketrans(
    dict(
        zip(
            "\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7"
            "\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0423\u0425\u0405\u0406\u0408",
            "ABEZHIKMNOPTYXABEKMHOPCTYXSIJ",
            strict=True,
        )
    )
)
#: Letters of other scripts, small capitals, and digits, that read as a lower-case Latin
#: letter (a subset of Unicode's confusables, ``confusables.txt``, applied once the case is
#: folded); ``i`` and ``l`` read as one another, as a capital ``I`` reads as ``l``.
_CONFUSABLES: Final = str.maketrans(
    {
        # Small capitals (modifier letters decompose to them first).
        **dict(
            zip(
                "\u1d00\u1d05\u1d07\ua730\u0262\u1d0a\u029f\u0274\u1d18\u01eb\u0280\u1d1c\u1d20\u1d21\u028f",
                "adefgjlnpqruvwy",
                strict=True,
            )
        ),
        **dict.fromkeys("\u0432\u0299", "b"),  # Cyrillic ve, small capital B
        **dict.fromkeys("\u043d\u029c", "h"),
        **dict.fromkeys("\u043a\u1d0b", "k"),
        **dict.fromkeys("\u043c\u1d0d", "m"),
        **dict.fromkeys("\u0442\u03c4\u1d1b", "t"),
        **dict.fromkeys("\u03b7", "n"),
        "\u03bc": "u",
        "\u026a": "l",
        **dict.fromkeys("\u0430\u0251\u03b1", "a"),  # Cyrillic a, Latin alpha, Greek alpha
        **dict.fromkeys("\u0441\u03f2\u1d04\u217d", "c"),
        **dict.fromkeys("\u0501\u217e", "d"),
        **dict.fromkeys("\u0435\u04bd", "e"),
        "\u0261": "g",
        "\u04bb": "h",
        **dict.fromkeys("i1|\u0456\u03b9\u0131\u0269\u04cf\u01c0\u217c\u2170", "l"),
        **dict.fromkeys("\u0458\u03f3", "j"),
        "\u03ba": "k",
        "\u0578": "n",
        **dict.fromkeys("0\u043e\u03bf\u03c3\u0585\u1d0f", "o"),
        **dict.fromkeys("\u0440\u03c1", "p"),
        "\u051b": "q",
        "\u0433": "r",
        **dict.fromkeys("\u0455\ua731", "s"),
        **dict.fromkeys("\u03c5\u057d\u028b", "u"),
        **dict.fromkeys("\u03bd\u0475\u2174", "v"),
        **dict.fromkeys("\u0461\u051d\u03c9", "w"),
        **dict.fromkeys("\u0445\u03c7\u2179", "x"),
        **dict.fromkeys("\u0443\u04af\u03b3", "y"),
        "\u1d22": "z",
    }
)
#: Names remembered with the derived name each looks like.
SEEN_MAX: Final = 4096


def _skeleton(name: str) -> str:
    """``name`` as a reader sees it: its letters and digits alone, compatibility forms
    (fullwidth letters), case, accents and letters of other scripts that read as Latin ones
    alike. Whatever separates them (``.``, ``_``, any dash, ``/``, ``:``, spaces, doubled or
    left out) and what shows nothing (zero-width and format characters) is gone: a name
    whose words are those of another, in that order, reads as it."""
    folded = unicodedata.normalize("NFKD", name).translate(_CAPITALS).casefold()
    read = unicodedata.normalize("NFKD", folded).translate(_CONFUSABLES)
    kept = "".join(c for c in read if unicodedata.category(c)[0] in "LN")
    return kept.replace("rn", "m").replace("vv", "w")


_DERIVED: Final = {_skeleton(name): name for name in DERIVED_EVENTS}


@lru_cache(maxsize=SEEN_MAX)
def derived_name(name: str) -> str | None:
    """The name the collector raises itself (:data:`sqreen.events.DERIVED_EVENTS`) that
    ``name`` is, or looks like (``security.impossible_travel`` with a trailing space, a
    zero-width space, fullwidth letters, a Cyrillic o or a digit ``1`` for ``l``); None
    for any other name. (Remembered: a batch
    names a few names, again and again.)"""
    return _DERIVED.get(_skeleton(name))


def standard_name(name: str) -> str:
    """An event's name as the collector stores it: LiteSOC's other spellings, and a
    standard name in another case or with other separators, as the standard name
    (:func:`sqreen.events.stored_name`). A name the collector raises itself
    (:data:`sqreen.events.DERIVED_EVENTS`), or one that looks like it, is refused
    (:class:`InvalidEvent`): playbooks act on it as on the collector's own, so one forged
    impossible travel would block any user, and a look-alike would read as one in every
    list."""
    given, name = name, stored_name(name)
    derived = derived_name(name)
    if derived is not None:
        sources = ", ".join(DERIVED_EVENTS[derived])
        exact = canonical_name(given) == derived  # the name, or one of LiteSOC's spellings
        said = f"{name!r}" if exact else f"{given!r} looks like {derived!r}, which"
        raise InvalidEvent(
            "name",
            "derived",
            f"{said} is raised by the collector itself (from {sources}), never sent by an SDK",
        )
    return name
