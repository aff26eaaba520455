"""Configuration: ``init()`` keywords > framework config > ``SQREEN_*`` environment > defaults.

Every option of :func:`sqreen.init` is also read from ``SQREEN_<NAME>`` (``SQREEN_TOKEN``,
``SQREEN_TRUSTED_PROXIES=10.0.0.0/8,192.168.0.0/16``...). Values are checked here, once, so
that a typo fails at start-up with the option's name rather than at the first event.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from ._client_ip import TrustedProxies
from ._scrub import NEVER_COLLECTED_HEADERS, Scrubber

__all__ = ["Config", "ConfigError"]


class ConfigError(ValueError):
    """An option has a wrong type or value; the message names it."""


@dataclass(frozen=True)
class Config:
    token: str | None = None
    endpoint: str | None = None
    app_name: str | None = None
    strict: bool = False
    flush_interval: float = 5.0
    batch_size: int = 500
    max_batch_bytes: int = 1024 * 1024
    heartbeat_interval: float = 60.0
    max_queue_size: int = 10_000
    max_queue_bytes: int = 16 * 1024 * 1024
    max_retry_age: float = 3600.0
    shutdown_timeout: float = 2.0
    #: CIDRs of the proxies in front of the app; ``None`` trusts loopback and Unix sockets.
    trusted_proxies: tuple[str, ...] | None = None
    client_ip_header: str = "X-Forwarded-For"
    #: Keys scrubbed *in addition to* the defaults.
    scrub_keys: tuple[str, ...] = ()
    #: Regular expressions whose matches are scrubbed from string values.
    scrub_values: tuple[str, ...] = ()
    max_body_size: int = 64 * 1024
    transport: Any = None
    #: The CAs an ``https://`` endpoint's certificate is checked against: a PEM file or a
    #: directory of them (a private CA's, for a self-hosted collector). ``None``:
    #: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when set (as OpenSSL and httpx read them), else
    #: the system's store.
    ca_bundle: str | None = None
    #: Track nothing: no thread, no file, no request overhead beyond a pass-through.
    disable: bool = False
    #: Where undelivered batches and the last action set are kept across restarts: True (a
    #: directory per app under the temporary directory), a path, or False (nowhere).
    spool: bool | str = True
    #: At the first request, wait up to this long for the first action set (0: do not wait).
    block_on_start_timeout: float = 0.0
    framework: str | None = field(default=None, compare=False)

    @classmethod
    def resolve(
        cls,
        explicit: Mapping[str, Any],
        framework: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Config:
        names = {f.name for f in fields(cls)}
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in names - {"framework"}:
            raw = environ.get(f"SQREEN_{name.upper()}")
            if raw is None or raw == "":
                raw = environ.get(_ENV_ALIASES.get(name, ""))  # Sqreen's agent's spelling
            if raw is not None and raw != "":
                values[name] = _from_env(name, raw)
        for source in (framework or {}), explicit:
            for key, value in source.items():
                key = key.lower()
                if key.startswith("sqreen_"):
                    key = key[7:]
                if key not in names:
                    raise ConfigError(f"unknown option {key!r}; known: {', '.join(sorted(names))}")
                values[key] = value
        return cls(**_checked(values))

    @cached_property
    def scrubber(self) -> Scrubber:
        return Scrubber(self.scrub_keys, self.scrub_values)

    @cached_property
    def trusted(self) -> TrustedProxies:
        return TrustedProxies(self.trusted_proxies)

    @cached_property
    def forwarded_environ_key(self) -> str:
        return "HTTP_" + self.client_ip_header.upper().replace("-", "_")

    @cached_property
    def forwarded_header_name(self) -> bytes:
        return self.client_ip_header.lower().encode("latin-1")


#: Variables of Sqreen's Python agent, read when ours are not set.
_ENV_ALIASES = {"client_ip_header": "SQREEN_IP_HEADER"}
_BOOLS = {"strict", "disable"}
_FLOATS = {"flush_interval", "heartbeat_interval", "max_retry_age", "shutdown_timeout"}
_INTS = {"batch_size", "max_batch_bytes", "max_queue_size", "max_queue_bytes", "max_body_size"}
_LISTS = {"trusted_proxies", "scrub_keys", "scrub_values"}


def _from_env(name: str, raw: str) -> Any:
    if name in _BOOLS:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if name == "spool":
        word = raw.strip().lower()
        if word in {"0", "false", "no", "off"}:
            return False
        return True if word in {"1", "true", "yes", "on"} else raw.strip()
    if name == "trusted_proxies" and raw.strip().lower() == "none":
        return []  # trust nobody, not even loopback
    if name in _LISTS:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    for name, value in list(values.items()):
        if name in _FLOATS:
            values[name] = _number(name, value, float)
        elif name in _INTS:
            values[name] = _number(name, value, int)
        elif name in _LISTS:
            if value is None and name == "trusted_proxies":
                continue
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise ConfigError(f"{name} must be a list of strings, not {type(value).__name__}")
            items = tuple(value)
            if not all(isinstance(item, str) for item in items):
                raise ConfigError(f"{name} must be a list of strings")
            values[name] = items
        elif name in _BOOLS:
            values[name] = bool(value)
        elif name == "spool":
            if not isinstance(value, bool | str | os.PathLike) or value == "":
                raise ConfigError("spool must be True, False or a directory path")
            values[name] = os.fspath(value) if isinstance(value, os.PathLike) else value
        elif name == "ca_bundle" and value is not None:
            if not isinstance(value, str | os.PathLike) or not os.path.exists(value):
                raise ConfigError(f"ca_bundle must be a PEM file or a directory, not {value!r}")
            values[name] = os.fspath(value)
        elif name == "block_on_start_timeout":
            number = _number(name, value, float, zero=True)
            if number > 60:
                raise ConfigError("block_on_start_timeout must be at most 60 seconds")
            values[name] = number
        elif name in {"token", "endpoint", "app_name", "client_ip_header"}:
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, not {type(value).__name__}")
    header = values.get("client_ip_header")
    if header is not None and header.lower() in NEVER_COLLECTED_HEADERS:
        raise ConfigError(f"client_ip_header cannot be {header!r}: that header is never read")
    endpoint = values.get("endpoint")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"endpoint must be an http:// or https:// URL, not {endpoint!r}")
    if values.get("batch_size", 1) > 1000:
        raise ConfigError("batch_size must be at most 1000 (the collector's limit)")
    try:
        TrustedProxies(values.get("trusted_proxies"))
        Scrubber(values.get("scrub_keys", ()), values.get("scrub_values", ()))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return values


def _number(
    name: str, value: Any, kind: type[int] | type[float], zero: bool = False
) -> int | float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, not bool")
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        raise ConfigError(
            f"{name} must be {'positive or 0' if zero else 'positive'}, not {value!r}"
        )
    return number
