"""Whether ``sqreen serve`` can listen on its address, asked before anything starts.

uvicorn binds its address after the app's startup: on a port already taken, the collector
logged "Application startup complete" (and the explorer's address) before the bind error,
then exited 3. Here the address is bound as uvicorn's server will bind it (every address
the host resolves to, as :meth:`asyncio.loop.create_server` does: IPv6 ones only for IPv6,
a link-local scope kept) and let go at once, so that a taken port, a host of no interface
of this machine or a privileged port stops the command with the option at fault, before the
database is opened. uvicorn then binds and listens as it always did (two collectors started
in the same instant can still both pass here: the second fails as uvicorn fails). For
``--port 0`` the check picks the port, which uvicorn is then given.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Final

import click

__all__ = ["check_listen", "url_host"]

_HINTS: Final = {
    errno.EADDRINUSE: " (is another collector running? pick another --port)",
    errno.EACCES: " (ports below 1024 need privileges: pick another --port)",
    errno.EADDRNOTAVAIL: " (no interface of this machine has that address: see --host)",
}


def _addresses(host: str, port: int) -> list[tuple[int, int, int, tuple[object, ...]]]:
    """The addresses ``create_server(host=host, port=port)`` binds: ``''`` is every
    interface, as for uvicorn."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    seen: list[tuple[int, int, int, tuple[object, ...]]] = []
    for family, kind, proto, _, address in infos:
        if (family, kind, proto, address) not in seen:
            seen.append((family, kind, proto, address))
    return seen


def check_listen(host: str, port: int) -> int:
    """Bind what uvicorn will bind for ``host:port``, and let go; return the port, or raise
    a :class:`click.ClickException` with the reason when it cannot be bound.

    For ``--port 0``, the port is one the system gives the first address and every other
    address has free too (tried again a few times when it has not): uvicorn is told it, so
    that what the collector says of its address (the explorer's) is where it listens.
    """
    for _ in range(_TRIES if port == 0 else 1):
        try:
            return _bind_all(host, port)
        except OSError as exc:
            if port != 0 or exc.errno != errno.EADDRINUSE:
                raise _cannot(host, port, exc) from None
        except UnicodeError as exc:
            raise _cannot(host, port, exc) from None
    raise _cannot(host, port, OSError(errno.EADDRINUSE, "no port free on every address"))


#: How many ports ``--port 0`` tries, each free on its first address, before it gives up.
_TRIES: Final = 10


def _bind_all(host: str, port: int) -> int:
    """Bind every address of ``host`` on ``port`` (0: the port the first one gets), let go
    of them, and return the port. Raises :class:`OSError` (a name that does not resolve
    too)."""
    with contextlib.ExitStack() as held:
        for family, kind, proto, address in _addresses(host, port):
            sock = held.enter_context(socket.socket(family, kind, proto))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio: IPv6 only, IPv4 stays free
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address[0], port, *address[2:]))
            port = port or sock.getsockname()[1]
    return port


def _cannot(host: str, port: int, exc: BaseException) -> click.ClickException:
    reason = (getattr(exc, "strerror", None) or str(exc)).lower()
    hint = _HINTS.get(getattr(exc, "errno", None) or 0, "")
    shown = url_host(host) if host else "*"
    return click.ClickException(f"cannot listen on {shown}:{port}: {reason}{hint}")


def url_host(host: str) -> str:
    """``host`` as the host of a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
