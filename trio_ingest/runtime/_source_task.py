"""The source task: read, admit, run the fused steps, send; and commit what is finished.

``stop()`` cancels only the read under way (a batch already read goes on); the
commit loop hands the source the offsets whose every event is finished, shielded
and bounded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc

from .._batch import Batch
from .._errors import SourceError
from ..sources._base import Read, Source
from ._common import hosted, note
from ._context import WorkerContext
from ._intake import Intake

if TYPE_CHECKING:
    from ..graph._plan import TaskNode
    from ._runtime import Runtime

__all__ = ("SourceRunner",)


class SourceRunner:
    """Reads a source, runs the fused chain, feeds the first edges; commits offsets."""

    role = "source"

    def __init__(self, rt: Runtime, task: TaskNode) -> None:
        self.rt = rt
        self.task = task
        self.name = task.head.name
        self.stats = rt.stats[self.name]
        self.source: Source = task.head.obj
        self.source.node = self.name  # positional ids are namespaced by the node
        self.tracker = rt.ledger.tracker(self.name)
        self._stopping = False
        self._read_scope: anyio.CancelScope | None = None
        self.worker = rt.worker_ends(task)
        self.intake = Intake(
            rt.ledger, self.tracker, self.stats, self.worker.outputs.get(None, []), rt.tracer
        )

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            async with hosted(self.source):
                await self._run(task_status=task_status)
        except Exception as exc:
            note(exc, "source", self.name)
            raise

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        rt = self.rt
        try:
            checkpointer = rt.checkpointer
            try:
                await self.source.open()
                if checkpointer is not None:
                    await checkpointer.seek(self)  # the state store is the authority
            except Exception as exc:
                note(exc, "source", self.name)
                raise
            task_status.started()
            async with anyio.create_task_group() as tg:
                if checkpointer is None:  # else offsets commit with the checkpoints
                    tg.start_soon(self._commit_loop)
                with self.worker:
                    await self._read_loop()
                await rt.wait_drained()
                if checkpointer is not None:
                    await checkpointer.final()
                tg.cancel_scope.cancel()
        except Exception as exc:
            note(exc, "source", self.name)
            raise
        finally:
            try:
                if rt.checkpointer is None:
                    with anyio.move_on_after(rt.cleanup_timeout(), shield=True):
                        await self._commit()
            finally:
                # closed even when that last commit failed (a checkpoint on a full disk)
                with anyio.move_on_after(rt.cleanup_timeout(), shield=True):
                    await self.source.aclose()

    async def _read_loop(self) -> None:
        rt = self.rt
        source = self.source
        stats = self.stats
        worker = self.worker
        intake = self.intake
        max_batch = self.task.read_size or rt.max_batch
        ctx = WorkerContext(rt, stats, worker, rt.steps_of(self.task))
        forward = ctx.forward
        checkpointer = rt.checkpointer
        while not self._stopping:
            # stop() cancels only the read: a batch already read is pushed through
            read = None
            if source.read_may_wait:
                with anyio.CancelScope() as self._read_scope:
                    read = await source.read(max_batch)
                self._read_scope = None
            else:
                read = await source.read(max_batch)  # returns at once: no scope needed
            if read is None:
                return
            if not isinstance(read, Read):
                raise SourceError(
                    f"{type(source).__name__}.read() must return a Read or None, got {read!r}"
                )
            if checkpointer is not None:
                await checkpointer.gate()  # a checkpoint under way: these events wait
            events = read.events
            if type(events) is not list:  # a custom source's tuple or generator
                events = list(events)
            try:  # checked before anything is admitted: a bad read moves nothing
                payloads = Batch.payloads_of(events)
            except TypeError as exc:
                raise SourceError(
                    f"{type(source).__name__}.read() returned a Read whose events are not all "
                    f"Event objects: {exc}"
                ) from exc
            if read.parts is not None:  # several callers' events, a token each
                tokens = intake.enter_parts(events, read.offset, read.parts)
                if events:
                    await forward(intake.traced(Batch(events, payloads, tokens)))
                continue
            rejected = read.rejected
            token = intake.enter(
                events, read.offset, len(rejected), read.partition, read.completion
            )
            if rejected:
                await rt.dead_letter_records(worker, stats, rejected, token, len(events))
            if events:  # span: when the read returned
                await forward(intake.traced(Batch.of(events, token, payloads)))

    def stop_intake(self) -> None:
        """Read no more: cancel the read under way (a batch already read goes on)."""
        if not self._stopping:
            self.source.stopping()
        self._stopping = True
        if self._read_scope is not None:
            self._read_scope.cancel()

    async def _commit(self) -> None:
        offsets = self.tracker.take_committable()
        if offsets:
            await self.source.commit(offsets)
            self.tracker.committed = offsets[-1]

    async def _commit_loop(self) -> None:
        interval = self.source.commit_interval
        while True:
            await self.tracker.wait_changed()
            with anyio.move_on_after(self.rt.cleanup_timeout(), shield=True):
                await self._commit()
            if interval > 0:
                await anyio.sleep(interval)
