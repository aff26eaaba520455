"""Run a framework's own test suite with and without sqreen injected, and compare.

::

    python scripts/peers/run.py flask            # the installed Flask's suite, from its sdist
    python scripts/peers/run.py django           # Django's, for the apps of DJANGO_APPS
    python scripts/peers/run.py starlette        # Starlette's (fastapi: FastAPI's)

The source distribution of the *installed* version is downloaded once (``pip download``) into
``.venv/peers/`` and its tests run twice with the same interpreter: as released, then with
sqreen injected (``scripts/peers/_inject_<name>.py``):

- Flask: ``Sqreen(app)`` in every app and a ``sqreen.track()`` in every request. It fails
  (exit 1) when a request saw another request's context, when an event carried another
  request's path, or when a context was left bound after a test.
- Starlette, FastAPI: the middleware outermost of every app's own, and in front of its router
  a check of the request bound and a ``sqreen.track()``, in every HTTP request; it fails as
  Flask's does.
- Django: the middleware first in every chain with the auth app installed, while the
  collector blocks a user no test uses, so that every request's user is checked (a user
  who is not blocked must see no difference). It fails when a request was refused, or when
  a middleware was built without the block in force.

All fail when a test's outcome differs, other than the documented exceptions below, when
no request reached the injection, or when the SDK logged an internal error; the interpreter
crashing fails it too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
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
DISTRIBUTIONS = {
    "flask": "flask",
    "django": "django",
    "starlette": "starlette",
    "fastapi": "fastapi",
}
#: The framework and the libraries it runs on, at the versions installed here.
PINNED = {
    "flask": ["flask", "werkzeug"],
    "django": ["django", "asgiref", "sqlparse"],
    "starlette": ["starlette", "typing-extensions"],
    "fastapi": [
        "fastapi",
        "starlette",
        "pydantic",
        "pydantic-core",
        "typing-extensions",
        "typing-inspection",
        "annotated-doc",
        "opentelemetry-api",
        "python-multipart",
    ],
}
#: What the suite needs besides (Flask's "tests" group, and pytest below 9, whose internals
#: Flask 3.1's test_cli imports; what Django's runtests needs for DJANGO_APPS; Starlette's
#: "full" extra and "dev" group's test tools; FastAPI's "tests" group and its "all" extra's
#: libraries, less coverage, type checkers and plugins the run does not use, plus
#: pytest-xdist for the ``xdist_group`` marker under ``--strict-markers``).
TEST_DEPS = {
    "flask": ["pytest>=8,<9", "asgiref", "greenlet", "python-dotenv"],
    "django": ["tblib", "jinja2", "pyyaml", "argon2-cffi", "bcrypt", "pillow", "docutils"],
    "starlette": [
        "pytest>=9.1.1",
        "itsdangerous",
        "jinja2",
        "opentelemetry-api",
        "opentelemetry-sdk",
        "python-multipart>=0.0.18",
        "pyyaml",
        "httpx>=0.27.0,<0.29.0",
        "httpx2[zstd]",
        "blockbuster>=1.5.23",
        "importlib-metadata",
        "trio",
        "sniffio",
    ],
    "fastapi": [
        "pytest>=9.0.0,<9.2",
        "pytest-timeout>=2.4.0",
        "pytest-xdist",
        "anyio[trio]",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-instrumentation-fastapi>=0.65b0",
        "logfire>=5.1.0",
        "sentry-sdk>=2.70.0",
        "httpx>=0.23.0,<1.0.0",
        "python-slugify>=8.0.4",
        "dirty-equals>=0.9.0",
        "flask>=3.0.0,<4.0.0",
        "inline-snapshot>=0.21.1",
        "pwdlib[argon2]>=0.2.1",
        "pyjwt>=2.9.0",
        "pyyaml",
        "sqlmodel>=0.0.31",
        "strawberry-graphql>=0.200.0,<1.0.0",
        "typer>=0.26.1",
        "a2wsgi>=1.9.0,<=2.0.0",
        "jinja2>=3.1.5",
        "itsdangerous>=1.1.0",
        "email-validator>=2.0.0",
        "pydantic-settings>=2.0.0",
        "pydantic-extra-types>=2.0.0",
        "uvicorn",
    ],
}
#: Django's test apps run: what requests, sessions, users, caches and middlewares go through.
DJANGO_APPS = (
    "cache sessions_tests auth_tests middleware middleware_exceptions handlers asgi "
    "requests_tests view_tests csrf_tests test_client test_client_regress messages_tests "
    "flatpages_tests redirects_tests admin_views"
).split()
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
    pins = [f"{d}=={version(d)}" for d in (*PINNED[name], *PROJECT_DEPS)]
    wanted = " ".join([*pins, *TEST_DEPS[name]])
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    venv_cmd = [sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)]
    subprocess.run(venv_cmd, check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    subprocess.run([*pip, *pins, *TEST_DEPS[name]], check=True)
    stamp.write_text(wanted)
    return python


def suite_env(report: Path) -> dict[str, str]:
    """The suite's environment: none of the outer run's sqreen or Django settings, nor its
    pytest options (PYTEST_ADDOPTS="-p plugin" broke the inner one; the project's tests set
    DJANGO_SETTINGS_MODULE, which Django's runtests.py then ran on); the project and the
    injection modules importable."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SQREEN_", "DJANGO_")) and k != "PYTEST_ADDOPTS"
    }
    env["SQREEN_TRANSPORT"] = "memory:"
    env["SQREEN_PEER_REPORT"] = str(report)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT)])
    return env


#: The end of a test's ``-v 2`` line: its outcome.
_OUTCOMES = "(ok|FAIL|ERROR|skipped|expected failure|unexpected success)"
_ENDED = re.compile(r" \.\.\. " + _OUTCOMES)
_ALONE = re.compile(_OUTCOMES + r"(?: .*)?$")


def without(source: Path, apps: list[str], skipped: list[str]) -> list[str]:
    """``apps`` with the test modules ``skipped`` left out: an app that holds one is given
    as its other modules (``runtests.py`` takes labels, and has no option to exclude)."""
    out: list[str] = []
    for app in apps:
        left = [m for m in skipped if m.startswith(app + ".")]
        if not left:
            out.append(app)
            continue
        modules = sorted(p.stem for p in (source / "tests" / app).glob("test_*.py"))
        missing = [m for m in left if m.split(".", 1)[1] not in modules]
        if missing:
            sys.exit(f"--skip: no such test module: {', '.join(missing)}")
        out += [f"{app}.{m}" for m in modules if f"{app}.{m}" not in left]
    return out


def run_django(
    python: Path, source: Path, apps: list[str], parallel: int, inject: bool, workdir: Path
) -> tuple[dict[str, str], dict]:
    """Django's ``runtests.py`` over ``apps``: each test's outcome (from its ``-v 2``
    lines), and the injection's reports, summed over its processes."""
    label = "injected" if inject else "plain"
    reports = workdir / label
    script = [str(HERE / "_inject_django.py")] if inject else ["runtests.py"]
    cmd = [str(python), *script, *apps, "--parallel", str(parallel), "-v", "2"]
    proc = subprocess.run(
        cmd, cwd=source / "tests", env=suite_env(reports), capture_output=True, text=True
    )
    if proc.returncode < 0:
        sys.exit(f"{label} run: the interpreter died (signal {-proc.returncode})\n{proc.stderr}")
    outcomes: dict[str, str] = {}
    test = None
    for line in proc.stderr.splitlines():  # (unittest reports on stderr)
        if named := re.match(r"^\w+ \(([\w.]+)\)", line):
            test = named.group(1)  # (a docstring's first line may follow, then the outcome)
        # " ... ok" ends the test's line, or a line of its own when something the test
        # logged (to the same stderr) came in between.
        ended = _ENDED.search(line) or _ALONE.match(line)
        if ended and test:
            outcomes[test] = {"ok": "passed"}.get(ended.group(1), ended.group(1))
            test = None
    if not outcomes:
        sys.exit(f"{label} run: no test reported\n{proc.stderr[-3000:]}")
    report: dict[str, int] = {}
    for part in reports.glob("*.json") if inject else ():
        for key, value in json.loads(part.read_text()).items():
            report[key] = report.get(key, 0) + value
    passed = sum(o == "passed" for o in outcomes.values())
    print(f"{label}: {len(outcomes)} tests, {passed} passed", flush=True)
    return outcomes, report


def run_suite(
    python: Path, source: Path, inject: str | None, workdir: Path
) -> tuple[dict[str, str], dict]:
    label = "injected" if inject else "plain"
    junit = workdir / f"{label}.xml"
    report_file = workdir / f"{label}.json"
    env = suite_env(report_file)
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
    parser.add_argument(
        "--apps", help="django: the test apps to run, comma-separated (default: DJANGO_APPS)"
    )
    parser.add_argument(
        "--parallel", type=int, default=2, help="django: runtests.py's processes (default: 2)"
    )
    parser.add_argument(
        "--skip",
        default="",
        help="django: test modules left out, comma-separated (auth_tests.test_hashers: "
        "the password hashers' tests, which make no request, are two thirds of auth_tests' "
        "CPU)",
    )
    args = parser.parse_args()
    source = fetch(args.name)
    python = environment(args.name)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.name == "django":
            apps = args.apps.split(",") if args.apps else DJANGO_APPS
            apps = without(source, apps, [m for m in args.skip.split(",") if m])
            # The two runs side by side (processes of their own; the suite's test databases
            # are in memory): half the wall time of one after the other.
            with ThreadPoolExecutor(2) as pool:
                runs = [
                    pool.submit(run_django, python, source, apps, args.parallel, inject, workdir)
                    for inject in (False, True)
                ]
                (plain, _), (injected, report) = (run.result() for run in runs)
        else:
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
    if args.name == "django":
        problems += django_problems(report)
    else:
        problems += request_problems(report)
    if report.get("internal_errors"):
        problems.append(f"sqreen logged {report['internal_errors']} internal errors")
    if report.get("internal_errors_logged", 0) > report.get("internal_errors", 0):
        problems.append(
            f"sqreen logged {report['internal_errors_logged']} internal errors "
            f"({report.get('internal_errors')} counted on a client)"
        )
    for problem in problems:
        print("DIFFERENCE:", problem)
    return 1 if problems else 0


def request_problems(report: dict) -> list[str]:
    """Flask's, Starlette's and FastAPI's: the requests a ``track()`` was made in."""
    bypassed = (
        f" ({report['bypassed']} dispatched by hand, without app.wsgi_app)"
        if "bypassed" in report
        else ""
    )
    print(
        f"requests: {report.get('requests')}{bypassed}, events tracked: "
        f"{report.get('tracked')}, delivered: {report.get('delivered')}"
    )
    problems = []
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
    if report.get("shared_scope"):  # (a test's doing, not a problem: see _inject_starlette)
        print(f"requests sharing one scope dict: {report['shared_scope'][:10]}")
    return problems


def django_problems(report: dict) -> list[str]:
    print(
        f"middlewares built: {report.get('built')}, users checked: {report.get('checks')}, "
        f"refused: {report.get('refused')}"
    )
    problems = []
    if not report.get("checks"):
        problems.append("no request's user was checked: the injection did not take")
    if report.get("refused"):
        problems.append(f"{report['refused']} requests refused, none of them blocked")
    if report.get("built_without_block"):
        problems.append(f"{report['built_without_block']} middlewares built without the block")
    return problems


if __name__ == "__main__":
    sys.exit(main())
