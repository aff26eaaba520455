"""Secrets found by their form, wherever they appear in a string.

Card numbers (13 to 19 digits, single spaces or dashes between groups, no digit right before
or after, a known issuer prefix and length, Luhn-valid), ``Bearer <token>``, JWTs and
passwords in URLs (``scheme://user:pass@``). Only the matching part of a string is replaced
by :data:`REDACTED`. Used by :mod:`sqreen._scrub` on every string it scrubs.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["REDACTED", "is_card_int", "is_card_number", "scrub_secrets"]

REDACTED: Final = "[redacted]"

# Anything the value scrubbers could match; most strings fail this one C-level search.
CANDIDATE: Final = re.compile(r"[0-9](?:[ -]?[0-9]){12}|eyJ|bearer|://", re.IGNORECASE)
# A maximal run of digits with single spaces or dashes between them, at least 13 digits.
_DIGIT_RUN: Final = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,}")
_DIGIT_GROUP: Final = re.compile(r"[0-9]+")
_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]{5,}(?:\.[A-Za-z0-9_-]*){2,4}")
_BEARER: Final = re.compile(r"\b(bearer)(?:\s*[:=]\s*|\s+)[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
_URL_PASSWORD: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@")
# Windows tried per string before failing closed (every remaining run redacted).
_CARD_BUDGET: Final = 2048

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
    """The spans of ``run`` (digits and single separators) that are card numbers.

    Every window of whole groups holding 13 to 19 digits is tried, so a card next to other
    numbers (``"ref 12 4111 1111 1111 1111"``) is found. Past the budget, fail closed.
    """
    groups = [m.span() for m in _DIGIT_GROUP.finditer(run)]
    if len(groups) == 1:
        return [(0, len(run))] if len(run) <= 19 and is_card_number(run) else []
    spans: list[tuple[int, int]] = []
    for i, (start, _) in enumerate(groups):
        digits = ""
        for j in range(i, len(groups)):
            digits += run[groups[j][0] : groups[j][1]]
            if len(digits) > 19:
                break
            if len(digits) < 13:
                continue
            budget[0] -= 1
            if budget[0] < 0:
                return [(0, len(run))]
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
        for start, end in _card_spans(match.group(), budget):
            out.append(text[pos : base + start])
            out.append(REDACTED)
            pos = base + end
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def scrub_secrets(value: str) -> str:
    """``value`` with card numbers, bearer tokens, JWTs and URL passwords redacted."""
    if not CANDIDATE.search(value):
        return value
    # JWTs first (a card number found inside one would split it), then cards (before
    # "Bearer", whose token would otherwise stop at the first space of a card).
    if "eyJ" in value:
        value = _JWT.sub(REDACTED, value)
    value = _scrub_cards(value)
    value = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", value)
    if "://" in value:
        value = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", value)
    return value


def is_card_int(value: int) -> bool:
    """An integer that is a card number (JSON bodies send them as numbers)."""
    return _MIN_CARD <= value < _MAX_CARD and is_card_number(str(value))
