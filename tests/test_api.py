from __future__ import annotations
import __future__

import time
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest

import sqreen
import sqreen._hub
from sqreen._config import Config, ConfigError
from sqreen.testing import CapturedEvents

ROOT = Path(__file__).resolve().parent.parent

PUBLIC_API = [
    "Blocked",
    "Client",
    "ConfigError",
    "InvalidEvent",
    "RequestContext",
    "UserScope",
    "__author__",
    "__email__",
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


def test_the_agents_metadata_names_are_the_projects() -> None:
    """Sqreen's agent had ``__author__`` and ``__email__`` besides ``__version__``: ours come
    from pyproject.toml's ``authors`` (which gives a name and no address)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (author,) = project["authors"]
    assert sqreen.__author__ == author["name"]
    assert sqreen.__email__ == author.get("email", "")


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
        ({"trusted_proxies": "10.0.0.0/8; 192.168.0.0/16"}, "trusted_proxies"),
        ({"trusted_proxies": ["not-a-cidr"]}, "not-a-cidr"),
        ({"scrub_keys": [1]}, "scrub_keys"),
        ({"flush_intervall": 1}, "flush_intervall"),
        ({"client_ip_header": "Authorization"}, "client_ip_header"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        sqreen.init(**options)


@pytest.mark.parametrize(
    ("url", "meant"),
    [
        ("http://127.0.0.1:8000/v1/events", "http://127.0.0.1:8000"),
        ("https://collector.example/v1/actions?x=1", "https://collector.example"),
        # Never the credentials, never clipped (the address is the point of the message).
        ("https://svc:SECRET@collector.example/v1/events", "https://collector.example"),
        (
            "https://sqreen-collector.internal.example.com/V1/Events",
            "https://sqreen-collector.internal.example.com",
        ),
        ("https://c.example:8000/explorer/events?app=x", "https://c.example:8000"),
        ("https://c.example/sqreen/v1/events;x", "https://c.example/sqreen"),
        ("https://c.example/healthz", "https://c.example"),
    ],
)
@pytest.mark.parametrize("option", ["endpoint", "transport"])
def test_an_endpoint_naming_an_api_route_is_refused_saying_the_address(
    option: str, url: str, meant: str
) -> None:
    """The collector's address with one of its routes (copied from its API docs): the SDK
    added its routes again (``/v1/events/v1/events``: every batch a 404, and the action
    long-poll's 404s left the app without its blocks, said nowhere)."""
    with pytest.raises(ConfigError, match=option) as caught:
        sqreen.init(token="t", **{option: url})
    assert f"did you mean {meant!r}?" in str(caught.value)
    assert "SECRET" not in str(caught.value)
    for prefix in ("https://collector.example/sqreen", "https://collector.example/api/v1"):
        client = sqreen.init(token="t", **{option: prefix})  # a proxy's prefix is fine
        assert client.transport.endpoint == prefix


def test_a_header_named_as_django_s_meta_names_it_is_that_header() -> None:
    """``HTTP_X_REAL_IP`` (``request.META``'s spelling) was taken as a header of that name,
    which no client sends: the address was the proxy's, and nothing said so."""
    assert sqreen.init(client_ip_header="HTTP_X_REAL_IP").config.client_ip_header == "X-Real-Ip"
    for credential in ("HTTP_AUTHORIZATION", "Proxy_Authorization", "X_Api_Key"):
        with pytest.raises(ConfigError, match="never read"):  # WSGI reads _ as -
            sqreen.init(client_ip_header=credential)


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


# -- configuration: one parser per option type, from every source ---------------------------

TRUE_WORDS = [True, 1, "1", "true", "TRUE", "Yes", "on", " on ", "\ttrue\n"]
FALSE_WORDS = [False, 0, "0", "false", "False", "NO", "off", " 0 "]
#: Not a boolean, from any source: each must raise naming the option, never be truthy.
BAD_BOOLS: list[object] = [
    None,
    "",
    "maybe",
    "2",
    2,
    -1,
    1.0,
    0.0,
    b"true",
    b"0",
    [],
    ["true"],
    {"true": 1},
    "true\x00",
    "tr\x1bue",
    "false\r\nX-Injected: 1",
    "\x1ftrue",
    "yes" * 100_000,
]


@pytest.mark.parametrize("name", ["strict", "disable"])
@pytest.mark.parametrize("value", TRUE_WORDS)
def test_boolean_options_true_from_every_source(name: str, value: object) -> None:
    assert getattr(Config.resolve({name: value}, environ={}), name) is True
    assert getattr(Config.resolve({}, {f"SQREEN_{name.upper()}": value}, environ={}), name) is True
    if isinstance(value, str):
        env = {f"SQREEN_{name.upper()}": value}
        assert getattr(Config.resolve({}, environ=env), name) is True


@pytest.mark.parametrize("name", ["strict", "disable"])
@pytest.mark.parametrize("value", FALSE_WORDS)
def test_boolean_options_false_from_every_source(name: str, value: object) -> None:
    env = {f"SQREEN_{name.upper()}": "1"}  # a lower source says True: the value must win
    assert getattr(Config.resolve({name: value}, environ=env), name) is False
    assert getattr(Config.resolve({}, {name: value}, environ=env), name) is False
    if isinstance(value, str):
        assert getattr(Config.resolve({}, environ={f"SQREEN_{name.upper()}": value}), name) is False


@pytest.mark.parametrize("name", ["strict", "disable"])
@pytest.mark.parametrize("value", BAD_BOOLS, ids=lambda v: repr(v)[:20])
def test_a_bad_boolean_is_refused_naming_the_option_and_value(name: str, value: object) -> None:
    for explicit, framework in (({name: value}, None), ({}, {f"SQREEN_{name.upper()}": value})):
        with pytest.raises(ConfigError, match=name) as caught:
            Config.resolve(explicit, framework, environ={})
        message = str(caught.value)
        assert len(message) < 300  # the value is clipped, not echoed whole
        assert "\x00" not in message and "\x1b" not in message and "\n" not in message
        if isinstance(value, str | bytes) and len(value) < 20:
            assert repr(value) in message


@pytest.mark.parametrize("raw", ["maybe", "2", "tru", "true\x00", "yes" * 100_000])
def test_a_bad_boolean_in_the_environment_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="SQREEN_STRICT") as caught:
        Config.resolve({}, environ={"SQREEN_STRICT": raw})
    assert "strict" in str(caught.value) and len(str(caught.value)) < 300


def test_an_empty_environment_variable_is_unset() -> None:
    """The environment's convention, kept: ``SQREEN_X=`` is as if it were not set."""
    c = Config.resolve({}, environ={"SQREEN_STRICT": "", "SQREEN_DISABLE": "", "SQREEN_SPOOL": ""})
    assert (c.strict, c.disable, c.spool) == (False, False, True)


def test_the_reported_django_pattern_is_false() -> None:
    """``SQREEN = {"strict": os.environ.get("X", "0")}`` turned strict mode on."""
    assert Config.resolve({}, {"strict": "0"}, environ={}).strict is False
    assert Config.resolve({}, {"SQREEN_DISABLE": "false"}, environ={}).disable is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (False, False),
        ("off", False),
        ("0", False),
        (0, False),
        ("NO", False),
        (True, True),
        ("on", True),
        (1, True),
        ("/var/spool/sqreen", "/var/spool/sqreen"),
    ],
)
def test_spool_words_from_every_source(value: object, expected: object) -> None:
    """``"false"`` from a framework's configuration was taken as a directory named false."""
    assert Config.resolve({"spool": value}, environ={}).spool == expected
    assert Config.resolve({}, {"SQREEN_SPOOL": value}, environ={}).spool == expected
    if isinstance(value, str):
        assert Config.resolve({}, environ={"SQREEN_SPOOL": value}).spool == expected


@pytest.mark.parametrize("value", [None, "", 2, 1.0, b"/tmp", ["/tmp"], "/tmp/a\x00b"])
def test_a_bad_spool_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="spool"):
        Config.resolve({"spool": value}, environ={})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", 1.5),  # was truncated to 1
        ("batch_size", "1.5"),
        ("batch_size", b"12"),  # int(b"12") is 12
        ("batch_size", "1_0"),  # int("1_0") is 10
        ("batch_size", "\uff11\uff10"),  # int() reads other scripts' digits (fullwidth 10)
        ("batch_size", None),
        ("batch_size", [10]),
        ("batch_size", "9" * 5000),
        ("max_queue_size", "ten"),
        ("max_body_size", -5),
        ("flush_interval", b"1.5"),
        ("flush_interval", "1_0"),
        ("flush_interval", "nan"),
        ("flush_interval", "inf"),
        ("flush_interval", "1" * 400),  # float() gives inf
        ("flush_interval", 1e300),  # no thread can wait that long
        ("flush_interval", False),
        ("flush_interval", "5s\x00"),
        ("heartbeat_interval", 0),
        ("shutdown_timeout", None),
        ("max_retry_age", {"s": 1}),
        ("block_on_start_timeout", "True"),
        ("block_on_start_timeout", True),
        ("block_on_start_timeout", 61),
    ],
)
def test_a_bad_number_is_refused_naming_the_option(name: str, value: object) -> None:
    for explicit, framework in (({name: value}, None), ({}, {name: value})):
        with pytest.raises(ConfigError, match=name) as caught:
            Config.resolve(explicit, framework, environ={})
        assert len(str(caught.value)) < 300
    if isinstance(value, str):
        with pytest.raises(ConfigError, match=f"SQREEN_{name.upper()}"):
            Config.resolve({}, environ={f"SQREEN_{name.upper()}": value})


def test_numbers_from_every_source() -> None:
    c = Config.resolve(
        {"batch_size": "200", "flush_interval": "0.5"},
        {"max_queue_size": 20.0, "shutdown_timeout": 3},
        environ={"SQREEN_MAX_BODY_SIZE": " 1024 ", "SQREEN_HEARTBEAT_INTERVAL": "1e1"},
    )
    assert (c.batch_size, c.flush_interval, c.max_queue_size) == (200, 0.5, 20)
    assert (c.shutdown_timeout, c.max_body_size, c.heartbeat_interval) == (3.0, 1024, 10.0)
    assert type(c.batch_size) is int and type(c.max_queue_size) is int
    assert type(c.shutdown_timeout) is float


def test_times_in_seconds_take_a_unit_and_wrong_numbers_say_what_is_wrong() -> None:
    c = Config.resolve(
        {"max_retry_age": "10h", "flush_interval": "250ms", "shutdown_timeout": "1.5s"},
        environ={"SQREEN_HEARTBEAT_INTERVAL": " 2m ", "SQREEN_BLOCK_ON_START_TIMEOUT": "1 s"},
    )
    assert (c.max_retry_age, c.flush_interval, c.shutdown_timeout) == (36_000, 0.25, 1.5)
    assert (c.heartbeat_interval, c.block_on_start_timeout) == (120, 1)
    assert Config.resolve({"max_retry_age": "1d"}, environ={}).max_retry_age == 86_400
    wrong: list[tuple[str, object, str]] = [
        ("flush_interval", "-1", "flush_interval must be positive, not '-1'"),
        ("max_body_size", "-5", "max_body_size must be positive, not '-5'"),
        ("max_body_size", -5, "max_body_size must be positive, not -5"),
        ("flush_interval", "1e400", "flush_interval must be a finite number, not '1e400'"),
        ("batch_size", float("inf"), "batch_size must be a finite number, not inf"),
        ("max_retry_age", "10 hours", "max_retry_age must be a number of seconds (or 30s, "),
        ("max_retry_age", "-1h", "max_retry_age must be a number of seconds"),
        ("batch_size", "10s", "batch_size must be a number, not '10s'"),  # a count: no unit
        ("block_on_start_timeout", "2m", "block_on_start_timeout must be at most 60, not '2m'"),
        ("trusted_proxies", ["bad"], "trusted_proxies: 'bad' is not an IP address"),
        ("scrub_values", ["("], "scrub_values: '(' is not a regular expression"),
        # Integers no float holds: the option's error, not OverflowError.
        ("flush_interval", 10**400, "flush_interval must be at most 9.22337e+09, not 1000"),
        ("shutdown_timeout", -(10**400), "shutdown_timeout must be positive, not -1000"),
        ("batch_size", 10**5000, "batch_size must be at most 1000, not a huge int"),
    ]
    for name, value, message in wrong:
        with pytest.raises(ConfigError) as caught:
            Config.resolve({name: value}, environ={})
        assert str(caught.value).startswith(message), (name, value, str(caught.value))
    # Every option checked, the first refusal raised: a later huge int does not hide it.
    with pytest.raises(ConfigError, match="batch_size must be positive"):
        Config.resolve({"batch_size": 0, "flush_interval": 10**400}, environ={})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("token", b"sqk_x"),
        ("token", "sqk_\r\nX-Injected: 1"),
        ("app_name", ["a"]),
        ("app_name", "shop\x00"),
        ("endpoint", "http://collector\n.example"),
        ("client_ip_header", "X-Real-IP\r\n"),
        ("client_ip_header", "X Real IP"),
        ("client_ip_header", "X-Réal-IP"),
        ("client_ip_header", ""),
        ("trusted_proxies", {"10.0.0.0/8": True}),
        ("trusted_proxies", b"10.0.0.0/8"),
        ("scrub_keys", ["ok", None]),
        ("scrub_values", "secret"),
    ],
)
def test_bad_strings_and_lists_are_refused_naming_the_option(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name) as caught:
        Config.resolve({name: value}, environ={})
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


@pytest.mark.parametrize("key", [1, None, b"strict", ("strict",)])
def test_an_option_name_that_is_not_text_is_refused(key: object) -> None:
    with pytest.raises(ConfigError, match="option names"):
        Config.resolve({}, {key: True}, environ={})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "transport", ["ftp://x", "memory", "file://", "http:/x", "", "sqreen-events.jsonl", "\x00"]
)
def test_a_bad_transport_url_is_a_config_error(transport: str) -> None:
    with pytest.raises(ConfigError, match="transport"):
        sqreen.init(transport=transport)
    with pytest.raises(ConfigError, match="transport"):
        Config.resolve({}, {"SQREEN_TRANSPORT": transport}, environ={})
    with pytest.raises(ValueError, match="transport"):  # what callers caught before
        sqreen.init(transport=transport)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    "source",
    [
        lambda: Config.resolve({}, {"SQREEN_IP_HEADER": "X-Real-IP"}, environ={}),
        lambda: Config.resolve({}, {"ip_header": "X-Real-IP"}, environ={}),
        lambda: Config.resolve({"ip_header": "X-Real-IP"}, environ={}),
        lambda: Config.resolve({}, environ={"SQREEN_IP_HEADER": "X-Real-IP"}),
    ],
)
def test_the_agents_ip_header_works_from_every_source(source: Any) -> None:
    assert source().client_ip_header == "X-Real-IP"


def test_our_name_wins_over_the_agents_within_a_source_and_sources_keep_their_order() -> None:
    env = {"SQREEN_CLIENT_IP_HEADER": "Forwarded", "SQREEN_IP_HEADER": "X-Real-IP"}
    assert Config.resolve({}, environ=env).client_ip_header == "Forwarded"
    framework = {"SQREEN_IP_HEADER": "X-Real-IP"}
    assert Config.resolve({}, framework, env).client_ip_header == "X-Real-IP"
    explicit = {"client_ip_header": "Forwarded"}
    assert Config.resolve(explicit, framework, environ={}).client_ip_header == "Forwarded"


def test_both_names_with_two_values_in_one_source_is_an_error() -> None:
    both = {"SQREEN_IP_HEADER": "X-Real-IP", "SQREEN_CLIENT_IP_HEADER": "Forwarded"}
    with pytest.raises(ConfigError, match="ip_header"):
        Config.resolve({}, both, environ={})
    same = {"SQREEN_IP_HEADER": "X-Real-IP", "SQREEN_CLIENT_IP_HEADER": "X-Real-IP"}
    assert Config.resolve({}, same, environ={}).client_ip_header == "X-Real-IP"


def test_a_misspelt_option_is_named_with_its_source_and_the_nearest_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.resolve({}, {"SQREEN_ENDPIONT": "http://127.0.0.1:9"}, environ={})
    assert str(caught.value).startswith(
        "unknown option 'endpiont' (from 'SQREEN_ENDPIONT' in the framework's configuration; "
        "did you mean endpoint?); known: "
    )
    with pytest.raises(ConfigError, match=r"^unknown option 'zzz'; known: "):
        Config.resolve({"zzz": 1}, environ={})  # nothing near: no guess
    # The same typo in the environment is ignored (SQREEN_* variables are not all ours), but
    # said once when it is nearly an option's.
    environ = {"SQREEN_ENDPIONT": "http://127.0.0.1:9", "SQREEN_PLAYBOOKS": "p.toml"}
    with caplog.at_level("WARNING", logger="sqreen"):
        assert Config.resolve({}, environ=environ).endpoint is None
        Config.resolve({}, environ=environ)
    said = [r.getMessage() for r in caplog.records if "SQREEN_" in r.getMessage()]
    assert said == [
        "sqreen: SQREEN_ENDPIONT in the environment is no option, and is ignored: did you "
        "mean SQREEN_ENDPOINT?"
    ]


def test_internal_options_are_neither_listed_nor_settable() -> None:
    with pytest.raises(ConfigError, match="unknown option 'framework'") as caught:
        Config.resolve({"framework": "bottle"}, environ={})
    known = str(caught.value).split("known: ")[1]
    assert "framework" not in known.split(", ")
    assert "spool" in known and "block_on_start_timeout" in known
    with pytest.raises(ConfigError, match="framework"):
        Config.resolve({}, {"SQREEN_FRAMEWORK": "bottle"}, environ={})


def test_the_readme_documents_every_option() -> None:
    from dataclasses import fields
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n\n**", 1)[0]
    for option in fields(Config):
        assert f"`{option.name}`" in table, option.name


# -- init() keywords and a framework's configuration, in either order ----------------------


def test_init_then_framework_config_merge_option_by_option(sqreen_log: Any) -> None:
    """The reported bug: init(app_name=...) switched the framework's configuration off."""
    made = sqreen.init(app_name="kw", flush_interval=1)
    client = sqreen._hub.framework_init(
        {"SQREEN_ENDPOINT": "http://127.0.0.1:9", "SQREEN_APP_NAME": "fw"}, "flask"
    )
    assert client is sqreen._hub.active
    assert (client.config.endpoint, client.config.app_name) == ("http://127.0.0.1:9", "kw")
    assert client.config.flush_interval == 1.0 and client.framework == "flask"
    assert client is not made and made.closed  # a new configuration, a new client
    replaced = [r for r in sqreen_log.records if "replaces the client" in r.getMessage()]
    assert len(replaced) == 1 and "endpoint" in replaced[0].getMessage()
    assert not any("no endpoint" in r.getMessage() for r in sqreen_log.records)


def test_framework_config_then_init_merge_option_by_option() -> None:
    sqreen._hub.framework_init({"SQREEN_ENDPOINT": "http://127.0.0.1:9", "app_name": "fw"}, "x")
    client = sqreen.init(app_name="kw")
    assert (client.config.endpoint, client.config.app_name) == ("http://127.0.0.1:9", "kw")
    assert client.framework == "x" and sqreen._hub.active is client


def test_a_framework_config_that_changes_nothing_keeps_the_client(sqreen_log: Any) -> None:
    made = sqreen.init(transport="memory:", app_name="kw")
    assert sqreen._hub.framework_init({}, "flask") is made
    assert sqreen._hub.framework_init({"SQREEN_APP_NAME": "fw"}, "flask") is made  # kw wins
    assert made.framework == "flask" and not made.closed
    assert not any("replaces the client" in r.getMessage() for r in sqreen_log.records)


def test_a_started_client_that_is_replaced_says_so(sqreen_log: Any) -> None:
    """``sqreen.start()`` (Sqreen's agent's first line), events tracked, then an app whose
    configuration says otherwise: the client is replaced, delivering what it had queued."""
    import logging

    started = sqreen.start()
    sqreen.track("before.the.app")
    client = sqreen._hub.framework_init({"SQREEN_TRANSPORT": "memory:"}, "flask")
    assert client is not started and started.closed and client.config.transport == "memory:"
    record = next(r for r in sqreen_log.records if "replaces the client" in r.getMessage())
    assert record.levelno == logging.WARNING and "transport" in record.getMessage()


def test_a_second_app_without_settings_keeps_the_client() -> None:
    first = sqreen._hub.framework_init({"SQREEN_TRANSPORT": "memory:"}, "flask")
    assert sqreen._hub.framework_init({}, "flask") is first
    assert first.config.transport == "memory:"


def test_a_bad_framework_config_after_init_keeps_the_client() -> None:
    made = sqreen.init(transport="memory:")
    with pytest.raises(ConfigError, match="strict"):
        sqreen._hub.framework_init({"SQREEN_STRICT": "maybe"}, "flask")
    assert sqreen._hub.active is made and not made.closed


def test_every_option_has_one_parser() -> None:
    from dataclasses import fields

    from sqreen._config_values import CHECKS

    assert list(CHECKS) == [f.name for f in fields(Config)]


def test_an_endpoint_does_not_replace_a_client_that_init_gave_a_transport() -> None:
    """The pytest fixture's transport, or ``"memory:"`` in a test, with an app whose settings
    name the production collector: the client init() returned stays the one in use."""
    made = sqreen.init(transport="memory:", strict=True)
    settings = {"endpoint": "https://collector.example", "token": "sqk_x"}
    assert sqreen._hub.framework_init(settings, "django") is made and not made.closed
    http = sqreen.init(transport="https://collector.example")
    replaced = sqreen._hub.framework_init({**settings, "token": "sqk_y"}, "django")
    assert replaced is not http and replaced.config.token == "sqk_y"  # sent with its batches


CARRIED = [
    {"id": "ip", "type": "block_ip", "ip": "203.0.113.0/24"},
    {"id": "user", "type": "block_user", "user": {"uid": "bad"}, "expires_in": 600},
]


def test_a_client_replaced_for_the_same_destination_keeps_the_blocks() -> None:
    """The reported bug: a block applied before an app's settings replaced the client (the
    fixture's ``block()``, or the collector's set) was no longer enforced by the new one."""
    from sqreen.transports.memory import MemoryTransport

    first = sqreen.init(transport=MemoryTransport())
    first.blocklist.apply({"version": 3, "items": CARRIED})
    second = sqreen._hub.framework_init({"app_name": "fw", "trusted_proxies": []}, "django")
    assert second is not first and first.closed
    assert second.blocklist.version == 3
    assert second.is_blocked({"uid": "bad"}) and second.is_blocked(ip="203.0.113.9")
    assert not second.is_blocked({"uid": "good"}, "198.51.100.1")
    third = sqreen.init(transport=second.transport, app_name="kw")  # init() again: the same
    assert third.blocklist.version == 3 and third.is_blocked(ip="203.0.113.9")


def test_the_carried_blocks_are_checked_against_the_new_configuration() -> None:
    """A block that now covers a trusted proxy is refused, as the collector's would be."""
    from sqreen.transports.memory import MemoryTransport

    first = sqreen.init(transport=MemoryTransport())
    first.blocklist.apply(
        {"version": 1, "items": [*CARRIED, {"id": "lan", "type": "block_ip", "ip": "10.1.0.0/16"}]}
    )
    second = sqreen._hub.framework_init({"trusted_proxies": ["10.0.0.0/8"]}, "flask")
    assert second.blocklist.version == 1 and "lan" in second.blocklist.refused
    assert second.is_blocked(ip="203.0.113.9") and not second.is_blocked(ip="10.1.2.3")


def test_a_client_for_another_destination_starts_without_the_blocks() -> None:
    from sqreen.transports.memory import MemoryTransport

    first = sqreen.init(transport=MemoryTransport())
    first.blocklist.apply({"version": 3, "items": CARRIED})
    other = sqreen.init(transport=MemoryTransport())
    assert other.blocklist.version == -1 and not other.is_blocked(ip="203.0.113.9")
    http = sqreen.init(transport="http://127.0.0.1:9", token="sqk_a", spool=False)
    http.blocklist.apply({"version": 5, "items": CARRIED})
    same = sqreen._hub.framework_init({"app_name": "fw"}, "django")  # same collector and key
    assert same is not http and same.blocklist.version == 5
    other_key = sqreen.init(transport="http://127.0.0.1:9", token="sqk_b", spool=False)
    assert other_key.blocklist.version == -1


def test_after_shutdown_a_new_client_starts_without_the_blocks() -> None:
    from sqreen.transports.memory import MemoryTransport

    transport = MemoryTransport()
    sqreen.init(transport=transport).blocklist.apply({"version": 3, "items": CARRIED})
    sqreen.shutdown(timeout=0.5)
    assert sqreen.init(transport=transport).blocklist.version == -1


def test_the_fixtures_block_holds_across_a_replacement_and_follows_the_client(
    sqreen_events: Any,
) -> None:
    first = sqreen_events.client
    sqreen_events.block([CARRIED[0]])
    replaced = sqreen._hub.framework_init({"app_name": "fw"}, "django")
    assert replaced is not first and replaced.is_blocked(ip="203.0.113.9")
    held = replaced.blocklist.version
    sqreen_events.block([CARRIED[1]])  # newer than any version a client holds: applied
    assert replaced.blocklist.version == held + 1 and sqreen_events.client is replaced
    assert replaced.is_blocked({"uid": "bad"}) and not replaced.is_blocked(ip="203.0.113.9")


def test_the_handle_without_a_request_is_the_module_functions(sqreen_events: Any) -> None:
    from sqreen._requestless import REQUESTLESS

    assert sqreen.track("explicit", request=REQUESTLESS)  # none given: no request data
    REQUESTLESS.for_user({"uid": "7"}).track("scoped")
    REQUESTLESS.signup_track(uid="8")
    assert REQUESTLESS.client is sqreen._hub.active and REQUESTLESS.user is None
    with pytest.raises(AttributeError):
        REQUESTLESS.user = {"uid": "x"}  # type: ignore[misc]  # one object: never bound
    assert [(e["name"], e["user"], e["request"]) for e in sqreen_events] == [
        ("explicit", None, None),
        ("scoped", {"uid": "7"}, None),
        ("auth.signup", {"uid": "8"}, None),
    ]


def test_an_app_named_after_its_server_is_told_to_set_app_name(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging
    import sys

    from sqreen import _app

    monkeypatch.setattr(_app, "_said", False)
    monkeypatch.setattr(
        sys.modules["__main__"], "__file__", "/srv/venv/bin/gunicorn", raising=False
    )
    caplog.set_level(logging.INFO, logger="sqreen")
    named = sqreen.init(endpoint="http://127.0.0.1:9", app_name="shop")
    assert _app.app_name(named.config) == "shop" and "set app_name" not in caplog.text
    sqreen.init(endpoint="http://127.0.0.1:9")
    assert "named 'gunicorn' after the command that runs it" in caplog.text
    sqreen.init(endpoint="http://127.0.0.1:9")
    assert caplog.text.count("set app_name") == 1  # once a process


def test_a_logging_handler_that_tracks_never_deadlocks_the_first_track() -> None:
    """The first ``track()`` makes the client under the hub's lock; what that logs (here, that
    the app is named after its server) may reach a handler of the app's that tracks an event,
    which asks the hub for the client again, on the same thread."""
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import logging, sys, sqreen
        class Tracking(logging.Handler):
            def emit(self, record):
                sqreen.track("log.record", properties={"msg": record.getMessage()[:100]})
        log = logging.getLogger("sqreen")
        log.setLevel(logging.INFO)
        log.addHandler(Tracking())
        sys.modules["__main__"].__file__ = "/srv/venv/bin/gunicorn"
        print(sqreen.track("first"), flush=True)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    env["SQREEN_ENDPOINT"] = "http://127.0.0.1:9"
    env["SQREEN_SHUTDOWN_TIMEOUT"] = "0.2"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.stdout.strip() == "True", done.stderr


@pytest.mark.parametrize(
    "item",
    [
        {"type": "user", "identifiers": {"username": "alice"}},  # not the action set's shape
        {"type": "block_user", "uid": "42"},
        {"type": "block_ip", "ip": 7},
        "block_ip 203.0.113.7",
    ],
)
def test_the_fixture_refuses_a_block_of_another_shape(
    sqreen_events: CapturedEvents, item: object
) -> None:
    """A block the SDK would not read made the test of a block pass with none in force."""
    with pytest.raises(ValueError, match="item 0 must be"):
        sqreen_events.block([item])  # type: ignore[list-item]


def test_the_fixture_says_which_block_the_sdk_refuses(sqreen_events: CapturedEvents) -> None:
    with pytest.raises(ValueError, match="too wide"):
        sqreen_events.block([{"type": "block_ip", "ip": "10.0.0.0/8"}])
    sqreen_events.block([{"type": "block_user", "user": {"uid": "42"}}])  # no id: one is given
    assert sqreen.is_blocked({"uid": "42"})


def test_the_fixture_takes_integer_identifiers_as_the_collector_does(
    sqreen_events: CapturedEvents,
) -> None:
    """``auth_track(False, user_id=42)`` is tracked, and the collector blocks ``{"user_id":
    42}`` as ``"42"``: the fixture refused it as "it needs a non-empty user"."""
    sqreen_events.block([{"type": "block_user", "user": {"user_id": 42}}])
    assert sqreen.is_blocked({"user_id": 42}) and sqreen.is_blocked({"user_id": "42"})
    for value in (4.2, True, None, ["42"]):
        with pytest.raises(ValueError, match="item 0's identifier 'user_id' must be text or an"):
            sqreen_events.block([{"type": "block_user", "user": {"user_id": value}}])


def test_trusted_proxies_as_text_read_as_in_the_environment() -> None:
    """A Flask config or Django setting read from the environment holds text: it reads as
    ``SQREEN_TRUSTED_PROXIES`` does (it was refused as "not a list")."""
    config = Config.resolve({"trusted_proxies": "10.0.0.0/8, 192.168.0.0/16"}, environ={})
    assert config.trusted_proxies == ("10.0.0.0/8", "192.168.0.0/16")
    assert Config.resolve({"trusted_proxies": "none"}, environ={}).trusted_proxies == ()
    # empty, as os.environ.get("X", "") gives: unset (loopback), as the environment reads it
    assert Config.resolve({"trusted_proxies": " "}, environ={}).trusted_proxies is None
    with pytest.raises(ConfigError, match="trusted_proxies"):
        Config.resolve({"trusted_proxies": "10.0.0.0/8, not a network"}, environ={})
