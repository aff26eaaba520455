"""A request's parameters, parsed and scrubbed in one pass: the flusher's, for every event
tracked in a request.

:func:`scrubbed_params` gives ``scrubber.scrub(snapshot.params(body, content_type))``. For
what most requests send (a query string, a urlencoded form or no body, each key once, no
key that may name a secret given as a value) it scrubs each pair as it parses it, into the
one dict that goes on the wire: the key's decision (sensitive, written as it is) looked up
once per key text in the scrubber's bounded cache (keys repeat from request to request;
values are never kept). Anything else (a repeated key, which becomes a list; ``name`` or
``f[0][key]``, whose value may name a secret; a key the scrubber rewrites; 64 keys or 256
pairs; a JSON or multipart body) takes the two steps as before, from the start: the result
is the same (``tests/test_params.py`` holds the two equal over generated queries and forms,
``tests/test_wire_golden.py`` the wire bytes, ``tests/test_flusher_differential.py`` the
wire request of the code before over hostile ones). A login's query and form (``bench_track.py``'s):
parsing then scrubbing 7.6 µs, this 4.0 (``bench/bench_flusher.py --compare``, load 1 on 2
cores).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ._query import unquote_part
from ._request_params import MAX_PAIRS, MAX_PARAM_KEY, MAX_PARAM_VALUE, MAX_PARAMS, form_text
from ._scrub import ANY_KIND, KEEP
from ._secrets import CANDIDATE, REDACTED, scrub_secrets

if TYPE_CHECKING:
    from ._request import RequestSnapshot
    from ._scrub import Scrubber

__all__ = ["scrubbed_params"]

_FORM: Final = "application/x-www-form-urlencoded"
_candidate: Final = CANDIDATE.search


def scrubbed_params(
    snapshot: RequestSnapshot, scrubber: Scrubber, body: bytes, content_type: str
) -> dict[str, Any]:
    """``scrubber.scrub(snapshot.params(body, content_type))``, in one pass when it can."""
    form = body and content_type.startswith(_FORM)
    if not body or form:
        out: dict[str, Any] = {}
        qs = snapshot.query
        if not qs or _add_pairs(
            out, qs if isinstance(qs, str) else qs.decode("latin-1"), scrubber, None
        ):
            # The form's keys that the query has are left out, as params() leaves them.
            if not form or _add_pairs(out, form_text(body), scrubber, dict(out) if out else None):
                return out
    return scrubber.scrub(snapshot.params(body, content_type))  # type: ignore[no-any-return]


def _add_pairs(
    out: dict[str, Any], qs: str, scrubber: Scrubber, query: dict[str, Any] | None
) -> bool:
    """Add the pairs of ``qs`` to ``out`` as ``params()`` keeps them, scrubbed as
    ``Scrubber.scrub`` scrubs such a dict, and the keys of ``query`` (the query string's,
    when ``qs`` is the form) left out; False when that needs the two steps (see the module's
    docstring), ``out`` then half done."""
    known, decide = scrubber.key_kinds.get, scrubber.key_kind
    scrub_value = None if not scrubber.value_patterns else scrubber.scrub_value
    decode = "%" in qs or "+" in qs
    # No key past 128 characters, no value past 4096 and at most 64 keys in all from a short
    # text (most queries and login forms): no length to check for each pair then. (A text
    # of L characters holds at most (L + 1) / 2 pairs.)
    long = len(qs) > MAX_PARAM_KEY - 1 - 2 * len(out)
    pairs = 0
    for part in qs.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if decode:
            if "%" in key or "+" in key:
                key = unquote_part(key)
            if "%" in value or "+" in value:
                value = unquote_part(value)
        if long:
            pairs += 1
            # Past the bounds: 64 keys, or 256 pairs parsed (a form's pairs of the query's
            # keys, which add none, then a new key that the two steps never read).
            if len(out) >= MAX_PARAMS or pairs > MAX_PAIRS:
                return False
            key, value = key[:MAX_PARAM_KEY], value[:MAX_PARAM_VALUE]
        if key in out:
            if query is not None and key in query:
                continue  # the query's
            return False  # a list of values
        kind = known(key) or decide(key)
        if kind != KEEP:
            if kind == ANY_KIND:
                return False
            out[key] = REDACTED
        elif scrub_value is not None:
            out[key] = scrub_value(value)
        else:
            out[key] = value if _candidate(value) is None else scrub_secrets(value)
    return True
