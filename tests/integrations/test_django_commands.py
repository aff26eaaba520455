"""``settings.SQREEN`` in the processes that build no middleware: ``manage.py`` commands,
``manage.py shell`` (and so Celery workers), each a real ``manage.py`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.receiver import Receiver

from ._servers import ROOT

pytest.importorskip("django")
pytestmark = pytest.mark.slow

MANAGE = str(Path(ROOT) / "tests" / "integrations" / "apps" / "django_command_site" / "manage.py")

# Made when Django is set up (the app's ready()), and kept by the middleware built afterwards.
SHELL = """
import sqreen
from sqreen import _hub
client = _hub.active
assert client is not None and client.config.app_name == "shop-commands", client
from sqreen.integrations.django import SqreenMiddleware
SqreenMiddleware(lambda request: None)
assert _hub.active is client, "configured twice"
print(sqreen.track("shell.event"))
"""


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SQREEN_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, MANAGE, *args],
        env={**clean, "PYTHONPATH": ROOT, **env},
        cwd=tmp_path,  # where the default file transport would write, were SQREEN not applied
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_management_command_and_the_shell_track_with_the_settings(
    receiver: Receiver, tmp_path: Path
) -> None:
    done = manage(tmp_path, "track_event", "command.event", SQREEN_TEST_RECEIVER=receiver.url)
    assert (done.returncode, done.stdout.split()[-1]) == (0, "True"), done.stderr
    done = manage(tmp_path, "shell", "-c", SHELL, SQREEN_TEST_RECEIVER=receiver.url)
    assert (done.returncode, done.stdout.split()[-1]) == (0, "True"), done.stderr
    assert [e["name"] for e in receiver.events] == ["command.event", "shell.event"]
    assert receiver.events[0]["properties"] == {"via": "command"}
    assert {b["app"]["name"] for b in receiver.batches} == {"shop-commands"}
    assert {b["app"]["framework"] for b in receiver.batches} == {"django"}
    assert not (tmp_path / "sqreen-events.jsonl").exists()
    assert "replaces the client" not in done.stderr


def test_a_wrong_setting_does_not_stop_the_commands_and_check_says_it(tmp_path: Path) -> None:
    done = manage(tmp_path, "shell", "-c", "print('ran')", SQREEN_TEST_BAD="1")
    assert (done.returncode, done.stdout.split()[-1]) == (0, "ran"), done.stderr
    assert "the Django settings are not applied: flush_interval must be a number" in done.stderr
    done = manage(tmp_path, "check", SQREEN_TEST_BAD="1")
    assert done.returncode == 1
    assert "sqreen.E002" in done.stderr and "flush_interval" in done.stderr
