"""The SDK's threads take none of the process's signals: the app's main thread gets them."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

import sqreen
from sqreen._threads import PROCESS_SIGNALS, start_thread
from tests.receiver import Receiver

pytestmark = pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks")


def _mask() -> set[signal.Signals]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_a_thread_of_ours_blocks_process_signals_and_the_caller_keeps_its_mask() -> None:
    before = _mask()
    seen: list[set[signal.Signals]] = []
    start_thread(lambda: seen.append(_mask()), "probe").join(5)
    assert seen and {signal.SIGTERM, signal.SIGINT, signal.SIGHUP} <= seen[0]
    assert PROCESS_SIGNALS <= seen[0]
    assert signal.SIGSEGV not in seen[0]  # synchronous: the faulting thread's own
    assert _mask() == before


def test_the_flusher_and_the_action_poll_block_sigterm(receiver: Receiver) -> None:
    client = sqreen.init(endpoint=receiver.url, token="t", flush_interval=3600)
    try:
        client.track("probe")
        client.start()
        ours = ("sqreen-flusher", "sqreen-actions")
        threads = {t.name: t for t in threading.enumerate() if t.name in ours}
        assert set(threads) == set(ours)
        for thread in threads.values():
            status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
            blocked = int(status.split("SigBlk:")[1].split()[0], 16)
            assert blocked & (1 << (signal.SIGTERM - 1)), thread.name
    finally:
        sqreen.shutdown(1)
