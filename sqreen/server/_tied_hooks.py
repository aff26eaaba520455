"""The ingest pipeline's hooks that run in the transaction storing a turn's events (the
playbooks': :meth:`~.playbooks.PlaybookRunner.tied_batches`), as the storage's
:class:`~.storage.TiedStep`: see :mod:`.storage._tied`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from .storage import InsertResult

if TYPE_CHECKING:
    from .pipeline import Batch

__all__ = ["TiedHook", "TiedHooks"]


class TiedHook(Protocol):
    """A hook that can run in the transaction storing the events (:class:`TiedHooks`)."""

    def tied_batches(self, stored: Sequence[tuple[Batch, InsertResult]]) -> Callable[[], None]:
        """Its work on the events newly stored, before the commit: what is left for after."""

    def forget(self) -> None:
        """What it learnt in :meth:`tied_batches` was rolled back."""


class TiedHooks:
    """The hooks run in the transaction that stores a turn's batches (a
    :class:`~.storage.TiedStep`): each one's ``tied_batches`` is told what
    ``stored_batches`` would be, before the commit, and returns what is left to do after
    it (:meth:`~.pipeline.IngestPipeline.after_store_many` does it); should the transaction fail
    after, each one's ``forget`` is called."""

    def __init__(self, hooks: Sequence[TiedHook]) -> None:
        self.hooks = list(hooks)
        #: The batches stored, aligned with the results :meth:`run` gets (set by
        #: :meth:`~.pipeline.IngestPipeline.store_many`: those it could prepare).
        self.batches: list[Batch] = []
        #: Whether the hooks ran, in a transaction that has not failed since (else they are
        #: told after the commit, as hooks without ``tied_batches`` are).
        self.ran = False
        self.then: list[Callable[[], None]] = []

    def run(self, results: Sequence[InsertResult | Exception]) -> None:
        stored = [
            (batch, result)
            for batch, result in zip(self.batches, results, strict=True)
            if not isinstance(result, Exception) and result.stored
        ]
        self.ran, self.then = False, []
        if stored:
            self.then = [hook.tied_batches(stored) for hook in self.hooks]
        self.ran = True

    def undone(self) -> None:
        self.ran, self.then = False, []
        for hook in self.hooks:
            hook.forget()
