"""``sqreen serve`` binds its address before anything else: a taken port stops it with the
reason, before the database is opened or anything says the collector started."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from .conftest import SQREEN, free_port


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


def test_an_ipv6_host_leaves_ipv4_free_as_uvicorn_did(tmp_path: Path) -> None:
    """The check binds as the server will, then lets go: ``--host ::`` listens on IPv6 only
    (asyncio's IPV6_V6ONLY), so IPv4's wildcard on the same port stays another program's."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*SQREEN, "serve", "--db", str(tmp_path / "x.db"), "--host", "::", "--port", str(port)],
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 30
        while "startup complete" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert httpx.get(f"http://[::1]:{port}/healthz", timeout=5).status_code == 200
        with socket.socket() as v4:
            v4.bind(("0.0.0.0", port))  # free: the collector did not take it
        assert "Event Explorer" not in log.read_text() or f"[::]:{port}" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_0_serves_on_the_port_it_says(tmp_path: Path, workers: str) -> None:
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*SQREEN, "serve", "--db", str(tmp_path / "x.db"), "--port", "0", "--workers", workers],
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"running on http://127\.0\.0\.1:(\d+)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        url = f"http://127.0.0.1:{found.group(1)}/healthz"
        assert found.group(1) != "0"
        while True:
            try:
                assert httpx.get(url, timeout=1).status_code == 200
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(15)
