"""Checkpoint epochs: a consistent cut of stage state and source offsets, in one transaction.

With a durable state store (``state=ti.state.SQLite(path)``), every
``checkpoint_interval`` seconds and once at the end of a run that was not cut
short, the :class:`Checkpointer`:

1. pauses the sources (a read that returns waits before its events go in);
2. hands the ack tokens held by stateful stages to the ledger (finished as
   filtered: the state now stands for those events) and waits until nothing else
   is in flight: every event read so far is written, dead-lettered, filtered or
   folded into stage state;
3. takes every stateful stage's state and every source's last offset, encodes
   them (in a worker thread, the sources still paused), lets the sources (and the
   serving handle) go on, and writes them in one store transaction;
4. then calls each source's own ``commit`` with the offsets that checkpoint covers.

On start, the stored checkpoint is restored: each stage's state, and each source
seeks to its stored offset (the store is the authority). A graph whose stateful
stages or sources differ from the stored ones fails before anything opens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from .._acks import AckToken
from .._errors import ConfigError
from ..stages._stateful import StatefulStage
from ..state._store import Checkpoint, StateError, StateStore, decode, encode
from ._common import log

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._source_task import SourceRunner

__all__ = ("Checkpointer",)

#: How often a cut looks again whether what is in flight has finished.
_POLL = 0.002


class Checkpointer:
    """Takes the checkpoint epochs of one run and restores the last one at its start."""

    def __init__(self, rt: Runtime, store: StateStore) -> None:
        self.rt = rt
        self.store = store
        self.interval = rt.graph.checkpoint_interval
        self.stages: dict[str, StatefulStage] = {}
        for name, node in rt.graph.nodes.items():
            if node.role == "stage" and isinstance(node.obj, StatefulStage):
                if not node.obj.checkpoints:
                    raise ConfigError(
                        f"stage {name!r} ({node.obj.kind}) cannot keep its state in a durable "
                        f"state store ({store!r}): run it without 'state='"
                    )
                self.stages[name] = node.obj
        self.sources: dict[str, SourceRunner] = {}
        self.layout: dict[str, Any] = {
            "stages": {name: stage.state_signature() for name, stage in self.stages.items()},
            "sources": sorted(
                n for n, node in rt.graph.nodes.items() if node.role == "source"
            ),
        }
        for name in self.layout["sources"]:
            source = rt.graph.nodes[name].obj
            if not source.seekable and not source.placeholder:  # a placeholder never reads
                raise ConfigError(
                    f"source {name!r} ({type(source).__name__}) cannot seek, so it cannot "
                    f"resume from the durable state store {store!r}: run it without 'state='"
                )
        self.epoch = 0
        self.offsets: dict[str, Any] = {}  # per source: the offset restored, then the last saved
        # reads taken from the trackers whose checkpoint is not written yet (a save that timed
        # out): the next checkpoint writes and commits them, so none is forgotten
        self._unsaved: dict[str, tuple[SourceRunner, list[Any], Any]] = {}
        self._resume: anyio.Event | None = None  # set: the sources may go on
        self._lock: anyio.Lock | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._loop_scope: anyio.CancelScope | None = None
        self._final_done = False

    # -- starting -----------------------------------------------------------------
    async def restore(self) -> None:
        """Load the stored checkpoint and hand each stage its state (before any task starts).

        Raises:
            StateError: The store cannot be read, holds state this graph does not match,
                or another run holds it.
        """
        self._lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        # made here, entered by run_periodic: a final() that comes first cancels it beforehand
        self._loop_scope = anyio.CancelScope()
        await anyio.to_thread.run_sync(self.store.claim, limiter=self._limiter)
        stored = await anyio.to_thread.run_sync(self.store.load, limiter=self._limiter)
        if stored is None:
            return
        self._check_layout(stored)
        for name, stage in self.stages.items():
            fmt, data = stored.stages[name]
            stage.restore_state(decode(fmt, data))
        self.epoch = stored.epoch
        self.offsets = dict(stored.offsets)
        log.info("restored checkpoint epoch %d from %r", stored.epoch, self.store)

    def _check_layout(self, stored: Checkpoint) -> None:
        here, there = self.layout, stored.layout
        store = self.store
        for name, signature in there.get("stages", {}).items():
            if name not in here["stages"]:
                raise StateError(
                    f"state store {store!r} holds state of stage {name!r} ({signature}), which "
                    "this graph does not have: keep the stage, or start with a new store"
                )
            if here["stages"][name] != signature:
                raise StateError(
                    f"stage {name!r} is {here['stages'][name]} but the state store {store!r} "
                    f"holds its state as {signature}: start with a new store"
                )
        for name in here["stages"]:
            if name not in there.get("stages", {}) or name not in stored.stages:
                raise StateError(
                    f"stage {name!r} has no state in the state store {store!r} (the graph "
                    "changed since it was written): start with a new store"
                )
        if sorted(there.get("sources", [])) != here["sources"]:
            raise StateError(
                f"the state store {store!r} was written for sources {there.get('sources')}, "
                f"this graph has {here['sources']}: start with a new store"
            )

    async def seek(self, runner: SourceRunner) -> None:
        """Move a just-opened source to its stored offset, if it has one."""
        state = self.offsets.get(runner.name)
        if state is not None:
            await runner.source.seek(state)

    # -- the sources' side ----------------------------------------------------------
    async def gate(self) -> None:
        """Wait while a checkpoint holds the sources (a read's events wait before entering)."""
        resume = self._resume
        if resume is not None:
            await resume.wait()

    # -- taking checkpoints -----------------------------------------------------------
    async def run_periodic(self) -> None:
        """Take a checkpoint every ``interval`` seconds until :meth:`final` stops it."""
        assert self._loop_scope is not None
        with self._loop_scope:
            while True:
                await anyio.sleep(self.interval)
                await self.checkpoint()

    async def final(self) -> None:
        """The last checkpoint, once every stage and sink finished (a graceful end or stop)."""
        assert self._lock is not None
        async with self._lock:
            if self._loop_scope is not None:
                self._loop_scope.cancel()
            if self._final_done:
                return
            self._final_done = True
            await self._take()

    async def checkpoint(self) -> None:
        """Take one checkpoint epoch now (the periodic loop calls it)."""
        assert self._lock is not None
        async with self._lock:
            if not self._final_done:
                await self._take()

    def _release(self) -> None:
        ledger = self.rt.ledger
        for name, stage in self.stages.items():
            tokens: list[AckToken] = stage.release_tokens()
            if tokens:
                self.rt.stats[name].filtered += len(tokens)
                ledger.filtered_out(tokens)

    async def _take(self) -> None:
        rt = self.rt
        ledger = rt.ledger
        self._resume = resume = anyio.Event()
        try:
            # a stage that holds events for long (a custom stage's buffer) must not stall the
            # sources: past the bound this epoch is skipped, the next one tries again
            with anyio.move_on_after(rt.graph.commit_timeout) as waited:
                while True:
                    self._release()
                    if ledger.in_flight == 0:
                        break
                    await anyio.sleep(_POLL)
            if waited.cancelled_caught:
                log.warning("checkpoint skipped: %d event(s) still in flight after %.1f s",
                            ledger.in_flight, rt.graph.commit_timeout)
                return
            # the cut: nothing in flight, every event read is finished or in stage state
            snapshots = {name: stage.snapshot_state() for name, stage in self.stages.items()}
            unsaved = self._unsaved
            for runner in rt.source_runners:
                taken = runner.tracker.take_committable()
                if taken:
                    before = unsaved[runner.name][1] if runner.name in unsaved else []
                    unsaved[runner.name] = (runner, [*before, *taken],
                                            runner.source.offset_state(taken[-1]))
            offsets = {name: state for name, (_r, _t, state) in unsaved.items()}
            # encoded in a thread (a million windows take seconds), the sources still paused:
            # nothing enters, so nothing changes what the snapshot refers to
            stages = await anyio.to_thread.run_sync(_encode_all, snapshots,
                                                    limiter=self._limiter)
        finally:
            self._resume = None
            resume.set()  # the state is encoded: the sources go on while it is written
        self.epoch += 1
        checkpoint = Checkpoint(self.epoch, self.layout, stages, offsets)
        with anyio.move_on_after(rt.cleanup_timeout(), shield=True) as saving:
            await anyio.to_thread.run_sync(self.store.save, checkpoint, limiter=self._limiter)
        if saving.cancelled_caught:  # not known to be saved: the sources commit nothing
            log.warning("checkpoint epoch %d was not written within %.1f s", self.epoch,
                        rt.cleanup_timeout())
            return
        self.offsets.update(offsets)
        commits, self._unsaved = self._unsaved, {}
        for runner, taken, _state in commits.values():
            with anyio.move_on_after(rt.cleanup_timeout(), shield=True):
                await runner.source.commit(taken)
                runner.tracker.committed = taken[-1]

    async def aclose(self) -> None:
        """Close the store's connection."""
        with anyio.move_on_after(self.rt.cleanup_timeout(), shield=True):
            await anyio.to_thread.run_sync(self.store.close, limiter=self._limiter)


def _encode_all(snapshots: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    return {name: encode(state) for name, state in snapshots.items()}
