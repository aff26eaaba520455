"""One interface over every way the tests reach an app: test clients and real servers.

A :class:`Site` is one framework behind one way in (its test client, gunicorn, uvicorn), with
the real HTTP receiver its events go to. The scenarios in ``test_scenarios.py`` only speak to
sites, so each runs unchanged against Flask, Django (WSGI and ASGI) and FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import sqreen
from sqreen import _hub
from tests.receiver import Receiver

from ._servers import Gunicorn, Response, UvicornThread, http_request, raw_request

DJANGO_SETTINGS = "tests.integrations.apps.django_site.settings"
SITE_NAMES = [
    "flask-client",
    "flask-gunicorn",
    "django-client",
    "django-gunicorn",
    "django-uvicorn",
    "fastapi-client",
    "fastapi-uvicorn",
    "fastapi-gunicorn-asgi",
]
ROUTES = {
    "flask": {"echo": "/echo/<name>", "identify": "/identify"},
    "django": {"echo": "/echo/<str:name>", "identify": "/identify"},
    "fastapi": {"echo": "/echo/{name}", "identify": "/identify"},
}


class Site:
    framework: str
    #: A real server on 127.0.0.1 (else the framework's test client, in this process).
    server: bool = False
    #: The sqreen client serving the app is this process's (else a gunicorn worker's).
    in_process: bool = True
    #: Loopback is a trusted proxy (the default); real servers run with trusted_proxies=[].
    trusts_loopback: bool = True
    #: How 200 requests are held in flight at once: "threads", "tasks", "http" or None.
    concurrency: str | None = None
    barrier_path = "/barrier"
    #: The longest query string the way in lets through (gunicorn's request line limit).
    max_query = 1_000_000
    #: Whether a chunked upload reaches the app at all (Django's WSGI handler reads none).
    chunked_uploads = True
    port = 0

    def __init__(self, name: str, receiver: Receiver) -> None:
        self.name = name
        self.receiver = receiver

    def init_sqreen(self) -> None:
        """Per test, for in-process sites: a client sending to this site's receiver."""
        options: dict[str, Any] = {
            "endpoint": self.receiver.url,
            "flush_interval": 0.2,
            "heartbeat_interval": 0.2,
        }
        if not self.trusts_loopback:
            options["trusted_proxies"] = []
        sqreen.init(**options)

    def route(self, name: str) -> str:
        return ROUTES[self.framework][name]

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        source: str = "127.0.0.1",
    ) -> Response:
        return http_request(self.port, method, path, body, headers, source)

    def chunked(self, path: str, chunks: list[bytes], headers: dict[str, str]) -> Response:
        return http_request(self.port, "POST", path, iter(chunks), headers, chunked=True)

    def raw(self, data: bytes) -> Response:
        return raw_request(self.port, data)

    def bare(self, method: str, path: str, body: bytes = b"", **kw: Any) -> Response | None:
        """The same request to a twin app without sqreen (test clients only)."""
        return None

    def events(
        self, event_name: str, count: int = 1, timeout: float = 15.0, **props: Any
    ) -> list[Any]:
        """Events named ``event_name`` with ``props`` among their properties (``count`` awaited)."""
        if self.in_process:
            sqreen.flush(timeout=5.0)
        deadline = time.monotonic() + timeout
        while True:
            got = [
                e
                for e in list(self.receiver.events)
                if e["name"] == event_name
                and all(e["properties"].get(k) == v for k, v in props.items())
            ]
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def concurrent(self, paths: list[str]) -> list[Response]:
        """Send every request at once (the app holds them all with a barrier)."""
        with ThreadPoolExecutor(len(paths)) as pool:
            return list(pool.map(lambda p: self.request("GET", p), paths))

    def internal_errors(self) -> int:
        if self.in_process:
            return _hub.active.internal_errors if _hub.active else 0
        stats = [h.get("stats", {}) for h in self.receiver.heartbeats]
        return max((s.get("internal_errors", 0) for s in stats), default=0)

    def stop(self) -> None:
        self.receiver.stop()


# -- test clients --------------------------------------------------------------------------


class _ClientSite(Site):
    """A framework's test client, in this process, with a twin app served without sqreen."""

    def call(
        self, twin: bool, method: str, path: str, body: bytes, headers: Any, source: str
    ) -> Response:
        raise NotImplementedError

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Any = None,
        source: str = "127.0.0.1",
    ) -> Response:
        return self.call(False, method, path, body, headers, source)

    def bare(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Any = None,
        source: str = "127.0.0.1",
    ) -> Response:
        return self.call(True, method, path, body, headers, source)


class FlaskClient(_ClientSite):
    framework = "flask"
    concurrency = "threads"

    def __init__(self, name: str, receiver: Receiver) -> None:
        super().__init__(name, receiver)
        from .apps.flask_app import create_app

        self.apps = {False: create_app(), True: create_app(with_sqreen=False)}

    def call(
        self, twin: bool, method: str, path: str, body: bytes, headers: Any, source: str
    ) -> Response:
        response = (
            self.apps[twin]
            .test_client()
            .open(
                path,
                method=method,
                data=body,
                headers=headers or {},
                environ_base={"REMOTE_ADDR": source},
            )
        )
        return Response(response.status_code, response.get_data(), dict(response.headers))


class DjangoClient(_ClientSite):
    framework = "django"
    concurrency = "threads"

    def call(
        self, twin: bool, method: str, path: str, body: bytes, headers: Any, source: str
    ) -> Response:
        from django.test import Client, override_settings

        headers = dict(headers or {})
        content_type = headers.pop("Content-Type", "application/octet-stream")
        with override_settings(MIDDLEWARE=[]) if twin else contextlib.nullcontext():
            response = Client().generic(
                method, path, body, content_type, headers=headers, REMOTE_ADDR=source
            )
        content = b"".join(response) if response.streaming else response.content
        return Response(response.status_code, content, dict(response.items()))


class FastAPIClient(_ClientSite):
    framework = "fastapi"
    concurrency = "tasks"
    max_query = 60_000  # httpx2 refuses longer URLs

    def __init__(self, name: str, receiver: Receiver) -> None:
        super().__init__(name, receiver)
        from .apps.fastapi_app import create_app

        self.app = create_app()
        self.apps = {False: self.app, True: create_app(with_sqreen=False)}

    def call(
        self, twin: bool, method: str, path: str, body: bytes, headers: Any, source: str
    ) -> Response:
        from starlette.testclient import TestClient

        client = TestClient(self.apps[twin], client=(source, 50000), raise_server_exceptions=False)
        raw = {k: v.encode("latin-1") for k, v in (headers or {}).items()}  # as a server would
        response = client.request(method, path, content=body, headers=raw)
        return Response(response.status_code, response.content, dict(response.headers))

    def concurrent(self, paths: list[str]) -> list[Response]:
        import httpx2

        async def main() -> list[Response]:
            transport = httpx2.ASGITransport(app=self.app, client=("127.0.0.1", 50000))
            async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
                replies = await asyncio.gather(*(client.get(p) for p in paths))
            return [Response(r.status_code, r.content) for r in replies]

        return asyncio.run(main())


# -- real servers ----------------------------------------------------------------------------


class _Server(Site):
    server = True
    trusts_loopback = False
    concurrency = "http"

    def __init__(self, name: str, receiver: Receiver) -> None:
        super().__init__(name, receiver)
        self.proc: Any = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        super().stop()


def _subprocess_env(receiver: Receiver) -> dict[str, str]:
    return {
        "SQREEN_ENDPOINT": receiver.url,
        "SQREEN_FLUSH_INTERVAL": "0.2",
        "SQREEN_HEARTBEAT_INTERVAL": "0.2",
        "SQREEN_TEST_UNTRUSTED": "1",
        "DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS,
    }


class GunicornSite(_Server):
    in_process = False
    max_query = 3000  # gunicorn refuses request lines past 4094 bytes

    def __init__(
        self, name: str, receiver: Receiver, framework: str, app: str, worker: str
    ) -> None:
        super().__init__(name, receiver)
        self.framework = framework
        self.proc = Gunicorn(app, _subprocess_env(receiver), worker)
        self.port = self.proc.port
        if worker == "sync":
            self.concurrency = None  # one request at a time
        if framework == "django" and worker == "sync":
            self.chunked_uploads = False


class UvicornSite(_Server):
    max_query = 3000

    def __init__(
        self, name: str, receiver: Receiver, framework: str, app: Any, **options: Any
    ) -> None:
        super().__init__(name, receiver)
        self.framework = framework
        self.proc = UvicornThread(app, **options)
        self.port = self.proc.port


def make_site(name: str, receiver: Receiver) -> Site:
    framework = name.split("-")[0]
    pytest.importorskip(framework)
    if framework == "django":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", DJANGO_SETTINGS)
        import django

        django.setup()
    if name != "django-client" and framework != "flask":
        pytest.importorskip("uvicorn" if "uvicorn" in name else "gunicorn")
    factories: dict[str, Callable[[], Site]] = {
        "flask-client": lambda: FlaskClient(name, receiver),
        "flask-gunicorn": lambda: GunicornSite(
            name, receiver, "flask", "tests.integrations.apps.flask_app:app", "sync"
        ),
        "django-client": lambda: DjangoClient(name, receiver),
        "django-gunicorn": lambda: GunicornSite(
            name, receiver, "django", "tests.integrations.apps.django_site.wsgi:application", "sync"
        ),
        "django-uvicorn": lambda: _django_uvicorn(name, receiver),
        "fastapi-client": lambda: FastAPIClient(name, receiver),
        "fastapi-uvicorn": lambda: _fastapi_uvicorn(name, receiver),
        "fastapi-gunicorn-asgi": lambda: GunicornSite(
            name, receiver, "fastapi", "tests.integrations.apps.fastapi_app:app", "asgi"
        ),
    }
    return factories[name]()


def _django_uvicorn(name: str, receiver: Receiver) -> Site:
    from django.core.asgi import get_asgi_application

    site = UvicornSite(name, receiver, "django", get_asgi_application(), lifespan="off")
    site.barrier_path = "/abarrier"
    return site


def _fastapi_uvicorn(name: str, receiver: Receiver) -> Site:
    from .apps.fastapi_app import create_app

    return UvicornSite(name, receiver, "fastapi", create_app(), lifespan="on")
