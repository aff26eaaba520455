"""``sqreen.integrations.drf``: Django REST framework's users (by token, by password)
identified and refused while blocked, on a real server with a real user database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx2 as httpx
import pytest

from sqreen.testing import CapturedEvents
from tests.receiver import Receiver

from ._servers import Gunicorn
from .test_django_auth import PASSWORD, run_alone, serve, status_until

pytest.importorskip("rest_framework")

ALICE = {"Authorization": "Token " + "a" * 40, "Accept": "application/json"}
BOB = {"Authorization": "Token " + "b" * 40}


@pytest.fixture(params=["wsgi", "asgi"])
def api_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Gunicorn, Receiver]]:
    yield from serve(tmp_path, request.param, settings={"SQREEN_TEST_DRF": "1"})


def test_a_token_s_user_is_identified_and_refused_while_blocked(
    api_site: tuple[Gunicorn, Receiver],
) -> None:
    server, receiver = api_site
    with httpx.Client(base_url=server.url) as http:
        reply = http.get("/drf/me", headers=ALICE)
        assert (reply.status_code, reply.json()) == (200, {"username": "alice"})
        assert http.get("/drf/me").status_code == 401  # IsAuthenticated's answer stands
        # The view's events carry the token's user (DRF authenticated it after every
        # middleware), with the request.
        (event,) = receiver.wait_for(1, 10, "api.me.read")
        assert event["user"] == {"username": "alice"}
        assert event["request"]["path"] == "/drf/me"

        receiver.block([{"id": "b1", "type": "block_user", "user": {"username": "alice"}}])
        assert status_until(http, "/drf/me", 403, ALICE) == 403
        reply = http.get("/drf/me", headers=ALICE)
        assert reply.json() == {"error": "forbidden", "detail": "This request was refused."}
        assert reply.headers["cache-control"] == "no-store"
        # However the view lists the check: its own list, composed, @api_view.
        assert http.post("/drf/export", headers=ALICE).status_code == 403
        assert http.get("/drf/whoami", headers=ALICE).status_code == 403
        # Composed as adrf composes (a raised Blocked gathered as an answer): still denied.
        reply = http.post("/drf/gathered", headers=ALICE)
        assert (reply.status_code, reply.json()["detail"]) == (403, "This request was refused.")
        # A view catching the Blocked identify() raised: the middleware refuses all the same.
        reply = http.get("/swallowing/?user=alice", headers=ALICE)
        assert (reply.status_code, reply.json()["error"]) == (403, "forbidden")
        assert http.get("/swallowing/?user=bob").text == "served"
        # By password (DRF's BasicAuthentication calls authenticate()), any spelling.
        assert http.get("/drf/me", auth=("ALICE", PASSWORD)).status_code == 403
        # Others go on.
        assert http.get("/drf/whoami", headers=BOB).json() == {"username": "bob"}
        assert http.post("/drf/export", headers=BOB).json() == {"queued": True}
        assert http.get("/drf/me", auth=("bob", PASSWORD)).status_code == 200
        # A wrong password through the API is a failed login, as through the login form.
        assert http.get("/drf/me", auth=("bob", "guess")).status_code == 401
        (failure,) = receiver.wait_for(1, 10, "auth.login.failure")
        assert failure["user"] == {"username": "bob"}

        receiver.block([])
        assert status_until(http, "/drf/me", 200, ALICE) == 200
    refusals = receiver.wait_for(1, 10, "security.blocked")
    assert {e["properties"]["block_id"] for e in refusals} == {"b1"}
    assert {e["properties"]["kind"] for e in refusals} == {"user"}
    # The refused view ran no further: no export for alice was tracked, bob's was.
    exports = [e["user"] for e in receiver.events if e["name"] == "data.export.requested"]
    assert exports == [{"username": "bob"}]  # neither of alice's ran


def test_the_check_names_the_routes_that_leave_it_out() -> None:
    script = """
import os, types
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.integrations.apps.django_auth_site.settings"
os.environ["SQREEN_TEST_DB"] = ":memory:"
os.environ["SQREEN_TEST_DRF"] = "1"
import django
django.setup()
from django.core import checks
from django.test import override_settings
from tests.integrations.apps.django_auth_site import api

def sqreen_checks():
    return [m for m in checks.run_checks() if m.id.startswith("sqreen.")]

print([m.id for m in sqreen_checks()])  # the site's own views all list it
unchecked = types.ModuleType("unchecked")
unchecked.urlpatterns = api.unchecked
with override_settings(ROOT_URLCONF=unchecked):
    for found in sqreen_checks():
        print(found.id, found.msg, found.hint, sep="\\n")
"""
    lines = run_alone(script).stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1] == "sqreen.W003"
    site = "tests.integrations.apps.django_auth_site.api"
    missing = lines[2].split(": ", 1)[1].split(", ")
    assert missing == [
        f"api/posts/mine/ ({site}.Posts)",  # an @action's own list, through the router
        f"unchecked ({site}.Unchecked)",
        f"either ({site}.Either)",  # | lets a blocked user through the other side
        f"open ({site}.Me)",  # as_view(permission_classes=...)
        f"public ({site}.public)",  # @api_view, by its function's name
    ]
    assert lines[2].startswith("5 routes of Django REST framework neither identify")
    assert '"sqreen.integrations.drf.NotBlocked" first in' in lines[3]
    assert lines[4] == "sqreen.W004"
    assert lines[5].endswith(f": chosen ({site}.Chosen)")
    assert 'SILENCED_SYSTEM_CHECKS = ["sqreen.W004"]' in lines[6]
    assert len(lines) == 7  # no token view (DRF's own), no view without authentication


class _User:
    is_authenticated = True

    def __init__(self, name: object = "alice", fails: bool = False) -> None:
        self.name, self.fails = name, fails

    def get_username(self) -> object:
        if self.fails:
            raise LookupError("no such column: username")
        return self.name


def test_not_blocked_says_once_what_it_cannot_check(
    sqreen_events: CapturedEvents, caplog: pytest.LogCaptureFixture
) -> None:
    """In one process, with DRF's request as a stand-in: a user with no name (a stateless
    JWT's), one whose name cannot be read, a request no middleware serves: each passes, as
    without sqreen, and is said once; a blocked user is denied and the block kept for the
    middleware's 403."""
    from sqreen._context import RequestContext
    from sqreen.integrations import drf

    drf._said.clear()
    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"username": "alice"}}])
    ctx = RequestContext(sqreen_events.client, "wsgi", {"REMOTE_ADDR": "127.0.0.1"})
    check = drf.NotBlocked().has_permission
    with caplog.at_level("WARNING", "sqreen"):
        for _ in range(2):
            assert check(SimpleNamespace(user=_User(""), sqreen=ctx), None)
            assert check(SimpleNamespace(user=_User(fails=True), sqreen=ctx), None)
            assert check(SimpleNamespace(user=_User("bob")), None)  # no handle: unbound
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3, said
    assert "an authenticated _User gives no username" in said[0]
    assert "could not identify a _User (LookupError: no such column" in said[1]
    assert "no sqreen middleware serves" in said[2]
    assert ctx.user is None and ctx.refused is None
    assert not check(SimpleNamespace(user=_User("ALICE "), sqreen=ctx), None)
    assert ctx.refused is not None and ctx.refused.user == {"username": "ALICE "}  # as given
