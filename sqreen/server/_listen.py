"""The socket ``sqreen serve`` listens on, bound before anything else starts.

uvicorn binds its address after the app's startup: on a port already taken, the collector
logged "Application startup complete" (and the explorer's address) before the bind error.
Bound here first, a taken port or an address this machine does not have stops the command
with the option at fault, before the database is opened; the same socket then serves (one
process) or is shared by the workers (``--workers N``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import sys
from collections.abc import Iterator
from typing import Any

import click

__all__ = ["announce", "closed_on_error", "listen", "run_on"]

_HINTS = {
    errno.EADDRINUSE: " (is another collector running? pick another --port)",
    errno.EACCES: " (ports below 1024 need privileges: pick another --port)",
    errno.EADDRNOTAVAIL: " (no interface of this machine has that address: see --host)",
}


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` as uvicorn binds one, or the reason it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, UnicodeError) as exc:  # a name that does not resolve is an OSError too
        sock.close()
        reason = (getattr(exc, "strerror", None) or str(exc)).lower()
        hint = _HINTS.get(getattr(exc, "errno", None) or 0, "")
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}{hint}") from None
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def closed_on_error(sock: socket.socket) -> Iterator[socket.socket]:
    """``sock``, closed if what runs in the block fails (a database that cannot be opened)."""
    try:
        yield sock
    except BaseException:
        sock.close()
        raise


def announce(sock: socket.socket, tls: bool) -> None:
    """The line uvicorn logs when it binds (``--port 0`` shows the port taken)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if tls else "http"
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)", scheme, shown, port
    )


def run_on(sock: socket.socket, app: Any, **options: Any) -> None:
    """What ``uvicorn.run(app, **options)`` does for one process, on ``sock``."""
    import uvicorn

    config = uvicorn.Config(app, **options)  # applies the log configuration
    server = uvicorn.Server(config)
    announce(sock, config.is_ssl)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # pragma: no cover - uvicorn handles SIGINT itself
        pass
    finally:
        sock.close()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE
