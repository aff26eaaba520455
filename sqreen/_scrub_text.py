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
# A key starts where no letter could have started one before it, and is read once (possessive:
# a shorter one is followed by a key's character, never by what must come after it), so that
# a long run of key characters costs one try, not one at each of its letters (a 64 KiB body
# of "eyJ": 0.2 s before). Its last KEY_MAX characters are the key (:func:`_key_of`).
KEY_MAX: Final = 64
_KEY_VALUE: Final = re.compile(
    r"""(["']?)(?<![A-Za-z_])([A-Za-z_][\w.\-]{0,254}+)\1(\s*[:=]\s*)"""
    # A value is a string, or text up to a separator: never an object or a list, whose own
    # pairs are read next (``{"user":{"password":...``, compact JSON cut at the cap).
    r"""("(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s&;,}{\[][^\s&;,}]*)"""
)
# A JSON escape of a character of keys (``"pass\u0077ord"``), not preceded by an escaped
# backslash: written as the character before keys are read.
_KEY_ESCAPE: Final = re.compile(r"(?<!\\)((?:\\\\)*)\\u00(2[dDeE]|3[0-9]|[4-7][0-9a-fA-F])")
_JSON_START: Final = re.compile(r"\s*[\[{]")
_MULTIPART_PART: Final = re.compile(
    r"(content-disposition:[^\r\n]*?(?<![a-z])name=\"?([^\";\r\n]*)\"?[^\r\n]*\r?\n"
    r"(?:[^\r\n]+\r?\n)*\r?\n)(.*?)(?=\r?\n--|\Z)",
    re.IGNORECASE | re.DOTALL,
)
_candidate: Final = CANDIDATE.search


def _unescaped(match: re.Match[str]) -> str:
    char = chr(int(match.group(2), 16))
    return match.group(1) + (char if char.isalnum() or char in "_.-" else match.group(0)[-6:])


def _key_of(run: str) -> str | None:
    """The key a run of key characters ends with: at most KEY_MAX of them, from a letter or
    ``_`` (the longest such tail), or None."""
    if len(run) <= KEY_MAX:
        return run
    for start in range(len(run) - KEY_MAX, len(run)):
        if run[start].isascii() and (run[start].isalpha() or run[start] == "_"):
            return run[start:]
    return None


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
            text = _MULTIPART_PART.sub(self._multipart_part, text)
        if "\\u00" in text:
            text = _KEY_ESCAPE.sub(_unescaped, text)
        return self.scrub_value(_KEY_VALUE.sub(self._key_value, text))

    def _key_value(self, match: re.Match[str]) -> str:
        key = _key_of(match.group(2))
        if key is None or not self.is_sensitive_key(key):
            return match.group(0)
        value = match.group(4)
        quote = value[0] if value[:1] in ("'", '"') else ""
        key_quote, key, separator = match.group(1, 2, 3)
        return f"{key_quote}{key}{key_quote}{separator}{quote}{REDACTED}{quote}"

    def _multipart_part(self, match: re.Match[str]) -> str:
        if self.is_sensitive_key(match.group(2)) and match.group(3):
            return match.group(1) + REDACTED
        return match.group(0)

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
