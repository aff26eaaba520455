"""PII scrubbing: secrets never leave the process.

Applied on the flusher thread to request parameters, the body, custom properties and route
parameters inside the path. Two independent nets, because either alone misses things:

* **Keys.** A value whose key is sensitive is replaced by :data:`REDACTED`, whatever its type
  (a nested dict or list included). Keys are split into tokens on ``_``, ``-``, ``.``,
  whitespace, camelCase and digits (``passwordConfirm2`` is ``password``, ``confirm``,
  ``2``); a key is sensitive when a token, or up to four adjacent tokens joined
  (``api`` + ``key``), is in :data:`DEFAULT_SENSITIVE_KEYS` or the ``scrub_keys`` added to
  them. Matching whole tokens is what keeps ``author``, ``cardinality``, ``classname`` and
  ``discard_reason`` readable. Two narrow extensions catch glued spellings: a token that
  *contains* ``password``/``passwd``/``passphrase``/``csrf``/``xsrf`` (Django's
  ``csrfmiddlewaretoken``, ``newpassword``) or *ends with* ``token``, ``secret``, ``apikey``,
  ``privatekey``, ``sessionid``, ``sessid`` or ``cardnumber`` (``accesstoken``,
  ``JSESSIONID``; ``tokenizer`` does not end with ``token``). A plural (``tokens``) counts.
  Over-scrubbing is the accepted failure: ``session_count`` and ``max_tokens`` are redacted.
* **Values.** Every string is searched for card numbers (13 to 19 digits, single spaces or
  dashes between groups, no digit right before or after, a known issuer prefix and length,
  Luhn-valid), ``Bearer <token>``, JWTs, passwords in URLs (``scheme://user:pass@``) and the
  ``scrub_values`` regular expressions. Only the matching part is replaced. An integer that
  is a card number is replaced too.

``user_identifiers`` are not scrubbed: they are who the event is about.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlencode

__all__ = ["DEFAULT_SENSITIVE_KEYS", "MAX_DEPTH", "NEVER_COLLECTED_HEADERS", "REDACTED", "Scrubber"]

REDACTED: Final = "[redacted]"

DEFAULT_SENSITIVE_KEYS: Final = frozenset(
    {
        "password",  # password, user_password, passwordConfirm, new-password
        "passwd",  # the Unix spelling
        "pwd",  # the usual abbreviation
        "pass",  # pass, user_pass ("passage", "compass" are other tokens)
        "passphrase",  # key and wallet passphrases
        "secret",  # secret, client_secret, secret_key
        "token",  # token, auth_token, access_token ("tokenizer" is another token)
        "jwt",  # a JSON Web Token under its own name
        "bearer",  # a bearer credential
        "auth",  # auth, x-auth, auth_token ("author", "authority" are other tokens)
        "authorization",  # the header's name used as a key
        "apikey",  # apikey, api_key, apiKey, X-Api-Key (joined tokens)
        "cookie",  # cookie, set_cookie
        "session",  # session, session_key (also session_count: accepted over-scrub)
        "sessionid",  # sessionid, session_id, sessionId
        "csrf",  # csrf, csrf_token, csrfmiddlewaretoken (contained)
        "xsrf",  # XSRF-TOKEN (Angular)
        "signature",  # request and webhook signatures, X-Amz-Signature
        "otp",  # one-time passwords: otp, otp_code
        "totp",  # time-based one-time passwords
        "pin",  # card and phone PINs ("pinned", "spinner", "opinion" are other tokens)
        "cvv",  # card verification value (cvv, cvv2)
        "cvc",  # card verification code (cvc, cvc2)
        "ssn",  # US social security number
        "iban",  # international bank account number
        "cardnumber",  # card_number, cardNumber (joined tokens)
        "creditcard",  # credit_card, creditCard (joined tokens)
        "privatekey",  # private_key, privateKey (joined tokens)
        "credential",  # credential, X-Amz-Credential
        "credentials",  # credentials blobs
    }
)

#: Request headers never collected, whatever the options: they are credentials.
NEVER_COLLECTED_HEADERS: Final = frozenset(
    {"authorization", "cookie", "proxy-authorization", "x-api-key"}
)

#: Containers nested deeper than this are replaced by the marker: hostile JSON bodies cannot
#: exhaust the stack, and a cycle ends there.
MAX_DEPTH: Final = 32

# Words: "HTTPRequest" is "HTTP" + "Request"; digits apart; other letters (no case) as runs.
_TOKEN_RE: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\W\d_A-Za-z]+")
_CONTAINS: Final = ("password", "passwd", "passphrase", "csrf", "xsrf")
_SUFFIXES: Final = ("token", "secret", "apikey", "privatekey", "sessionid", "sessid", "cardnumber")
_MAX_JOINED: Final = 4
_CACHE_MAX: Final = 4096
_CACHED_KEY_MAX: Final = 128

# Anything the value scrubbers could match; most strings fail this one C-level search.
_CANDIDATE: Final = re.compile(r"[0-9](?:[ -]?[0-9]){12}|eyJ|bearer|://", re.IGNORECASE)
# A maximal run of digits with single spaces or dashes between them, at least 13 digits.
_DIGIT_RUN: Final = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,}")
_DIGIT_GROUP: Final = re.compile(r"[0-9]+")
_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]{5,}(?:\.[A-Za-z0-9_-]*){2,4}")
_BEARER: Final = re.compile(r"\b(bearer)(?:\s*[:=]\s*|\s+)[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
_URL_PASSWORD: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@")
# ``key=value`` / ``"key": "value"`` in text that is not parseable: truncated JSON, text/plain.
_KEY_VALUE: Final = re.compile(
    r"""(["']?)([A-Za-z_][\w.\-]{0,63})\1(\s*[:=]\s*)("(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s&;,}]+)"""
)
_JSON_START: Final = re.compile(r"\s*[\[{]")
_MULTIPART_PART: Final = re.compile(
    r"(content-disposition:[^\r\n]*?(?<![a-z])name=\"?([^\";\r\n]*)\"?[^\r\n]*\r?\n"
    r"(?:[^\r\n]+\r?\n)*\r?\n)(.*?)(?=\r?\n--|\Z)",
    re.IGNORECASE | re.DOTALL,
)
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


def _normalized_key(key: str) -> str:
    return "".join(t.lower() for t in _TOKEN_RE.findall(key))


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


class Scrubber:
    """Scrub secrets from request data and properties; build it once from the config.

    ``extra_keys`` are added to :data:`DEFAULT_SENSITIVE_KEYS`, never replacing them; each is
    matched whatever its spelling (``mother_maiden_name`` also matches ``motherMaidenName``).
    ``value_patterns`` are regular expressions whose matches in string values are replaced by
    :data:`REDACTED`. A bad entry raises :class:`ValueError` naming it. Thread-safe.
    """

    def __init__(
        self, extra_keys: Iterable[str] = (), value_patterns: Iterable[str | re.Pattern[str]] = ()
    ) -> None:
        if isinstance(extra_keys, str | bytes):
            raise ValueError(f"scrub_keys must be a list of keys, not a string ({extra_keys!r})")
        if isinstance(value_patterns, str | bytes):
            raise ValueError(
                f"scrub_values must be a list of patterns, not a string ({value_patterns!r})"
            )
        extra: set[str] = set()
        for key in extra_keys:
            normalized = _normalized_key(key) if isinstance(key, str) else ""
            if not normalized:
                raise ValueError(f"scrub_keys: {key!r} is not a key (it needs letters or digits)")
            extra.add(normalized)
        self.extra_keys: frozenset[str] = frozenset(extra)
        self._keys = DEFAULT_SENSITIVE_KEYS | extra
        patterns: list[re.Pattern[str]] = []
        for pattern in value_patterns:
            try:
                compiled = re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise ValueError(
                    f"scrub_values: {pattern!r} is not a regular expression ({exc})"
                ) from None
            if not isinstance(compiled.pattern, str):
                raise ValueError(f"scrub_values: {pattern!r} is a bytes pattern, not a str one")
            if compiled.fullmatch(""):
                raise ValueError(f"scrub_values: {pattern!r} matches the empty string")
            patterns.append(compiled)
        self.value_patterns: tuple[re.Pattern[str], ...] = tuple(patterns)
        self._cache: dict[str, bool] = {}

    # -- keys -------------------------------------------------------------------------------

    def is_sensitive_key(self, key: str) -> bool:
        """Whether values under ``key`` are secrets (see the module's docstring)."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        sensitive = self._classify(key)
        if len(key) <= _CACHED_KEY_MAX:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = sensitive
        return sensitive

    def _classify(self, key: str) -> bool:
        tokens = [t.lower() for t in _TOKEN_RE.findall(key)]
        keys = self._keys
        for i, token in enumerate(tokens):
            if any(part in token for part in _CONTAINS):
                return True
            joined = ""
            for following in tokens[i : i + _MAX_JOINED]:
                joined += following
                if (
                    joined in keys
                    or (joined[-1] == "s" and joined[:-1] in keys)
                    or joined.endswith(_SUFFIXES)
                ):
                    return True
        return bool(self.extra_keys) and "".join(tokens) in self.extra_keys

    # -- values -----------------------------------------------------------------------------

    def scrub_value(self, value: str) -> str:
        """``value`` with card numbers, bearer tokens, JWTs, URL passwords and the configured
        patterns replaced by :data:`REDACTED`; the rest of the string is kept."""
        if _CANDIDATE.search(value):
            # JWTs first (a card number found inside one would split it), then cards (before
            # "Bearer", whose token would otherwise stop at the first space of a card).
            if "eyJ" in value:
                value = _JWT.sub(REDACTED, value)
            value = _scrub_cards(value)
            value = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", value)
            if "://" in value:
                value = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", value)
        for pattern in self.value_patterns:
            value = pattern.sub(REDACTED, value)
        return value

    def scrub(self, obj: Any) -> Any:
        """A scrubbed copy of ``obj`` (dicts, lists, tuples, strings; other values as they
        are). Values under sensitive keys become :data:`REDACTED`; string keys and values go
        through :meth:`scrub_value`, and so does an integer that is a card number (JSON bodies
        send them as numbers). A 2-tuple starting with a string is a ``(key, value)`` pair (as
        :func:`~urllib.parse.parse_qsl` gives). The input is never mutated."""
        return self._scrub(obj, 0)

    def _scrub(self, obj: Any, depth: int) -> Any:
        if isinstance(obj, str):
            return self.scrub_value(obj)
        if type(obj) is int:  # {"card": 4111111111111111} in a JSON body
            return REDACTED if _MIN_CARD <= obj < _MAX_CARD and is_card_number(str(obj)) else obj
        if isinstance(obj, Mapping):
            if depth >= MAX_DEPTH:
                return REDACTED
            out: dict[Any, Any] = {}
            for key, item in obj.items():
                if isinstance(key, str):
                    if self.is_sensitive_key(key):
                        out[self.scrub_value(key)] = REDACTED
                        continue
                    key = self.scrub_value(key)
                out[key] = self._scrub(item, depth + 1)
            return out
        if isinstance(obj, list | tuple):
            if depth >= MAX_DEPTH:
                return REDACTED
            if type(obj) is tuple and len(obj) == 2 and isinstance(obj[0], str):
                # A (key, value) pair, as from parse_qsl() or MultiDict.items(multi=True).
                key = self.scrub_value(obj[0])
                if self.is_sensitive_key(obj[0]):
                    return (key, REDACTED)
                return (key, self._scrub(obj[1], depth + 1))
            items = [self._scrub(item, depth + 1) for item in obj]
            return items if isinstance(obj, list) else tuple(items)
        return obj

    def scrub_query_like(self, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Scrubbed ``(key, value)`` pairs, as from :func:`urllib.parse.parse_qsl`."""
        return [
            (self.scrub_value(k), REDACTED if self.is_sensitive_key(k) else self.scrub_value(v))
            for k, v in pairs
        ]

    # -- bodies and paths -------------------------------------------------------------------

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
            pairs = parse_qsl(text, keep_blank_values=True, errors="replace")
            return urlencode(self.scrub_query_like(pairs), safe="[]")
        if ctype.startswith("multipart/"):
            text = _MULTIPART_PART.sub(self._multipart_part, text)
        return self.scrub_value(_KEY_VALUE.sub(self._key_value, text))

    def _key_value(self, match: re.Match[str]) -> str:
        if not self.is_sensitive_key(match.group(2)):
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
        if not _CANDIDATE.search(path) and "%" not in path and not self.value_patterns:
            return path
        segments = path.split("/")
        for i, segment in enumerate(segments):
            decoded = unquote(segment) if "%" in segment else segment
            scrubbed = self.scrub_value(decoded)
            if scrubbed != decoded:
                segments[i] = scrubbed
        return "/".join(segments)


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
