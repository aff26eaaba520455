"""Scrubbing of what is text rather than a parsed structure: a raw body (JSON, a form, a
multipart body, or text that does not parse, such as a body cut at ``max_body_size``) and a
path with its route parameters. The rules are :class:`~._scrub.Scrubber`'s, whose class this
one is a base of (see :mod:`._scrub` for what is sensitive)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import unquote

from ._query import encode_pairs, parse_pairs
from ._secrets import CANDIDATE, REDACTED

__all__ = ["BodyScrubbing"]

# ``key=value`` / ``"key": "value"`` in text that is not parseable: truncated JSON, text/plain.
# A run of key characters is read once, from its start (possessive, and no start inside a
# run; a run holds a letter or ``_``), so that scanning stays linear whatever the text
# ("eyJ" * 20 000 tried at each letter: 0.2 s a 64 KiB body); the key is the run's tail
# (:func:`_key_of`). A value is a string, an opening bracket (an object or a list: redacted
# whole under a sensitive key, else its own pairs are read next), or text up to a separator.
KEY_MAX: Final = 64
_KEY_VALUE: Final = re.compile(
    r"""(["']?)(?<![\w.\-])(?=[\w.\-]*?[A-Za-z_])([\w.\-]++)\1(\s*[:=]\s*)"""
    r"""("(?:[^"\\]|\\.)*+"?|'[^']*+'?|[{\[]|[^\s&;,}{\[][^\s&;,}]*+)"""
)
_STRUCTURE: Final = re.compile(r'[\[\]{}"]')
_STRING_END: Final = re.compile(r'"|\\.', re.DOTALL)
# A JSON escape of a character of keys (``"pass\u0077ord"``), not preceded by an escaped
# backslash: written as the character before keys are read.
_KEY_ESCAPE: Final = re.compile(r"(?<!\\)((?:\\\\)*)\\u00(2[dDeE]|3[0-9]|[4-7][0-9a-fA-F])")
_JSON_START: Final = re.compile(r"\s*[\[{]")
# A multipart part's disposition line, its field's name (not ``filename=``), the blank line
# ending its headers, and the next boundary: found in one pass each (the search for a part's
# whole shape at every line was quadratic: 3.4 s for 64 KiB of "content-disposition:").
_DISPOSITION: Final = re.compile(r"^content-disposition:[^\r\n]*+", re.IGNORECASE | re.MULTILINE)
_FIELD_NAME: Final = re.compile(r'(?<![a-z])name="?([^";\r\n]*+)', re.IGNORECASE)
_BLANK_LINE: Final = re.compile(r"\r?\n\r?\n")
_NEXT_PART: Final = re.compile(r"\r?\n--")
_candidate: Final = CANDIDATE.search


def _unescaped(match: re.Match[str]) -> str:
    char = chr(int(match.group(2), 16))
    return match.group(1) + (char if char.isalnum() or char in "_.-" else match.group(0)[-6:])


def _key_of(run: str) -> str | None:
    """The key a run of key characters ends with: its longest tail of at most KEY_MAX
    characters that starts with an ASCII letter or ``_``, or None."""
    for start in range(max(0, len(run) - KEY_MAX), len(run)):
        if run[start].isascii() and (run[start].isalpha() or run[start] == "_"):
            return run[start:]
    return None


def _structure_end(text: str, at: int) -> int:
    """Where the object or list opening at ``at`` ends (past its closing bracket), strings
    skipped; the end of ``text`` when it was cut before."""
    depth = 0
    pos = at
    while (found := _STRUCTURE.search(text, pos)) is not None:
        char = found.group()
        if char == '"':
            pos = found.end()
            while (inner := _STRING_END.search(text, pos)) is not None and inner.group() != '"':
                pos = inner.end()
            if inner is None:
                return len(text)
            pos = inner.end()
            continue
        depth += 1 if char in "[{" else -1
        pos = found.end()
        if depth <= 0:
            return pos
    return len(text)


class BodyScrubbing:
    """Bodies and paths, for :class:`~._scrub.Scrubber` (which gives the methods below)."""

    __slots__ = ()

    value_patterns: tuple[re.Pattern[str], ...]

    def scrub(self, obj: Any) -> Any:
        raise NotImplementedError

    def scrub_value(self, value: str) -> str:
        raise NotImplementedError

    def is_sensitive_key(self, key: str) -> bool:
        raise NotImplementedError

    def scrub_query_like(self, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        raise NotImplementedError

    def scrub_text_body(self, text: str, content_type: str | None) -> str:
        """A raw body, scrubbed according to its content type; never raises on bad input.

        JSON (by content type, or a form body that starts like JSON) is parsed, scrubbed and
        dumped again; a urlencoded form is parsed, scrubbed and encoded again; a multipart
        body has the content of its sensitive fields replaced. What does not parse (a body
        cut at ``max_body_size``, ``text/plain``) has ``key=value`` and ``"key": "value"``
        pairs with sensitive keys redacted, then :meth:`scrub_value` applied.
        """
        ctype = (content_type or "").partition(";")[0].strip().lower()
        is_form = ctype == "application/x-www-form-urlencoded"
        if ctype == "application/json" or ctype.endswith("+json") or _JSON_START.match(text):
            try:
                data = json.loads(text)
            except (ValueError, RecursionError):
                pass
            else:
                scrubbed = self.scrub(data)
                dumped = json.dumps(scrubbed, ensure_ascii=False)
                try:
                    dumped.encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
                    dumped = json.dumps(scrubbed)
                return dumped
        if is_form:
            return encode_pairs(self.scrub_query_like(parse_pairs(text)))
        if ctype.startswith("multipart/"):
            text = self._scrub_parts(text)
        if "\\u00" in text:
            text = _KEY_ESCAPE.sub(_unescaped, text)
        return self.scrub_value(self._scrub_pairs(text))

    def _scrub_pairs(self, text: str) -> str:
        """``text`` with the values of its ``key=value`` and ``"key": value`` pairs under a
        sensitive key redacted (an object or a list whole)."""
        out: list[str] = []
        pos = 0
        for match in _KEY_VALUE.finditer(text):
            if match.start() < pos:
                continue  # inside an object or a list redacted whole
            key = _key_of(match.group(2))
            if key is None or not self.is_sensitive_key(key):
                continue
            value = match.group(4)
            if value in ("{", "["):
                out += (text[pos : match.start(4)], REDACTED)
                pos = _structure_end(text, match.start(4))
            else:
                quote = value[0] if value[:1] in ("'", '"') else ""
                out += (text[pos : match.start(4)], f"{quote}{REDACTED}{quote}")
                pos = match.end()
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)

    def _scrub_parts(self, text: str) -> str:
        """A multipart body with the content of its sensitive fields redacted (each field's
        content: from the blank line after its headers to the next boundary)."""
        out: list[str] = []
        pos = 0
        blank = boundary = (-1, -1)  # the next found after some point (or none: len)
        for line in _DISPOSITION.finditer(text):
            if line.start() < pos:
                continue
            name = _FIELD_NAME.search(line.group())
            if name is None or not self.is_sensitive_key(name.group(1)):
                continue
            if blank[0] < line.end():  # searched again only past the last one found
                found = _BLANK_LINE.search(text, line.end())
                blank = (found.start(), found.end()) if found else (len(text), len(text))
            if blank[0] == len(text):
                continue  # no content: the headers were cut
            start = blank[1]
            if boundary[0] < start:
                found = _NEXT_PART.search(text, start)
                boundary = (found.start(), found.end()) if found else (len(text), len(text))
            if boundary[0] > start:
                out += (text[pos:start], REDACTED)
                pos = boundary[0]
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)

    def scrub_path(self, path: str, path_params: Mapping[str, Any] | None) -> str:
        """``path`` with the values of sensitive route parameters redacted, and
        :meth:`scrub_value` applied to each segment (a JWT or a card number in a path).

        For ``/reset/<token>`` with ``token="abc123"``, ``/reset/abc123`` becomes
        ``/reset/[redacted]``. The value is found raw or percent-encoded; whole segments are
        preferred, a substring anywhere in the path (a ``<path:...>`` value, ``abc.json``) is
        the fallback.
        """
        if path_params:
            for key, value in path_params.items():
                if value is None or not isinstance(key, str) or not self.is_sensitive_key(key):
                    continue
                text = value if isinstance(value, str) else str(value)
                if text:
                    path = _redact_param(path, text)
        if _candidate(path) is None and "%" not in path and not self.value_patterns:
            return path
        segments = path.split("/")
        for i, segment in enumerate(segments):
            decoded = unquote(segment) if "%" in segment else segment
            scrubbed = self.scrub_value(decoded)
            if scrubbed != decoded:
                segments[i] = scrubbed
        return "/".join(segments)


def _encoded_pattern(value: str) -> re.Pattern[str]:
    """A pattern matching ``value`` with any of its characters percent-encoded (or ``+``)."""
    parts = []
    for char in value:
        alternatives = [re.escape(char)]
        encoded = "".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass"))
        alternatives.append(f"(?i:{encoded})")
        if char == " ":
            alternatives.append(r"\+")
        parts.append(f"(?:{'|'.join(alternatives)})")
    return re.compile("".join(parts))


def _redact_param(path: str, value: str) -> str:
    if len(value) > 1024:
        return path.replace(value, REDACTED)
    pattern = _encoded_pattern(value)
    segments = path.split("/")
    found = False
    for i, segment in enumerate(segments):
        if segment and pattern.fullmatch(segment):
            segments[i] = REDACTED
            found = True
    return "/".join(segments) if found else pattern.sub(REDACTED, path)
