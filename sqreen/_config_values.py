"""How each option's value is read and checked: one parser per kind of option, for every source.

The environment gives text, a framework's configuration and ``init()`` give anything (Django's
``SQREEN = {"strict": os.environ.get("X", "0")}`` gives text too): so every parser takes text
and the values of its type alike, and refuses anything else with a :class:`ConfigError` naming
the option and the value (its repr, clipped: a value may be huge, or hold control characters
that must not reach a log line raw). ``bool("false")`` is True, ``int(1.5)`` is 1 and
``int(b"12")`` is 12: none of Python's conversions is used on a value of the wrong type.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from ._client_ip import TrustedProxies
from ._scrub import NEVER_COLLECTED_HEADERS, Scrubber
from ._text import visible

__all__ = ["ALIASES", "CHECKS", "ConfigError", "from_text", "shown"]


class ConfigError(ValueError):
    """An option has a wrong type or value; the message names it.

    A :class:`ValueError`, so that code written against the earlier errors of ``init()`` (a
    bad transport URL raised a plain ``ValueError``) still catches it.
    """


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_BOOL_WORDS: Final = "true or false (1/0, yes/no, on/off)"
_BLANKS: Final = " \t\r\n"  # around a word, as a shell or an .env file may leave them
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_INTEGER: Final = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() reads any script's
_DECIMAL: Final = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
#: A duration with its unit (``30s``, ``10m``, ``1.5h``, ``2d``), for the options in seconds.
_DURATION: Final = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+) ?(ms|s|m|h|d)")
_UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: An HTTP header name (RFC 9110's token).
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: A longer number is not a setting: refused before any conversion (int("9" * 5000) raises,
#: float("1" * 400) is inf).
_MAX_NUMBER_TEXT: Final = 32
#: The longest a thread can be told to wait: a longer interval fails in the flusher, later.
_MAX_SECONDS: Final = threading.TIMEOUT_MAX


def shown(value: object) -> str:
    """``value`` for an error message: its repr (control characters escaped), clipped."""
    if isinstance(value, str | bytes):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if value is None or isinstance(value, bool | int | float):
        try:
            text = repr(value)
        except ValueError:  # an int of more than 4300 digits
            return "a huge int"
        return text if len(text) <= 40 else text[:40] + "..."
    return f"a {type(value).__name__}"


def _flag(value: object) -> bool | None:
    """True or False for a boolean's spellings, else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and len(value) <= 16:
        word = value.strip(_BLANKS).lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return None


def boolean(name: str, value: object) -> bool:
    flag = _flag(value)
    if flag is None:
        raise ConfigError(f"{name} must be {_BOOL_WORDS}, not {shown(value)}")
    return flag


def _number(
    name: str,
    value: object,
    kind: type[int] | type[float],
    zero: bool,
    most: float | None,
    units: bool = False,
) -> int | float:
    """``value`` as a number of ``kind`` (from text too: ``units``, a duration with its
    unit, in seconds), 0 allowed if ``zero``, at most ``most``."""
    number: int | float
    if isinstance(value, str):
        text = value.strip(_BLANKS)
        duration = _DURATION.fullmatch(text) if units and len(text) <= _MAX_NUMBER_TEXT else None
        if len(text) <= _MAX_NUMBER_TEXT and _INTEGER.fullmatch(text):
            number = int(text)
        elif len(text) <= _MAX_NUMBER_TEXT and _DECIMAL.fullmatch(text):
            number = float(text)
        elif duration is not None:
            number = float(duration[1]) * _UNITS[duration[2]]
        else:
            wanted = "a number of seconds (or 30s, 10m, 1h, 1d)" if units else "a number"
            raise ConfigError(f"{name} must be {wanted}, not {shown(value)}")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    else:
        raise ConfigError(f"{name} must be a number, not {shown(value)}")
    if isinstance(number, int) and (number < 0 or (most is not None and number > most)):
        # Out of range whatever it is: brought within a float's reach before any is made
        # (an int past 1e308, 10**400, overflows one), then refused below as it is.
        number = max(-1, min(number, int(most or 0) + 1))
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, not {shown(value)}")
    if kind is int and isinstance(number, float):
        if not number.is_integer():
            raise ConfigError(f"{name} must be a whole number, not {shown(value)}")
        number = int(number)
    try:
        number = kind(number)
    except OverflowError:  # an int too large for a float, for an option with no bound
        raise ConfigError(f"{name} must be a smaller number, not {shown(value)}") from None
    if number < 0 or (number == 0 and not zero):
        raise ConfigError(
            f"{name} must be {'positive or 0' if zero else 'positive'}, not {shown(value)}"
        )
    if most is not None and number > most:
        raise ConfigError(f"{name} must be at most {most:g}, not {shown(value)}")
    return number


def count(name: str, value: object) -> int:
    """A positive whole number (``batch_size``, at most 1000: the collector's limit;
    ``max_queue_bytes``...)."""
    return int(_number(name, value, int, False, 1000 if name == "batch_size" else None))


def seconds(name: str, value: object) -> float:
    """A positive duration in seconds, that a thread can wait (text may give its unit:
    ``"10m"``, ``"1h"``)."""
    return float(_number(name, value, float, False, _MAX_SECONDS, units=True))


def start_wait(name: str, value: object) -> float:
    """``block_on_start_timeout``: 0 (do not wait) to 60 seconds."""
    return float(_number(name, value, float, True, 60, units=True))


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, not {shown(value)}")
    if _CONTROL.search(value):
        raise ConfigError(f"{name} must not hold control characters: {shown(value)}")
    return value


def optional_text(name: str, value: object) -> str | None:
    """``app_name``: None, or text without control characters."""
    return None if value is None else _text(name, value)


def token(name: str, value: object) -> str | None:
    """Sent in a header: ASCII, no control characters."""
    if value is None:
        return None
    text = _text(name, value)
    if not text.isascii():
        raise ConfigError(f"{name} must be ASCII, not {shown(value)}")
    return text


def _url(value: str, schemes: tuple[str, ...]) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:  # "http://[": a bad IPv6 literal
        return False
    if parts.scheme not in schemes:
        return False
    return bool(parts.path) if parts.scheme == "file" else bool(parts.netloc)


#: The collector's own routes: an endpoint ending with one is the address of a route, to
#: which the SDK would add its routes again (``/v1/events/v1/events``: 404s, and blocks that
#: never arrive). ``/v1`` alone is not one: a proxy may serve the collector under ``/api/v1``.
_API_PATHS: Final = (
    "/v1/events",
    "/v1/heartbeat",
    "/v1/actions",
    "/v1/blocks",
    "/explorer",
    "/healthz",
    "/readyz",
    "/livez",
    "/metrics",
)


def endpoint(name: str, value: object) -> str | None:
    if value is None:
        return None
    url = _text(name, value)
    if not _url(url, ("http", "https")):
        raise ConfigError(f"{name} must be an http:// or https:// URL, not {shown(value)}")
    _not_a_route(name, url)
    return url


def _not_a_route(name: str, url: str) -> None:
    parts = urlsplit(url)
    path = parts.path.split(";")[0].rstrip("/")
    lowered = path.lower()
    for route in _API_PATHS:
        # (The explorer's pages too: its address, copied from a browser, ends with one.)
        if lowered.endswith(route) or (route == "/explorer" and "/explorer/" in lowered):
            prefix = path[: lowered.rindex(route)]
            host = parts.netloc.rpartition("@")[2]  # never the credentials
            meant = visible(f"{parts.scheme}://{host}{prefix}")[:200]
            raise ConfigError(
                f"{name} is the collector's address, without {route!r} (the SDK adds its "
                f"routes): did you mean {meant!r}?"
            )


def transport(name: str, value: object) -> Any:
    """An object (checked when the client is made), or one of the URLs of
    :func:`sqreen.transports.from_config`."""
    if not isinstance(value, str):
        return value
    if value == "memory:":
        return value
    if _CONTROL.search(value) or not _url(value, ("http", "https", "file")):
        raise ConfigError(
            f"{name} must be http(s)://host, file:///path.jsonl or memory:, not {shown(value)}"
        )
    if not value.startswith("file:"):
        _not_a_route(name, value)
    return value


def header_name(name: str, value: object) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise ConfigError(f"{name} must be an HTTP header name, not {shown(value)}")
    if value[:5].upper() == "HTTP_" and len(value) > 5:
        # Django's and WSGI's spelling (request.META["HTTP_X_REAL_IP"]) of X-Real-IP: no
        # client sends a header of that name (nginx drops names with underscores).
        value = "-".join(part.capitalize() for part in value[5:].split("_"))
    if value.lower().replace("_", "-") in NEVER_COLLECTED_HEADERS:  # WSGI reads _ as -
        raise ConfigError(f"{name} cannot be {value!r}: that header is never read")
    return value


def strings(name: str, value: object) -> tuple[str, ...] | None:
    """A list of strings (any iterable but text, bytes and mappings). ``trusted_proxies``
    may be None (loopback and Unix sockets), or text as the environment writes it (split at
    commas, ``"10.0.0.0/8, 192.168.0.0/16"``, or ``"none"``, trusting nobody): a framework's
    settings often come from the environment as text. (Patterns may hold commas: a
    ``scrub_values`` given as text is refused.)"""
    if name == "trusted_proxies":
        if isinstance(value, str) and not value.strip():
            value = None  # unset, as an empty SQREEN_TRUSTED_PROXIES is (not "trust none")
        if value is None:
            return None
        if isinstance(value, str):
            value = from_text(name, value)
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a list of strings, not {shown(value)}")
    items = tuple(value)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ConfigError(f"{name} must be a list of strings: item {i} is {shown(item)}")
    try:
        if name == "trusted_proxies":
            TrustedProxies(items)
        else:
            Scrubber(items, ()) if name == "scrub_keys" else Scrubber((), items)
    except ValueError as exc:  # whose message names the option already
        message = str(exc)
        raise ConfigError(message if message.startswith(name) else f"{name}: {message}") from None
    return items


def spool(name: str, value: object) -> bool | str:
    """True, False (any spelling of :func:`boolean`) or a directory."""
    flag = _flag(value)
    if flag is not None:
        return flag
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise ConfigError(f"{name} must be {_BOOL_WORDS} or a directory path, not {shown(value)}")
    return path


def ca_bundle(name: str, value: object) -> str | None:
    if value is None:
        return None
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str) or not os.path.exists(path):
        raise ConfigError(f"{name} must be a PEM file or a directory, not {shown(value)}")
    return path


#: The parser of each option: ``CHECKS[name](name, value)`` returns the value to keep.
CHECKS: Final[dict[str, Callable[[str, Any], Any]]] = {
    "token": token,
    "endpoint": endpoint,
    "app_name": optional_text,
    "strict": boolean,
    "flush_interval": seconds,
    "batch_size": count,
    "max_batch_bytes": count,
    "heartbeat_interval": seconds,
    "max_queue_size": count,
    "max_queue_bytes": count,
    "max_retry_age": seconds,
    "shutdown_timeout": seconds,
    "trusted_proxies": strings,
    "client_ip_header": header_name,
    "scrub_keys": strings,
    "scrub_values": strings,
    "max_body_size": count,
    "transport": transport,
    "ca_bundle": ca_bundle,
    "disable": boolean,
    "spool": spool,
    "block_on_start_timeout": start_wait,
}


#: Sqreen's agent's names of our options: read from every source (``SQREEN_IP_HEADER`` in the
#: environment or a Flask config, ``"ip_header"`` in Django's ``SQREEN`` or ``sqreen.ini``,
#: ``init(ip_header=)``).
ALIASES: Final = {"ip_header": "client_ip_header"}
_LISTS: Final = frozenset({"trusted_proxies", "scrub_keys", "scrub_values"})


def from_text(name: str, raw: str) -> Any:
    """A text setting (a variable, a line of ``sqreen.ini``), with lists split at commas (the
    other kinds parse text)."""
    if name not in _LISTS:
        return raw
    if name == "trusted_proxies" and raw.strip().lower() == "none":
        return []  # trust nobody, not even loopback
    return [item.strip() for item in raw.split(",") if item.strip()]
