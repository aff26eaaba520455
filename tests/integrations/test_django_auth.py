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

from ._servers import ROOT, Gunicorn

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
User.objects.create_user("alice", password={PASSWORD!r})
User.objects.create_user("bob", password={PASSWORD!r})
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


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Gunicorn, Receiver]]:
    receiver = Receiver()
    db = tmp_path / "users.sqlite3"
    env = {**os.environ, **environ(receiver, db), "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-c", SETUP], env=env, cwd=ROOT, check=True, timeout=120)
    server = Gunicorn(
        "tests.integrations.apps.django_auth_site.wsgi:application", environ(receiver, db)
    )
    try:
        yield server, receiver
    finally:
        server.stop()
        receiver.stop()


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
    events = auth_events(receiver, 6)
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


def test_a_view_s_own_authenticate_calls_are_tracked(site: tuple[Gunicorn, Receiver]) -> None:
    """authenticate() without the request (Django sends its signal with request=None) and
    with a backend of the app's taking an email: the failures are the request's."""
    server, receiver = site
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/api/login", data={"username": "bob", "password": "x"}).status_code == 401
        reply = http.post("/api/email-login", data={"email": "bob@example.com", "password": "x"})
        assert reply.status_code == 401
        assert http.post("/api/login", data={"username": "bob", "password": PASSWORD}).text == "yes"
    events = auth_events(receiver, 3)
    assert [(e["name"], e["user"], e["request"]["path"]) for e in events] == [
        ("auth.login.failure", {"username": "bob"}, "/api/login"),
        ("auth.login.failure", {"username": "bob@example.com"}, "/api/email-login"),
        ("auth.login.success", {"username": "bob"}, "/api/login"),
    ]


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
    assert done.stdout.strip() == "['sqreen.W002']"
