"""PII scrubbing: secrets never leave the process.

Applied on the flusher thread to request parameters, the body, custom properties and route
parameters inside the path. Two independent nets, because either alone misses things:

* **Keys.** A value whose key is sensitive is replaced by :data:`REDACTED`, whatever its type
  (a nested dict or list included). Keys are split into tokens on ``_``, ``-``, ``.``,
  whitespace, camelCase and digits (``passwordConfirm2`` is ``password``, ``confirm``,
  ``2``), case aside; a key is sensitive when a token, or up to four adjacent tokens joined
  (``api`` + ``key``, ``mot`` + ``de`` + ``passe``), is in :data:`DEFAULT_SENSITIVE_KEYS`,
  in :data:`SECRET_PROPERTY_KEYS` (a secret's whole name is a sensitive token too) or in
  the ``scrub_keys`` added to them. Matching whole tokens is what keeps ``author``,
  ``cardinality``, ``classname``, ``pwned_count`` and ``discard_reason`` readable. Two
  narrow extensions catch glued spellings: a token that *contains* ``password``,
  ``passwd``, ``passwort``, ``passphrase``, ``csrf`` or ``xsrf`` (Django's
  ``csrfmiddlewaretoken``, ``newpassword``) or *ends with* ``token``, ``secret``,
  ``apikey``, ``privatekey``, ``sessionid``, ``sessid`` or ``cardnumber`` (``accesstoken``,
  ``JSESSIONID``; ``tokenizer`` does not end with ``token``). A plural (``tokens``) counts.
  Over-scrubbing is the accepted failure: ``session_count``, ``otp_method`` and
  ``max_tokens`` are redacted in request data.
* **Names given as values.** ``{"name": "password", "value": ...}`` (or ``key``, ``field``),
  its flattened forms (``f[0][name]=password&f[0][value]=...``, ``f.0.name``) and pairs
  (``["password", ...]``, ``("password", ...)``) have the value redacted when the name is
  a sensitive key under the rule in use.
* **Values.** Every string is searched for secrets by their form (:mod:`sqreen._secrets`:
  card numbers, ``Bearer``/``Basic`` credentials, JWTs, cloud and SaaS tokens, PEM private
  keys, passwords in URLs) and for the ``scrub_values`` regular expressions. Only the
  matching part is replaced. An integer that is a card number is replaced too.

An event's own **properties** are the app's chosen words, read by filters and playbooks:
they are scrubbed by value (the same net) and by *whole keys that name a secret*, never by a
word inside a longer key (:func:`is_secret_property`): ``password``, ``new_password``,
``password_confirmation``, ``api_key``, ``access_token`` and ``card_number`` are redacted,
``auth_method``, ``token_type``, ``failed_password_attempts``, ``otp_method`` and
``session_length`` are kept.

``user_identifiers`` are not scrubbed: they are who the event is about.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any, Final

from ._json import wire_float
from ._scrub_text import BodyScrubbing
from ._secret_keys import (
    CONTAINED,
    DEFAULT_SENSITIVE_KEYS,
    MAX_JOINED,
    NEVER_COLLECTED_HEADERS,
    SECRET_PROPERTY_KEYS,
    SECRET_QUALIFIERS,
    SUFFIXES,
    TOKEN_RE,
)
from ._secrets import CANDIDATE, REDACTED, is_card_int, scrub_secrets

__all__ = [
    "ANY_KIND",
    "DEFAULT_SENSITIVE_KEYS",
    "KEEP",
    "MAX_DEPTH",
    "NEVER_COLLECTED_HEADERS",
    "REDACT",
    "REDACTED",
    "SECRET_PROPERTY_KEYS",
    "Scrubber",
]


#: Containers nested deeper than this are replaced by the marker: hostile JSON bodies cannot
#: exhaust the stack, and a cycle ends there.
MAX_DEPTH: Final = 32

# A secret's name given as a value: {"name": "password", "value": ...} (also "key", "field"),
# and flattened forms: fields[0][name]=password&fields[0][value]=..., fields.0.name.
_LABELS: Final = ("name", "key", "field")
_LABELSUFFIXES: Final = tuple(
    (f"{open_}{label}{close}", f"{open_}value{close}")
    for label in _LABELS
    for open_, close in (("[", "]"), (".", ""))
)
_LABEL_ENDINGS: Final = tuple(suffix for suffix, _ in _LABELSUFFIXES)
_CACHE_MAX: Final = 4096
#: :meth:`Scrubber.key_kind`'s answers (all true, for ``kinds.get(key) or key_kind(key)``).
KEEP: Final = 1
REDACT: Final = 2
ANY_KIND: Final = 3
#: An integer below this is no card number (``is_card_int``: 13 digits at least).
_NO_CARD_BELOW: Final = 10**12
_CACHED_KEY_MAX: Final = 128


def _normalized_key(key: str) -> str:
    return "".join(t.lower() for t in TOKEN_RE.findall(key))


_candidate: Final = CANDIDATE.search
#: How many User-Agents a scrubber remembers (:meth:`Scrubber.scrub_agent`).
AGENTS_KEPT: Final = 1024
#: The longest User-Agent a scrubber remembers (a browser's is a few hundred characters).
AGENT_KEPT_CHARS: Final = 1024


class _Rule:
    """A key rule (strict for request data, lenient for properties) and its decided keys."""

    __slots__ = ("plans", "sensitive")

    def __init__(self, sensitive: Callable[[str], bool]) -> None:
        self.sensitive = sensitive
        self.plans: dict[str, tuple[bool, str, bool]] = {}


class Scrubber(BodyScrubbing):
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
        # Every whole name of a secret is a sensitive token too (mfa_code, mot_de_passe).
        self._keys = DEFAULT_SENSITIVE_KEYS | SECRET_PROPERTY_KEYS | extra
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
        self._property_cache: dict[str, bool] = {}
        #: User-Agents scrubbed (:meth:`scrub_agent`): a few browsers send most of them.
        self._agents: dict[str, str] = {}
        self._strict = _Rule(self.is_sensitive_key)
        #: The decided keys of request data (:meth:`key_kind`), to look up before calling it.
        self.key_kinds: dict[str, int] = {}
        self._lenient = _Rule(self.is_secret_property)
        self._property_keys = SECRET_PROPERTY_KEYS | extra

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

    def is_secret_property(self, key: str) -> bool:
        """Whether a property named ``key`` holds a secret: the key ends with a name of
        :data:`SECRET_PROPERTY_KEYS` (or of ``scrub_keys``), after dropping qualifiers such
        as ``confirmation`` or ``hash``; a secret's name followed by another word
        (``token_type``) is not one."""
        cached = self._property_cache.get(key)
        if cached is None:
            tokens = [t.lower() for t in TOKEN_RE.findall(key)]
            while len(tokens) > 1 and tokens[-1] in SECRET_QUALIFIERS:
                tokens.pop()
            joined = "".join(tokens)
            cached = joined in self._property_keys or any(
                "".join(tokens[-n:]) in self._property_keys for n in range(1, min(4, len(tokens)))
            )
            if len(key) <= _CACHED_KEY_MAX:
                if len(self._property_cache) >= _CACHE_MAX:
                    self._property_cache.clear()
                self._property_cache[key] = cached
        return cached

    def _classify(self, key: str) -> bool:
        tokens = [t.lower() for t in TOKEN_RE.findall(key)]
        keys = self._keys
        for i, token in enumerate(tokens):
            if any(part in token for part in CONTAINED):
                return True
            joined = ""
            for following in tokens[i : i + MAX_JOINED]:
                joined += following
                if (
                    joined in keys
                    or (joined[-1] == "s" and joined[:-1] in keys)
                    or joined.endswith(SUFFIXES)
                ):
                    return True
        return bool(self.extra_keys) and "".join(tokens) in self.extra_keys

    # -- values -----------------------------------------------------------------------------

    def scrub_value(self, value: str) -> str:
        """``value`` with the secrets found by their form (:mod:`sqreen._secrets`) and the
        configured patterns replaced by :data:`REDACTED`; the rest of the string is kept."""
        if _candidate(value) is not None:  # most strings fail this one search
            value = scrub_secrets(value)
        for pattern in self.value_patterns:
            value = pattern.sub(REDACTED, value)
        return value

    def scrub_agent(self, agent: str) -> str:
        """A User-Agent, scrubbed as any value (an app's own client may put its token in
        it), remembered: the same few come again and again. At most :data:`AGENTS_KEPT`
        of :data:`AGENT_KEPT_CHARS` at most (any client chooses the text), forgotten all at
        once past them."""
        scrubbed = self._agents.get(agent)
        if scrubbed is None:
            scrubbed = self.scrub_value(agent)
            if len(agent) <= AGENT_KEPT_CHARS:  # (a padded one is not kept: memory)
                if len(self._agents) >= AGENTS_KEPT:
                    self._agents.clear()
                self._agents[agent] = scrubbed
        return scrubbed

    def scrub(self, obj: Any) -> Any:
        """A scrubbed copy of ``obj`` (dicts, lists, tuples, strings; other values as they
        are, but floats the C encoder writes otherwise, which come as an equal
        :class:`~._json.ReprFloat`). Values under sensitive keys become :data:`REDACTED`;
        string keys and values go through :meth:`scrub_value`, and so does an integer that is
        a card number (JSON bodies send them as numbers). A 2-tuple or 2-list starting with a
        string is a ``(key, value)`` pair (as :func:`~urllib.parse.parse_qsl` gives, or
        ``[["password", "..."]]`` in JSON), and ``{"name": "password", "value": "..."}`` names
        its value. The input is never mutated."""
        return self._scrub(obj, 0, self._strict)

    def scrub_properties(self, properties: dict[str, Any]) -> dict[str, Any]:
        """An event's own properties, scrubbed by value and by whole secret keys only (see
        :meth:`is_secret_property`)."""
        return self._scrub(properties, 0, self._lenient)  # type: ignore[no-any-return]

    def key_kind(self, key: str) -> int:
        """What a key of request data asks of its value, in one number (:attr:`key_kinds`
        holds those decided, bounded): :data:`KEEP` (scrub it by value), :data:`REDACT`, or
        :data:`ANY_KIND` (a key :meth:`scrub` rewrites, or one that may name a secret given
        as its value, ``name`` or ``f[0][key]``: what :meth:`scrub` does with the whole
        dict). Keys repeat from request to request; one lookup, not a plan unpacked and
        compared, per key (``sqreen/_params.py``)."""
        sensitive, written, labelled = self._plan(key, self._strict)
        kind = ANY_KIND if labelled or written != key else REDACT if sensitive else KEEP
        if len(key) <= _CACHED_KEY_MAX:
            if len(self.key_kinds) >= _CACHE_MAX:
                self.key_kinds.clear()
            self.key_kinds[key] = kind
        return kind

    def _plan(self, key: str, rule: _Rule) -> tuple[bool, str, bool]:
        """What a dict key means under ``rule``, decided once (bounded cache): whether it is
        sensitive, the key as written out (scrubbed), and whether it may name a secret given
        as its value (``name``, ``f[0][key]``...). Keys repeat from event to event: the
        decisions cost 2-3 µs a key, the lookup 0.1 (``bench/bench_flusher.py``)."""
        plan = rule.plans.get(key)
        if plan is None:
            # Whether it may name a secret: exactly _LABELS or a suffix of _LABELSUFFIXES (not
            # ``username``, which ends like one: no _named_secret call for it a dict).
            labelled = key in _LABELS or key.endswith(_LABEL_ENDINGS)
            plan = (rule.sensitive(key), self.scrub_value(key), labelled)
            if len(key) <= _CACHED_KEY_MAX:
                if len(rule.plans) >= _CACHE_MAX:
                    rule.plans.clear()
                rule.plans[key] = plan
        return plan

    def _scrub(self, obj: Any, depth: int, rule: _Rule) -> Any:
        # The exact types first (what JSON and the SDK's validation give), by identity: the
        # isinstance() checks against Mapping and unions below cost more than the work.
        kind = type(obj)
        if kind is str:
            if self.value_patterns or _candidate(obj) is not None:
                return self.scrub_value(obj)
            return obj
        if kind is bool or obj is None:
            return obj
        if kind is float:  # as the C encoder writes it, or marked for the standard one
            return wire_float(obj)
        if kind is int:  # {"card": 4111111111111111} in a JSON body
            return REDACTED if is_card_int(obj) else obj
        if kind is not dict and isinstance(obj, str):
            return self.scrub_value(obj)
        if kind is dict or isinstance(obj, Mapping):
            if depth >= MAX_DEPTH:
                return REDACTED
            out: dict[Any, Any] = {}
            named: list[str] = []
            plans, plain = rule.plans, not self.value_patterns
            for key, item in obj.items():
                if isinstance(key, str):
                    plan = plans.get(key)
                    sensitive, written, labelled = self._plan(key, rule) if plan is None else plan
                    if sensitive:
                        out[written] = REDACTED
                        continue
                    if labelled:
                        value_key = _named_secret(key, item, obj, rule.sensitive)
                        if value_key is not None:
                            named.append(value_key)
                    key = written
                t = type(item)
                if plain and t is str:  # most values: no call
                    out[key] = item if _candidate(item) is None else scrub_secrets(item)
                elif t is bool or item is None or (t is int and item < _NO_CARD_BELOW):
                    out[key] = item  # what _scrub gives them, without the call
                else:
                    out[key] = self._scrub(item, depth + 1, rule)
            for value_key in named:  # {"name": "password", "value": ...}, in either order
                out[self.scrub_value(value_key)] = REDACTED
            return out
        if isinstance(obj, list | tuple):
            if depth >= MAX_DEPTH:
                return REDACTED
            if len(obj) == 2 and isinstance(obj[0], str) and kind in (tuple, list):
                # A (key, value) pair: from parse_qsl() or MultiDict.items(multi=True), or
                # [["password", "..."]] in JSON.
                key = self.scrub_value(obj[0])
                value = REDACTED if rule.sensitive(obj[0]) else self._scrub(obj[1], depth + 1, rule)
                return (key, value) if kind is tuple else [key, value]
            items = [self._scrub(item, depth + 1, rule) for item in obj]
            return items if isinstance(obj, list) else tuple(items)
        return obj

    def scrub_query_like(self, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Scrubbed ``(key, value)`` pairs, as from :func:`urllib.parse.parse_qsl`."""
        pairs = list(pairs)
        rule = self._strict
        plans = [self._plan(k, rule) for k, _ in pairs]
        keys = {k for k, _ in pairs}
        named = {
            _named_secret(k, v, keys, rule.sensitive)
            for (k, v), (_, _, labelled) in zip(pairs, plans, strict=True)
            if labelled
        }
        scrub = self.scrub_value
        return [
            (written, REDACTED if sensitive or k in named else scrub(v))
            for (k, v), (sensitive, written, _) in zip(pairs, plans, strict=True)
        ]


def _named_secret(
    key: str, item: Any, keys: Container[Any], sensitive: Callable[[str], bool]
) -> str | None:
    """The key of the value that ``key: item`` names as a secret, when ``keys`` holds it:
    ``value`` for ``"name": "password"`` (or ``key``, ``field``), ``f[0][value]`` for
    ``f[0][name]=password``, ``f.0.value`` for ``f.0.name``."""
    if type(item) is not str or not (key in _LABELS or key.endswith(_LABEL_ENDINGS)):
        return None
    if key in _LABELS:
        sibling = "value"
    else:
        for suffix, value_suffix in _LABELSUFFIXES:
            if key.endswith(suffix):
                sibling = key[: -len(suffix)] + value_suffix
                break
        else:
            return None
    return sibling if sibling in keys and sensitive(item) else None
