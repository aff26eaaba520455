"""Configuration: ``init()`` keywords > framework config > ``SQREEN_*`` environment >
``sqreen.ini`` > defaults.

Every option of :func:`sqreen.init` is also read from ``SQREEN_<NAME>`` (``SQREEN_TOKEN``,
``SQREEN_TRUSTED_PROXIES=10.0.0.0/8,192.168.0.0/16``...). The sources are merged option by
option: a source sets the options it names and leaves the others to the sources below it.
Values are checked here, once (:mod:`sqreen._config_values`, one parser per kind of option,
whatever the source), so that a typo fails at start-up with the option's name, and the
variable or key that set it, rather than at the first event; a wrong value in ``sqreen.ini``
is a warning instead (:mod:`sqreen._config_file`).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Final

from ._client_ip import TrustedProxies
from ._config_file import from_file
from ._config_values import ALIASES, CHECKS, ConfigError, from_text, shown
from ._scrub import Scrubber

logger = logging.getLogger("sqreen")

__all__ = ["ALIASES", "Config", "ConfigError"]


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
    #: At the first request, wait up to this long for the first action set (0: do not wait;
    #: the wait ends as soon as the collector answers, or fails to).
    block_on_start_timeout: float = 1.0

    @classmethod
    def resolve(
        cls,
        explicit: Mapping[str, Any],
        framework: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Config:
        """The configuration from ``explicit`` (``init()``'s keywords) > ``framework`` (a
        framework's settings: ``SQREEN_NAME`` or ``name`` keys) > ``environ`` > ``sqreen.ini``
        (the one ``SQREEN_CONFIG_FILE`` in ``environ`` names, else the working directory's)
        > defaults."""
        values, errors = cls._read(explicit, framework, environ)
        if errors:
            raise ConfigError(errors[0])
        return cls(**values)

    @classmethod
    def problems(
        cls,
        explicit: Mapping[str, Any],
        framework: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> list[str]:
        """What :meth:`resolve` would refuse, every wrong option at once (the first is the
        one it raises); a bad ``sqreen.ini`` or ``SQREEN_*`` text raises, as it does there."""
        return cls._read(explicit, framework, environ)[1]

    @classmethod
    def _read(
        cls,
        explicit: Mapping[str, Any],
        framework: Mapping[str, Any] | None,
        environ: Mapping[str, str] | None,
    ) -> tuple[dict[str, Any], list[str]]:
        environ = os.environ if environ is None else environ
        errors: list[str] = []
        found: Found = dict(from_file(environ))
        found.update(_from_environ(environ))
        found.update(_from_mapping(framework or {}, "the framework's configuration", errors))
        found.update(_from_mapping(explicit, None, errors))
        values = {}
        for name, (value, where) in found.items():
            try:
                values[name] = CHECKS[name](name, value)
            except ConfigError as exc:
                errors.append(f"{exc} (from {where})" if where else str(exc))
        return values, errors

    def changed(self, other: Config) -> list[str]:
        """The options that differ between the two and that a client would use.

        With a transport given the endpoint is not used, nor the token and the CAs unless it
        is an ``http(s)://`` URL: so an app's endpoint does not replace a client that
        ``init()`` gave a transport (the pytest fixture's, ``"memory:"`` in a test).
        """
        unused = self._unused() & other._unused()
        return [
            f.name
            for f in fields(self)
            if f.name not in unused and getattr(self, f.name) != getattr(other, f.name)
        ]

    def _unused(self) -> frozenset[str]:
        transport = self.transport
        if transport is None:
            return frozenset()
        if isinstance(transport, str) and transport.startswith(("http://", "https://")):
            return frozenset({"endpoint"})
        return frozenset({"endpoint", "token", "ca_bundle"})

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


_OPTIONS: Final = frozenset(CHECKS)
#: Each option's variables, ours first: the agent's is read when ours is not set.
_VARIABLES: Final = {
    name: (
        f"SQREEN_{name.upper()}",
        *(f"SQREEN_{alias.upper()}" for alias, target in ALIASES.items() if target == name),
    )
    for name in CHECKS
}

#: Where a value came from, for the error that names it (None: ``init()``'s keywords).
Found = dict[str, tuple[Any, str | None]]


def _from_environ(environ: Mapping[str, str]) -> Found:
    _warn_misspelt(environ)
    found: Found = {}
    for name, variables in _VARIABLES.items():
        for variable in variables:
            raw = environ.get(variable)
            if raw:  # an empty variable is unset, as shells and .env files leave them
                found[name] = (from_text(name, raw), f"{variable} in the environment")
                break
    return found


def _from_mapping(source: Mapping[Any, Any], where: str | None, errors: list[str]) -> Found:
    """The options of a mapping whose keys are option names, ``SQREEN_``-prefixed or not,
    in any case, or the agent's names (:data:`ALIASES`); what is wrong goes to ``errors``."""
    found: Found = {}
    keys: dict[str, str] = {}  # option -> the key that set it
    for key, value in source.items():
        if not isinstance(key, str):
            errors.append(f"option names must be strings, not {shown(key)}")
            continue
        name = key.lower()
        name = name[7:] if name.startswith("sqreen_") else name
        name = ALIASES.get(name, name)
        if name not in _OPTIONS:
            notes = [f"from {shown(key)} in {where}"] if where else []
            near = difflib.get_close_matches(name, _OPTIONS, n=1, cutoff=0.75)
            notes += [f"did you mean {near[0]}?"] if near else []
            said = f" ({'; '.join(notes)})" if notes else ""
            errors.append(
                f"unknown option {shown(name)}{said}; known: {', '.join(sorted(_OPTIONS))}"
            )
            continue
        if name in keys and _differ(found[name][0], value):
            errors.append(
                f"{shown(keys[name])} and {shown(key)} both set {name}, to different values"
            )
            continue
        keys[name] = key
        found[name] = (value, f"{key!r} in {where}" if where else None)
    return found


#: Every ``SQREEN_*`` variable of an option (ours and the agent's).
_OPTION_VARIABLES: Final = frozenset(v for names in _VARIABLES.values() for v in names)
_warned: set[str] = set()


def _warn_misspelt(environ: Mapping[str, str]) -> None:
    """Warn, once a variable, of a ``SQREEN_*`` variable that is no option's but nearly one's
    name (``SQREEN_ENDPIONT``): it is ignored, where the same typo in a framework's
    configuration or ``init()`` is refused. Other ``SQREEN_*`` names (the collector's, an
    app's own) are left alone."""
    for variable in environ:
        if (
            not variable.startswith("SQREEN_")
            or variable in _OPTION_VARIABLES
            or variable in _warned
        ):
            continue
        near = difflib.get_close_matches(variable, _OPTION_VARIABLES, n=1, cutoff=0.85)
        if near:
            _warned.add(variable)
            logger.warning(
                "sqreen: %s in the environment is no option, and is ignored: did you mean %s?",
                variable,
                near[0],
            )


def _differ(a: Any, b: Any) -> bool:
    """Whether two values set for one option differ (a value whose ``!=`` fails does)."""
    try:
        return bool(a != b)
    except Exception:
        return True
