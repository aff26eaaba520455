"""Secrets found by their form, wherever they appear in a string.

* **Card numbers**: 13 to 19 digits (ASCII or fullwidth), no digit right before or after, a
  known issuer prefix and length, Luhn-valid. Between groups, single spaces or dashes (mixed
  as people type them), or dots or slashes; a card written with dots or slashes needs at
  least three groups of 3 to 6 digits, all with the same separator, so that decimals
  (``5.123456789012345``), dates and lists of addresses are not cards.
* **Tokens**: ``Bearer <token>``; ``Basic <base64>`` when the base64 decodes to printable
  ``user:password``; JWTs; AWS access key ids (``AKIA``/``ASIA`` and 16 characters); GitHub
  tokens (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``, ``ghr_``, ``github_pat_``); Stripe keys
  (``sk_live_``, ``sk_test_``, ``rk_live_``, ``rk_test_``, ``whsec_``); Slack tokens
  (``xoxb-``, ``xoxp-``, ``xoxa-``..., ``xapp-``); PEM private keys, from their ``BEGIN``
  line through their ``END`` line (or the end of the string when it was cut).
* **Passwords in URLs** (``scheme://user:pass@``).

Only the matching part of a string is replaced by :data:`REDACTED`. Used by
:mod:`sqreen._scrub` on every string it scrubs, on the flusher thread: :data:`CANDIDATE`, one
search that most strings fail, comes first.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

__all__ = ["CANDIDATE", "REDACTED", "is_card_int", "is_card_number", "scrub_secrets"]

REDACTED: Final = "[redacted]"

_DIGITS: Final = "0123456789\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"
_DIGIT: Final = "[0-9\uff10-\uff19]"
# What may stand between two groups of a card's digits, and the ASCII character each is read
# as (fullwidth forms and no-break spaces have the same length: positions do not move).
_SEPARATORS: Final = {
    " ": " ", "-": "-", ".": ".", "/": "/", "\u00a0": " ", "\u202f": " ", "\u3000": " ",
    "\uff0d": "-", "\uff0e": ".", "\uff0f": "/",
}  # fmt: skip
_SEP: Final = "[" + re.escape("".join(_SEPARATORS)) + "]"
_TO_ASCII: Final = str.maketrans({**{_DIGITS[10 + i]: str(i) for i in range(10)}, **_SEPARATORS})

#: Anything the scrubbers below could match; most strings fail this one search. Every
#: alternative starts with one literal character, so that sre skips in C to the next character
#: that could start one (a branch of literals gets a "charset prefix"); a class such as
#: ``[0-9]`` first, a group, or IGNORECASE would make it try every alternative at every
#: position (measured: two to four times slower on ordinary strings).
CANDIDATE: Final = re.compile(
    "|".join(
        [
            *(f"{d}(?:{_SEP}?{_DIGIT}){{12}}" for d in _DIGITS),  # 13 digits: a card number?
            "J(?<=eyJ)",  # a JWT
            "://",  # a URL, with a password perhaps
            r"B(?i:earer|asic)\b",  # Bearer and Basic credentials
            r"b(?i:earer|asic)\b",
            "A[KS]IA[A-Z0-9]{16}",  # AWS access key ids
            "_(?:(?<=gh[pousr]_)|(?<=github_)pat_|(?<=[rs]k_)(?:live|test)_|(?<=whsec_))",
            "-(?:(?<=xox[a-z]-)|(?<=xapp-)|----BEGIN )",  # Slack tokens, PEM blocks
        ]
    )
)
# A maximal run of digits with single separators between them, at least 13 digits.
_DIGIT_RUN: Final = re.compile(f"{_DIGIT}(?<!{_DIGIT}.)(?:{_SEP}?{_DIGIT}){{12,}}")
_DIGIT_GROUP: Final = re.compile("[0-9]+")
# Possessive: nothing to give back (each class stops where the next part must start).
_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]{5,}+(?:\.[A-Za-z0-9_-]*+){2,4}+")
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]*+")
# Like CANDIDATE, each pattern below starts with a literal character or a class (never a
# lookbehind, a group or IGNORECASE), so that sre skips in C to where a match could start:
# a lookbehind after the first character does the work of a leading \b.
_SCHEME_VALUE: Final = r"(?:\s*[:=]\s*|\s+)"
_BEARER: Final = re.compile(rf"[Bb](?<!\w[Bb])(?i:earer){_SCHEME_VALUE}[A-Za-z0-9\-._~+/]+=*")
_BASIC: Final = re.compile(
    rf"[Bb](?<!\w[Bb])(?i:asic){_SCHEME_VALUE}([A-Za-z0-9+/]{{4,}}={{0,2}})(?![A-Za-z0-9+/=])"
)
_TOKENS: Final = (
    r"A[KS]IA[A-Z0-9]{16}(?![A-Za-z0-9])",  # AWS access key ids
    r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub: personal, OAuth, user, server, refresh
    r"github_pat_\w{22,}",  # GitHub: fine-grained
    r"sk_(?:live|test)_[A-Za-z0-9]{10,}",  # Stripe: secret keys
    r"rk_(?:live|test)_[A-Za-z0-9]{10,}",  # Stripe: restricted keys
    r"whsec_[A-Za-z0-9+/=]{20,}",  # Stripe: webhook signing secrets
    r"xox[a-z]-[A-Za-z0-9-]{10,}",  # Slack: bot, user, app... tokens
    r"xapp-[A-Za-z0-9-]{10,}",  # Slack: app-level tokens
)
# No letter or digit right before a token.
_TOKEN: Final = re.compile("|".join(f"{t[0]}(?<![A-Za-z0-9].){t[1:]}" for t in _TOKENS))
_PEM_LABEL: Final = r"[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
_PRIVATE_KEY: Final = re.compile(
    rf"-----BEGIN {_PEM_LABEL}.*?(?:-----END {_PEM_LABEL}|\Z)", re.DOTALL
)
_URL_PASSWORD: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@")
# Windows tried per string before failing closed (every remaining run redacted): each
# start of a group, with one to seven groups after it (19 digits at most).
_CARD_BUDGET: Final = 8192
# Groups of digits in one run past which it is redacted whole, unscanned: a card is at most
# 19, and "4 4 4 4..." in 14 form fields of 4 KiB cost 0.1 s of the flusher's CPU, scanned.
_MOST_GROUPS: Final = 64
# Separators that may be mixed within one card (people type "4111 1111-1111 1111"); a dot or
# a slash must be the only separator of its card, between groups of 3 to 6 digits.
_LOOSE: Final = frozenset(" -")
_GROUPED: Final = range(3, 7)

# Issuer prefixes: (prefix length, lowest, highest, card lengths). Issuers whose numbers start
# with 1 (UATP) are left out on purpose: millisecond timestamps start with 1 until 2033.
_ANY: Final = frozenset(range(13, 20))
_ISSUERS: Final = (
    (1, 4, 4, frozenset({13, 16, 19})),  # Visa
    (2, 51, 55, frozenset({16})),  # Mastercard
    (4, 2221, 2720, frozenset({16})),  # Mastercard 2-series
    (4, 2200, 2204, frozenset(range(16, 20))),  # Mir
    (2, 34, 34, frozenset({15})),  # American Express
    (2, 37, 37, frozenset({15})),  # American Express
    (3, 300, 305, frozenset(range(14, 20))),  # Diners Club
    (4, 3095, 3095, frozenset(range(14, 20))),  # Diners Club
    (2, 36, 36, frozenset(range(14, 20))),  # Diners Club
    (2, 38, 39, frozenset(range(14, 20))),  # Diners Club
    (4, 3528, 3589, frozenset(range(16, 20))),  # JCB (and RuPay 353, 356)
    (2, 50, 50, _ANY),  # Maestro (and Verve 506099-506198)
    (2, 56, 69, _ANY),  # Maestro, Discover 6011/644-649/65, UnionPay 62, RuPay 60
    (2, 81, 82, frozenset(range(16, 20))),  # UnionPay 81, RuPay 81-82
    (4, 9792, 9792, frozenset({16})),  # Troy
)
_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_MIN_CARD: Final = 10**12
_MAX_CARD: Final = 10**19


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        total += _DOUBLED[value] if i & 1 else value
    return total % 10 == 0


def is_card_number(digits: str) -> bool:
    """Whether ``digits`` (digits only) has a card's length, an issuer prefix and Luhn."""
    n = len(digits)
    for size, low, high, lengths in _ISSUERS:
        if n in lengths and low <= int(digits[:size]) <= high:
            return _luhn(digits)
    return False


def _card_spans(run: str, budget: list[int]) -> list[tuple[int, int]]:
    """The spans of ``run`` (ASCII digits and single separators) that are card numbers.

    Every window of whole groups holding 13 to 19 digits is tried, so a card next to other
    numbers (``"ref 12 4111 1111 1111 1111"``) is found. Past the budget, fail closed.
    """
    groups = [m.span() for m in _DIGIT_GROUP.finditer(run)]
    if len(groups) > _MOST_GROUPS:
        return [(0, len(run))]  # no list of cards and numbers this long is scanned: closed
    if len(groups) == 1:
        return [(0, len(run))] if len(run) <= 19 and is_card_number(run) else []
    spans: list[tuple[int, int]] = []
    for i, (start, _) in enumerate(groups):
        digits = ""
        separator = ""  # the window's: one of _LOOSE, "." or "/"
        for j in range(i, len(groups)):
            budget[0] -= 1  # every window: "1.1.1..." tries many and checks none
            if budget[0] < 0:
                return [(0, len(run))]
            if j > i:
                sep = run[groups[j - 1][1]]
                if separator and sep != separator and not {sep, separator} <= _LOOSE:
                    break
                separator = sep
                if separator not in _LOOSE and any(
                    groups[k][1] - groups[k][0] not in _GROUPED for k in (i, j)
                ):
                    break  # a dotted card's groups are of 3 to 6 digits: no longer window is
            digits += run[groups[j][0] : groups[j][1]]
            if len(digits) > 19:
                break
            if len(digits) < 13 or (separator and separator not in _LOOSE and j - i < 2):
                continue
            if is_card_number(digits):
                end = groups[j][1]
                if spans and start <= spans[-1][1]:
                    spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
                else:
                    spans.append((start, end))
    return spans


def _scrub_cards(text: str) -> str:
    out: list[str] = []
    pos = 0
    budget = [_CARD_BUDGET]
    for match in _DIGIT_RUN.finditer(text):
        base = match.start()
        run = match.group()
        for start, end in _card_spans(run if run.isascii() else run.translate(_TO_ASCII), budget):
            out.append(text[pos : base + start])
            out.append(REDACTED)
            pos = base + end
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _scrub_jwts(text: str) -> str:
    """``_JWT.sub(REDACTED, text)``, in linear time. The search tried a JWT at every
    ``eyJ``, each attempt reading to the end of its segment (``"eyJ" * 20_000``: 20 s, the
    flusher's thread and the GIL with it); here, when none starts at the first ``eyJ`` of a
    segment, none starts at a later one either (the same segment after it, shorter, then the
    same dots), and the search goes on after the segment."""
    out: list[str] = []
    pos = 0
    at = text.find("eyJ")
    while at >= 0:
        found = _JWT.match(text, at)
        if found is not None:
            out += (text[pos:at], REDACTED)
            pos = found.end()
            at = text.find("eyJ", pos)
        else:
            segment = _SEGMENT.match(text, at)  # (always matches: it may be empty)
            at = text.find("eyJ", segment.end() if segment is not None else at + 3)
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _basic(match: re.Match[str]) -> str:
    """``Basic <base64>`` redacted when the base64 holds ``user:password`` (not "Basic plan")."""
    encoded = match.group(1).rstrip("=")
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        return match.group(0)
    if ":" not in text or not text.isprintable():
        return match.group(0)
    return f"{match.group()[:5]} {REDACTED}"


def scrub_secrets(value: str) -> str:
    """``value`` with the secrets of the module's docstring redacted."""
    if not CANDIDATE.search(value):
        return value
    # Whole blocks and tokens first (a card number found inside one would split it), then
    # cards (before "Bearer", whose token would otherwise stop at the first space of a card).
    if "-----BEGIN " in value:
        value = _PRIVATE_KEY.sub(REDACTED, value)
    if "eyJ" in value:
        value = _scrub_jwts(value)
    value = _TOKEN.sub(REDACTED, value)
    value = _scrub_cards(value)
    value = _BEARER.sub(lambda m: f"{m.group()[:6]} {REDACTED}", value)
    value = _BASIC.sub(_basic, value)
    if "://" in value:
        value = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", value)
    return value


def is_card_int(value: int) -> bool:
    """An integer that is a card number (JSON bodies send them as numbers)."""
    return _MIN_CARD <= value < _MAX_CARD and is_card_number(str(value))
