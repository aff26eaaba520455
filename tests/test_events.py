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
        # Any case, any of . _ - or a space between the words: they were stored apart, and
        # no playbook counted them.
        ("Auth.Login.Failure", "auth.login.failure"),
        ("LOGIN.FAILURE", "auth.login.failure"),
        ("LOGIN_FAILURE", "auth.login.failure"),
        ("login_failure", "auth.login.failure"),
        ("auth-login-failure", "auth.login.failure"),
        ("Auth Login Failure", "auth.login.failure"),
        ("Logout", "Logout"),
        ("Order.Created", "Order.Created"),
        ("auth..login.failure", "auth..login.failure"),  # another name
    ],
)
def test_aliases_name_the_standard_event(spelling: str, name: str) -> None:
    assert events.canonical_name(spelling) == name
    validate_name(spelling)  # every alias is a name the SDK accepts


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
