"""The stage task: ``workers`` tasks on one input edge, each calling ``stage.work(ctx)``.

The runtime knows one stage protocol (:mod:`trio_ingest.stages._context`); what
it adds around it is the same for every stage: the worker tasks, per-key
partitioning (a key always lands on the same worker, through a private queue
each), and input order for ``ordered=True`` stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc

from .._edge import Edge
from ..stages._custom import as_stage
from ._common import note
from ._context import Turns, WorkerContext

if TYPE_CHECKING:
    from ..graph._plan import TaskNode
    from ._runtime import Runtime

__all__ = ("StageRunner",)


class StageRunner:
    """Runs a stage node's worker tasks."""

    role = "stage"

    def __init__(self, rt: Runtime, task: TaskNode) -> None:
        self.rt = rt
        self.task = task
        self.name = task.head.name
        self.stats = rt.stats[self.name]
        self.stage = as_stage(task.head.obj)
        self.workers = [rt.worker_ends(task) for _ in range(task.workers)]
        self.key_edges: list[Edge] = []
        self._dispatch_in = None
        self._dispatch_out = []
        if task.keyed:
            # one private queue per worker: a key always lands on the same worker
            self.key_edges = [
                Edge(f"{self.name}#{i}", rt.plan.key_queue_capacity) for i in range(task.workers)
            ]
            self._dispatch_in = self.workers[0].inbox
            for w, edge in zip(self.workers[1:], self.key_edges[1:], strict=False):
                assert w.inbox is not None
                w.inbox.close()
                w.inbox = edge.receiver()
            self.workers[0].inbox = self.key_edges[0].receiver()
            self._dispatch_out = [edge.sender() for edge in self.key_edges]

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        rt = self.rt
        steps = rt.steps_of(self.task)
        turns = Turns() if self.task.ordered else None
        try:
            async with anyio.create_task_group() as tg:
                if self.key_edges:
                    tg.start_soon(self._dispatch)
                for worker in self.workers:
                    ctx = WorkerContext(rt, self.stats, worker, steps, turns)
                    tg.start_soon(self._work, ctx)
        except Exception as exc:
            note(exc, "stage", self.name)
            raise

    async def _work(self, ctx: WorkerContext) -> None:
        with ctx.worker:
            await self.stage.work(ctx)
            await ctx.finish()

    async def _dispatch(self) -> None:
        inbox = self._dispatch_in
        assert inbox is not None
        outs = self._dispatch_out
        n = len(outs)
        with inbox:
            try:
                while True:
                    try:
                        batch = await inbox.receive(self.rt.max_batch)
                    except anyio.EndOfStream:
                        return
                    parts: list[list[int]] = [[] for _ in range(n)]
                    for i, event in enumerate(batch.events):
                        parts[hash(event.key) % n].append(i)
                    for out, indices in zip(outs, parts, strict=True):
                        if indices:
                            part = batch if len(indices) == len(batch) else batch.select(indices)
                            await out.send(part)
            finally:
                for out in outs:
                    out.close()


