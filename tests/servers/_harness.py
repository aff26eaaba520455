"""A real server in a subprocess on 127.0.0.1, with sqreen pointed at a receiver.

Each server runs in a session of its own, so that a test can signal its main process, its
workers, or all of them at once (``group``: what systemd's default ``KillMode=control-group``
does on ``systemctl stop``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

from tests.integrations._servers import ROOT, free_port, http_request, wait_for_port
from tests.receiver import Receiver

__all__ = ["RESEND_AFTER", "Served", "get_json"]

#: Seconds a stop waits before it sends SIGTERM again to the workers it was told to
#: (:meth:`Served.stop`): longer than a worker's delivery at exit may take
#: (``SQREEN_SHUTDOWN_TIMEOUT``, 5 s here).
RESEND_AFTER = 8.0


class Served:
    """``argv`` (``{port}`` is replaced) served on a free port; ``SQREEN_*`` from ``env``."""

    def __init__(
        self, argv: list[str], receiver: Receiver | None, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SQREEN_") and k != "FORWARDED_ALLOW_IPS"
        }
        full_env["PYTHONPATH"] = ROOT
        full_env["SQREEN_SHUTDOWN_TIMEOUT"] = "5"
        if receiver is not None:
            full_env["SQREEN_ENDPOINT"] = receiver.url
        full_env.update(env or {})
        argv = [sys.executable if a == "python" else a.format(port=self.port) for a in argv]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_foreground_signals,
        )
        if not wait_for_port(self.port, 30, self.proc):
            self.kill()
            raise RuntimeError(f"{argv} did not start:\n{self.output()}")

    def get(
        self, path: str, headers: dict[str, str] | None = None, source: str = "127.0.0.1"
    ) -> Any:
        return get_json(self.port, path, headers, source)

    def ready(self) -> bool:
        """Whether a worker answers ``/ping`` (which tracks nothing)."""
        try:
            return isinstance(self.get("/ping"), dict)
        except OSError:
            return False

    def stop(
        self,
        sig: int,
        target: str = "main",
        workers: set[int] = frozenset(),
        resend: set[int] = frozenset(),
    ) -> int:
        """Send ``sig`` to the main process, to ``workers`` or to the whole ``group``; return
        the exit status (the negative signal number when it died of one).

        ``resend``: workers sent SIGTERM again, once, when the server still runs after
        :data:`RESEND_AFTER` seconds: a granian WSGI worker loses the SIGTERM the kernel gives
        to a thread of tokio's starting at that instant (:data:`tests.servers.test_shutdown.
        LOST_SIGTERM`)."""
        if target == "group":
            os.killpg(self.proc.pid, sig)
        elif target == "workers":
            for pid in workers:
                os.kill(pid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            if resend:
                try:
                    return self.proc.wait(RESEND_AFTER)
                except subprocess.TimeoutExpired:
                    for pid in resend:
                        self._resend(pid)
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            status = _signal_status(self.proc.pid)
            self.kill()
            raise AssertionError(f"the server did not stop ({status}):\n{self.output()}") from None

    def _resend(self, pid: int) -> None:
        """SIGTERM to ``pid`` if it is still a worker of this server."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rpartition(")")[2].split()[1])
            if parent == self.proc.pid:
                os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):  # (gone meanwhile: nothing to stop)
            pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.log.close()

    def output(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()


def _foreground_signals() -> None:
    """In the child: SIGINT and SIGQUIT as a shell gives a foreground job (a shell without job
    control starts background ones with both ignored, and so would the server be)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def _signal_status(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return " ".join(line.strip() for line in f if line.startswith(("SigBlk", "SigIgn")))
    except OSError:
        return "no status"


def get_json(
    port: int, path: str, headers: dict[str, str] | None = None, source: str = "127.0.0.1"
) -> Any:
    response = http_request(port, "GET", path, headers=headers, source=source)
    if response.status != 200:
        return response.status
    return json.loads(response.body)
