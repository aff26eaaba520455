"""What is particular to the Django middleware (the shared scenarios are in test_scenarios.py)."""

from __future__ import annotations

import asyncio
import gc
import os
import weakref
from typing import Any

import pytest

pytest.importorskip("django")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integrations.apps.django_site.settings")

import django

django.setup()

from asgiref.sync import markcoroutinefunction  # noqa: E402
from django.core import checks  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.test import AsyncClient, Client, RequestFactory, override_settings  # noqa: E402

import sqreen  # noqa: E402
from sqreen.integrations.django import SqreenMiddleware, check_middleware  # noqa: E402
from sqreen.testing import CapturedEvents  # noqa: E402
from tests.integrations._ticks import Ticks  # noqa: E402
from tests.receiver import Receiver, SilentServer  # noqa: E402

OURS = "sqreen.integrations.django.SqreenMiddleware"
SESSION = "django.contrib.sessions.middleware.SessionMiddleware"


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


def test_the_system_check() -> None:
    assert ids(check_middleware()) == []
    with override_settings(MIDDLEWARE=[SESSION, OURS]):
        assert ids(check_middleware()) == ["sqreen.W001"]
        assert "sqreen.W001" in ids(checks.run_checks())  # registered with Django
    with override_settings(MIDDLEWARE=[SESSION]):
        assert ids(check_middleware()) == ["sqreen.W002"]
    with override_settings(SQREEN=["endpoint"]):
        assert ids(check_middleware()) == ["sqreen.E001"]
    # The values too: manage.py check says what the middleware would refuse at start.
    with override_settings(SQREEN={"flush_interval": "soon"}):
        (message,) = check_middleware()
        assert message.id == "sqreen.E002"
        assert "flush_interval" in message.msg and "soon" in message.msg
    with override_settings(SQREEN={"flush_interval": 2, "strict": "no"}):
        assert ids(check_middleware()) == []
    # Every wrong option at once, so that one run of `check` lists all there is to fix.
    bad = {"flush_interval": "soon", "endpont": "x", "max_queue_size": -1, 3: "y"}
    with override_settings(SQREEN=bad):
        found = check_middleware()
        assert ids(found) == ["sqreen.E002"] * 4
        text = "\n".join(m.msg for m in found)
        for name in ("flush_interval", "'endpont'", "max_queue_size", "must be strings"):
            assert name in text
    with override_settings(SQREEN={f"opt{i}": 1 for i in range(2000)}):
        found = check_middleware()
        assert len(found) == 21 and "and 1980 more wrong options" in found[-1].msg


def test_the_system_check_of_a_project_configured_by_the_environment_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No ``SQREEN`` setting: the check read nothing, ``manage.py check`` passed, and the
    middleware refused to start under gunicorn."""
    from django.conf import settings

    monkeypatch.setenv("SQREEN_FLUSH_INTERVAL", "abc")
    with override_settings():
        del settings.SQREEN
        (message,) = check_middleware()
    assert message.id == "sqreen.E002", message
    assert message.msg.startswith("sqreen's configuration: flush_interval"), message.msg
    assert "SQREEN_FLUSH_INTERVAL" in message.msg


def test_no_middleware_warning_where_sqreen_start_adds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQREEN_TRANSPORT", "memory:")
    with override_settings(MIDDLEWARE=[SESSION]):
        assert ids(check_middleware()) == ["sqreen.W002"]
        sqreen.start()  # as code written for Sqreen's agent does: the middleware comes first
        assert ids(check_middleware()) == []


def test_a_wrong_sqreen_setting_fails_at_start() -> None:
    with override_settings(SQREEN="http://127.0.0.1:8000"), pytest.raises(ImproperlyConfigured):
        SqreenMiddleware(lambda request: HttpResponse())
    with (
        override_settings(SQREEN={"endpont": "x"}),
        pytest.raises(sqreen.ConfigError, match="endpont"),
    ):
        SqreenMiddleware(lambda request: HttpResponse())


def test_a_client_that_cannot_be_made_at_a_request_is_said_once_and_passed_through(
    monkeypatch: pytest.MonkeyPatch, sqreen_log: pytest.LogCaptureFixture
) -> None:
    """The configuration broken after the start (the client shut down, ``SQREEN_*`` then
    wrong): requests are served with a handle that does nothing and one error is logged,
    not an internal error with its traceback at every request."""
    import logging

    from sqreen import _hub

    monkeypatch.setenv("SQREEN_TRANSPORT", "memory:")
    served = Client()  # its handler loads the middlewares once, as a server's does
    served.get("/echo/first")
    sqreen.shutdown(timeout=1)
    monkeypatch.setenv("SQREEN_MAX_QUEUE_SIZE", "many")
    for _ in range(20):
        response = served.get("/echo/x")
        assert response.status_code == 200
        assert response.wsgi_request.sqreen.track("more") is False  # type: ignore[attr-defined]
    assert _hub.active is None
    said = [r.getMessage() for r in sqreen_log.records if r.levelno >= logging.ERROR]
    assert len(said) == 1 and "SQREEN_MAX_QUEUE_SIZE" in said[0], said


def test_configured_from_settings(receiver: Receiver) -> None:
    with override_settings(SQREEN={"endpoint": receiver.url, "app_name": "django-settings"}):
        Client().get("/identify?uid=u1&marker=settings")
    assert sqreen.flush(5.0)
    assert [e["name"] for e in receiver.events] == ["identified"]
    assert receiver.batches[0]["app"]["framework"] == "django"
    assert receiver.batches[0]["app"]["name"] == "django-settings"


def test_the_first_asgi_request_s_wait_for_the_action_set_leaves_the_loop_serving() -> None:
    """``block_on_start_timeout`` with a collector that never answers: the first request
    waits for the blocks on a worker thread, and the event loop runs other tasks meanwhile
    (it ran none: the wait was in the loop's thread)."""
    silent = SilentServer()
    ticks = Ticks()

    async def main() -> int:
        task = asyncio.create_task(ticks.run())
        response = await AsyncClient().get("/async/7")
        task.cancel()
        return int(response.status_code)

    try:
        settings = {"endpoint": silent.url, "block_on_start_timeout": 1, "app_name": "wait"}
        with override_settings(SQREEN=settings):
            assert asyncio.run(main()) == 200
        assert ticks.count >= 5, f"the loop ran {ticks.count} ticks in the first request"
    finally:
        sqreen.shutdown(timeout=0.5)
        silent.close()


def test_async_views_under_asgi(sqreen_events: CapturedEvents) -> None:
    async def main() -> None:
        response = await AsyncClient().get("/async/7", headers={"User-Agent": "async-ua"})
        assert response.json() == {"item": 7}
        sqreen_events.block([{"id": "b", "type": "block_user", "user": {"uid": "async-9"}}])
        assert (await AsyncClient().get("/async/9")).status_code == 403

    asyncio.run(main())
    event, refusal = sqreen_events
    assert (refusal["name"], refusal["properties"]) == (
        "security.blocked",
        {"block_id": "b", "kind": "user", "count": 1},
    )
    assert event["user"] == {"uid": "async-7"}
    assert event["request"]["route"] == "/async/<int:item>"
    assert event["request"]["user_agent"] == "async-ua"


# Django's own warning when a sync generator is served under ASGI, or an async one under WSGI.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
@pytest.mark.parametrize("view", ["stream", "astream"])
def test_code_run_while_the_body_streams_sees_its_request(
    sqreen_events: CapturedEvents, interface: str, view: str
) -> None:
    """``sqreen.track()`` in a streaming response's generator runs after the view returned
    (the middleware has unbound the request): each chunk is made with it bound again, so
    the event has its IP and path, and two responses read interleaved keep theirs."""
    if interface == "wsgi":
        first, second = Client().get(f"/{view}/1"), Client().get(f"/{view}/2")
        bodies = [b"".join(second), b"".join(first)]  # (Django's sync iteration of either)
    else:

        async def main() -> list[bytes]:
            first = await AsyncClient().get(f"/{view}/1")
            second = await AsyncClient().get(f"/{view}/2")
            return [b"".join([c async for c in r]) for r in (second, first)]

        bodies = asyncio.run(main())
    assert bodies == [b"2:0;2:1;", b"1:0;1:1;"]
    seen = {
        (e["properties"]["n"], e["properties"]["i"], e["request"]["path"]) for e in sqreen_events
    }
    assert seen == {(n, i, f"/{view}/{n}") for n in "12" for i in (0, 1)}
    assert all(e["request"]["ip"] == "127.0.0.1" for e in sqreen_events)


@pytest.mark.parametrize("caught", [False, True])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_block_while_a_stream_goes_aborts_it(
    sqreen_events: CapturedEvents, caught: bool, kind: str
) -> None:
    """A streaming response's generator meets a blocked user once its headers went: the
    response is aborted (``ResponseAborted``, an error servers drop the connection for) and
    none of the rest goes. The ``Blocked`` itself reached the server (gunicorn's threaded
    worker died of it); a block the generator caught let the rest reach the user."""
    from django.http import StreamingHttpResponse

    from sqreen._context import RequestContext
    from sqreen.integrations.django._streaming import bind_streaming
    from sqreen.middleware._common import ResponseAborted

    sqreen_events.block([{"id": "b1", "type": "block_user", "user": {"username": "mallory"}}])
    ctx = RequestContext(sqreen_events.client, "wsgi", {"REMOTE_ADDR": "127.0.0.1"})

    def login() -> None:
        try:
            sqreen.auth_track(True, username="mallory")
        except BaseException:
            if not caught:
                raise

    def chunks() -> Any:
        yield b"start "
        login()
        yield b"SECRET"

    async def achunks() -> Any:
        yield b"start "
        login()
        yield b"SECRET"

    response = StreamingHttpResponse(chunks() if kind == "sync" else achunks())
    bind_streaming(response, ctx)
    got: list[bytes] = []
    with pytest.raises(ResponseAborted):
        if kind == "sync":
            for chunk in response.streaming_content:
                got.append(chunk)
        else:

            async def read() -> None:
                async for chunk in response.streaming_content:
                    got.append(chunk)

            asyncio.run(read())
    assert got == [b"start "]
    assert [e["name"] for e in sqreen_events][-1] == "security.blocked"


def test_a_file_response_keeps_its_file_for_the_server(tmp_path: Any) -> None:
    from django.http import FileResponse

    from sqreen.integrations.django._streaming import bind_streaming

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    response = FileResponse(path.open("rb"))
    bind_streaming(response, object())  # type: ignore[arg-type]
    assert response.file_to_stream is not None  # wsgi.file_wrapper (sendfile) still applies
    assert b"".join(response.streaming_content) == b"x" * 10
    response.close()


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_non_ascii_paths(sqreen_events: CapturedEvents, interface: str) -> None:
    path = "/echo/caf%C3%A9-%E2%82%AC"
    if interface == "wsgi":
        name = Client().get(path).json()["name"]
    else:
        name = asyncio.run(AsyncClient().get(path)).json()["name"]
    (event,) = sqreen_events
    # The event's path is the one Django decoded (its AsyncClient decodes it as latin-1).
    assert event["request"]["path"] == f"/echo/{name}"
    if interface == "wsgi":
        assert name == "café-€"


def test_a_body_read_before_the_middleware(sqreen_events: CapturedEvents) -> None:
    request = RequestFactory().post(
        "/form", "username=bob&password=secret", content_type="application/x-www-form-urlencoded"
    )
    assert request.body  # read (and cached by Django) before the middleware runs

    def view(request: Any) -> HttpResponse:
        request.sqreen.track("late")
        return HttpResponse("ok")

    assert SqreenMiddleware(view)(request).content == b"ok"
    (event,) = sqreen_events
    assert event["request"]["params"] == {"username": "bob", "password": "[redacted]"}


def test_init_keywords_and_settings_merge_option_by_option(receiver: Receiver) -> None:
    sqreen.init(app_name="from-init", flush_interval=0.2)
    settings = {"endpoint": receiver.url, "app_name": "from-settings", "strict": "0"}
    with override_settings(SQREEN=settings):
        Client().get("/identify?uid=u1&marker=merged")
    assert sqreen.flush(5.0)
    assert [e["name"] for e in receiver.events] == ["identified"]
    assert receiver.batches[0]["app"]["name"] == "from-init"
    assert receiver.batches[0]["app"]["framework"] == "django"


def test_settings_then_init_merge_option_by_option(receiver: Receiver) -> None:
    with override_settings(SQREEN={"endpoint": receiver.url, "app_name": "from-settings"}):
        SqreenMiddleware(lambda request: HttpResponse())
    client = sqreen.init(app_name="from-init")
    assert (client.config.endpoint, client.config.app_name) == (receiver.url, "from-init")
    assert client.framework == "django"


@pytest.mark.parametrize(
    ("settings", "strict"),
    [({"strict": "0"}, False), ({"strict": "false"}, False), ({"strict": "yes"}, True)],
)
def test_string_booleans_in_settings(settings: dict[str, Any], strict: bool) -> None:
    """``SQREEN = {"strict": os.environ.get("X", "0")}`` turned strict mode on."""
    with override_settings(SQREEN={**settings, "transport": "memory:"}):
        SqreenMiddleware(lambda request: HttpResponse())
    assert sqreen._hub.active is not None and sqreen._hub.active.config.strict is strict


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"strict": "maybe"}, "strict"),
        ({"disable": None}, "disable"),
        ({"transport": "ftp://x"}, "transport"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"framework": "bottle"}, "framework"),
    ],
)
def test_bad_values_in_settings_are_named(settings: dict[str, Any], named: str) -> None:
    with override_settings(SQREEN=settings), pytest.raises(sqreen.ConfigError, match=named):
        SqreenMiddleware(lambda request: HttpResponse())


def test_the_agents_ip_header_in_settings() -> None:
    with override_settings(SQREEN={"ip_header": "X-Real-IP", "transport": "memory:"}):
        SqreenMiddleware(lambda request: HttpResponse())
    assert sqreen._hub.active is not None
    assert sqreen._hub.active.config.client_ip_header == "X-Real-IP"


def test_a_block_set_before_the_settings_replace_the_client(sqreen_events: CapturedEvents) -> None:
    """The reported bug: ``sqreen_events.block()``, then the test Client builds the middleware,
    whose settings (here ``app_name``, ``trusted_proxies``) make a new client: the blocks held."""
    sqreen_events.block(
        [
            {"id": "ip", "type": "block_ip", "ip": "203.0.113.0/24"},
            {"id": "user", "type": "block_user", "user": {"uid": "bad"}},
        ]
    )
    first = sqreen_events.client
    with override_settings(SQREEN={"app_name": "replaced", "trusted_proxies": []}):
        assert Client(REMOTE_ADDR="203.0.113.9").get("/identify?uid=ok").status_code == 403
        assert sqreen_events.client is not first  # the settings replaced it
        assert Client().get("/identify?uid=bad").status_code == 403
        assert Client().get("/identify?uid=ok").status_code == 200
        sqreen_events.block([{"id": "later", "type": "block_user", "user": {"uid": "ok"}}])
        assert Client().get("/identify?uid=ok").status_code == 403
        assert Client().get("/identify?uid=bad").status_code == 200


def test_a_view_tested_with_request_factory_tracks_without_a_request(
    sqreen_events: CapturedEvents,
) -> None:
    """The reported bug: ``request.sqreen`` was an AttributeError outside the middleware. With
    the app installed it is the handle without a request: sqreen.track()'s behaviour."""

    def view(request: Any) -> HttpResponse:
        request.sqreen.identify({"uid": "u1"})  # binds nothing, raises nothing
        request.sqreen.auth_track(False, username="alice")
        request.sqreen.track("unit.view", properties={"n": 1})
        return HttpResponse("ok")

    sqreen_events.block([{"id": "u", "type": "block_user", "user": {"uid": "u1"}}])
    assert view(RequestFactory().get("/")).status_code == 200
    failure, event = sqreen_events
    assert failure["name"] == "auth.login.failure" and failure["user"] == {"username": "alice"}
    assert (event["name"], event["user"], event["request"]) == ("unit.view", None, None)
    request = RequestFactory().get("/")
    request.sqreen = "the app's own"  # an assignment wins, as the middleware's does
    assert request.sqreen == "the app's own"
    assert repr(RequestFactory().get("/").sqreen) == "<sqreen.RequestContext without a request>"


def test_under_an_asgi_server_that_rewrote_the_peer_the_header_is_walked(
    sqreen_events: CapturedEvents,
) -> None:
    """uvicorn with --forwarded-allow-ips='*' (daphne --proxy-headers, hypercorn's
    ProxyFixMiddleware) hands Django the left-most hop as the client, port 0: Django copies
    it into REMOTE_ADDR, where the client chose it. sqreen walks the header from the right."""
    forged_then_real = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}

    class Peer(AsyncClient):  # type: ignore[misc]
        """The test client, with the ``scope["client"]`` a server would hand Django."""

        def __init__(self, client: list[object]) -> None:
            super().__init__()
            self.peer = client

        def _base_scope(self, **request: Any) -> dict[str, Any]:
            return {**super()._base_scope(**request), "client": self.peer}

    rewritten = Peer(["6.6.6.6", 0])

    async def main() -> None:
        await rewritten.get("/async/7", headers=forged_then_real)
        sqreen_events.block([{"id": "b", "type": "block_ip", "ip": "198.51.100.0/24"}])
        refused = await rewritten.get(
            "/async/8", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.9"}
        )
        assert refused.status_code == 403  # whatever the blocked client wrote on the left
        # A real connection (a port) is the client, as before.
        await Peer(["203.0.113.20", 50123]).get("/async/9", headers=forged_then_real)

    asyncio.run(main())
    ips = [e["request"]["ip"] for e in sqreen_events if e["name"] == "async.view"]
    assert ips == ["203.0.113.7", "203.0.113.20"]


def test_django_s_async_test_client_is_no_server_s_rewrite(
    sqreen_events: CapturedEvents, sqreen_log: pytest.LogCaptureFixture
) -> None:
    """Django's ``AsyncClient`` says its client is 127.0.0.1, port 0, with no forwarded
    header: the warning of a server that rewrote the peer from a header (turn uvicorn's
    proxy headers off...) came out of a test suite's first async request."""
    from sqreen import _ip_warnings

    _ip_warnings._reset()

    async def main() -> None:
        assert (await AsyncClient().get("/async/1")).status_code == 200

    asyncio.run(main())
    assert sqreen.flush(5)  # (the flusher reads the peers, and says what they show)
    said = [r.getMessage() for r in sqreen_log.records if "replaced the address" in r.getMessage()]
    assert said == []
    assert [e["request"]["ip"] for e in sqreen_events if e["name"] == "async.view"] == ["127.0.0.1"]
    # A header there: a server's rewrite (daphne --proxy-headers), said.
    asyncio.run(AsyncClient().get("/async/2", headers={"X-Forwarded-For": "203.0.113.7"}))
    assert sqreen.flush(5)
    said = [r.getMessage() for r in sqreen_log.records if "replaced the address" in r.getMessage()]
    assert len(said) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_request_is_freed_once_done_with_not_by_a_collection(
    sqreen_events: CapturedEvents, kind: str
) -> None:
    """The handle (``request.sqreen``) holds its request weakly: held strongly, each request
    (its body, its user) was a cycle with its handle, freed only by a garbage collection
    (found running Django's own suite with the middleware in front)."""
    if kind == "sync":

        def view(request: Any) -> HttpResponse:
            request.sqreen.track("seen", properties={"n": 1})
            return HttpResponse("ok")

        middleware = SqreenMiddleware(view)
    else:

        async def aview(request: Any) -> HttpResponse:
            request.sqreen.track("seen", properties={"n": 1})
            return HttpResponse("ok")

        middleware = SqreenMiddleware(markcoroutinefunction(aview))
    request = RequestFactory().post(
        "/form?a=1", "x=1", content_type="application/x-www-form-urlencoded"
    )
    freed = weakref.ref(request)
    gc.disable()
    try:
        if kind == "sync":
            response = middleware(request)
        else:
            response = asyncio.run(middleware(request))
        assert response.content == b"ok"
        del request, response
        assert freed() is None
    finally:
        gc.enable()
    (event,) = sqreen_events
    # (Its query, read while it lived; the body, which the view never read, is not parsed.)
    assert event["request"]["path"] == "/form" and event["request"]["params"] == {"a": "1"}
