"""A throwaway PostgreSQL cluster for the test session, and fresh databases in it.

Use from a conftest.py::

    from tests._postgres import postgres_cluster, postgres_dsn, postgres_db  # noqa: F401

``postgres_cluster`` (session scope) runs ``initdb`` and ``pg_ctl`` from Debian's
``/usr/lib/postgresql/*/bin`` (or ``$PATH``) once per session, on a free port of 127.0.0.1,
with trust authentication, no fsync and its socket in its own temporary directory, and yields
a :class:`Cluster` (``stop()``/``start()`` for tests of a database restart); ``postgres_dsn``
is the DSN of its ``postgres`` database. ``initdb`` refuses to run as root, so as root the cluster
runs as the unprivileged ``nobody`` (through ``runuser``; no login shell needed). Without
PostgreSQL the tests that use it skip, saying what to install, unless ``CI`` is set: there a
missing database is a failure, not a silent skip.

``fresh_database(dsn)`` (a function, also behind the ``postgres_db`` fixture) creates an empty
database in that cluster and returns its DSN, so tests never see each other's rows.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._ports import free_port

__all__ = [
    "Cluster",
    "cluster",
    "find_pg_bin",
    "fresh_database",
    "postgres_cluster",
    "postgres_db",
    "postgres_dsn",
]

UNPRIVILEGED_USER = "nobody"
_counter = itertools.count(1)

SYSTEM_TMP = tempfile.gettempdir()  # read at import, before any test moves TMPDIR


def find_pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl (newest Debian version first), or None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
        reverse=True,
    )
    found = candidates[0] if candidates else shutil.which("initdb")
    return Path(found).parent if found else None


def _as_cluster_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", UNPRIVILEGED_USER, "--", *argv]


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(
        _as_cluster_user(argv), capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr or proc.stdout}")


@dataclass
class Cluster:
    """A running throwaway cluster: its DSN, and stop()/start() to take it down and bring it
    back on the same port and data (as a restarted database server)."""

    bin_dir: Path
    data: Path
    log: Path
    options: str
    dsn: str

    def start(self) -> None:
        pg_ctl = str(self.bin_dir / "pg_ctl")
        _run(
            [pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", self.options, "-w", "start"],
            "pg_ctl start",
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session (clients see their connections cut), as a restart does."""
        _run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
            "pg_ctl stop",
        )


@contextlib.contextmanager
def cluster(bin_dir: Path) -> Iterator[Cluster]:
    """Run a throwaway cluster with the binaries of ``bin_dir``."""
    # In the system's temporary directory, not a test's own (TMPDIR is per test, and its
    # parent is root's alone: the unprivileged postgres user could not reach the cluster).
    root = Path(tempfile.mkdtemp(prefix="sqreen-pg-", dir=SYSTEM_TMP))
    if os.geteuid() == 0:
        user = pwd.getpwnam(UNPRIVILEGED_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
    root.chmod(0o700)
    data, port = root / "data", free_port()
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        running = Cluster(
            bin_dir, data, root / "log", options, f"postgresql://postgres@127.0.0.1:{port}/postgres"
        )
        running.start()
        try:
            yield running
        finally:
            running.stop("immediate")
    finally:
        _remove_later(root)


def _remove_later(root: Path) -> None:
    """Remove the stopped cluster's files in a process of their own, not waited for: the
    session's databases (one a test, never dropped) are tens of thousands of files, which
    took 7 to 10 s of each worker's last test to remove. (A shell starts ``rm`` in the
    background and exits: no child of this process is left running.)"""
    try:
        subprocess.run(
            ["sh", "-c", 'rm -rf -- "$1" &', "sh", str(root)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """The session's throwaway cluster (a test that stops it starts it again before it ends)."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        reason = "PostgreSQL is not installed (Debian: apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is a failure")
        pytest.skip(reason)
    with cluster(bin_dir) as running:
        yield running


@pytest.fixture(scope="session")
def postgres_dsn(postgres_cluster: Cluster) -> str:
    """The DSN of a throwaway cluster's ``postgres`` database, for the whole session."""
    return postgres_cluster.dsn


def fresh_database(dsn: str) -> str:
    """Create an empty database in the cluster of ``dsn``; return its DSN."""
    import psycopg

    name = f"t{os.getpid()}_{next(_counter)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def postgres_db(postgres_dsn: str) -> str:
    """The DSN of a new, empty database for one test."""
    return fresh_database(postgres_dsn)
