"""``sqreen.ini``: the configuration file of Sqreen's agent, read below the environment.

Which file: the one ``SQREEN_CONFIG_FILE`` names, else ``sqreen.ini`` in the working directory,
as the agent looked for them. (It also read ``~/.sqreen.ini``, before the working
directory's: a file in the home directory would configure every app and test suite of the
user, so it is not read.) What it holds: a ``[sqreen]`` section of ``key: value`` or
``key = value`` lines, the keys those of :func:`sqreen.init` (``token``, ``app_name``,
``endpoint``, ``disable``...) or the agent's (``ip_header``), in any case, ``sqreen_``-prefixed
or not; the values as in the environment (``disable: yes``, ``trusted_proxies: 10.0.0.0/8,
192.168.0.0/16``). An empty value is unset. Nothing is interpolated (a token may hold ``%``).

The agent ignored a file it could not parse, silently. Here nothing in the file can fail the
app either, but each problem is a warning on the ``sqreen`` logger naming the file and the
key: a file that cannot be read or parsed (nothing of it is used), an unknown key, a wrong
value (that key is left to the defaults). ``init()``'s keywords and the environment still
raise :class:`~sqreen.ConfigError`: they are the program's own.

The file is looked at whenever a configuration is resolved (a ``stat``, read again only when
it changed), so each warning is logged once for each version of the file.
"""

from __future__ import annotations

import configparser
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, Final

from ._config_values import ALIASES, CHECKS, ConfigError, from_text

__all__ = ["FILE_NAME", "FILE_VARIABLE", "from_file"]

logger = logging.getLogger("sqreen")

FILE_VARIABLE: Final = "SQREEN_CONFIG_FILE"
FILE_NAME: Final = "sqreen.ini"
SECTION: Final = "sqreen"

#: Each option's value (as text, lists split) and where it was set, for an error naming it.
Found = dict[str, tuple[Any, str]]
#: By path: what the file was when read (mtime, size; None when missing), and its options.
_read: dict[str, tuple[tuple[int, int] | None, Found]] = {}
_lock = threading.Lock()


def from_file(environ: Mapping[str, str]) -> Found:
    """The options of the configuration file, or none; warnings logged, nothing raised."""
    warnings: list[str] = []
    found = _found(environ, warnings)
    # Logged after the cache is filled: a handler of the app's may track an event, which
    # resolves a configuration again, and must find the file read.
    for message in warnings:
        logger.warning("sqreen: %s", message)
    return dict(found)


def _found(environ: Mapping[str, str], warnings: list[str]) -> Found:
    named = environ.get(FILE_VARIABLE)
    if named:
        path = _absolute(named, warnings)
        if path is not None and os.path.exists(path):
            return _cached(path, f"{FILE_VARIABLE}={named!r}", warnings)
        # The agent went on to the working directory's file; so does this, but says so.
        if path is not None and _changed(path, None):
            warnings.append(f"{FILE_VARIABLE} names {path}, which does not exist: it is not read")
    path = _absolute(FILE_NAME, warnings)
    return _cached(path, path, warnings) if path is not None and os.path.exists(path) else {}


def _absolute(path: str, warnings: list[str]) -> str | None:
    """``path`` made absolute; None when it is relative and the working directory is gone
    (a deploy replaced the app's directory): no file is read then, and the app goes on."""
    try:
        return os.path.abspath(path)
    except OSError:
        if _changed("<no working directory>", None):
            warnings.append(f"the working directory is gone: {path} is not read")
        return None


def _changed(path: str, stamp: tuple[int, int] | None) -> bool:
    """Whether ``path`` was not seen as ``stamp`` the last time (and remember it)."""
    with _lock:
        known = _read.get(path)
        if known is not None and known[0] == stamp:
            return False
        _read[path] = (stamp, {})
        return True


def _cached(path: str, shown_as: str, warnings: list[str]) -> Found:
    try:
        status = os.stat(path)
        stamp: tuple[int, int] | None = (status.st_mtime_ns, status.st_size)
    except OSError:
        stamp = None
    with _lock:
        known = _read.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
    found = _parse(path, shown_as, warnings)
    with _lock:
        _read[path] = (stamp, found)
    return found


def _parse(path: str, shown_as: str, warnings: list[str]) -> Found:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file, path)
    except (OSError, UnicodeDecodeError) as exc:
        warnings.append(f"the configuration file {shown_as} cannot be read ({exc}): not used")
        return {}
    except configparser.Error as exc:
        reason = " ".join(str(exc).split())
        warnings.append(f"the configuration file {shown_as} cannot be parsed ({reason}): not used")
        return {}
    if not parser.has_section(SECTION):
        warnings.append(f"the configuration file {shown_as} has no [{SECTION}] section: not used")
        return {}
    found: Found = {}
    keys: dict[str, str] = {}  # option -> the key that set it
    for key, raw in parser.items(SECTION):
        where = f"{key!r} in {shown_as}"
        name = key[7:] if key.startswith("sqreen_") else key  # configparser lowers keys
        name = ALIASES.get(name, name)
        if name not in CHECKS:
            warnings.append(f"{where}: unknown key, ignored; known: {', '.join(sorted(CHECKS))}")
            continue
        if name in keys:
            warnings.append(f"{where}: {keys[name]!r} sets {name} already, ignored")
            continue
        raw = raw.strip()
        if not raw:  # ``token:`` with nothing after it: unset, as an empty variable is
            continue
        keys[name] = key
        value = from_text(name, raw)
        try:
            CHECKS[name](name, value)
        except ConfigError as exc:
            warnings.append(f"{where}: {exc}; ignored")
            continue
        found[name] = (value, where)
    return found
