"""waitress behind a real nginx on the same host (the README's recommended set-up).

waitress removes ``X-Forwarded-For`` unless told to trust the proxy, so with its defaults every
request comes from 127.0.0.1 and no IP block can work: sqreen says so once. Configured as the
README says (nginx sets ``X-Real-IP $remote_addr``, sqreen reads it and trusts only the proxy's
own address), the recorded IP is the client's, whatever the client forwarded itself.

nginx (Debian's, installed by ``scripts/system-deps.sh``) runs in the foreground, without a
master process, on loopback ports, with a configuration this module writes. The clients
connect from 127.0.0.2, an address of their own: that is what nginx sees as
``$remote_addr``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqreen._ip_warnings import SILENT_PROXY_EVENTS
from tests.integrations._servers import ROOT, free_port, wait_for_port, wait_until
from tests.receiver import Receiver

from ._harness import Served, get_json

pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
CLIENT = "127.0.0.2"
WAITRESS = ["python", "-m", "waitress", "--host", "127.0.0.1", "--port", "{port}"]
APP = "tests.servers.apps:wsgi_app"
#: The README's sqreen settings behind nginx on the same host.
README_SETTINGS = {"SQREEN_CLIENT_IP_HEADER": "X-Real-IP", "SQREEN_TRUSTED_PROXIES": "127.0.0.1"}

CONFIG = """\
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{servers}
}}
"""


def readme_location() -> str:
    """The README's nginx ``location`` block, as written there."""
    text = (Path(ROOT) / "README.md").read_text()
    block = text.split("```nginx\n", 1)[1].split("```", 1)[0]
    assert "proxy_pass http://127.0.0.1:8000;" in block
    return block


def server_block(listen: int, upstream: int) -> str:
    """A ``server`` on ``listen`` around the README's block, proxying to ``upstream``."""
    location = readme_location().replace("127.0.0.1:8000", f"127.0.0.1:{upstream}")
    return f"    server {{\n        listen 127.0.0.1:{listen};\n{location}    }}\n"


class Nginx:
    """nginx in front of each upstream port: ``ports[upstream]`` is where it listens."""

    def __init__(self, upstreams: list[int], directory: Path) -> None:
        assert NGINX is not None
        self.ports = {upstream: free_port() for upstream in upstreams}
        servers = "".join(server_block(listen, upstream) for upstream, listen in self.ports.items())
        conf = directory / "nginx.conf"
        conf.write_text(CONFIG.format(dir=directory, servers=servers))
        self.log = open(directory / "nginx.log", "w+")
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(directory), "-c", str(conf), "-e", "stderr"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        for port in self.ports.values():
            if not wait_for_port(port, 10, self.proc):
                self.stop()
                self.log.seek(0)
                raise RuntimeError(f"nginx did not start:\n{self.log.read()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def waitresses(receiver: Receiver) -> Iterator[dict[str, Served]]:
    quick = {"SQREEN_FLUSH_INTERVAL": "0.05"}
    servers = {
        "defaults": Served([*WAITRESS, APP], receiver, quick),
        "readme": Served([*WAITRESS, APP], receiver, {**quick, **README_SETTINGS}),
    }
    yield servers
    for server in servers.values():
        server.kill()


@pytest.fixture(scope="module")
def nginx(
    waitresses: dict[str, Served], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, int]]:
    if NGINX is None:
        pytest.skip("nginx is not installed (scripts/system-deps.sh installs it, as root)")
    proxy = Nginx([s.port for s in waitresses.values()], tmp_path_factory.mktemp("nginx"))
    yield {name: proxy.ports[server.port] for name, server in waitresses.items()}
    proxy.stop()


def _ips(receiver: Receiver, first: int, count: int) -> list[str | None]:
    wanted = set(range(first, first + count))

    def found() -> list[str | None]:
        return [
            e["request"]["ip"]
            for e in list(receiver.events)
            if e["name"] == "server.event" and e["properties"]["n"] in wanted
        ]

    wait_until(lambda: len(found()) >= count, timeout=30)  # returns on delivery
    return found()


def test_waitress_defaults_record_the_proxy_and_sqreen_says_so(
    nginx: dict[str, int], waitresses: dict[str, Served], receiver: Receiver
) -> None:
    server = waitresses["defaults"]
    for n in range(SILENT_PROXY_EVENTS):
        get_json(nginx["defaults"], f"/track?n={n}", source=CLIENT)
    # waitress dropped the X-Forwarded-For nginx sent: every client is the proxy.
    assert _ips(receiver, 0, SILENT_PROXY_EVENTS) == ["127.0.0.1"] * SILENT_PROXY_EVENTS
    warning = "a trusted proxy, without a X-Forwarded-For header"
    assert wait_until(lambda: warning in server.output(), timeout=5), server.output()
    get_json(nginx["defaults"], f"/track?n={SILENT_PROXY_EVENTS}", source=CLIENT)
    _ips(receiver, SILENT_PROXY_EVENTS, 1)
    assert server.output().count(warning) == 1


def test_configured_as_the_readme_says_the_client_ip_is_the_clients(
    nginx: dict[str, int], waitresses: dict[str, Served], receiver: Receiver
) -> None:
    forged = {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6"}
    get_json(nginx["readme"], "/track?n=100", forged, source=CLIENT)
    get_json(nginx["readme"], "/track?n=101", source=CLIENT)
    assert _ips(receiver, 100, 2) == [CLIENT, CLIENT]
    # A local process that skips nginx is not the proxy: it cannot choose its IP either.
    get_json(waitresses["readme"].port, "/track?n=102", forged, source=CLIENT)
    assert _ips(receiver, 102, 1) == [CLIENT]
    assert "without a X-Real-IP header" not in waitresses["readme"].output()
