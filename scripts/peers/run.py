"""Run a framework's own test suite with and without sqreen injected, and compare.

::

    python scripts/peers/run.py flask            # the installed Flask's suite, from its sdist

The source distribution of the *installed* version is downloaded once (``pip download``) into
``.venv/peers/`` and its tests run twice with the same interpreter: as released, then with
``Sqreen(app)`` in every app and a ``sqreen.track()`` in every request
(``scripts/peers/_inject_<name>.py``). It fails (exit 1) when a test's outcome differs, other
than the documented exceptions below, when a request saw another request's context, when an
event carried another request's path, when a context was left bound after a test, or when
the SDK logged an internal error; the interpreter crashing fails it too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = ROOT / ".venv" / "peers"

#: Tests whose outcome may differ, and why.
KNOWN = {
    "flask": {
        # Sqreen(app) stores app.wsgi_app wrapped, and the wrapper holds the bound method:
        # app -> middleware -> app is a reference cycle, so the app is freed by the garbage
        # collector, not by reference counting. werkzeug's ProxyFix, wrapped the documented
        # way, fails this test the same way.
        "tests.test_basic::test_app_freed_on_zero_refcount": "app.wsgi_app wrapped (a cycle)",
    },
}
DISTRIBUTIONS = {"flask": "flask"}
#: What the suite needs besides the framework at the installed version (its "tests" group;
#: pytest below 9, whose internals Flask 3.1's test_cli imports).
TEST_DEPS = {"flask": ["pytest>=8,<9", "asgiref", "greenlet", "python-dotenv"]}
#: The project's own dependencies (pyproject's ``dependencies``), at the versions installed here.
PROJECT_DEPS = ["httpx2", "anyio"]


def fetch(name: str) -> Path:
    """The extracted sdist of the installed version of ``name``."""
    dist = DISTRIBUTIONS[name]
    ver = version(dist)
    target = CACHE / f"{dist}-{ver}"
    if (target / "tests").is_dir():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            str(CACHE),
            f"{dist}=={ver}",
        ],
        check=True,
    )
    archive = next(CACHE.glob(f"{dist}-{ver}.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, filter="data")
    return target


def environment(name: str) -> Path:
    """A virtual environment of its own for the suite: the framework and its libraries at the
    versions installed here, the suite's test tools, and this project's dependencies (the
    project itself is imported from its source tree, on ``PYTHONPATH``).

    Built without a pip of its own (this interpreter's pip installs into it, ``--python``) and
    without installing the project: on a clean clone, under load, ``ensurepip`` took 21 s and
    the editable install (an isolated hatchling build) 14 s, of the 97 s this took in all."""
    venv = CACHE / f"venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    pins = [f"{d}=={version(d)}" for d in (DISTRIBUTIONS[name], "werkzeug", *PROJECT_DEPS)]
    wanted = " ".join([*pins, *TEST_DEPS[name]])
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    venv_cmd = [sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)]
    subprocess.run(venv_cmd, check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    subprocess.run([*pip, *pins, *TEST_DEPS[name]], check=True)
    stamp.write_text(wanted)
    return python


def run_suite(
    python: Path, source: Path, inject: str | None, workdir: Path
) -> tuple[dict[str, str], dict]:
    label = "injected" if inject else "plain"
    junit = workdir / f"{label}.xml"
    report_file = workdir / f"{label}.json"
    # Not the outer run's pytest options either (PYTEST_ADDOPTS="-p plugin" broke the inner one).
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SQREEN_") and k != "PYTEST_ADDOPTS"
    }
    env["SQREEN_TRANSPORT"] = "memory:"
    env["SQREEN_PEER_REPORT"] = str(report_file)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
    cmd = [
        str(python),
        "-m",
        "pytest",
        "tests",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        f"--junitxml={junit}",
        f"--basetemp={workdir / label}",
        # The project's pytest11 entry point, which an installed project would load.
        "-p",
        "sqreen.testing",
    ]
    if inject:
        cmd += ["-p", inject]
    proc = subprocess.run(cmd, cwd=source, env=env, capture_output=True, text=True)
    if proc.returncode < 0:
        sys.exit(f"{label} run: the interpreter died (signal {-proc.returncode})\n{proc.stdout}")
    if not junit.exists():
        sys.exit(f"{label} run: no report\n{proc.stdout}\n{proc.stderr}")
    outcomes: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        key = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcome = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        outcomes[key] = outcome
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    print(
        f"{label}: {len(outcomes)} tests, {sum(o == 'passed' for o in outcomes.values())} passed",
        flush=True,
    )
    return outcomes, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(DISTRIBUTIONS))
    args = parser.parse_args()
    source = fetch(args.name)
    python = environment(args.name)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        plain, _ = run_suite(python, source, None, workdir)
        injected, report = run_suite(python, source, f"_inject_{args.name}", workdir)
    problems: list[str] = []
    if not plain or plain.keys() != injected.keys():
        problems.append(f"different tests collected: {sorted(plain.keys() ^ injected.keys())[:10]}")
    known = KNOWN.get(args.name, {})
    for test, outcome in sorted(plain.items()):
        other = injected.get(test)
        if other != outcome:
            if test in known:
                print(f"known difference: {test}: {outcome} -> {other} ({known[test]})")
            else:
                problems.append(f"{test}: {outcome} without sqreen, {other} with it")
    print(
        f"requests: {report.get('requests')} ({report.get('bypassed')} dispatched by hand, "
        f"without app.wsgi_app), events tracked: {report.get('tracked')}, "
        f"delivered: {report.get('delivered')}"
    )
    if not report.get("requests"):
        problems.append("no request reached a view: the injection did not take")
    if report.get("tracked") != report.get("delivered"):
        problems.append(
            f"{report.get('tracked')} events tracked, {report.get('delivered')} delivered"
        )
    for key in ("wrong_context", "wrong_event"):
        if report.get(key):
            problems.append(f"{key}: {report[key][:10]}")
    if report.get("unbound_after"):
        problems.append(f"a request context was left bound after {report['unbound_after']} tests")
    if report.get("internal_errors"):
        problems.append(f"sqreen logged {report['internal_errors']} internal errors")
    for problem in problems:
        print("DIFFERENCE:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
