"""The side rows of events: ``event_props`` and ``event_users``, one row per indexed key.

Top-level property values are indexed as text (:func:`index_value`, which the explorer's
filters compare with), user identifiers folded as blocks and playbooks compare them
(:func:`indexed_identifier`: ``Bob@Example.com`` is indexed, and found, as
``bob@example.com``; the event keeps its spelling); keys and values are cleaned by the same
rule as the event row's indexed columns (:func:`~._rows.clean`), a batch's keys once each,
since they repeat.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ..._block_index import fold_identifier
from ..._wire import WireEvent
from ._rows import clean, plain

__all__ = ["INDEXED_VALUE_MAX", "index_rows", "index_value", "indexed_identifier"]

#: Property values are indexed on this many characters (filters compare the same prefix).
INDEXED_VALUE_MAX: Final = 200


def index_value(value: object) -> str | None:
    """The text a top-level property value is indexed (and filtered) under, or None when the
    value is not indexed (floats, None, lists, dicts)."""
    if type(value) is str:
        return value[:INDEXED_VALUE_MAX] if plain(value) else clean(value, INDEXED_VALUE_MAX)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)[:INDEXED_VALUE_MAX]
    return None


def indexed_identifier(value: str) -> str:
    """The text a user identifier is indexed (and filtered) under: folded as blocks and
    playbooks fold it (:func:`~sqreen._blocking.fold_identifier`: case, compatibility forms,
    spaces at the ends), then cleaned."""
    folded = fold_identifier(value)
    return folded if plain(folded) else clean(folded)


def _side_key(keys: dict[str, str], seen: set[str], key: str) -> str | None:
    """``key`` as a side table stores it (:func:`clean`; ``keys`` holds the batch's keys
    already cleaned, ``""`` for those stored as they are), or None when another key of the
    same event (``seen``) stores as the same text: ``"a\\x00"``, ``"a\\ud800"`` and
    ``"a\\ufffd"`` are three keys of an event and one in a side table, where a key is unique
    per event (the second failed the whole batch, which its SDK then sent again, forever).
    Only keys that are not plain (ASCII without NUL) can meet: a plain key is stored as it
    is, and cleaning leaves a U+FFFD, not ASCII, in every key it changes."""
    name = keys.get(key)
    if name is None:
        name = keys[key] = "" if plain(key) else clean(key)
    if not name:
        return key
    if name in seen:
        return None
    seen.add(name)
    return name


def index_rows(events: Iterable[WireEvent]) -> tuple[list[Any], list[Any]]:
    """The rows of ``event_props`` and ``event_users`` for ``events``, flattened
    (``position, key, value, position, key, value...``, ready for a multi-row INSERT once each
    position, the event's index in ``events``, is replaced by its seq)."""
    props: list[Any] = []
    users: list[Any] = []
    # A batch's keys repeat: each is cleaned once. Values are :func:`index_value`'s, inlined.
    keys: dict[str, str] = {}
    for position, event in enumerate(events):
        seen: set[str] = set()
        for key, value in event["properties"].items():
            kind = type(value)
            if kind is str:
                if not (value.isascii() and "\x00" not in value):
                    value = clean(value)
                text = value[:INDEXED_VALUE_MAX]
            elif kind is bool:
                text = "true" if value else "false"
            elif kind is int:
                text = str(value)[:INDEXED_VALUE_MAX]
            else:
                continue
            if (name := _side_key(keys, seen, key)) is not None:
                props += (position, name, text)
        if event["user"]:
            seen = set()
            for key, value in event["user"].items():
                if (name := _side_key(keys, seen, key)) is not None:
                    users += (position, name, indexed_identifier(value))
    return props, users
