"""The action set of one collector process, kept in memory, and its replies, encoded once.

Every reply to an SDK carries the ``actions`` it needs, by the version it says it holds:

- the version it holds is current: ``{"version": n, "unchanged": true}``, a few bytes (one
  read of the version, one indexed row);
- it holds an older one and takes diffs (``"diff": true`` beside its version: SDKs from this
  release on): ``{"version": n, "since": m, "add": [...], "remove": [ids], "watch": [...]}``,
  the blocks made or extended since ``m`` (whole items, replacing any of the same id) and the
  ids of those lifted since. Sent when it is smaller than the whole set;
- else (no version, one too old, an SDK that takes no diff): the whole set, ``{"version": n,
  "items": [...], "watch": [...]}``, as always.

The set is read whole once per process, then kept up to date with what changed since the
version in memory (:meth:`~.storage.ControlStore.action_changes`: each change stamps its
block with its version, so that is one indexed read of the changed rows). A new list of
watched names takes a version too, with no block (:mod:`.watched_names`): SDKs holding the
set would not be sent it otherwise. A diff for an SDK
at version ``m`` is read the same way (at most ``n - m`` rows: each version changes one
block). Items are encoded once per block; a reply's bytes are rendered at most every
:data:`FRESH` seconds per version (so ``expires_in`` is at most that stale) and shared by
every SDK asking meanwhile. Nothing here runs on the event loop, nor inside the one-body-at-
a-time ingest slot (``_api_sdk._slot``).
"""

from __future__ import annotations

import json
import threading
from typing import Final, NamedTuple

from .storage import Block, ControlStore
from .storage.model import to_us
from .watched_names import WatchedNames

__all__ = ["FRESH", "ActionCache", "unchanged"]

#: How long rendered bytes are reused (seconds): the ``expires_in`` of their items are at most
#: this much older than the reply (a block ends at most this late, never early).
FRESH: Final = 1.0
FRESH_US: Final = int(FRESH * 1e6)
#: Renderings kept per version (the whole set, and diffs from as many versions).
MAX_RENDERED: Final = 64


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def unchanged(version: int) -> bytes:
    """The ``actions`` of a reply to an SDK holding the current ``version``."""
    return b'{"version":%d,"unchanged":true}' % version


class _Item(NamedTuple):
    """A block in force, encoded but for its ``expires_in``, which depends on the time."""

    id: int
    head: bytes  # {"id":"7","type":"block_ip","ip":"203.0.113.7","expires_in":
    tail: bytes  # ,"reason":"..."}
    expires: int | None  # µs
    changed_in: int


def _item(block: Block) -> _Item:
    action = block.action(block.created_at)
    action.pop("expires_in")
    reason = action.pop("reason")
    head = _json(action)[:-1] + b',"expires_in":'
    tail = b',"reason":' + _json(reason) + b"}"
    expires = None if block.expires_at is None else to_us(block.expires_at)
    return _Item(block.id, head, tail, expires, block.changed_in)


def _encode(items: list[_Item], now: int) -> bytes:
    """``[item, ...]``, each with its ``expires_in`` at ``now`` (µs), in seconds to the ms."""
    parts = []
    for item in items:
        if item.expires is None:
            parts.append(item.head + b"null" + item.tail)
        else:
            left = round(max(0, item.expires - now), -3) / 1e6
            parts.append(item.head + repr(left).encode() + item.tail)
    return b"[" + b",".join(parts) + b"]"


class ActionCache:
    """The action set of ``store`` in memory, and the ``actions`` of replies as bytes.

    Thread-safe; blocking (it reads the store): call it from a worker thread.
    ``watched``: the event names replies carry (the database's), and this process's own,
    recorded when they change; none without it."""

    def __init__(self, store: ControlStore, watched: WatchedNames | None = None) -> None:
        self.store = store
        self.watched = watched or WatchedNames(store, frozenset)
        self._lock = threading.Lock()
        self._version: int | None = None  # of _items; None: not read yet
        self._items: dict[int, _Item] = {}
        # since (None: the whole set) -> (store time rendered, µs; the bytes before "watch").
        self._rendered: dict[int | None, tuple[int, bytes]] = {}
        #: Diffs rendered (for tests and benchmarks: what was sent how).
        self.diffs = 0

    def encoded(self, held: int | None, diff: bool = False) -> tuple[int, bytes]:
        """The ``actions`` (JSON) of a reply to an SDK holding version ``held`` (None: none)
        that takes a diff when ``diff``, and the version they are of."""
        version = self.version()
        if held == version:
            return version, unchanged(version)
        with self._lock:
            self._catch_up(version)
            assert self._version is not None
            version = self._version
            if held == version:
                return version, unchanged(version)
            body = self._body(held if diff else None)
            watch = self.watched.json(version)
        return version, body + b',"watch":' + watch + b"}"

    def version(self) -> int:
        """The action set's version (and this process's watched names recorded, in a
        thread, if they changed: :class:`~.watched_names.WatchedNames`)."""
        self.watched.check()
        return self.store.action_version()

    def active(self) -> int:
        """Blocks in the set in memory (in force when it was last read)."""
        return len(self._items)

    # -- under the lock -------------------------------------------------------------------

    def _catch_up(self, version: int) -> None:
        """Bring the set in memory to ``version`` at least."""
        if self._version is not None and self._version >= version:
            return
        changes = None if self._version is None else self.store.action_changes(self._version)
        if changes is None or not changes.complete:  # (retention deleted changes it missed)
            whole = self.store.action_set()
            self._items = {b.id: _item(b) for b in whole.blocks}
            self._version = whole.version
        else:
            now = to_us(changes.now)
            for block in changes.blocks:
                if block.is_active(changes.now):
                    self._items[block.id] = _item(block)
                else:
                    self._items.pop(block.id, None)
            # Blocks that expired meanwhile (SDKs drop them at their own deadlines).
            gone = [
                i for i, it in self._items.items() if it.expires is not None and it.expires <= now
            ]
            for block_id in gone:
                del self._items[block_id]
            self._version = changes.version
        self._rendered.clear()

    def _body(self, since: int | None) -> bytes:
        """The reply's ``actions`` but for its ``"watch"`` and closing brace: a diff from
        ``since`` when one is worth it, else the whole set; rendered at most every FRESH s."""
        assert self._version is not None
        version = self._version
        if since is not None and not 0 < version - since <= len(self._items):
            since = None  # (an SDK of another database, or so far behind the set is smaller)
        now = to_us(self.store.now())  # (the store's clock: tests move it)
        found = self._fresh(since, now)
        if found is not None:
            return found
        body = None if since is None else self._diff(since, version, now)
        if body is None:  # the whole set
            body = self._fresh(None, now)
            if body is None:
                items = [i for i in self._items.values() if i.expires is None or i.expires > now]
                items.sort(key=lambda i: i.id)
                body = b'{"version":%d,"items":' % version + _encode(items, now)
                self._rendered[None] = (now, body)
        if len(self._rendered) >= MAX_RENDERED:
            self._rendered.clear()
        self._rendered[since] = (now, body)  # a diff, or the whole set in its place
        return body

    def _fresh(self, since: int | None, now: int) -> bytes | None:
        found = self._rendered.get(since)
        if found is not None and 0 <= now - found[0] < FRESH_US:
            return found[1]
        return None

    def _diff(self, since: int, version: int, now: int) -> bytes | None:
        """What changed between versions ``since`` and ``version``; None when the whole set
        is as small (or the store moved on meanwhile: the whole set is as good)."""
        changes = self.store.action_changes(since)
        if changes.version != version or not changes.complete:
            return None
        add: list[_Item] = []
        remove: list[str] = []
        for block in changes.blocks:  # each in force now is in memory, as of this version
            item = self._items.get(block.id)
            if item is not None and (item.expires is None or item.expires > now):
                add.append(item)
            else:
                remove.append(str(block.id))
        if len(add) + len(remove) >= len(self._items):
            return None
        self.diffs += 1
        return b'{"version":%d,"since":%d,"add":%s,"remove":%s' % (
            version,
            since,
            _encode(add, now),
            _json(remove),
        )
