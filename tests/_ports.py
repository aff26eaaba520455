"""A TCP port on 127.0.0.1 for a server that a test starts in another process.

Asking the kernel for port 0 and closing the socket hands back a port of the ephemeral range,
the same range the kernel gives every outgoing connection: between the close and the server's
bind, a client connection of another test can take it ("Address already in use"). A port below
that range is never handed out to a connection, so only a listener of our own could collide.
"""

from __future__ import annotations

import random
import socket

_LOWEST = 20000


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port that nothing listens on now, outside the ephemeral range where one exists."""
    floor = _ephemeral_floor()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(_LOWEST, floor) if floor > _LOWEST + 1000 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free TCP port on 127.0.0.1")
