"""Sqreen's options dict: ``sqreen.track(name, {"properties": ..., "user_identifiers": ...})``.

Sqreen's agents took a second positional argument, a mapping of options; code written for
them passes one. Its keys are the keyword arguments of :func:`sqreen.track`. An unknown key
is skipped with a warning, as the agent did (strict mode raises). As the agent's, the options
may be anything ``dict()`` takes: ``[("properties", {...})]`` too. A key also given as a
keyword argument with another value: the keyword wins, noted the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ._limits import InvalidEvent
from ._values import note

__all__ = ["OPTION_KEYS", "merge_options"]

#: The keys of the options dict, and the keyword arguments they stand for.
OPTION_KEYS: Final = (
    "properties",
    "user_identifiers",
    "timestamp",
    "collect_body",
    "request",
    "target",
)


def merge_options(
    options: object,
    given: dict[str, Any],
    defaults: Mapping[str, Any],
    notes: list[InvalidEvent] | None,
) -> dict[str, Any]:
    """``given`` (the keyword arguments) completed from ``options``; a keyword is given when
    its value is not its default.

    ``options`` is what ``dict()`` takes, as the agent copied it with ``dict(options)``: a
    mapping, or an iterable of ``(key, value)`` pairs. Text is refused although ``dict("")``
    would take it: it is never meant as options."""
    found = _as_mapping(options)
    if found is None:
        note(
            notes,
            "options",
            "type",
            f"must be a dict of {', '.join(OPTION_KEYS)}, not {type(options).__name__}",
        )
        return given
    merged = dict(given)
    for key, value in found.items():
        if key not in defaults:
            note(
                notes,
                f"options.{key!r}"[:80],
                "unknown_key",
                f"not one of {', '.join(OPTION_KEYS)}",
            )
            continue
        current = given[key]
        if current is defaults[key]:
            merged[key] = value
        elif current != value:
            note(notes, f"options.{key}", "conflict", "also given as a keyword argument: it wins")
    return merged


def _as_mapping(options: object) -> Mapping[Any, Any] | None:
    if isinstance(options, Mapping):
        return options
    if isinstance(options, str | bytes | bytearray):
        return None
    try:
        pairs: dict[Any, Any] = dict(options)  # type: ignore[call-overload]
    except Exception:  # not pairs; an iterable of the app's may raise anything
        return None
    return pairs
