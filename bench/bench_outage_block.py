"""Time to block after the collector was down: from its return to an attacker's first 403.

    .venv/bin/python bench/bench_outage_block.py [--down 30] [--trials 4] [--against REV]

Method
------
``sqreen serve`` (SQLite, the six built-in playbooks enforced) and a FastAPI app on uvicorn
whose login endpoint tracks every try as a failure, its SDK on the HTTP transport with every
default; the attacker comes through ``X-Forwarded-For`` from the loopback proxy and tries
every 0.3 s. After its 2nd try the collector is stopped (SIGTERM), left down ``--down``
seconds and started again on the same database; the attacker goes on all along. The figures,
for each trial (a new attacker address each): the tries answered before the first 403 (most
of them while nothing could count them), and the seconds from the collector answering its
``/livez`` again to that 403: what the SDK's back-off after failures adds.

``--against REV`` runs the same with the SDK of git revision ``REV`` in the app (its
``sqreen`` package exported with ``git archive``; the collector is this tree's), at the same
time on other ports: both see the same machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from revisions import extract  # noqa: E402

BIN = Path(sys.executable).parent
APP = """
from fastapi import FastAPI, HTTPException
from sqreen.integrations.fastapi import SqreenMiddleware
import sqreen

app = FastAPI()
app.add_middleware(SqreenMiddleware)


@app.post("/login")
async def login():
    sqreen.auth_track(False, username="alice")
    raise HTTPException(401, "wrong username or password")
"""


def wait_up(url: str) -> None:
    for _ in range(400):
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"not up: {url}")


class Setup:
    """A collector and an app whose SDK is the package under ``sdk`` (a directory holding
    ``sqreen``), on ports ``base`` and ``base + 1``."""

    def __init__(self, sdk: str, base: int, workdir: str) -> None:
        self.sdk, self.cport, self.aport = sdk, base, base + 1
        self.db = os.path.join(workdir, f"c{base}.db")
        self.playbooks = os.path.join(workdir, "playbooks.toml")
        made = subprocess.run(
            [str(BIN / "sqreen"), "keys", "create", "--db", self.db],
            capture_output=True,
            text=True,
            check=True,
        )
        self.token = made.stdout.split()[-1]
        templates = subprocess.run(
            [str(BIN / "sqreen"), "playbooks", "init"], capture_output=True, text=True, check=True
        ).stdout
        Path(self.playbooks).write_text(templates)
        Path(workdir, "outage_app.py").write_text(APP)
        self.collector = self._collector()
        wait_up(f"http://127.0.0.1:{self.cport}/livez")
        env = {
            **os.environ,
            "PYTHONPATH": sdk,
            "SQREEN_ENDPOINT": f"http://127.0.0.1:{self.cport}",
            "SQREEN_TOKEN": self.token,
        }
        self.app = subprocess.Popen(
            [str(BIN / "python"), "-m", "uvicorn", "outage_app:app", "--port", str(self.aport),
             "--app-dir", workdir, "--log-level", "warning"],
            env=env,
            cwd=workdir,  # python -m puts it first on the path: from the checkout, this tree's
            # package hid the one of --against's revision
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_up(f"http://127.0.0.1:{self.aport}/docs")
        self.back_at = 0.0

    def _collector(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(BIN / "sqreen"), "serve", "--db", self.db, "--port", str(self.cport),
             "--playbooks", self.playbooks, "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def restart(self, down: float) -> None:
        self.collector.send_signal(signal.SIGTERM)
        self.collector.wait(30)
        time.sleep(down)
        self.collector = self._collector()
        wait_up(f"http://127.0.0.1:{self.cport}/livez")
        self.back_at = time.monotonic()

    def trial(self, ip: str, down: float) -> tuple[int, float]:
        """Tries answered before the first 403, and seconds from the collector back to it."""
        answered = 0
        restarting: threading.Thread | None = None
        for n in range(100_000):
            status = httpx.post(
                f"http://127.0.0.1:{self.aport}/login",
                headers={"X-Forwarded-For": ip},
                timeout=30,
            ).status_code
            if status == 403:
                break
            answered += 1
            if n == 1:
                restarting = threading.Thread(target=self.restart, args=(down,))
                restarting.start()
            time.sleep(0.3)
        assert restarting is not None
        restarting.join()
        return answered, time.monotonic() - self.back_at

    def close(self) -> None:
        for process in (self.app, self.collector):
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def run(label: str, sdk: str, base: int, down: float, trials: int, out: dict[str, list]) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        setup = Setup(sdk, base, workdir)
        try:
            time.sleep(2)
            out[label] = [setup.trial(f"198.51.100.{10 + t}", down) for t in range(trials)]
        finally:
            setup.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--down", type=float, default=30.0, help="seconds the collector is down")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--against", metavar="REV", help="also the SDK of git REV")
    parser.add_argument("--port", type=int, default=41001, help="the first of the ports used")
    args = parser.parse_args()
    results: dict[str, list] = {}
    runs = [
        threading.Thread(
            target=run, args=("this tree", str(ROOT), args.port, args.down, args.trials, results)
        )
    ]
    with tempfile.TemporaryDirectory() as tmp:
        if args.against:
            extract(args.against, tmp)
            other = (args.against, tmp, args.port + 2, args.down, args.trials, results)
            runs.append(threading.Thread(target=run, args=other))
        for thread in runs:
            thread.start()
            time.sleep(1)
        for thread in runs:
            thread.join()
    print(f"\ncollector down {args.down:g} s, {args.trials} trials, an attacker trying every 0.3 s")
    print("\n| SDK | tries answered before the 403 | seconds from the collector back to it |")
    print("| --- | --- | --- |")
    for label, trials in results.items():
        tries = ", ".join(str(n) for n, _ in trials)
        lags = ", ".join(f"{s:.1f}" for _, s in trials)
        print(f"| {label} | {tries} | {lags} |")


if __name__ == "__main__":
    main()
