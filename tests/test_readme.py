"""The README's Python snippets, run as written: the quickstarts against their frameworks'
test clients, the pytest example against the Flask quickstart, the API tour against a
receiver. The README cannot drift from the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sqreen.testing import CapturedEvents
from tests.receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


def block(marker: str) -> str:
    found = [b for b in BLOCKS if marker in b]
    assert len(found) == 1, f"one README snippet holds {marker!r}: {len(found)} do"
    return found[0]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.mark.slow
def test_the_pytest_example_passes_against_the_flask_quickstart(tmp_path: Path) -> None:
    pytest.importorskip("flask")
    (tmp_path / "app.py").write_text(block("from flask import"))
    (tmp_path / "test_app.py").write_text(block("def test_failed_login_is_tracked"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_the_flask_quickstart_answers(sqreen_events: CapturedEvents) -> None:
    pytest.importorskip("flask")
    namespace: dict[str, Any] = {"__name__": "readme_flask"}
    exec(compile(block("from flask import"), "README.md", "exec"), namespace)
    client = namespace["app"].test_client()
    good = client.post("/login", data={"username": "alice", "password": "wonderland"})
    bad = client.post("/login", data={"username": "alice", "password": "nope", "remember": "1"})
    assert (good.status_code, good.text) == (200, "welcome")
    assert bad.status_code == 401
    assert sqreen_events.names() == [
        "auth.login.success",
        "login.form",
        "auth.login.failure",
        "login.form",
    ]
    assert sqreen_events[3]["properties"] == {"remember": True}
    assert sqreen_events[2]["request"]["params"]["password"] == "[redacted]"


def test_the_flask_factory_refuses_a_user_blocked_with_an_open_session(
    sqreen_events: CapturedEvents,
) -> None:
    flask = pytest.importorskip("flask")
    namespace: dict[str, Any] = {"__name__": "readme_flask_factory"}
    exec(compile(block("def create_app():"), "README.md", "exec"), namespace)
    app = namespace["create_app"]()
    app.secret_key = "test"

    @app.post("/login")
    def login() -> str:
        flask.session["username"] = "alice"
        return "welcome"

    @app.get("/account")
    def account() -> str:
        return "yours"

    client = app.test_client()
    client.post("/login")
    assert client.get("/account").status_code == 200
    sqreen_events.block([{"type": "block_user", "user": {"username": "alice"}}])
    assert client.get("/account").status_code == 403


def test_the_migration_from_the_agent_instruments_flask(sqreen_events: CapturedEvents) -> None:
    """``sqreen.start()`` and no integration: the events carry the request and the user.
    (tests/conftest.py undoes what start() patched.)"""
    pytest.importorskip("flask")
    namespace: dict[str, Any] = {"__name__": "readme_migration"}
    exec(compile(block("written for Sqreen's agent"), "README.md", "exec"), namespace)
    client = namespace["app"].test_client()
    assert client.post("/login", data={"username": "alice", "password": "nope"}).status_code == 401
    good = client.post("/login?next=/", data={"username": "alice", "password": "wonderland"})
    assert good.status_code == 200
    assert [(e["name"], e["user"]) for e in sqreen_events] == [
        ("auth.login.failure", {"username": "alice"}),
        ("auth.login.success", {"username": "alice"}),
    ]
    request = sqreen_events[1]["request"]
    assert (request["path"], request["route"], request["ip"]) == ("/login", "/login", "127.0.0.1")
    assert request["params"] == {"next": "/", "username": "alice", "password": "[redacted]"}


def test_the_fastapi_quickstart_answers(sqreen_events: CapturedEvents) -> None:
    pytest.importorskip("fastapi")
    from starlette.testclient import TestClient

    namespace: dict[str, Any] = {"__name__": "readme_fastapi"}
    exec(compile(block("from fastapi import"), "README.md", "exec"), namespace)
    with TestClient(namespace["app"]) as client:
        good = client.post("/login", json={"username": "alice", "password": "wonderland"})
        bad = client.post("/login", json={"username": "alice", "password": "nope"})
    assert good.json() == {"welcome": "alice"} and bad.status_code == 401
    assert sqreen_events.names() == ["auth.login.success", "auth.login.failure"]
    assert sqreen_events[1]["request"]["route"] == "/login"


DJANGO_HARNESS = """
import django, sys, types
from django.conf import settings

namespace = {
    "MIDDLEWARE": [
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ],
    "INSTALLED_APPS": ["django.contrib.auth", "django.contrib.contenttypes",
                       "django.contrib.sessions"],
}
exec(SETTINGS, namespace)
assert namespace["MIDDLEWARE"][0] == "sqreen.integrations.django.SqreenMiddleware"
views = types.ModuleType("views")
exec(VIEWS, views.__dict__)
urls = types.ModuleType("urls")
from django.urls import path
urls.urlpatterns = [path("login", views.login)]
sys.modules["urls"] = urls
settings.configure(
    SECRET_KEY="readme", ALLOWED_HOSTS=["*"], ROOT_URLCONF="urls", USE_TZ=True,
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    MIDDLEWARE=namespace["MIDDLEWARE"], INSTALLED_APPS=namespace["INSTALLED_APPS"],
    SQREEN=namespace["SQREEN"],
)
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth.models import User
User.objects.create_user("alice", password="wonderland")
import sqreen
client = sqreen.init(transport="memory:", strict=True)
from django.test import Client
c = Client()
good = c.post("/login", {"username": "alice", "password": "wonderland"})
bad = c.post("/login", {"username": "alice", "password": "nope"})
csrf = Client(enforce_csrf_checks=True).post("/login", {"username": "alice", "password": "x"})
assert (good.status_code, bad.status_code, csrf.status_code) == (200, 401, 403)
assert b"This request was refused" not in csrf.content   # Django's CSRF 403, not a block
sqreen.flush(10)
print([(e["name"], e["user"]) for e in client.transport.events])
"""


@pytest.mark.slow
def test_the_django_quickstart_answers() -> None:
    pytest.importorskip("django")
    code = (
        f"SETTINGS = {block('# settings.py')!r}\nVIEWS = {block('# views.py')!r}\n"
        + textwrap.dedent(DJANGO_HARNESS)
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(
        [
            ("auth.login.success", {"username": "alice"}),
            ("auth.login.failure", {"username": "alice"}),
        ]
    )


def test_the_api_tour_runs(receiver: Receiver) -> None:
    code = block("sqreen.init(token=").replace("http://127.0.0.1:8000", receiver.url)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_api"})
    got: dict[str, Any] = {}
    for event in receiver.events:
        got.setdefault(event["name"], event)
    assert got["app.login"]["properties"] == {"foo": "bar"}
    assert got["app.login"]["user"] == {"uid": "42"}
    assert got["app.logout"]["properties"] == {"foo": "bar"}
    assert got["my.event"]["timestamp"] == "2018-03-15T13:42:00.000000Z"
    assert got["my.event"]["target"] == {"id": "doc-1"}
    assert {"auth.login.success", "auth.login.failure", "auth.signup"} <= set(got)


def test_the_readmes_sqreen_ini_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqreen_log: pytest.LogCaptureFixture
) -> None:
    from sqreen._config import Config

    (text,) = re.findall(r"```ini\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    (tmp_path / "sqreen.ini").write_text(text)
    monkeypatch.chdir(tmp_path)
    config = Config.resolve({}, environ={})
    assert (config.token, config.app_name, config.client_ip_header) == (
        "sqk_...",
        "My Application",
        "X-Real-IP",
    )
    assert (config.endpoint, config.disable) == ("http://127.0.0.1:8000", False)
    assert not [r for r in sqreen_log.records if r.levelname == "WARNING"]


def test_the_readmes_playbooks_parse() -> None:
    """Every ``toml`` block of the README is a playbook file the collector takes as written."""
    from sqreen.server.playbooks import parse_playbooks

    files = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert len(files) >= 3
    for text in files:
        assert parse_playbooks(text, "README.md").playbooks


def test_the_unittest_capture_runs() -> None:
    """The README's capture for ``manage.py test`` and ``unittest``, as written."""
    import unittest

    namespace: dict[str, Any] = {}
    exec(block("class SqreenTestCase(unittest.TestCase)"), namespace)

    class LoginTests(namespace["SqreenTestCase"]):  # type: ignore[misc,name-defined]
        def test_failed_login_is_tracked(self) -> None:
            namespace["sqreen"].auth_track(False, username="alice")
            self.assertEqual(self.sqreen_events.names(), ["auth.login.failure"])

    result = unittest.TestResult()
    LoginTests("test_failed_login_is_tracked").run(result)
    assert result.wasSuccessful() and result.testsRun == 1, result.failures + result.errors
