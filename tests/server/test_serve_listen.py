"""``sqreen serve`` binds its address before anything else: a taken port stops it with the
reason, before the database is opened or anything says the collector started."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from .conftest import SQREEN, free_port, wait_for, wait_until_up


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_stops_serve_before_anything_starts(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "x.db"
        done = subprocess.run(
            [*SQREEN, "serve", "--db", str(db), "--port", str(port), "--workers", workers],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in done.stderr
    assert "pick another --port" in done.stderr
    assert "startup complete" not in done.stderr and "Event Explorer" not in done.stderr
    assert not db.exists()  # refused before the database was opened (or created)


def test_an_address_of_no_interface_names_host(tmp_path: Path) -> None:
    done = subprocess.run(
        [*SQREEN, "serve", "--db", str(tmp_path / "x.db"), "--host", "192.0.2.77"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "cannot listen on 192.0.2.77:8000" in done.stderr and "--host" in done.stderr


@contextlib.contextmanager
def serving(tmp_path: Path, *options: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``sqreen serve OPTIONS`` on a new database, its output in a file; stopped after."""
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*SQREEN, "serve", "--db", str(tmp_path / "x.db"), *options], stdout=out, stderr=out
        )
    try:
        yield proc, log
    finally:
        proc.terminate()
        proc.wait(15)


def said(proc: subprocess.Popen[bytes], log: Path, pattern: str) -> re.Match[str]:
    """The first match of ``pattern`` in the output, once written (the process still up)."""
    wait_for(lambda: proc.poll() is not None or re.search(pattern, log.read_text()) is not None)
    found = re.search(pattern, log.read_text())
    assert found is not None and proc.poll() is None, log.read_text()
    return found


def test_an_ipv6_host_leaves_ipv4_free_as_uvicorn_did(tmp_path: Path) -> None:
    """The check binds as the server will, then lets go: ``--host ::`` listens on IPv6 only
    (asyncio's IPV6_V6ONLY), so IPv4's wildcard on the same port stays another program's."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    port = free_port()
    with serving(tmp_path, "--host", "::", "--port", str(port)) as (proc, log):
        said(proc, log, "startup complete")
        assert httpx.get(f"http://[::1]:{port}/healthz", timeout=5).status_code == 200
        with socket.socket() as v4:
            v4.bind(("0.0.0.0", port))  # free: the collector did not take it
        assert "Event Explorer" not in log.read_text() or f"[::]:{port}" in log.read_text()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_0_serves_on_the_port_it_says(
    tmp_path: Path, workers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's line and the explorer's address (it said port 0) name the port served."""
    monkeypatch.setenv("SQREEN_ADMIN_PASSWORD", "a long enough admin password")
    with serving(tmp_path, "--port", "0", "--workers", workers) as (proc, log):
        found = said(proc, log, r"running on http://127\.0\.0\.1:(\d+)")
        assert found.group(1) != "0"
        explorer = said(proc, log, r"Event Explorer: http://127\.0\.0\.1:(\d+)/explorer/")
        assert explorer.group(1) == found.group(1)
        wait_until_up(f"http://127.0.0.1:{found.group(1)}", proc)


def test_port_0_on_every_interface_is_a_port_free_on_each_address() -> None:
    from sqreen.server._listen import check_listen

    port = check_listen("", 0)
    assert port > 0
    with contextlib.ExitStack() as held:  # what uvicorn then binds: each address, that port
        for family, address in (
            (socket.AF_INET, ("0.0.0.0", port)),
            (socket.AF_INET6, ("::", port)),
        ):
            if family == socket.AF_INET6 and not socket.has_ipv6:
                continue
            sock = held.enter_context(socket.socket(family))
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    assert check_listen("127.0.0.1", port) == port  # a given port is returned as it is
