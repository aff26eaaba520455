"""Backups of a SQLite database while the collector writes to it, and their restore.

A backup is SQLite's online backup API (``sqlite3.Connection.backup``), in steps of
``step_pages`` pages, from a connection that holds one read transaction from before the first
step to after the last. In WAL mode a reader never blocks a writer, so ingest goes on; and
the copy is the database as of that transaction's start, whatever is committed meanwhile.
Without the held transaction, each step starts its own, and SQLite restarts the copy from the
first page whenever another connection committed since the previous step: measured with one
insert a millisecond and 8-page steps, a 5 MiB copy restarted 4 times in 0.17 s, and never
finished when each step took 2 ms more (a slow disk, a busy machine).

The copy is written to ``PATH.tmp``, switched to a rollback journal (one self-contained file,
not a database and its ``-wal``), checked with ``PRAGMA integrity_check``, synced, then
renamed over ``PATH``: a crash leaves the old backup or the new one, never half of one.

A restore checks the backup first (``integrity_check``, and a schema version this code can
migrate: a whole number from 1 to the newest it knows) and copies it with the same API: into
a new file renamed into place, or, with ``force``, into the existing database, where every
other connection sees the old content or the new one whole (a file renamed over a database
that a process has open would leave that process writing to the unlinked old file).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from ._serve_lock import CollectorRunning, lock_name, unserved
from .sqlite import BUSY_TIMEOUT, SQLiteStorage, create_private

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock between processes
    fcntl = None  # type: ignore[assignment]

__all__ = ["STEP_PAGES", "BackupError", "Copied", "backup_sqlite", "check_backup", "restore_sqlite"]

#: Pages copied a step (4 KiB each by default): a progress report every 4 MiB.
STEP_PAGES: Final = 1024

#: ``progress(pages_copied, pages_total)``, after each step.
Progress = Callable[[int, int], None]


class BackupError(Exception):
    """A backup or restore that cannot be made; the message says why, for the operator."""


@dataclass(frozen=True)
class Copied:
    pages: int
    page_size: int
    schema_version: int

    @property
    def size(self) -> int:
        return self.pages * self.page_size


def backup_sqlite(
    source: str,
    target: str,
    *,
    force: bool = False,
    step_pages: int = STEP_PAGES,
    progress: Progress | None = None,
) -> Copied:
    """Copy the database at ``source`` to ``target`` (see the module)."""
    if not os.path.isfile(source):
        raise BackupError(f"no SQLite database at {source!r}")
    _refuse_existing(target, force, "")
    if os.path.exists(target) and os.path.samefile(source, target):
        # With --force the copy was renamed over the live database: a collector running
        # went on writing to the file unlinked under it, and its -wal lay beside another one.
        raise BackupError(f"{target!r} is the database itself: back it up to another path")
    with _connect(source) as src, _new_file(target) as tmp:
        src.execute("BEGIN")  # the snapshot: held until the last page is copied
        try:
            version = _schema_version(src, source)
            with _connect(tmp) as dst:
                copied = _copy(src, dst, step_pages, progress, version)
                dst.execute("PRAGMA journal_mode=DELETE")
                _check_integrity(dst, "the copy")
        finally:
            src.execute("COMMIT")
    return copied


def check_backup(path: str) -> int:
    """The schema version of the backup at ``path``, once it is whole and one this code can
    read; else :class:`BackupError` saying what is wrong."""
    if not os.path.isfile(path):
        raise BackupError(f"no backup at {path!r}")
    try:
        with _read_only(path) as conn:
            _check_integrity(conn, repr(path))
            version = _schema_version(conn, path)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path!r} is not a SQLite database ({exc})") from None
    known = len(SQLiteStorage.MIGRATIONS)
    if version > known:
        raise BackupError(
            f"{path!r} is of schema version {version}, newer than this sqreen-sdk's ({known}): "
            "restore it with the version that made it, or upgrade"
        )
    return version


def restore_sqlite(
    backup: str,
    target: str,
    *,
    force: bool = False,
    step_pages: int = STEP_PAGES,
    progress: Progress | None = None,
) -> Copied:
    """Restore ``backup`` (checked first) as the database at ``target`` (see the module)."""
    version = check_backup(backup)
    if os.path.exists(target):
        _refuse_existing(target, force, "stop the collector that uses it, and ")
        if os.path.samefile(backup, target):
            raise BackupError(f"{backup!r} is the database to restore it to")
        try:
            with unserved(target), _writers_held(target):
                with _read_only(backup) as src, _connect(target) as dst:
                    log_ids, hit_ids = _newest_log_id(dst), _newest_hit_id(dst)
                    copied = _copy(src, dst, step_pages, progress, version)
                    _mark_log(dst, log_ids)
                    _mark_hits(dst, hit_ids)
                    return copied
        except CollectorRunning:
            raise BackupError(
                f"a collector (sqreen serve) is using {target!r}: stop the collector first, "
                "then restore (it keeps in memory what the old database held)"
            ) from None
    with _read_only(backup) as src, _new_file(target) as tmp, _connect(tmp) as dst:
        return _copy(src, dst, step_pages, progress, version)


@contextlib.contextmanager
def _writers_held(target: str) -> Iterator[None]:
    """Hold the lock the collector's processes take before each write (``SQLiteStorage``'s
    ``-writer.lock``), so that none writes between the log's newest id read and the copy."""
    flock = getattr(fcntl, "flock", None)
    if flock is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(lock_name(target, "-writer.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _newest_log_id(conn: sqlite3.Connection) -> int:
    """The newest id of the windows' log (0: none, or a schema before it)."""
    try:
        (newest,) = conn.execute("SELECT max(id) FROM window_writes").fetchone()
    except sqlite3.OperationalError:  # no such table
        return 0
    return int(newest or 0)


def _mark_log(conn: sqlite3.Connection, before: int) -> None:
    """After a restore into a file a collector may have open: a row of the windows' log
    newer than every id given before or in the backup, without counts, so that no id is
    given twice and every process reading the log counts its windows again."""
    newest = max(before, _newest_log_id(conn))
    with contextlib.suppress(sqlite3.OperationalError):  # a backup from before the log
        conn.execute("INSERT INTO window_writes (id, at, counts) VALUES (?, 0, '')", (newest + 1,))


def _newest_hit_id(conn: sqlite3.Connection) -> int:
    """The newest id ``window_log`` gave (0: none, or a schema before it)."""
    try:
        (newest,) = conn.execute(
            "SELECT max(seq) FROM sqlite_sequence WHERE name = 'window_log'"
        ).fetchone()
    except sqlite3.OperationalError:  # no such table
        return 0
    return int(newest or 0)


def _mark_hits(conn: sqlite3.Connection, before: int) -> None:
    """After a restore into a file a collector may have open: ``window_log``'s next id past
    every id given before, so that a process that read a row since lost finds it gone, not
    another in its place, and reads the hits again (storage/_hit_log.py)."""
    if before > _newest_hit_id(conn):
        with contextlib.suppress(sqlite3.OperationalError):  # a backup from before the log
            conn.execute("DELETE FROM sqlite_sequence WHERE name = 'window_log'")
            conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('window_log', ?)", (before,)
            )


def _refuse_existing(target: str, force: bool, first: str) -> None:
    if os.path.exists(target) and not force:
        raise BackupError(f"{target!r} exists: {first}give --force to replace it")


@contextlib.contextmanager
def _connect(path: str, *, uri: bool = False) -> Iterator[sqlite3.Connection]:
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, uri=uri)
    except sqlite3.OperationalError as exc:  # no such directory, no permission
        raise BackupError(f"cannot open {path!r}: {exc}") from None
    try:
        yield conn
    finally:
        conn.close()


def _read_only(path: str) -> contextlib.AbstractContextManager[sqlite3.Connection]:
    return _connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)


def _check_folder(target: str) -> None:
    """Refuse a ``target`` whose folder cannot take it, naming the folder: otherwise SQLite
    says 'unable to open database file' about ``target.tmp``, a file the user never named."""
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.exists(folder):
        raise BackupError(f"cannot write {target!r}: the folder {folder!r} does not exist")
    if not os.path.isdir(folder):
        raise BackupError(f"cannot write {target!r}: {folder!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BackupError(f"cannot write {target!r}: no permission to write in {folder!r}")


@contextlib.contextmanager
def _new_file(target: str) -> Iterator[str]:
    """``target.tmp`` to write, renamed to ``target`` (synced, with its directory) if the
    block succeeds, removed if it fails."""
    _check_folder(target)
    tmp = f"{target}.tmp"
    for stale in (tmp, f"{tmp}-journal", f"{tmp}-wal", f"{tmp}-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)  # left by a backup that was interrupted
    try:
        create_private(tmp)  # a copy of everything: its owner's alone, as the database
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        directory = os.open(os.path.dirname(os.path.abspath(target)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _copy(
    src: sqlite3.Connection,
    dst: sqlite3.Connection,
    step_pages: int,
    progress: Progress | None,
    version: int,
) -> Copied:
    total = [0]

    def step(status: int, remaining: int, pages: int) -> None:
        total[0] = pages
        if progress is not None:
            progress(pages - remaining, pages)

    try:
        src.backup(dst, pages=step_pages, progress=step)
    except sqlite3.Error as exc:
        raise BackupError(f"the copy failed: {exc}") from None
    page_size = dst.execute("PRAGMA page_size").fetchone()[0]
    return Copied(total[0], page_size, version)


def _schema_version(conn: sqlite3.Connection, path: str) -> int:
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        conn.execute("SELECT 1 FROM events LIMIT 0")
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path!r} is not a sqreen database ({exc})") from None
    if row is None:
        raise BackupError(f"{path!r} is not a sqreen database (no schema version)")
    (version,) = row
    # sqreen writes a whole number from 1 (migrate() stores 0 only in the transaction that
    # creates the tables): anything else would be "restored", and every command then fail.
    if type(version) is not int or version < 1:
        raise BackupError(
            f"{path!r} is not a sqreen database (its schema version is {version!r}, not a "
            "whole number from 1)"
        )
    return version


def _check_integrity(conn: sqlite3.Connection, what: str) -> None:
    problems = [problem for (problem,) in conn.execute("PRAGMA integrity_check(20)")]
    if problems != ["ok"]:
        raise BackupError(f"{what} fails PRAGMA integrity_check: {'; '.join(problems)}")
