from __future__ import annotations
import __future__

import time
import types

import pytest

import sqreen
from sqreen._config import Config, ConfigError

PUBLIC_API = [
    "Blocked",
    "Client",
    "ConfigError",
    "InvalidEvent",
    "RequestContext",
    "UserScope",
    "__version__",
    "auth_track",
    "flush",
    "for_user",
    "identify",
    "init",
    "is_blocked",
    "shutdown",
    "signup_track",
    "start",
    "track",
]


def test_public_api_is_pinned() -> None:
    assert sqreen.__all__ == PUBLIC_API


def test_all_names_of_the_module_are_exported() -> None:
    """Like httpx's test_exported_members: the namespace of ``sqreen`` is its API, nothing
    more (submodules aside), so ``__all__`` cannot drift from what users can reach."""
    public = sorted(
        name
        for name, value in vars(sqreen).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and value is not __future__.annotations  # a compiler directive, not a name
    )
    assert public == sorted(n for n in sqreen.__all__ if not n.startswith("_"))


def test_exported_classes_show_their_public_path() -> None:
    for name in sqreen.__all__:
        value = getattr(sqreen, name)
        if isinstance(value, type):
            assert value.__module__ == "sqreen", name
    assert "sqreen.Blocked" in repr(sqreen.Blocked)


def test_exception_tree() -> None:
    assert issubclass(sqreen.InvalidEvent, ValueError)
    assert issubclass(sqreen.Blocked, BaseException)
    assert not issubclass(sqreen.Blocked, Exception)


def test_defaults_match_the_design() -> None:
    c = Config.resolve({}, environ={})
    assert (c.flush_interval, c.batch_size, c.max_batch_bytes) == (5.0, 500, 1024 * 1024)
    assert (c.heartbeat_interval, c.max_queue_size, c.max_queue_bytes) == (60.0, 10_000, 16 << 20)
    assert (c.max_retry_age, c.shutdown_timeout, c.max_body_size) == (3600.0, 2.0, 64 * 1024)
    assert c.trusted_proxies is None and c.client_ip_header == "X-Forwarded-For"
    assert c.strict is False


def test_precedence_init_over_framework_over_environment() -> None:
    env = {"SQREEN_TOKEN": "env", "SQREEN_APP_NAME": "env-app", "SQREEN_FLUSH_INTERVAL": "7"}
    c = Config.resolve({"token": "kw"}, {"SQREEN_APP_NAME": "fw-app", "token": "fw"}, env)
    assert c.token == "kw"
    assert c.app_name == "fw-app"
    assert c.flush_interval == 7.0


def test_submodules_are_not_shadowed() -> None:
    import types

    import sqreen._client as module

    assert isinstance(module, types.ModuleType)
    sqreen.init(transport="memory:")
    assert isinstance(sqreen._client, types.ModuleType)


def test_environment_can_trust_no_proxy() -> None:
    assert Config.resolve({}, environ={"SQREEN_TRUSTED_PROXIES": "none"}).trusted_proxies == ()


def test_environment_lists_and_booleans() -> None:
    env = {
        "SQREEN_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.0.0/16",
        "SQREEN_STRICT": "1",
        "SQREEN_SCRUB_KEYS": "ssn_last4,mother_maiden_name",
    }
    c = Config.resolve({}, environ=env)
    assert c.trusted_proxies == ("10.0.0.0/8", "192.168.0.0/16")
    assert c.strict is True
    assert c.scrub_keys == ("ssn_last4", "mother_maiden_name")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"flush_interval": "soon"}, "flush_interval"),
        ({"flush_interval": -1}, "flush_interval"),
        ({"batch_size": True}, "batch_size"),
        ({"batch_size": 5000}, "batch_size"),
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"endpoint": "ftp://x"}, "endpoint"),
        ({"token": 42}, "token"),
        ({"trusted_proxies": "10.0.0.0/8"}, "trusted_proxies"),
        ({"trusted_proxies": ["not-a-cidr"]}, "not-a-cidr"),
        ({"scrub_keys": [1]}, "scrub_keys"),
        ({"flush_intervall": 1}, "flush_intervall"),
        ({"client_ip_header": "Authorization"}, "client_ip_header"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        sqreen.init(**options)


def test_transport_choices(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqreen.transports import FileTransport, HTTPTransport, MemoryTransport

    assert isinstance(sqreen.init(transport="memory:").transport, MemoryTransport)
    path = tmp_path / "e.jsonl"
    assert isinstance(sqreen.init(transport=f"file://{path}").transport, FileTransport)
    assert isinstance(sqreen.init(endpoint="http://127.0.0.1:1").transport, HTTPTransport)
    custom = MemoryTransport()
    assert sqreen.init(transport=custom).transport is custom
    with pytest.raises(TypeError, match="transport"):
        sqreen.init(transport=object())


def test_no_endpoint_writes_json_lines_with_one_warning(tmp_path, monkeypatch, sqreen_log) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    sqreen.track("app.started")
    sqreen.track("app.started")
    assert sqreen.flush(timeout=5)
    lines = (tmp_path / "sqreen-events.jsonl").read_text().splitlines()
    assert len(lines) == 2
    warnings = [r for r in sqreen_log.records if "no endpoint" in r.getMessage()]
    assert len(warnings) == 1


def test_plain_http_to_a_remote_host_warns(sqreen_log) -> None:  # type: ignore[no-untyped-def]
    sqreen.init(endpoint="http://collector.example:8000")
    assert any("plain HTTP" in r.getMessage() for r in sqreen_log.records)
    sqreen_log.clear()
    sqreen.init(endpoint="http://127.0.0.1:8000")
    assert not any("plain HTTP" in r.getMessage() for r in sqreen_log.records)


def test_start_runs_the_flusher_which_fetches_the_action_set() -> None:
    """What the middlewares call with each request: idempotent, and without a track() the
    thread still asks the collector for the blocks in force."""
    client = sqreen.init(transport="memory:")
    transport = client.transport
    transport.actions = {"version": 1, "items": []}  # type: ignore[attr-defined]
    assert client.queue._thread is None
    client.start()
    thread = client.queue._thread
    client.start()
    assert thread is not None and thread.is_alive() and client.queue._thread is thread
    deadline = time.monotonic() + 10
    while not transport.heartbeats and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    assert transport.heartbeats  # type: ignore[attr-defined]
    assert client.stats()["tracked"] == 0
