"""Frameworks' own test suites, run with and without sqreen injected (scripts/peers/run.py).

The source distribution of the installed version is fetched from the package index once and
kept in ``.venv/peers/``; the comparison itself runs offline after that.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def peer_run(*args: str) -> str:
    """``scripts/peers/run.py ARGS``, which must pass: its output."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "peers" / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=590,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_flasks_own_suite_sees_no_difference() -> None:
    pytest.importorskip("flask")
    out = peer_run("flask")
    assert "injected: " in out and "requests: " in out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_djangos_own_suite_sees_no_difference_while_a_user_is_blocked() -> None:
    """Django's auth and sessions tests (the ones a session check could change: logins,
    logouts, ``RemoteUserMiddleware``, session flags), with the middleware and its auth app
    in every app while the collector blocks a user no test uses. Each request's user is
    checked; none may see a difference (``scripts/peers/run.py django`` runs more apps)."""
    pytest.importorskip("django")
    # One process: the other pytest workers' timed tests keep a core. The password hashers'
    # tests make no request and were two thirds of the CPU (44 of 60 s), over a minute of
    # the suite's wall time on CI's two cores: `scripts/peers/run.py django` runs them.
    out = peer_run(
        "django",
        "--apps",
        "auth_tests,sessions_tests",
        "--skip",
        "auth_tests.test_hashers",
        "--parallel",
        "1",
    )
    assert "injected: " in out and "users checked: " in out
