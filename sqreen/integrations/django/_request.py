"""What the Django middleware reads of a request: ``request.META`` with the path in its WSGI
form, the body Django read, and the resolved route (see ``_middleware``'s docstring)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from ...middleware._tee import WSGIInputTee

__all__ = ["DjangoRequest"]


class DjangoRequest(Mapping[str, Any]):
    """``META`` with the path in its WSGI form, the body Django read (a
    :class:`sqreen._request.BodySource`) and the resolved route.

    It holds the request weakly: the request holds it (``request.sqreen``, the handle), and
    a strong reference back made each request, its body and its user a cycle, freed only by
    a garbage collection, not when Django was done with it. A handle kept past its request
    reads as a request without headers, body or route."""

    __slots__ = ("_cap", "_ref", "_tee")

    def __init__(self, request: Any, cap: int) -> None:
        self._ref = weakref.ref(request)
        self._cap = cap
        self._tee: WSGIInputTee | None = None
        attrs = request.__dict__
        stream = attrs.get("_stream")
        if stream is not None and "_body" not in attrs and not getattr(request, "_read_started", 0):
            self._tee = request._stream = WSGIInputTee(stream, cap)

    def _meta(self) -> Mapping[str, Any]:
        request = self._ref()
        return {} if request is None else request.META

    def get(self, key: str, default: Any = None) -> Any:
        request = self._ref()
        if request is None:
            return default
        if key == "PATH_INFO":
            return _wsgi_str(request.path_info)
        if key == "SCRIPT_NAME":
            return _wsgi_str(request.META.get("SCRIPT_NAME") or "")
        return request.META.get(key, default)

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._meta())

    def __len__(self) -> int:
        return len(self._meta())

    def capture(self) -> tuple[tuple[bytes, ...], bool]:
        if self._tee is not None:
            chunks, truncated = self._tee.capture()
            if chunks or truncated:
                return chunks, truncated
        request = self._ref()
        body = None if request is None else request.__dict__.get("_body")
        if not body:
            return (), False
        if len(body) <= self._cap:
            return (body,), False
        return (body[: self._cap],), True

    def route(self) -> tuple[str | None, Mapping[str, Any] | None]:
        match = getattr(self._ref(), "resolver_match", None)
        if match is None or match.route is None:
            return None, None
        return "/" + match.route, match.kwargs or None


_MISSING: Any = object()


def _wsgi_str(text: str) -> str:
    """A decoded path in the environ's form (UTF-8 bytes as latin-1), as the snapshot expects."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")
