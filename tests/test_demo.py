"""``make demo`` as a newcomer runs it: the attacker stopped by a playbook, a block by hand,
and Ctrl-C in the terminal (SIGINT to the whole process group) stopping everything once,
without a traceback in any log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from tests.integrations._servers import ROOT

pytestmark = pytest.mark.slow


def test_the_demo_stops_the_attacker_and_ctrl_c_stops_it_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    env["DEMO_DATA"] = str(tmp_path / "demo-data")
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        # A session of its own, as a terminal gives a job: SIGINT goes to the whole group.
        demo = subprocess.Popen(
            [sys.executable, "-m", "examples.demo"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while b"press Ctrl-C" not in out.read_bytes():
            assert demo.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C
        assert demo.wait(30) == 0, out.read_text()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    text = out.read_text()
    assert "it was refused (403): the built-in playbook brute-force-ip blocked it" in text
    assert "blocked 198.51.100.7 by hand with sqreen block ip: refused" in text
    assert "bob, from another IP, still logs in: 200" in text
    alerts = text.split("sqreen alerts")[1].split("Where to look")[0]
    assert "brute-force-ip: " in alerts  # the alert, listed
    # The IP blocked by hand was probed without wrong passwords: no brute force of its own.
    assert "198.51.100.7" not in alerts
    terminal = next(line for line in text.splitlines() if line.strip().startswith("Terminal"))
    assert Path(terminal.split()[1]).is_absolute()  # to paste from any directory
    assert text.rstrip().endswith("demo: stopped")
    for log in ("app.log", "collector.log"):
        content = (tmp_path / "demo-data" / log).read_text()
        assert "Traceback" not in content, content[-3000:]


def test_a_port_another_server_holds_is_not_taken_for_the_demo_s(tmp_path: Path) -> None:
    """Two demos started at once both found 8000 free: the second's collector could not bind
    it and exited, and the demo went on with the first's collector (which refuses its key),
    saying nothing of it. It now waits for its own collector, and says when it exited."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from examples.demo import wait_http

    asked = threading.Event()

    class OtherCollector(BaseHTTPRequestHandler):  # the other demo's: our key is not its
        def do_GET(self) -> None:
            asked.set()
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), OtherCollector)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    log = tmp_path / "collector.log"
    log.write_text("ERROR: [Errno 98] error while attempting to bind on address\n")
    # Ours: up until the other has refused the demo's key, then gone.
    ours = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    assert ours.stdin is not None
    threading.Thread(target=lambda: asked.wait(15) and ours.stdin.close(), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{other.server_address[1]}/healthz?verbose=1"
        with pytest.raises(SystemExit) as exited:
            wait_http(url, ours, log, token="demo-key", timeout=15)
        assert "the server of collector.log exited" in str(exited.value)
        assert "error while attempting to bind" in str(exited.value)
    finally:
        ours.kill()
        ours.wait()
        other.shutdown()
        other.server_close()
