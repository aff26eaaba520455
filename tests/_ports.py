"""A TCP port on 127.0.0.1 for a server that a test starts in another process.

Asking the kernel for port 0 and closing the socket hands back a port of the ephemeral range,
the same range the kernel gives every outgoing connection: between the close and the server's
bind, a client connection of another test can take it ("Address already in use"). A port below
that range is never handed out to a connection, so only a listener of our own could collide;
each pytest-xdist worker draws from its own share of it, so two workers never pick the same
port while neither server has bound it yet.
"""

from __future__ import annotations

import os
import random
import socket
from collections import deque

_LOWEST = 20000
#: The ports handed out lately by this process, not handed out again while their servers
#: may still be starting.
_RECENT: deque[int] = deque(maxlen=64)


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _share(low: int, high: int) -> tuple[int, int]:
    """This pytest-xdist worker's part of ``[low, high)`` (all of it outside xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.isdigit() and count.isdigit() and 0 <= int(worker) < int(count)):
        return low, high
    size = (high - low) // int(count)
    return low + size * int(worker), low + size * (int(worker) + 1)


def free_port() -> int:
    """A port that nothing listens on now, outside the ephemeral range where one exists."""
    low, high = _share(_LOWEST, _ephemeral_floor())
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(low, high) if high > low + 500 else 0
        if port in _RECENT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _RECENT.append(int(sock.getsockname()[1]))
            return _RECENT[-1]
    raise RuntimeError("no free TCP port on 127.0.0.1")
