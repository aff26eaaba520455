"""A request's query string and body as parameters: parsed on the flusher thread, bounded,
not scrubbed.

:meth:`sqreen._request.RequestSnapshot.params` parses with these, in two steps with the
scrubber after; :func:`sqreen._params.scrubbed_params` parses and scrubs in one pass within the
same bounds, and must give the same result (``tests/test_params.py``). Standard library only:
a urlencoded query or form, a JSON object, the text fields of a multipart body (names and
short ``text/plain`` values; a file's name and contents never: its field is ``"[multipart]"``).
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
    "multipart_fields",
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
#: The value of a multipart part that is not a short text field: a file, a part with a media
#: type other than ``text/plain``, one longer than :data:`MAX_MULTIPART_TEXT`.
MULTIPART = "[multipart]"
#: A multipart text field longer than this is not read (a text area of a form is shorter).
MAX_MULTIPART_TEXT = MAX_PARAM_VALUE
#: A part's headers longer than this are not read (the part is skipped).
MAX_PART_HEADERS = 2048
#: RFC 2046: a boundary is 1 to 70 characters.
MAX_BOUNDARY = 70


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
        _add(out, key, value)
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
        except (ValueError, RecursionError):  # a body nested deeper than Python reads
            return {}
        return _bounded(parsed) if isinstance(parsed, dict) else {}  # type: ignore[no-any-return,unused-ignore]
    if content_type.startswith("multipart/form-data"):
        fields = multipart_fields(body, content_type)
        if fields is not None:
            return fields
        return dict.fromkeys(multipart_names(body, content_type)[:MAX_PARAMS], MULTIPART)
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


def _boundary(content_type: str) -> bytes | None:
    """The ``boundary`` parameter of a multipart media type (quoted or not), None when it is
    missing or not what RFC 2046 allows (1 to 70 characters of ASCII, no CR or LF)."""
    for param in content_type.split(";")[1:16]:
        key, eq, value = param.partition("=")
        if not eq or key.strip().lower() != "boundary":
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if not 0 < len(value) <= MAX_BOUNDARY or not value.isascii():
            return None
        if any(c in value for c in "\r\n\x00"):
            return None
        return value.encode("ascii")
    return None


def _disposition(headers: bytes) -> tuple[str | None, bool, bool]:
    """``(field name, is a file, is text)`` from a part's headers (RFC 7578): the name of
    ``Content-Disposition: form-data; name="..."``, whether it has a ``filename``, and
    whether its ``Content-Type`` is absent or ``text/plain``."""
    name: str | None = None
    is_file = False
    is_text = True
    for line in headers.split(b"\n")[:16]:
        key, colon, value = line.partition(b":")
        if not colon:
            continue
        key = key.strip().lower()
        if key == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            is_text = media in (b"", b"text/plain")
        elif key == b"content-disposition":
            kind, _, params = value.partition(b";")
            if kind.strip().lower() != b"form-data":
                return None, False, False
            for param in _disposition_params(params):
                pkey, _, pvalue = param.partition(b"=")
                pkey = pkey.strip().lower()
                if pkey == b"name":
                    name = _unquoted(pvalue).decode("utf-8", "replace")[:MAX_PARAM_KEY]
                elif pkey in (b"filename", b"filename*"):
                    is_file = True
    return name, is_file, is_text


def _disposition_params(params: bytes) -> list[bytes]:
    """The ``;``-separated parameters, a ``;`` inside quotes kept (``name="a;b"``)."""
    out: list[bytes] = []
    start = 0
    quoted = False
    for i, byte in enumerate(params[:1024]):
        if byte == 0x22:  # "
            quoted = not quoted
        elif byte == 0x3B and not quoted:  # ;
            out.append(params[start:i])
            start = i + 1
    out.append(params[start:1024])
    return out[:16]


def _unquoted(value: bytes) -> bytes:
    value = value.strip()
    if len(value) >= 2 and value[:1] == value[-1:] == b'"':
        return value[1:-1].replace(b'\\"', b'"')
    return value


def multipart_fields(body: bytes, content_type: str) -> dict[str, Any] | None:
    """The fields of a ``multipart/form-data`` body, as a urlencoded form's would be: a
    text field's value (``text/plain`` or no media type, no ``filename``, at most
    :data:`MAX_MULTIPART_TEXT` bytes) as text (UTF-8, else latin-1); any other part's
    :data:`MULTIPART` (a file's contents and its name are never read). A repeated name's
    values as a list. Bounded as a form is: 64 names, 256 parts read, names cut at 128
    characters; a part whose headers are over :data:`MAX_PART_HEADERS` bytes or have no
    name is skipped. A text field with no delimiter after it (the body was cut at the
    capture's cap) is :data:`TRUNCATED`, and the fields past the cap are not there at all.
    None when the boundary is missing or invalid, or no part could be read (the caller
    falls back to the field names). Linear in the body: one search for each delimiter."""
    boundary = _boundary(content_type)
    if boundary is None:
        return None
    delimiter = b"--" + boundary
    out: dict[str, Any] = {}
    at = body.find(delimiter)
    parts = 0
    while at >= 0 and parts < MAX_PAIRS:
        start = at + len(delimiter)
        if body[start : start + 2] == b"--":  # the close delimiter
            break
        parts += 1
        nxt = body.find(b"\r\n" + delimiter, start)
        end = len(body) if nxt < 0 else nxt
        at = -1 if nxt < 0 else nxt + 2
        part = body[start:end]
        split = part.find(b"\r\n\r\n", 0, MAX_PART_HEADERS)
        if split < 0:
            continue
        name, is_file, is_text = _disposition(part[:split])
        if name is None:
            continue
        content = part[split + 4 :]
        if is_file or not is_text or len(content) > MAX_MULTIPART_TEXT:
            value = MULTIPART
        elif nxt < 0:  # no delimiter after it: cut at the capture's cap (or malformed)
            value = TRUNCATED
        else:
            value = form_text(content)
        _add(out, name, value)
    return out or None


def _add(out: dict[str, Any], key: str, value: str) -> None:
    """``value`` under ``key``: a repeated key's values in a list, both bounded by
    :data:`MAX_PARAMS` (what ``parse_qs`` and a form's fields alike make)."""
    if key in out:
        prev = out[key]
        if isinstance(prev, list):
            if len(prev) < MAX_PARAMS:
                prev.append(value)
        else:
            out[key] = [prev, value]
    elif len(out) < MAX_PARAMS:
        out[key] = value
