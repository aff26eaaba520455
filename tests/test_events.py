"""``sqreen.events``: LiteSOC's standard names, their aliases and severities."""

from __future__ import annotations

import pytest

from sqreen import events
from sqreen._event import validate_name

#: LiteSOC's table of standard events, by category, as its guide spells it.
LITESOC = {
    "auth": ["login.success", "login.failure", "logout", "mfa.enabled", "mfa.disabled"],
    "admin": ["user.created", "user.deleted", "role.changed", "settings.changed"],
    "data": ["export.requested", "import.completed", "deleted"],
    "security": ["suspicious.activity", "blocked", "rate.limited"],
    "authz": ["access.granted", "access.denied", "permission.changed"],
}


def test_every_litesoc_name_is_a_constant_with_a_description_and_a_severity() -> None:
    names = [f"{category}.{rest}" for category, rests in LITESOC.items() for rest in rests]
    constants = {getattr(events, n.upper().replace(".", "_")) for n in names}
    assert constants == set(names)
    for name in names:
        standard = events.STANDARD_EVENTS[name]
        assert standard.description.endswith(".") and len(standard.description) < 100
        assert standard.severity in events.SEVERITIES
        assert validate_name(name) == name
    assert set(events.STANDARD_EVENTS) - set(names) == {
        "auth.signup",
        "security.impossible_travel",
    }


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("AUTH_LOGIN_SUCCESS", "auth.login.success"),
        ("auth_login_failure", "auth.login.failure"),
        ("auth.login_failure", "auth.login.failure"),
        ("login.failure", "auth.login.failure"),
        ("role.changed", "admin.role.changed"),
        ("export.requested", "data.export.requested"),
        ("SECURITY_RATE_LIMITED", "security.rate.limited"),
        ("access.denied", "authz.access.denied"),
        ("auth.login.success", "auth.login.success"),
        ("order.created", "order.created"),  # the app's own: as it is
        ("logout", "logout"),  # one word means too many things
        ("deleted", "deleted"),
    ],
)
def test_aliases_name_the_standard_event(spelling: str, name: str) -> None:
    assert events.canonical_name(spelling) == name == events.stored_name(spelling)
    validate_name(spelling)  # every alias is a name the SDK accepts


@pytest.mark.parametrize(
    ("spelling", "stored"),
    [
        # A standard name in another case, or with _ - or a space between its words: they
        # were stored apart, and no playbook counted them.
        ("Auth.Login.Failure", "auth.login.failure"),
        ("AUTH.LOGIN.FAILURE", "auth.login.failure"),
        ("auth-login-failure", "auth.login.failure"),
        ("Auth Login Failure", "auth.login.failure"),
        ("Security_Rate_Limited", "security.rate.limited"),
        ("Security.Impossible.Travel", "security.impossible_travel"),  # then refused
        # Without its category a name is the app's own (a self-service user_created is no
        # administrator's; an app's login_success beside auth_track() would count twice).
        ("LOGIN_FAILURE", "LOGIN_FAILURE"),
        ("login_success", "login_success"),
        ("user_created", "user_created"),
        ("access_denied", "access_denied"),
        ("Logout", "Logout"),
        ("Order.Created", "Order.Created"),
        ("auth..login.failure", "auth..login.failure"),  # another name
    ],
)
def test_a_standard_name_in_another_case_or_separators_is_stored_as_it(
    spelling: str, stored: str
) -> None:
    assert events.stored_name(spelling) == stored
    assert events.canonical_name(spelling) == spelling  # a filter reads the name as stored


def test_an_sdk_sends_at_once_the_usual_spellings_of_a_watched_name() -> None:
    from sqreen._delivery import spellings

    watched = spellings(frozenset({"login.failure", "order.created"}))
    assert {"Auth.Login.Failure", "AUTH-LOGIN-FAILURE", "auth_login_failure"} <= watched
    assert {"login.failure", "order.created"} <= watched
    assert all(
        events.stored_name(name) == "auth.login.failure" for name in watched - {"order.created"}
    )


def test_severity_by_name() -> None:
    assert events.severity("auth.login.success") == "info"
    assert events.severity("auth.login.failure") == "warning"
    assert events.severity("login.failure") == "warning"
    assert events.severity("security.suspicious.activity") == "critical"
    assert events.severity("security.impossible_travel") == "critical"
    assert events.severity("order.created") == "info"
    assert all(alias != name for alias, name in events.ALIASES.items())
    assert set(events.ALIASES.values()) <= set(events.STANDARD_EVENTS)


def test_the_module_s_example_runs_as_written() -> None:
    """``help(sqreen.events)`` shows it: it called ``track(user=...)``, a TypeError."""
    import re
    import types

    import sqreen

    assert events.__doc__ is not None
    (example,) = re.findall(r"::\n\n((?:    .*\n)+)", events.__doc__)
    client = sqreen.init(transport="memory:", strict=True)
    exec(  # the docstring's own lines
        "\n".join(line[4:] for line in example.splitlines()),
        {"sqreen": sqreen, "user": types.SimpleNamespace(id=42)},
    )
    assert client.flush(timeout=5)
    (event,) = client.transport.events  # type: ignore[attr-defined]
    assert (event["name"], event["user"]) == ("auth.login.success", {"uid": "42"})
