"""``ip_info`` as events hold it: one immutable dict shared by every event of the addresses
with that answer, carrying its own JSON text.

An event used to get its own copy of its address's ``ip_info`` (and of its ``reasons``
list), so that a later enricher could change it: two containers an event, ~0.4 µs of a new
address's 5.5 (measured). An event now holds a reference to the cached one, which refuses
changes (``TypeError``): an enricher that wants another ``ip_info`` for an event replaces it
(``fields["ip_info"] = {**info, ...}``), and the storage writes what it holds. The storage
writes :meth:`IpInfo.json`, encoded once an ``ip_info`` (not once an event, and without
comparing a copy with its source first).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

from ..._json import Encoded
from ..fastjson import dumps_ascii

__all__ = ["IpInfo", "Reasons"]

_T = TypeVar("_T")


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(
        f"{type(self).__name__} is shared by every event from its address: "
        "replace it (a copy with the change), do not change it"
    )


class Reasons(list[str]):
    """The ``reasons`` of a shared ``ip_info``: a list (equal to one, encoded as one) that
    refuses changes. One a kind, made at start."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type[list[str]], tuple[list[str]]]:
        return list, (list(self),)  # a copy (copy.copy, pickle) is a plain, mutable list

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse


class IpInfo(Encoded):
    """An ``ip_info`` (a dict, equal to and encoded as the plain one) that refuses changes
    and encodes its JSON once. Its ``reasons`` should be a :class:`Reasons`."""

    __slots__ = ("_derived", "_text")

    def __init__(self, fields: Mapping[str, Any]) -> None:
        dict.update(self, fields)  # dict's own: this class's update refuses
        self._text: str | None = None
        self._derived: tuple[Callable[..., Any], Any] | None = None

    def json(self) -> str:
        """The compact ASCII JSON of this dict (as :func:`~sqreen._json.dumps_ascii`)."""
        text = self._text
        if text is None:
            text = self._text = dumps_ascii(self)
        return text

    def derived(self, make: Callable[[Encoded], _T]) -> _T:
        """``make(self)``, kept for the next event from this address (one reader at a
        time: the storage's row columns; another ``make`` replaces it)."""
        kept = self._derived
        if kept is not None and kept[0] is make:
            value: _T = kept[1]
            return value
        value = make(self)
        self._derived = (make, value)
        return value

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return dict, (dict(self),)  # a copy (copy.copy, pickle) is a plain, mutable dict

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse
