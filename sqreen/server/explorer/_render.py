"""Templates: Jinja2 with autoescaping on for every template, and the filters pages share.

Autoescaping is on by default, not only for ``.html``: whatever an event carries (a property
holding ``<script>``, a user agent, a block reason) is text on the page. Templates never use
``|safe``; numbers inside the SVG histogram are formatted here. Every text a template writes
also has its control characters written out (:func:`shown`): a bidirectional override in a
username would otherwise reorder what the page shows after it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ..._text import pair, visible
from ...events import STANDARD_EVENTS, severity
from ..times import when
from ._forms import csrf_token

__all__ = ["ago", "event_url", "pairs", "render", "short", "shown", "when"]

TEMPLATES: Final = Path(__file__).parent / "templates"
SUMMARY_CHARS: Final = 140


def shown(value: object) -> object:
    """What a template writes for ``value`` (every ``{{ ... }}``): text with its control
    characters, bidirectional controls and lone surrogates written out (``\\x1b``,
    ``\\u202e``), newlines and tabs kept (preformatted JSON); markup (a macro's output, already
    made of such text) and other values as they are."""
    return visible(value, lines=True) if type(value) is str else value


class Verbatim(str):
    """Text a template writes as it is, HTML-escaped but not written out by :func:`shown`: a
    form field's value, which must send back exactly what it holds (a block of a user whose
    identifier holds U+202E is of that character, not of the six that show it)."""


def verbatim(value: object) -> object:
    """The ``verbatim`` filter, for the values of form fields (``value="{{ x|verbatim }}"``)."""
    return Verbatim(value) if isinstance(value, str) else value


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=shown,
)


def iso(dt: datetime | None) -> str:
    return "" if dt is None else dt.astimezone(UTC).isoformat(timespec="seconds")


def ago(dt: datetime | None, now: datetime | None = None) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``."""
    if dt is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - dt).total_seconds()
    if seconds < 0:
        return "in the future"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def short(value: object, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def pairs(mapping: dict[str, Any] | None, width: int = 60) -> str:
    """``uid=42 email=a@b.c``, each value shortened, a key or value that would not read as
    one word in quotes (``reason="bad mfa=passed"``: a value read as two pairs), a line
    break written out (``\\n``: on one line, a page showed it as a space, another
    identifier)."""
    return " ".join(one_pair(k, v, width) for k, v in (mapping or {}).items())


def one_pair(key: str, value: object, width: int = 60) -> str:
    """One ``key=value`` of :func:`pairs`, for a table's cell."""
    return oneline(pair(key, value, width))


def summary(properties: dict[str, Any]) -> str:
    return short(pairs(properties, 40), SUMMARY_CHARS)


def event_url(event: Any, base: str) -> str:
    """The page of ``event`` (a :class:`StoredEvent`) under the explorer's ``base``: by id and
    seq (ids are unique per API key, so two keys may have sent the same one). The id is one
    path segment (``/`` encoded too), except ``.`` and ``..``: a browser removes such a
    segment before it asks (an event with id ``..`` linked to the list), so these go in the
    query."""
    quoted = quote(event.id, safe="")
    if quoted in (".", ".."):
        return f"{base}/events/?id={quoted}&seq={event.seq}"
    return f"{base}/events/{quoted}?seq={event.seq}"


def pretty(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def number(value: int) -> str:
    return f"{value:,}"


def events(count: int) -> str:
    """``1 event``, ``1,204 events``."""
    return f"{count:,} event" + ("" if count == 1 else "s")


def actor(who: str | None) -> str:
    """Who created (or lifted) a block, for people: ``playbook: brute-force-ip``,
    ``CLI (alice)``, ``explorer``, ``API key #3 (ops)``; anything else as stored."""
    kind, _, rest = (who or "").partition(":")
    if kind == "playbook" and rest:
        return f"playbook: {rest}"
    if kind == "cli":
        return f"CLI ({rest})" if rest else "CLI"
    if kind == "explorer":
        return "explorer"
    if kind == "api-key" and rest:
        key_id, _, name = rest.partition(":")
        return f"API key #{key_id} ({name})" if name else f"API key #{key_id}"
    return who or "-"


def playbook_of(who: str | None) -> str | None:
    """The playbook id in a ``created_by`` of ``playbook:<id>``, else None."""
    kind, _, rest = (who or "").partition(":")
    return rest if kind == "playbook" and rest else None


def span(delta: timedelta | None) -> str:
    """A duration for people: ``90 s``, ``5 min``, ``1 h 30 min``, ``2 d``; None: ``-``."""
    if delta is None:
        return "-"
    seconds = int(delta.total_seconds())
    parts: list[str] = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if seconds >= size or (size == 1 and not parts):
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts[:2])


#: The standard event names, suggested by the events page's name field.
_env.globals["standard_names"] = sorted(STANDARD_EVENTS)


def oneline(value: object) -> str:
    """Text for a table's cell: a line break written out (``\\n``), as any control
    character is, where a page showed it as a space (another identifier, to the eye)."""
    return visible(str(value))


_env.filters.update(
    oneline=oneline,
    when=when,
    iso=iso,
    ago=ago,
    short=short,
    pairs=pairs,
    pair=one_pair,
    pretty=pretty,
    number=number,
    events=events,
    summary=summary,
    actor=actor,
    playbook_of=playbook_of,
    span=span,
    severity=severity,
    event_url=event_url,
    verbatim=verbatim,
)


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """``template`` rendered with ``context`` plus what every page uses: ``base`` (the
    explorer's URL path), ``csrf`` (the session's token), ``flash`` (a one-time message)."""
    session = request.session
    page = {
        "base": request.scope.get("root_path", ""),
        "csrf": csrf_token(session),
        "logged_in": session.get("user") == "admin",
        "flash": session.pop("flash", None) if "flash" in session else None,
        "nav": "",
        "errors": [],
        **context,
    }
    html = _env.get_template(template).render(page)
    return HTMLResponse(html, status_code=status_code)
