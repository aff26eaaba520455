"""An ``ip_info`` that did not come from this collector's enricher (the collector's own JSON
lines, imported back with ``sqreen import``): checked field by field against what the
enricher stores, so that a hand-edited or foreign line cannot put in the database what no
lookup gives (a kind no filter takes, a score of 10**30, a country spelled ``Germany``), which
the explorer, the playbooks and the exports read as the enricher's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ..._event import InvalidEvent
from ..storage.model import IP_KINDS, MAX_SCORE
from ._enricher import IP_INFO_KEYS
from ._geoip import MAX_RADIUS_KM, MAX_TEXT, finite_number, is_country
from ._score import REASONS

__all__ = ["checked_ip_info"]


def _country(value: object) -> bool:
    return isinstance(value, str) and is_country(value)


def _text(value: object) -> bool:
    # As the enricher stores it: a file's text is stripped and cut, not otherwise checked
    # (a no-break space, a zero-width one), and a range list's provider may be empty; an
    # exported line of this collector must import back.
    return isinstance(value, str) and len(value) <= MAX_TEXT


def _whole(low: int, high: int) -> Callable[[object], bool]:
    return lambda value: type(value) is int and low <= value <= high


def _degrees(most: int) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        number = finite_number(value)  # as the enricher reads a file's coordinates
        return number is not None and abs(number) <= most

    return check


def _reasons(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= len(REASONS)
        and all(isinstance(r, str) and r in REASONS for r in value)
        and len(set(value)) == len(value)
    )


#: Each key: its check, and what it must be.
_FIELDS: Final[dict[str, tuple[Callable[[object], bool], str]]] = {
    "country": (_country, "a two-letter country code in capitals (e.g. DE)"),
    "kind": (lambda v: v in IP_KINDS, f"one of {', '.join(IP_KINDS)}"),
    "provider": (_text, f"text of at most {MAX_TEXT} characters"),
    "city": (_text, f"text of at most {MAX_TEXT} characters"),
    "latitude": (_degrees(90), "a number from -90 to 90"),
    "longitude": (_degrees(180), "a number from -180 to 180"),
    "accuracy_radius": (_whole(0, MAX_RADIUS_KM), f"a whole number of km, 0 to {MAX_RADIUS_KM}"),
    "asn": (_whole(1, 2**32 - 1), "an AS number, a whole number from 1 to 4294967295"),
    "score": (_whole(0, MAX_SCORE), f"a whole number from 0 to {MAX_SCORE}"),
    "reasons": (_reasons, f"a list of distinct reasons among {', '.join(REASONS)}"),
}
assert set(_FIELDS) == set(IP_INFO_KEYS)


def checked_ip_info(value: object) -> dict[str, Any]:
    """``value`` as an ``ip_info`` to store: :class:`InvalidEvent` naming the first field that
    no lookup of this collector could have given (an unknown key, a wrong type, out of
    range); coordinates go in pairs."""
    if not isinstance(value, dict):
        raise InvalidEvent("ip_info", "type", "must be an object")
    for key, field in value.items():
        found = _FIELDS.get(key)
        if found is None:
            raise InvalidEvent(
                "ip_info", "key", f"unknown key {str(key)[:40]!r}: {', '.join(IP_INFO_KEYS)}"
            )
        check, expected = found
        if not check(field):
            raise InvalidEvent(f"ip_info.{key}", "value", f"must be {expected}")
    if ("latitude" in value) != ("longitude" in value):
        raise InvalidEvent("ip_info", "value", "latitude and longitude go together")
    return dict(value)
