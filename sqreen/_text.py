"""Text that every store can hold and every screen can show.

Shared by the SDK and the collector. :func:`utf8_text` makes text encodable: ``json.loads``
turns ``"\\ud800"`` into a lone surrogate, which no encoding can write (SQLite's and
PostgreSQL's drivers refuse it, a UTF-8 page or terminal cannot print it), so each one is
replaced by U+FFFD, as a UTF-8 decoder replaces a broken byte. :func:`visible` writes out the
characters that would act on a screen instead of being shown (terminal escapes, a carriage
return, bidirectional overrides that reorder what follows) as ``\\x1b``, ``\\r``, ``\\u202e``,
and those that show nothing (``\\u200b``).
"""

from __future__ import annotations

import json
import re
from typing import Final, overload

__all__ = [
    "CONTROLS",
    "REPLACEMENT",
    "SURROGATES",
    "clipped",
    "first_hidden",
    "pair",
    "quoted",
    "utf8_text",
    "visible",
]

#: DEL, C1 controls, the bidirectional marks, embeddings, overrides and isolates, and the
#: line and paragraph separators (a new line where none shows).
_NOT_C0: Final = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
#: C0 controls and the above (a regular expression class, without its brackets).
CONTROLS: Final = "\x00-\x1f" + _NOT_C0
#: UTF-16 surrogates: in a Python string, only ever lone (no encoding can write them).
SURROGATES: Final = "\ud800-\udfff"
REPLACEMENT: Final = "\ufffd"

#: Characters that show nothing where they stand (a soft hyphen, the Mongolian vowel
#: separator, zero-width spaces and joiners, the word joiner and invisible operators, the
#: deprecated format controls, the byte-order mark, the Hangul fillers and the braille
#: blank, which fonts draw as a space, and the tag characters): stored and sent as they
#: are, but written out on a screen, where ``admin\u200b`` would read as ``admin``.
_INVISIBLE: Final = (
    "\u00ad\u115f\u1160\u180e\u200b-\u200d\u2060-\u2064\u206a-\u206f\u2800\u3164"
    "\ufeff\uffa0\U000e0000-\U000e007f"
)

_SURROGATE_RE: Final = re.compile(f"[{SURROGATES}]")
_SHOWN_RE: Final = re.compile(f"[{CONTROLS}{_INVISIBLE}{SURROGATES}]")
#: The same but tabs and newlines.
_SHOWN_BUT_LINES_RE: Final = re.compile(f"[\x00-\x08\x0b-\x1f{_NOT_C0}{_INVISIBLE}{SURROGATES}]")
_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def utf8_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (``text`` itself when it has
    none: ASCII text, the common case, costs one flag test)."""
    if text.isascii() or _SURROGATE_RE.search(text) is None:
        return text
    return _SURROGATE_RE.sub(REPLACEMENT, text)


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str, *, lines: bool = False) -> str:
    """``text`` with every control character, bidirectional control and lone surrogate
    written out (``\\x1b``, ``\\r``, ``\\u202e``, ``\\ud800``), as ``repr`` writes them. With
    ``lines``, tabs and newlines are kept (a page's preformatted JSON)."""
    if text.isascii() and text.isprintable():
        return text
    return (_SHOWN_BUT_LINES_RE if lines else _SHOWN_RE).sub(_escape, text)


def first_hidden(text: str) -> str | None:
    """The first character of ``text`` that :func:`visible` would write out, if any (what a
    one-line text that people read, such as a block's reason, may not hold)."""
    match = None if text.isascii() and text.isprintable() else _SHOWN_RE.search(text)
    return None if match is None else match[0]


#: What a word of a ``k=v`` list may hold without quotes: printable ASCII but the space, and
#: ``=``, ``,``, quotes and the backslash (anything else, an equals sign's lookalike or a
#: space of another script included, is quoted).
_WORD_RE: Final = re.compile(r"""[!#-&(-+\--<>-\[\]-~]+""")


def quoted(text: str) -> str:
    """``text`` as it is when it reads as one word of a ``k=v`` list, else in double quotes
    (``"`` and ``\\`` escaped with a backslash; other characters as they are, for
    :func:`visible` to write out): a value sent as ``bad mfa=passed`` read as two pairs,
    one of them made up by whoever chose the value."""
    if _WORD_RE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pair(key: str, value: object, width: int | None = None) -> str:
    """``key=value`` for a list of pairs: the value's JSON when it is not text (numbers as
    they print), cut to ``width`` characters (``…``) if given, and each side :func:`quoted`
    when it is text that would not read as one word."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return f"{quoted(key)}={quoted(text) if isinstance(value, str) else text}"


#: What a cut leaves at a text's end, read backwards (the text reversed): the part of its last
#: word, then the digits, spaces, dashes and dots before it (a card's other groups). Matched
#: from the start of the reversed text: linear, whatever the text (no ``\Z`` to backtrack to).
_TAIL: Final = r"[^\s;,&|()\[\]{}<>\"'`]*[\d\s.\-]*"
_TAIL_TEXT_RE: Final = re.compile(_TAIL)
_TAIL_BYTES_RE: Final = re.compile(_TAIL.encode())


@overload
def clipped(text: str, limit: int) -> str: ...
@overload
def clipped(text: bytes, limit: int) -> bytes: ...
def clipped(text: str | bytes, limit: int) -> str | bytes:
    """``text`` (str or bytes) cut to at most ``limit`` characters, for text scrubbed after
    the cut: the part of a word the cut leaves is dropped too, and the digits, spaces and
    dashes before it, so that no piece of a secret is left that no longer looks like one
    (15 digits of a card, a URL's password before its ``@``, half a key went out as they
    were)."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if isinstance(cut, bytes):
        found_bytes = _TAIL_BYTES_RE.match(cut[::-1])
        return cut[: limit - found_bytes.end()] if found_bytes else cut
    found = _TAIL_TEXT_RE.match(cut[::-1])
    return cut[: limit - found.end()] if found else cut
