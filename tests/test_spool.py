"""Which spooled batches a process claims: those of processes that are gone, told apart by
the lock each holds for its life (``<pid>-<prefix>.lock``), whatever their pid; by the pid
for a batch without one (an earlier version's)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sqreen._spool import Spool


def _batch(directory: Path, pid: int, prefix: str, n: int = 1) -> Path:
    path = directory / f"{pid}-{prefix}-{n}.batch"
    path.write_bytes(b'{"id": "%s-%d"}\n' % (prefix.encode(), n))
    return path


def _claimed(spool: Spool) -> list[bytes]:
    return [event for _name, events in spool.orphans() for event in events]


def _holder(directory: Path, pid: int, prefix: str) -> subprocess.Popen[str]:
    """Another process holding the lock of ``<pid>-<prefix>``: one with our pid in another
    pid namespace (a container sharing the directory on a volume), as far as we can tell."""
    code = """
        import fcntl, os, sys
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("held", flush=True)
        sys.stdin.read()
        """
    lock = str(directory / f"{pid}-{prefix}.lock")
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), lock],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_previous_process_with_our_pid_is_gone(tmp_path: Path) -> None:
    """A restarted container is pid 1 again: the files its previous run left (with a lock
    nobody holds, or none at all from an earlier version) are ours to send."""
    mine = os.getpid()
    _batch(tmp_path, mine, "0123456789ab")
    (tmp_path / f"{mine}-0123456789ab.lock").touch()
    _batch(tmp_path, mine, "ba9876543210")  # no lock: written by an earlier version
    spool = Spool(tmp_path, "ffffffffffff")
    assert sorted(_claimed(spool)) == [b'{"id": "0123456789ab-1"}', b'{"id": "ba9876543210-1"}']
    assert not (tmp_path / f"{mine}-0123456789ab.lock").exists()  # its lock went with it
    assert _claimed(Spool(tmp_path, "eeeeeeeeeeee")) == []  # claimed files are ours (we live)


def test_a_live_process_with_our_pid_keeps_its_files_until_it_ends(tmp_path: Path) -> None:
    mine = os.getpid()
    _batch(tmp_path, mine, "0123456789ab")
    holder = _holder(tmp_path, mine, "0123456789ab")
    try:
        assert _claimed(Spool(tmp_path, "ffffffffffff")) == []
    finally:
        holder.communicate("")  # it ends, and its lock with it
    assert _claimed(Spool(tmp_path, "eeeeeeeeeeee")) == [b'{"id": "0123456789ab-1"}']


def test_a_pid_reused_by_another_process_does_not_keep_a_dead_one_files(tmp_path: Path) -> None:
    """The lock says the writer is gone, though a process (here, our parent) has its pid."""
    _batch(tmp_path, os.getppid(), "0123456789ab")
    (tmp_path / f"{os.getppid()}-0123456789ab.lock").touch()
    assert _claimed(Spool(tmp_path, "ffffffffffff")) == [b'{"id": "0123456789ab-1"}']


def test_another_client_of_this_process_keeps_its_files(tmp_path: Path) -> None:
    """A client replaced by another in one process: each has its own prefix and lock."""
    first = Spool(tmp_path, "aaaaaaaaaaaa")
    assert first.write([b'{"id": "first"}']) is not None
    assert _claimed(Spool(tmp_path, "bbbbbbbbbbbb")) == []
    assert len(list(tmp_path.glob("*.batch"))) == 1


def test_a_forked_child_does_not_hold_its_parent_lock(tmp_path: Path) -> None:
    """Once the parent is gone, its files are claimable though the child it forked lives on."""
    code = """
        import os, sys, time
        from sqreen._spool import Spool
        spool = Spool(sys.argv[1], "aaaaaaaaaaaa")
        spool.write([b'{"id": "parent"}'])
        if os.fork() == 0:
            spool.after_fork_in_child("cccccccccccc")
            print(os.getpid(), flush=True)
            sys.stdin.read()
            os._exit(0)
        os._exit(0)
        """
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip().isdigit()
        child.wait()  # the parent has exited; the child it forked still runs
        assert _claimed(Spool(tmp_path, "ffffffffffff")) == [b'{"id": "parent"}']
    finally:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()  # the forked child ends
        child.stdout.close()


def test_two_threads_saving_the_action_set_at_once_keep_the_spool(tmp_path: Path) -> None:
    """The flusher and the action long-poll both save a new set: each writes its own file
    and renames it; with one file name for both, a rename failed and disabled the spool."""
    import threading

    spool = Spool(tmp_path, "aaaaaaaaaaaa")
    start = threading.Barrier(2)

    def save(n: int) -> None:
        start.wait()
        for version in range(200):
            spool.save_actions({"saved_at": 0, "actions": {"version": version, "by": n}})

    threads = [threading.Thread(target=save, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert spool.enabled
    assert spool.load_actions()["actions"]["version"] == 199
