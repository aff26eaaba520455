"""``sqreen serve --workers N``: uvicorn's supervisor of N worker processes, with the
playbook file watched once for them all.

uvicorn's supervisor answers SIGHUP by replacing every worker, one after the other. With
``--playbooks`` that was the only reload its workers got, and a bad edit made each new
worker fail to start (its factory refusing the file) rather than keep the rules in force.
Here the supervisor reads the file itself, on SIGHUP and when it changes (looked at every
second, in its loop that already wakes twice a second): it says what it found, once (not
once a worker), and when the file holds it passes SIGHUP on to each worker, which re-reads
it at once (:class:`~.playbooks.PlaybookSource`, ``supervised``). Without ``--playbooks``,
SIGHUP keeps uvicorn's meaning.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from uvicorn import Config
from uvicorn.supervisors.multiprocess import Multiprocess

from .playbooks import PlaybookSource
from .playbooks._source import CHECK_EVERY

__all__ = ["Supervisor", "supervise"]


class Supervisor(Multiprocess):
    def __init__(self, config: Config, sockets: list[Any], playbooks: PlaybookSource | None):
        super().__init__(config, sockets)
        self.playbooks = playbooks
        self._looked = time.monotonic()

    def handle_hup(self) -> None:
        if self.playbooks is None:
            super().handle_hup()
        else:
            self._reload(force=True)

    def handle_signals(self) -> None:
        super().handle_signals()
        if self.playbooks is not None and time.monotonic() - self._looked >= CHECK_EVERY:
            self._reload()

    def _reload(self, force: bool = False) -> None:
        assert self.playbooks is not None
        self._looked = time.monotonic()
        if not self.playbooks.check(force):
            return  # unchanged, or refused (said once, here): the workers keep theirs
        for process in self.processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):  # gone: its successor reads it
                    os.kill(process.pid, signal.SIGHUP)


def supervise(app: str, workers: int, playbooks: PlaybookSource | None, **options: Any) -> None:
    """What ``uvicorn.run(app, factory=True, workers=workers, **options)`` does, with
    :class:`Supervisor` for uvicorn's own."""
    config = Config(app, factory=True, workers=workers, **options)
    sock = config.bind_socket()
    try:
        Supervisor(config, [sock], playbooks).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
