"""Standard event names: LiteSOC's schema, as constants, with a description and a severity.

Use them with :func:`sqreen.track` so that the collector's playbooks, the explorer's
severities and impossible travel know what an event means::

    from sqreen import events
    sqreen.track(events.AUTH_LOGIN_SUCCESS, user_identifiers={"uid": user.id})

LiteSOC's fields map onto this SDK's: ``actor`` is ``user_identifiers`` (the event's ``user``
on the wire: ``actor.id`` -> ``{"uid": ...}``, ``actor.email`` -> ``{"email": ...}``),
``metadata`` is ``properties``, ``target`` is ``target`` (``{"id", "type", "name"}``), and
``metadata.ip_address`` / ``user_agent`` are captured from the request by the middleware.
The collector accepts the other spellings in :data:`ALIASES`, stores the canonical name
(:func:`canonical_name`) and reads a name given in another spelling (a playbook's, a
filter's) as it; it refuses from SDKs the names it raises itself (:data:`DERIVED_EVENTS`).
Each name has a severity (:func:`severity`): ``info``, ``warning`` or ``critical``,
``info`` for names of your own.

.. versionadded:: 0.1
"""

from __future__ import annotations

from functools import lru_cache
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

__all__ = [
    "ADMIN_ROLE_CHANGED",
    "ADMIN_SETTINGS_CHANGED",
    "ADMIN_USER_CREATED",
    "ADMIN_USER_DELETED",
    "ALIASES",
    "AUTHZ_ACCESS_DENIED",
    "AUTHZ_ACCESS_GRANTED",
    "AUTHZ_PERMISSION_CHANGED",
    "AUTH_LOGIN_FAILURE",
    "AUTH_LOGIN_SUCCESS",
    "AUTH_LOGOUT",
    "AUTH_MFA_DISABLED",
    "AUTH_MFA_ENABLED",
    "AUTH_SIGNUP",
    "DATA_DELETED",
    "DATA_EXPORT_REQUESTED",
    "DATA_IMPORT_COMPLETED",
    "DERIVED_EVENTS",
    "SECURITY_BLOCKED",
    "SECURITY_IMPOSSIBLE_TRAVEL",
    "SECURITY_RATE_LIMITED",
    "SECURITY_SUSPICIOUS_ACTIVITY",
    "SEVERITIES",
    "STANDARD_EVENTS",
    "Severity",
    "StandardEvent",
    "canonical_name",
    "severity",
    "spellings_of",
    "stored_name",
]

Severity = Literal["info", "warning", "critical"]
#: In increasing order.
SEVERITIES: Final[tuple[Severity, ...]] = ("info", "warning", "critical")

AUTH_LOGIN_SUCCESS: Final = "auth.login.success"
AUTH_LOGIN_FAILURE: Final = "auth.login.failure"
AUTH_LOGOUT: Final = "auth.logout"
AUTH_MFA_ENABLED: Final = "auth.mfa.enabled"
AUTH_MFA_DISABLED: Final = "auth.mfa.disabled"
AUTH_SIGNUP: Final = "auth.signup"
ADMIN_USER_CREATED: Final = "admin.user.created"
ADMIN_USER_DELETED: Final = "admin.user.deleted"
ADMIN_ROLE_CHANGED: Final = "admin.role.changed"
ADMIN_SETTINGS_CHANGED: Final = "admin.settings.changed"
DATA_EXPORT_REQUESTED: Final = "data.export.requested"
DATA_IMPORT_COMPLETED: Final = "data.import.completed"
DATA_DELETED: Final = "data.deleted"
SECURITY_SUSPICIOUS_ACTIVITY: Final = "security.suspicious.activity"
SECURITY_BLOCKED: Final = "security.blocked"
SECURITY_RATE_LIMITED: Final = "security.rate.limited"
SECURITY_IMPOSSIBLE_TRAVEL: Final = "security.impossible_travel"
AUTHZ_ACCESS_GRANTED: Final = "authz.access.granted"
AUTHZ_ACCESS_DENIED: Final = "authz.access.denied"
AUTHZ_PERMISSION_CHANGED: Final = "authz.permission.changed"


class StandardEvent(NamedTuple):
    description: str
    severity: Severity


#: Every standard name: LiteSOC's (auth, admin, data, security, authz), plus the three this
#: project adds (``auth.signup``, which ``signup_track`` sends; ``security.blocked``'s use for
#: refused requests; ``security.impossible_travel``, which the collector raises).
STANDARD_EVENTS: Final = MappingProxyType(
    {
        AUTH_LOGIN_SUCCESS: StandardEvent("A user logged in.", "info"),
        AUTH_LOGIN_FAILURE: StandardEvent("A login attempt failed.", "warning"),
        AUTH_LOGOUT: StandardEvent("A user logged out.", "info"),
        AUTH_MFA_ENABLED: StandardEvent("A user turned multi-factor auth on.", "info"),
        AUTH_MFA_DISABLED: StandardEvent("A user turned multi-factor auth off.", "warning"),
        AUTH_SIGNUP: StandardEvent("A user signed up.", "info"),
        ADMIN_USER_CREATED: StandardEvent("An administrator created a user.", "info"),
        ADMIN_USER_DELETED: StandardEvent("An administrator deleted a user.", "warning"),
        ADMIN_ROLE_CHANGED: StandardEvent("A user's role was changed.", "warning"),
        ADMIN_SETTINGS_CHANGED: StandardEvent("An application setting was changed.", "warning"),
        DATA_EXPORT_REQUESTED: StandardEvent("Data was exported or downloaded.", "warning"),
        DATA_IMPORT_COMPLETED: StandardEvent("A data import finished.", "info"),
        DATA_DELETED: StandardEvent("Data was deleted.", "warning"),
        SECURITY_SUSPICIOUS_ACTIVITY: StandardEvent(
            "The app saw something suspicious.", "critical"
        ),
        SECURITY_BLOCKED: StandardEvent(
            "A request or an action was refused by a block.", "warning"
        ),
        SECURITY_RATE_LIMITED: StandardEvent("A client went over a rate limit.", "warning"),
        SECURITY_IMPOSSIBLE_TRAVEL: StandardEvent(
            "Two logins of a user from places too far apart for the time between them.",
            "critical",
        ),
        AUTHZ_ACCESS_GRANTED: StandardEvent("Access to a resource was allowed.", "info"),
        AUTHZ_ACCESS_DENIED: StandardEvent("Access to a resource was refused.", "warning"),
        AUTHZ_PERMISSION_CHANGED: StandardEvent("A permission was granted or revoked.", "warning"),
    }
)


def _aliases() -> dict[str, str]:
    """Other spellings of the standard names: LiteSOC's table lists each name within its
    category (``login.success`` under ``auth``), SDK constants in other languages spell them
    ``AUTH_LOGIN_SUCCESS``, and snake case (``auth_login_success``, ``auth.login_success``)
    is common. A one-word name within its category (``logout``, ``blocked``, ``deleted``)
    means too many things to be taken as one of these."""
    out: dict[str, str] = {}
    for name in STANDARD_EVENTS:
        category, _, rest = name.partition(".")
        snake = name.replace(".", "_")
        spellings = {snake, snake.upper(), f"{category}.{rest.replace('.', '_')}"}
        if "." in rest:
            spellings.add(rest)
        for spelling in spellings - {name}:
            out[spelling] = name
    return out


#: Accepted spelling -> standard name (the collector stores the standard name).
ALIASES: Final = MappingProxyType(_aliases())


#: The names the collector raises itself, each with the names of the events it derives it
#: from (impossible travel: from successful logins). The collector refuses them from SDKs,
#: so that only its own reach playbooks, and has SDKs send the sources of one a playbook
#: reads at once, as it does the names playbooks read.
DERIVED_EVENTS: Final = MappingProxyType({SECURITY_IMPOSSIBLE_TRAVEL: (AUTH_LOGIN_SUCCESS,)})


def canonical_name(name: str) -> str:
    """The standard name ``name`` spells (itself or one of :data:`ALIASES`), or ``name``
    itself: how a filter's name is read (the explorer's, ``sqreen events --name``)."""
    return ALIASES.get(name, name)


#: What separates the words of a name, read alike by :func:`stored_name`.
_SEPARATORS: Final = str.maketrans({"_": ".", "-": ".", " ": "."})
#: Each standard name with its words in lower case, separated by dots: itself.
_FOLDED: Final = {name.translate(_SEPARATORS): name for name in STANDARD_EVENTS}


@lru_cache(maxsize=4096)
def stored_name(name: str) -> str:
    """The name the collector stores an event of ``name`` under: :func:`canonical_name`, and
    a standard name in another case or with ``_``, ``-`` or a space between its words
    (``Auth.Login.Failure``, ``AUTH-LOGIN-FAILURE``; its category included, so that it means
    that event: an app's own ``user_created`` or ``login_success`` stays its own). Playbooks
    read the names they are given so too. (Remembered: a batch names a few names, again and
    again.)"""
    return ALIASES.get(name) or _FOLDED.get(name.lower().translate(_SEPARATORS), name)


def spellings_of(name: str) -> frozenset[str]:
    """The usual spellings of the standard name ``name`` that :func:`stored_name` reads as
    it (lower, upper and title case, with each separator), and its :data:`ALIASES`: what
    an SDK compares a tracked name with, for the names a playbook watches."""
    words = name.split(".")
    out = {alias for alias, standard in ALIASES.items() if standard == name}
    for sep in "._- ":
        joined = sep.join(words)
        out.update((joined, joined.upper(), sep.join(w.title() for w in words)))
    return frozenset(out)


def severity(name: str) -> Severity:
    """The severity of an event name (``info`` for names that are not standard)."""
    known = STANDARD_EVENTS.get(stored_name(name))
    return "info" if known is None else known.severity
