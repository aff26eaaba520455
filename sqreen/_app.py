"""Who this process is, for the collector: the app's name, the host, the envelope of its
batches and heartbeats, and where its spool lives."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, Final

from ._config import Config
from ._spool import Spool, default_directory, destination_key
from ._version import __version__

__all__ = ["SERVERS", "app_name", "envelope", "say_if_named_after_the_server", "spool_of"]

logger = logging.getLogger("sqreen")

HOST = socket.gethostname()


#: What the default name is when a server or a framework's command runs the app: the same
#: for every app it runs, so the agents page cannot tell them apart.
SERVERS: Final = frozenset(
    {
        "__main__",
        "daphne",
        "django-admin",
        "flask",
        "granian",
        "gunicorn",
        "hypercorn",
        "manage",
        "python",
        "uvicorn",
        "waitress-serve",
    }
)


def app_name(config: Config) -> str:
    """``app_name``, else the name of the script that runs (``gunicorn``, ``manage``...)."""
    if config.app_name:
        return config.app_name
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv else "") or "python"
    return os.path.splitext(os.path.basename(path))[0] or "python"


def say_if_named_after_the_server(config: Config) -> None:
    """Log, once a process, that the app is named after the server that runs it (set no
    ``app_name`` and run by gunicorn, uvicorn...): every app it runs would show as one."""
    global _said
    name = app_name(config)
    if _said or config.app_name or name not in SERVERS:
        return
    _said = True
    logger.info(
        "sqreen: this app is named %r after the command that runs it, as is every app that "
        "command runs: set app_name (SQREEN_APP_NAME) to tell them apart in the explorer",
        name,
    )


_said = False


def envelope(config: Config, framework: str | None, actions_version: int) -> dict[str, Any]:
    return {
        "sdk": {"name": "sqreen-sdk-python", "version": __version__},
        "app": {
            "name": app_name(config),
            "host": HOST,
            "pid": os.getpid(),
            "framework": framework,
        },
        # The collector answers "unchanged" rather than the whole set when it is this one,
        # and what changed since (a diff: Blocklist.apply) when it is an older one.
        "actions": {"version": actions_version, "diff": True},
    }


def spool_of(config: Config, transport: Any, prefix: str) -> Spool | None:
    """The spool: by default one per app and destination (the collector's endpoint and the
    token) for a transport to a collector (one with the action long-poll), memory and file
    transports needing none; or, under a directory given, one per destination."""
    if config.spool is False:
        return None
    destination = destination_key(
        getattr(transport, "endpoint", None), getattr(transport, "token", None)
    )
    if config.spool is True:
        if getattr(transport, "poll_actions", None) is None:
            return None
        return Spool(default_directory(app_name(config), destination), prefix)
    return Spool(Path(config.spool) / destination, prefix)
