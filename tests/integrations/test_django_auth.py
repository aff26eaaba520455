"""``sqreen.integrations.django.auth``: Django's own login views tracked with no code, on a real
server (gunicorn) with a real user database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.receiver import Receiver

from ._servers import ROOT, Gunicorn, wait_until

pytest.importorskip("django")

SETTINGS = "tests.integrations.apps.django_auth_site.settings"
PASSWORD = "correct horse battery"
AUTH = ("auth.login.success", "auth.login.failure", "auth.logout")

SETUP = f"""
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth.models import User
alice = User.objects.create_user("alice", email="alice@example.com", password={PASSWORD!r})
bob = User.objects.create_user("bob", email="bob@example.com", password={PASSWORD!r})
from django.apps import apps
if apps.is_installed("rest_framework"):  # SQREEN_TEST_DRF: tokens for the API's tests
    from rest_framework.authtoken.models import Token
    Token.objects.create(user=alice, key="a" * 40)
    Token.objects.create(user=bob, key="b" * 40)
"""

# The app's own tests: the test client's login() and logout() make up their requests (no
# event), its post() goes through the middleware (one event, which shows the flush works).
TEST_CLIENT = f"""
import django
django.setup()
import sqreen
from django.test import Client
client = Client()
assert client.login(username="alice", password={PASSWORD!r})
assert not client.login(username="alice", password="wrong")
client.logout()
# force_login() takes the first backend that loads a session's user: not sqreen's, which
# loads none (the page would redirect to the login).
from django.contrib.auth.models import User
client.force_login(User.objects.get(username="alice"))
page = client.get("/private/")
assert (page.status_code, page.content) == (200, b"hello alice"), (page.status_code, page.content)
client.logout()
reply = client.post("/accounts/login/", {{"username": "bob", "password": {PASSWORD!r}}})
assert reply.status_code == 302, reply.status_code
assert sqreen.flush(10)
"""


def environ(receiver: Receiver, db: Path) -> dict[str, str]:
    return {
        "SQREEN_ENDPOINT": receiver.url,
        "SQREEN_FLUSH_INTERVAL": "0.2",
        "SQREEN_HEARTBEAT_INTERVAL": "0.2",
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "SQREEN_TEST_DB": str(db),
    }


def serve(
    tmp_path: Path, kind: str = "wsgi", settings: dict[str, str] | None = None, setup: bool = True
) -> Iterator[tuple[Gunicorn, Receiver]]:
    """The site on gunicorn: its sync worker (``wsgi``), or uvicorn's worker (``asgi``:
    Django's async path, the middleware's async methods; ``asgi-no-auser``: without
    ``request.auser()``, as before Django 5.0). ``settings``: the site's ``SQREEN_TEST_*``
    switches (see its settings); ``setup=False``: the database (its users, their sessions)
    of a site served before in ``tmp_path``."""
    receiver = Receiver()
    db = tmp_path / "users.sqlite3"
    extra = {"SQREEN_TEST_NO_AUSER": "1"} if kind == "asgi-no-auser" else {}
    extra.update(settings or {})
    asgi = kind != "wsgi"
    env = {**os.environ, **environ(receiver, db), "PYTHONPATH": ROOT, **extra}
    if setup:
        subprocess.run([sys.executable, "-c", SETUP], env=env, cwd=ROOT, check=True, timeout=120)
    app = "tests.integrations.apps.django_auth_site." + ("asgi" if asgi else "wsgi")
    worker = "uvicorn.workers.UvicornWorker" if asgi else "sync"
    server = Gunicorn(f"{app}:application", {**environ(receiver, db), **extra}, worker)
    try:
        yield server, receiver
    finally:
        server.stop()
        receiver.stop()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Gunicorn, Receiver]]:
    yield from serve(tmp_path)


@pytest.fixture(params=["wsgi", "asgi", "asgi-no-auser"])
def any_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Gunicorn, Receiver]]:
    yield from serve(tmp_path, request.param)


def log_in(http: httpx.Client, username: str, password: str) -> httpx.Response:
    if "csrftoken" not in http.cookies:
        assert http.get("/accounts/login/").status_code == 200
    return http.post(
        "/accounts/login/",
        data={"username": username, "password": password},
        headers={"X-CSRFToken": http.cookies["csrftoken"]},
    )


def auth_events(receiver: Receiver, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = [e for e in receiver.wait_for(count, 0.5) if e["name"] in AUTH]
        if len(found) >= count:
            return found
    return [e for e in receiver.events if e["name"] in AUTH]


def test_logins_failures_and_logouts_of_login_view_are_tracked(
    site: tuple[Gunicorn, Receiver],
) -> None:
    server, receiver = site
    with httpx.Client(base_url=server.url) as http:
        for password in ("wrong", "Correct horse battery", ""):
            assert log_in(http, "alice", password).status_code == 200  # the form, again
        assert log_in(http, "mallory", "guess").status_code == 200  # no such user
        reply = log_in(http, "alice", PASSWORD)
        assert (reply.status_code, reply.headers["location"]) == (302, "/private/")
        assert http.get("/private/").text == "hello alice"
        token = http.cookies["csrftoken"]  # rotated by the login
        assert http.post("/accounts/logout/", headers={"X-CSRFToken": token}).status_code == 302
    events = auth_events(receiver, 5)
    # An empty password is refused by the form before authenticate(): Django sends no signal.
    assert [(e["name"], e["user"]) for e in events] == [
        ("auth.login.failure", {"username": "alice"}),
        ("auth.login.failure", {"username": "alice"}),
        ("auth.login.failure", {"username": "mallory"}),
        ("auth.login.success", {"username": "alice"}),
        ("auth.logout", {"username": "alice"}),
    ]
    for event in events:
        assert event["request"]["ip"] == "127.0.0.1"
        assert event["request"]["method"] == "POST"
    assert {e["request"]["path"] for e in events[:4]} == {"/accounts/login/"}
    assert events[-1]["request"]["path"] == "/accounts/logout/"
    sent = json.dumps(receiver.batches)
    assert PASSWORD not in sent and "guess" not in sent and "Correct horse" not in sent


def last_login(db: Path, username: str) -> object:
    with sqlite3.connect(db) as conn:
        (value,) = conn.execute(
            "SELECT last_login FROM auth_user WHERE username = ?", (username,)
        ).fetchone()
    return value


def test_a_blocked_user_cannot_log_in(site: tuple[Gunicorn, Receiver], tmp_path: Path) -> None:
    server, receiver = site
    receiver.block([{"id": "b1", "type": "block_user", "user": {"username": "alice"}}])
    deadline = time.monotonic() + 15
    status = None
    while status != 403 and time.monotonic() < deadline:  # until the block reaches the app
        with httpx.Client(base_url=server.url) as http:
            status = log_in(http, "alice", PASSWORD).status_code
            if status == 403:
                # The login was refused before its session was saved: not logged in.
                reply = http.get("/private/")
                assert (reply.status_code, reply.headers["location"]) == (
                    302,
                    "/accounts/login/?next=/private/",
                )
    assert status == 403
    # Refused before Django's own receiver set it (the site lists sqreen's app after auth).
    assert last_login(tmp_path / "users.sqlite3", "alice") is None
    with httpx.Client(base_url=server.url) as http:
        assert log_in(http, "bob", PASSWORD).status_code == 302  # others log in
    with httpx.Client(base_url=server.url) as http:
        # A wrong password too: were only the right one refused, the 403 would tell it.
        assert log_in(http, "alice", "wrong").status_code == 403
        # The same from a view of the app's that calls authenticate() without the request.
        for password in ("wrong", PASSWORD):
            reply = http.post("/api/login", data={"username": "alice", "password": password})
            assert reply.status_code == 403
        # And where a right password sends no signal (checked, no login; the admin's form
        # for a user who is not staff): refused by BlockedUsersBackend, first in the list.
        for password in ("wrong", PASSWORD):
            reply = http.post("/api/check", data={"username": "alice", "password": password})
            assert reply.status_code == 403
        assert (
            http.post("/api/check", data={"username": "bob", "password": PASSWORD}).text == "right"
        )


def test_a_blocked_user_is_refused_by_aauthenticate_and_others_pass(tmp_path: Path) -> None:
    """Django's ``aauthenticate()`` (an async view, under ASGI) asks each backend for its
    ``aauthenticate``: BlockedUsersBackend had none, and every such login was a 500."""
    for server, receiver in serve(tmp_path, "asgi"):
        with httpx.Client(base_url=server.url) as http:
            bob = http.post("/api/alogin", data={"username": "bob", "password": PASSWORD})
            assert (bob.status_code, bob.text) == (200, "yes")
            wrong = http.post("/api/alogin", data={"username": "bob", "password": "wrong"})
            assert wrong.status_code == 401
            receiver.block([{"id": "b1", "type": "block_user", "user": {"username": "alice"}}])
            deadline = time.monotonic() + 15
            status = None
            while status != 403 and time.monotonic() < deadline:
                data = {"username": "alice", "password": PASSWORD}
                status = http.post("/api/alogin", data=data).status_code
                assert status in (200, 403)
            assert status == 403
            data = {"username": "alice", "password": "wrong"}
            assert http.post("/api/alogin", data=data).status_code == 403


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_an_account_s_other_spellings_are_that_account(tmp_path: Path, kind: str) -> None:
    """A site logging in by username or e-mail: failures typed as the e-mail (in any case)
    are tracked under the account's username, as its success is, so that the per-account
    playbooks count them together (tracked as typed, an attack spread over spellings stayed
    under every threshold, and its success raised no takeover alert); and the account
    blocked, no spelling of it answers a password's verdict, through ``authenticate()``
    (no login, no signal: a token view) and ``aauthenticate()`` alike (the e-mail got 200
    and a wrong password 401 where ``alice`` got 403)."""
    for server, receiver in serve(tmp_path, kind, {"SQREEN_TEST_EMAIL_LOGIN": "1"}):
        with httpx.Client(base_url=server.url) as http:
            for typed in ("alice@example.com", "ALICE@Example.COM", "alice"):
                assert log_in(http, typed, "wrong").status_code == 200  # the form again
            assert log_in(http, "Alice@example.com", PASSWORD).status_code == 302
            found = auth_events(receiver, 4)
            assert [(e["name"], e["user"]) for e in found] == [
                ("auth.login.failure", {"username": "alice"}),
            ] * 3 + [("auth.login.success", {"username": "alice"})]
            unknown = http.post("/api/check", data={"username": "nobody@x.org", "password": "x"})
            assert unknown.status_code == 401
            (event,) = [e for e in auth_events(receiver, 5) if e not in found]
            assert event["user"] == {"username": "nobody@x.org"}  # no account: as typed
        receiver.block([{"id": "b1", "type": "block_user", "user": {"username": "alice"}}])
        path = "/api/alogin" if kind == "asgi" else "/api/check"
        with httpx.Client(base_url=server.url) as http:  # no session: the login alone decides
            deadline = time.monotonic() + 15
            status = None
            while status != 403 and time.monotonic() < deadline:
                data = {"username": "alice", "password": PASSWORD}
                status = http.post(path, data=data).status_code
            assert status == 403
            for typed in ("alice@example.com", "ALICE@EXAMPLE.COM"):
                for password in ("wrong", PASSWORD):
                    reply = http.post(path, data={"username": typed, "password": password})
                    assert reply.status_code == 403, (typed, password, reply.text)
            bob = http.post(path, data={"username": "bob@example.com", "password": PASSWORD})
            assert bob.status_code == 200
            bob = http.post(path, data={"username": "bob@example.com", "password": "wrong"})
            assert bob.status_code == 401


def status_until(
    http: httpx.Client, path: str, wanted: int, headers: dict[str, str] | None = None
) -> int:
    """GET ``path`` until it answers ``wanted`` (a change of blocks reaching the app), 15 s
    at most; the last status. Each request is the wait (a round trip to the server)."""
    deadline = time.monotonic() + 15
    status = http.get(path, headers=headers).status_code
    while status != wanted and time.monotonic() < deadline:
        status = http.get(path, headers=headers).status_code
    return status


def test_a_blocked_user_s_open_session_is_refused_until_the_block_is_lifted(
    any_site: tuple[Gunicorn, Receiver],
) -> None:
    server, receiver = any_site
    with (
        httpx.Client(base_url=server.url) as alice,
        httpx.Client(base_url=server.url) as bob,
        httpx.Client(base_url=server.url) as anonymous,
    ):
        assert log_in(alice, "alice", PASSWORD).status_code == 302
        assert log_in(bob, "bob", PASSWORD).status_code == 302
        assert alice.get("/private/").text == "hello alice"
        # The same spelling rules as every user block (case, spaces).
        receiver.block([{"id": "b1", "type": "block_user", "user": {"username": " ALICE"}}])
        assert status_until(alice, "/private/", 403) == 403
        reply = alice.get("/private/")
        assert (reply.status_code, reply.headers["cache-control"]) == (403, "no-store")
        assert "refused" in reply.text
        # Refused before any view runs as them, whatever it reads of who they are.
        for path in ("/aprivate/", "/session/", "/public/"):
            assert alice.get(path).status_code == 403, path
        reply = bob.get("/private/")  # others go on; what reads the user varies by cookie
        assert (reply.text, reply.headers.get("vary")) == ("hello bob", "Cookie")
        assert bob.get("/aprivate/").text == "hello bob"
        assert bob.get("/session/").text.startswith("user id ")
        # A page that reads neither session nor user is served as without sqreen: the
        # check's read leaves no Vary: Cookie (else shared caches kept a copy a visitor).
        for http in (bob, anonymous):
            reply = http.get("/public/")
            assert (reply.text, reply.headers.get("vary")) == ("public", None)
        # Nor from a stale session cookie (expired, or of a session deleted), which Django
        # deletes only when the app reads the session.
        stale = {"Cookie": "sessionid=0123456789abcdefghijklmnopqrstuv"}
        reply = anonymous.get("/public/", headers=stale)
        assert (reply.headers.get("vary"), reply.headers.get("set-cookie")) == (None, None)
        reply = anonymous.get("/private/", headers=stale)  # read: as without sqreen
        assert reply.status_code == 302 and reply.headers.get("vary") == "Cookie"
        assert anonymous.get("/private/").status_code == 302  # to the login form
        receiver.block([])
        # Lifted: the same session goes on (the block refused requests, it ended nothing).
        assert status_until(alice, "/private/", 200) == 200
        assert alice.get("/private/").text == "hello alice"
    refusals = receiver.wait_for(1, 10, "security.blocked")
    assert refusals[0]["properties"]["block_id"] == "b1"
    assert refusals[0]["properties"]["kind"] == "user"


@pytest.mark.parametrize(
    ("kind", "order"),
    [
        ("wsgi", "last"),
        ("asgi", "last"),
        ("asgi-no-auser", "last"),
        ("wsgi", "before-auth"),
        ("asgi", "before-auth"),
    ],
)
def test_a_blocked_user_is_refused_the_pages_the_site_cache_kept_for_them(
    kind: str, order: str, tmp_path: Path
) -> None:
    """``FetchFromCacheMiddleware`` answers a page it keeps before any ``process_view``
    runs (``before-auth``: before the request has a user, too): the middleware checks the
    session's user of such a response once it comes back."""
    sites = serve(tmp_path, kind, {"SQREEN_TEST_SITE_CACHE": order})
    server, receiver = next(sites)
    try:
        with (
            httpx.Client(base_url=server.url) as alice,
            httpx.Client(base_url=server.url) as bob,
        ):
            assert log_in(alice, "alice", PASSWORD).status_code == 302
            assert log_in(bob, "bob", PASSWORD).status_code == 302
            first = alice.get("/counted/").text
            assert first.startswith("hello alice #")
            assert alice.get("/counted/").text == first  # from the cache: the view ran once
            bobs = bob.get("/counted/").text
            assert bobs.startswith("hello bob #") and bob.get("/counted/").text == bobs
            receiver.block([{"id": "b1", "type": "block_user", "user": {"username": "alice"}}])
            assert status_until(alice, "/counted/", 403) == 403
            reply = alice.get("/counted/")
            assert (reply.status_code, reply.headers["cache-control"]) == (403, "no-store")
            assert "refused" in reply.text
            # Others' pages still come from the cache; the refusal was not cached.
            assert bob.get("/counted/").text == bobs
            receiver.block([])
            assert status_until(alice, "/counted/", 200) == 200
            assert alice.get("/counted/").text == first  # the cached page, kept all along
        refusals = receiver.wait_for(1, 10, "security.blocked")
        assert refusals[0]["properties"]["block_id"] == "b1"
    finally:
        sites.close()


@pytest.mark.parametrize("kind", ["wsgi", "asgi", "asgi-no-auser"])
def test_a_user_a_later_middleware_logs_in_or_out_is_the_one_checked_and_the_view_s(
    kind: str, tmp_path: Path
) -> None:
    """``RemoteUserMiddleware`` after ``AuthenticationMiddleware`` reads the session's user,
    then logs another one in (or out): ``request.user`` changes, what ``get_user()`` and
    ``request.auser()`` cached does not. The check must read the user the view gets, and
    leave it as it is: it read the cached one, refused a user who was not blocked (async),
    and gave the view the user logged out (sync), while anyone was blocked."""
    sites = serve(tmp_path, kind, {"SQREEN_TEST_REMOTE_USER": "1"})
    server, receiver = next(sites)
    try:
        with httpx.Client(base_url=server.url) as http:
            receiver.block([{"id": "b1", "type": "block_user", "user": {"username": "alice"}}])
            as_alice = {"X-Remote-User": "alice"}
            assert status_until(http, "/private/", 403, as_alice) == 403  # alice, in session
            reply = http.get("/private/", headers={"X-Remote-User": "bob"})
            assert (reply.status_code, reply.text) == (200, "hello bob")
            reply = http.get("/private/")  # no header: logged out
            assert reply.status_code == 302
            assert reply.headers["location"].startswith("/accounts/login/")
    finally:
        sites.close()


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_a_user_stays_logged_in_across_a_secret_key_rotation_while_others_are_blocked(
    kind: str, tmp_path: Path
) -> None:
    """A session signed with a key now in ``SECRET_KEY_FALLBACKS`` is re-keyed by Django's
    first read of its user, whose new cookie ``SessionMiddleware`` sends. The check of a
    response answered before the view comes after that middleware: it must not be that
    first read (which logged the user out, on a 404 or a redirect, while anyone was
    blocked)."""
    with httpx.Client() as alice, httpx.Client() as bob:
        sites = serve(tmp_path, kind, {"SQREEN_TEST_SECRET_KEY": "old-secret"})
        server, _ = next(sites)
        try:
            for name, http in (("alice", alice), ("bob", bob)):
                http.base_url = httpx.URL(server.url)
                assert log_in(http, name, PASSWORD).status_code == 302
                assert http.get("/private/").text == f"hello {name}"
        finally:
            sites.close()
        rotated = {
            "SQREEN_TEST_SECRET_KEY": "new-secret",
            "SQREEN_TEST_SECRET_FALLBACKS": "old-secret",
        }
        sites = serve(tmp_path, kind, rotated, setup=False)
        server, receiver = next(sites)
        try:
            alice.base_url = bob.base_url = httpx.URL(server.url)
            receiver.block([{"id": "b1", "type": "block_user", "user": {"username": "alice"}}])
            assert status_until(alice, "/private/", 403) == 403  # the block is there
            old_cookie = bob.cookies["sessionid"]
            assert bob.get("/nowhere/").status_code == 404  # answered before any view
            assert bob.get("/private/").text == "hello bob"
            assert bob.cookies["sessionid"] != old_cookie  # re-keyed, the new cookie sent
            assert bob.get("/private/").text == "hello bob"
        finally:
            sites.close()


def test_a_view_s_own_authenticate_calls_are_tracked(site: tuple[Gunicorn, Receiver]) -> None:
    """authenticate() without the request (Django sends its signal with request=None) and
    with a backend of the app's taking an email: the failures are the request's, and the
    e-mail's is tracked under the account it names, as the account's success is (tracked
    as the e-mail, no takeover could ever be seen on a site logging in by e-mail)."""
    server, receiver = site
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/api/login", data={"username": "bob", "password": "x"}).status_code == 401
        reply = http.post("/api/email-login", data={"email": "bob@example.com", "password": "x"})
        assert reply.status_code == 401
        assert http.post("/api/login", data={"username": "bob", "password": PASSWORD}).text == "yes"
    events = auth_events(receiver, 3)
    assert [(e["name"], e["user"], e["request"]["path"]) for e in events] == [
        ("auth.login.failure", {"username": "bob"}, "/api/login"),
        ("auth.login.failure", {"username": "bob"}, "/api/email-login"),
        ("auth.login.success", {"username": "bob"}, "/api/login"),
    ]


def test_a_login_tracked_by_the_signals_and_the_view_is_said_once(
    site: tuple[Gunicorn, Receiver],
) -> None:
    server, receiver = site
    warning = "tracked both by sqreen.integrations.django.auth"
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/api/login", data={"username": "bob", "password": "x"}).status_code == 401
        assert warning not in server.output()  # the signals alone: once, no warning
        for _ in range(2):
            reply = http.post("/api/login-tracked-too", data={"username": "bob", "password": "x"})
            assert reply.status_code == 401
    events = auth_events(receiver, 5)
    assert [e["request"]["path"] for e in events] == ["/api/login"] + ["/api/login-tracked-too"] * 4
    assert wait_until(lambda: warning in server.output(), 10), server.output()
    assert server.output().count(warning) == 1


def test_the_test_clients_made_up_requests_track_nothing(tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        env = {**os.environ, **environ(receiver, tmp_path / "u.sqlite3"), "PYTHONPATH": ROOT}
        for script in (SETUP, TEST_CLIENT):
            run = [sys.executable, "-c", script]
            subprocess.run(run, env=env, cwd=ROOT, check=True, timeout=120)
        events = [(e["name"], e["user"]) for e in receiver.events if e["name"] in AUTH]
        assert events == [("auth.login.success", {"username": "bob"})]
    finally:
        receiver.stop()


def run_alone(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter, without the environment's settings; it must
    succeed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SQREEN_", "DJANGO_"))}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, "PYTHONPATH": ROOT},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_failure_whose_username_cannot_be_read_is_nobody_s() -> None:
    """``user_login_failed`` whose credentials name no username (a backend of the app's
    logging in by phone number, say): the failure is of nobody, not of the user the
    request identified before (whose per-user counts and blocks it fed)."""
    script = """
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"], DATABASES={}
)
django.setup()
import sqreen
from sqreen._context import RequestContext, current_request
from sqreen.integrations.django.auth import receivers
client = sqreen.init(transport="memory:")
environ = {"REQUEST_METHOD": "POST", "REMOTE_ADDR": "::1"}
current_request.set(RequestContext(client, "wsgi", environ))
sqreen.identify({"username": "victim"})
receivers.failed(sender=None, credentials={"phone": "+33 6", "password": "********"})
receivers.failed(sender=None, credentials={"username": "mallory", "password": "********"})
sqreen.flush(5)
print([(e["name"], e["user"]) for e in client.transport.events if e["name"] != "sq.identify"])
"""
    done = run_alone(script)
    assert done.stdout.strip() == (
        "[('auth.login.failure', None), ('auth.login.failure', {'username': 'mallory'})]"
    ), done.stdout


def test_a_username_of_any_length_is_tracked_cut_in_strict_mode_too() -> None:
    """The name a client types is its own choice: a view's ``authenticate()`` (or DRF's
    basic authentication) takes one of 300 characters, and strict mode (the pytest plugin,
    ``SQREEN_STRICT``) raised ``InvalidEvent`` in the signal's receiver: the login was
    answered 500."""
    script = """
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"], DATABASES={}
)
django.setup()
import sqreen
from sqreen._context import RequestContext, current_request
from sqreen.integrations.django.auth import receivers
client = sqreen.init(transport="memory:", strict=True)
environ = {"REQUEST_METHOD": "POST", "REMOTE_ADDR": "::1"}
current_request.set(RequestContext(client, "wsgi", environ))
receivers.failed(sender=None, credentials={"username": "x" * 300, "password": "********"})
sqreen.flush(5)
print([(e["name"], len(e["user"]["username"])) for e in client.transport.events])
"""
    done = run_alone(script)
    assert done.stdout.strip() == "[('auth.login.failure', 256)]", done.stdout + done.stderr


def test_the_app_alone_checks_the_middleware() -> None:
    # Without the middleware the receivers find no request to track with: manage.py check
    # says so, even when "sqreen.integrations.django" itself is not installed.
    script = """
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes",
                    "sqreen.integrations.django.auth"],
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
    DATABASES={},
)
django.setup()
from django.core import checks
print(sorted(m.id for m in checks.run_checks() if m.id.startswith("sqreen.")))
"""
    done = run_alone(script)
    assert done.stdout.strip() == "['sqreen.W002']"


@pytest.mark.parametrize("with_auth_app", [False, True])
def test_sessions_are_checked_only_with_the_auth_app(with_auth_app: bool) -> None:
    # Django calls a middleware's process_view on every request, under ASGI through a thread
    # when it is sync: the middleware has one only with the auth app, async when it is.
    script = f"""
import django
from django.conf import settings
apps = ["django.contrib.auth", "django.contrib.contenttypes"]
if {with_auth_app!r}:
    apps.append("sqreen.integrations.django.auth")
settings.configure(INSTALLED_APPS=apps, DATABASES={{}}, SQREEN={{"disable": True}})
django.setup()
from asgiref.sync import iscoroutinefunction
from sqreen.integrations.django import SqreenMiddleware

async def view(request):
    return None

sync = SqreenMiddleware(lambda request: None)
print(hasattr(sync, "process_view"), iscoroutinefunction(getattr(sync, "process_view", None)))
async_ = SqreenMiddleware(view)
print(hasattr(async_, "process_view"), iscoroutinefunction(getattr(async_, "process_view", None)))
"""
    done = run_alone(script)
    if with_auth_app:
        assert done.stdout.split("\n")[:2] == ["True False", "True True"]
    else:
        assert done.stdout.split("\n")[:2] == ["False False", "False False"]
