"""A request's query string and body as parameters: parsed on the flusher thread, bounded,
not scrubbed.

:meth:`sqreen._request.RequestSnapshot.params` parses with these, in two steps with the
scrubber after; :func:`sqreen._params.scrubbed_params` parses and scrubs in one pass within the
same bounds, and must give the same result (``tests/test_params.py``). Standard library only:
a urlencoded query or form, a JSON object, the field names (never the values) of a multipart
body.
"""

from __future__ import annotations

import json
from typing import Any

from ._query import parse_pairs

__all__ = [
    "MAX_PAIRS",
    "MAX_PARAMS",
    "MAX_PARAM_KEY",
    "MAX_PARAM_VALUE",
    "form_text",
    "multipart_names",
    "parse_body",
    "parse_query",
]

MAX_PARAMS = 64
#: A parameter's key is kept to this many characters.
MAX_PARAM_KEY = 128
#: The pairs of a query string or form parsed at most (the rest is not read).
MAX_PAIRS = MAX_PARAMS * 4
MAX_PARAM_VALUE = 4096
MAX_PARAM_DEPTH = 4
TRUNCATED = "[truncated]"


def _bounded(value: Any, depth: int = 0) -> Any:
    """Bound a parsed JSON body: depth, sizes and key counts, so hostile input stays small."""
    if isinstance(value, str):
        return value if len(value) <= MAX_PARAM_VALUE else value[:MAX_PARAM_VALUE] + TRUNCATED
    if isinstance(value, dict):
        if depth >= MAX_PARAM_DEPTH:
            return TRUNCATED
        items = list(value.items())[:MAX_PARAMS]
        return {str(k)[:128]: _bounded(v, depth + 1) for k, v in items}
    if isinstance(value, list):
        if depth >= MAX_PARAM_DEPTH:
            return TRUNCATED
        return [_bounded(v, depth + 1) for v in value[:MAX_PARAMS]]
    return value


def parse_query(qs: str) -> dict[str, Any]:
    """A query string (or urlencoded form) as a dict: a repeated key's values as a list,
    at most 64 keys and 256 pairs read, keys and values cut."""
    if not qs:
        return {}
    out: dict[str, Any] = {}
    for key, value in parse_pairs(qs, MAX_PAIRS):
        key = key[:MAX_PARAM_KEY]
        value = value[:MAX_PARAM_VALUE]
        if key in out:
            prev = out[key]
            if isinstance(prev, list):
                if len(prev) < MAX_PARAMS:
                    prev.append(value)
            else:
                out[key] = [prev, value]
        elif len(out) < MAX_PARAMS:
            out[key] = value
    return out


def parse_body(body: bytes, content_type: str, truncated: bool) -> dict[str, Any]:
    """A body's parameters by its media type; ``{}`` for a JSON body cut at the capture's
    cap (``truncated``), and for any other type."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return parse_query(form_text(body))
    if content_type.startswith("application/json") or content_type.endswith("+json"):
        if truncated:
            return {}
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        return _bounded(parsed) if isinstance(parsed, dict) else {}  # type: ignore[no-any-return,unused-ignore]
    if content_type.startswith("multipart/form-data"):
        return dict.fromkeys(multipart_names(body, content_type)[:MAX_PARAMS], "[multipart]")
    return {}


def form_text(data: bytes) -> str:
    """A form body as text: UTF-8, or latin-1 when it is not UTF-8 (decoded once)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def multipart_names(body: bytes, content_type: str) -> list[str]:
    """Field names of a multipart body, never their values (files, passwords)."""
    names: list[str] = []
    marker = b'form-data; name="'
    start = 0
    while len(names) < MAX_PARAMS:
        i = body.find(marker, start)
        if i < 0:
            break
        j = body.find(b'"', i + len(marker))
        if j < 0:
            break
        names.append(body[i + len(marker) : j].decode("utf-8", "replace")[:128])
        start = j
    return names
