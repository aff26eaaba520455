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
from pathlib import Path
from typing import Any

from uvicorn import Config
from uvicorn.supervisors.multiprocess import Multiprocess

from .playbooks import PlaybookSource
from .playbooks._source import CHECK_EVERY

__all__ = ["Supervisor", "supervise"]


class Supervisor(Multiprocess):
    def __init__(
        self,
        config: Config,
        sockets: list[Any],
        playbooks: PlaybookSource | None,
        in_force: Path | None = None,
    ):
        super().__init__(config, sockets)
        self.playbooks = playbooks
        #: A copy of the file as last loaded, for a worker started while the file does not
        #: hold (a bad edit saved as a worker is replaced): it starts with the rules in force.
        self.in_force = in_force
        self._looked = time.monotonic()
        self._keep_in_force()

    def _keep_in_force(self) -> None:
        """Write the text of the set in force to :attr:`in_force` (whole: a worker never
        reads half of it)."""
        if self.in_force is None or self.playbooks is None:
            return
        draft = self.in_force.with_suffix(".new")
        try:
            draft.write_text(self.playbooks.text, encoding="utf-8")
            os.replace(draft, self.in_force)
        except OSError:
            pass  # the copy in force stays (or none: a worker then says the file's error)

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
        self._keep_in_force()  # before the workers read it again
        for process in self.processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):  # gone: its successor reads it
                    os.kill(process.pid, signal.SIGHUP)


def supervise(
    app: str,
    workers: int,
    playbooks: PlaybookSource | None,
    in_force: Path | None = None,
    **options: Any,
) -> None:
    """What ``uvicorn.run(app, factory=True, workers=workers, **options)`` does, with
    :class:`Supervisor` for uvicorn's own (``in_force``: see :attr:`Supervisor.in_force`)."""
    config = Config(app, factory=True, workers=workers, **options)
    sock = config.bind_socket()
    try:
        Supervisor(config, [sock], playbooks, in_force).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
