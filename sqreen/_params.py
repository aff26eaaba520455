"""A request's parameters, parsed and scrubbed in one pass: the flusher's, for every event
tracked in a request.

:func:`scrubbed_params` gives ``scrubber.scrub(snapshot.params(body, content_type))``. For
what most requests send (a query string, a urlencoded form or no body, each key once, no
key that may name a secret given as a value) it scrubs each pair as it parses it, into the
one dict that goes on the wire: the key's decision (sensitive, written as it is) looked up
once per key text in the scrubber's bounded cache (keys repeat from request to request;
values are never kept). Anything else (a repeated key, which becomes a list; ``name`` or
``f[0][key]``, whose value may name a secret; a key the scrubber rewrites; 64 keys; a JSON
or multipart body) takes the two steps as before, from the start: the result is the same
(``tests/test_params.py`` holds the two equal over generated queries and forms, and
``tests/test_wire_golden.py`` the wire bytes). A login's query and form (``bench_track.py``'s):
parsing then scrubbing 7.4 µs, this 5.5 (``bench/bench_flusher.py``, load 1.3 on 2 cores).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ._query import unquote_part
from ._request import MAX_PARAM_VALUE, MAX_PARAMS, form_text, text
from ._secrets import CANDIDATE, REDACTED, scrub_secrets

if TYPE_CHECKING:
    from ._request import RequestSnapshot
    from ._scrub import Scrubber

__all__ = ["scrubbed_params"]

_FORM: Final = "application/x-www-form-urlencoded"
_KEY_MAX: Final = 128
_candidate: Final = CANDIDATE.search


def scrubbed_params(
    snapshot: RequestSnapshot, scrubber: Scrubber, body: bytes, content_type: str
) -> dict[str, Any]:
    """``scrubber.scrub(snapshot.params(body, content_type))``, in one pass when it can."""
    query = snapshot.query
    form = body and content_type.startswith(_FORM)
    if not body or form:
        out: dict[str, Any] | None = {}
        qs = text(query)
        if qs:
            out = _scrubbed_pairs(qs, scrubber)
        if form and out is not None:
            fields = _scrubbed_pairs(form_text(body), scrubber)
            if fields is None:
                out = None
            elif not out:
                out = fields
            else:
                for key, value in fields.items():
                    if key not in out and len(out) < MAX_PARAMS:
                        out[key] = value
        if out is not None:
            return out
    return scrubber.scrub(snapshot.params(body, content_type))  # type: ignore[no-any-return]


def _scrubbed_pairs(qs: str, scrubber: Scrubber) -> dict[str, Any] | None:
    """The pairs of ``qs`` as ``_parse_qs`` keeps them, scrubbed as ``Scrubber.scrub`` scrubs
    such a dict; None when that needs more than one pass (see the module's docstring)."""
    out: dict[str, Any] = {}
    known, plan = scrubber.request_plans.get, scrubber.key_plan
    scrub_value = None if not scrubber.value_patterns else scrubber.scrub_value
    decode = "%" in qs or "+" in qs
    for part in qs.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if decode and ("%" in part or "+" in part):
            key = unquote_part(key)
            value = unquote_part(value)
        if len(key) > _KEY_MAX:
            key = key[:_KEY_MAX]
        if key in out or len(out) >= MAX_PARAMS:
            return None  # a list of values, or the bounds: the two steps
        sensitive, written, labelled = known(key) or plan(key)
        if labelled or (written is not key and written != key):
            return None
        if sensitive:
            out[key] = REDACTED
        else:
            if len(value) > MAX_PARAM_VALUE:
                value = value[:MAX_PARAM_VALUE]
            if scrub_value is not None:
                out[key] = scrub_value(value)
            else:
                out[key] = value if _candidate(value) is None else scrub_secrets(value)
    return out
