"""Development servers with their reloader (``manage.py runserver``, ``flask run --debug``):
the reloader, which loads the settings or the app and serves nothing, is no SDK process of
its own; the child it starts, which serves, is the only one the collector hears from."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqreen._instrument import reloader_parent
from tests.receiver import Receiver

from ._servers import free_port, http_request, wait_for_port, wait_until

pytestmark = pytest.mark.slow

DJANGO = {
    "manage.py": """
        import os, sys
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_settings")
        from django.core.management import execute_from_command_line
        execute_from_command_line(sys.argv)
    """,
    "site_settings.py": """
        import sqreen
        sqreen.start()  # as the README and Sqreen's agent say: first, in settings.py
        SECRET_KEY = "test-only"
        DEBUG = True
        ALLOWED_HOSTS = ["127.0.0.1"]
        ROOT_URLCONF = "site_urls"
        DATABASES = {}
        MIDDLEWARE = []
        INSTALLED_APPS = []
    """,
    "site_urls.py": """
        from django.http import HttpResponse
        from django.urls import path
        import sqreen

        def home(request):
            sqreen.track("home.visited")
            return HttpResponse("ok")

        urlpatterns = [path("", home)]
    """,
}
FLASK = {
    "app.py": """
        import sqreen
        sqreen.start()
        import flask

        app = flask.Flask(__name__)

        @app.get("/")
        def home():
            sqreen.track("home.visited")
            return "ok"
    """,
}
COMMANDS = {
    "django": (DJANGO, ["manage.py", "runserver", "127.0.0.1:{port}"]),
    "flask": (FLASK, ["-m", "flask", "--app", "app", "run", "--debug", "--port", "{port}"]),
}


@pytest.fixture(params=sorted(COMMANDS))
def dev_server(
    request: pytest.FixtureRequest, receiver: Receiver, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    pytest.importorskip(request.param)
    files, command = COMMANDS[request.param]
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SQREEN_", "FLASK_"))}
    env.update(
        SQREEN_ENDPOINT=receiver.url, SQREEN_FLUSH_INTERVAL="0.1", SQREEN_HEARTBEAT_INTERVAL="0.1"
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    args = [a.format(port=port) for a in command]
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the reloader's child goes with it
    )
    try:
        if not wait_for_port(port, 30, proc):
            os.killpg(proc.pid, 9)
            pytest.fail(f"{request.param} did not start:\n{proc.communicate()[0].decode()}")
        yield proc, port
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_the_reloader_is_no_sdk_process_of_its_own(
    dev_server: tuple[subprocess.Popen[bytes], int], receiver: Receiver
) -> None:
    proc, port = dev_server
    assert http_request(port, "GET", "/").status == 200
    assert wait_until(lambda: [e["name"] for e in receiver.events] == ["home.visited"])
    assert wait_until(lambda: len(receiver.heartbeats) >= 5)  # a second and a half of them
    pids = {beat["app"]["pid"] for beat in receiver.heartbeats}
    assert len(pids) == 1 and proc.pid not in pids  # the child that serves, alone


@pytest.mark.parametrize(
    ("argv", "environ", "parent"),
    [
        (["manage.py", "runserver"], {}, True),
        (["manage.py", "runserver"], {"RUN_MAIN": "true"}, False),  # the child
        (["manage.py", "runserver", "--noreload"], {}, False),
        (["manage.py", "migrate"], {}, False),
        (["/venv/bin/flask", "--app", "a", "run", "--debug"], {}, True),
        (["/venv/bin/flask", "run"], {"FLASK_DEBUG": "1"}, True),
        (["/venv/bin/flask", "run", "--reload"], {}, True),
        (["/venv/bin/flask", "run", "--debug", "--no-reload"], {}, False),
        (["/venv/bin/flask", "run", "--debug"], {"WERKZEUG_RUN_MAIN": "true"}, False),
        (["/venv/bin/flask", "run"], {}, False),
        (["/venv/bin/flask", "run"], {"FLASK_DEBUG": "1", "FLASK_RUN_RELOAD": "false"}, False),
        (["/venv/bin/flask", "run"], {"FLASK_RUN_RELOAD": "1"}, True),
        (["/venv/bin/flask", "run", "--no-reload"], {"FLASK_RUN_RELOAD": "1"}, False),
        (["/venv/bin/flask", "run", "--no-reload", "--reload"], {}, True),
        (["/venv/bin/flask", "run", "--debug", "--no-debug"], {}, False),
        (["/venv/lib/python3.11/site-packages/flask/__main__.py", "run", "--debug"], {}, True),
        (["/venv/bin/flask", "run"], {"FLASK_RUN_DEBUG": "1"}, True),
        (["/venv/bin/flask", "--no-debug", "run"], {"FLASK_RUN_DEBUG": "1"}, True),
        (["/venv/bin/flask", "--debug", "run"], {"FLASK_RUN_DEBUG": "0"}, False),
        (["/venv/bin/flask", "--debug", "run"], {}, True),
        (["/venv/bin/flask", "--app", "run", "routes"], {"FLASK_DEBUG": "1"}, False),
        (["/venv/bin/flask", "-A", "app", "shell"], {"FLASK_DEBUG": "1"}, False),
        (["manage.py", "runserver", "--norel"], {}, False),
        (["/venv/bin/gunicorn", "app:app", "--reload"], {}, False),  # it serves
        ([], {}, False),
    ],
)
def test_reloader_parents_are_told_apart(
    argv: list[str], environ: dict[str, str], parent: bool
) -> None:
    assert reloader_parent(argv, environ) is parent
