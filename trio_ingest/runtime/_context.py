"""The stage context: a stage worker's whole view of the running graph.

One :class:`WorkerContext` per worker task implements
:class:`trio_ingest.stages.StageContext`: receiving (with a deadline, in turn for
ordered stages), the task's fused steps, emitting to the output edges, and
finishing events (filtered, dead-lettered) through the run's ledger.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from .._acks import AckToken
from .._batch import Batch
from .._edge import SendProgress
from .._retry import RetryPolicy
from ..stages._context import StatsLike
from ._common import Worker, call_with_retry
from ._intake import emit_to

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._sink_task import SinkRunner
    from ._stats import NodeStats

__all__ = ("Turns", "WorkerContext")

_NOTHING = Batch([], [], [])  # what a receive returns when its deadline passed first


class Turns:
    """Input order for the workers of an ordered stage: batch ``k`` is emitted after ``k-1``."""

    __slots__ = ("_events", "next_in", "next_out")

    def __init__(self) -> None:
        self.next_in = 0
        self.next_out = 0
        self._events: dict[int, anyio.Event] = {}

    async def wait(self, seq: int) -> None:
        if self.next_out != seq:
            event = self._events[seq] = anyio.Event()
            await event.wait()

    def done(self) -> None:
        self.next_out += 1
        event = self._events.pop(self.next_out, None)
        if event is not None:
            event.set()


class WorkerContext:
    """One worker task's context (see :class:`trio_ingest.stages.StageContext`)."""

    def __init__(
        self,
        rt: Runtime,
        stats: NodeStats,
        worker: Worker,
        steps: Sequence[Any],
        turns: Turns | None = None,
    ) -> None:
        self.rt = rt
        self.stats = stats
        self.worker = worker
        self.steps = list(steps)
        self.max_batch = rt.max_batch
        self.clock: Callable[[], float] = rt.loop.clock
        self.tracer = rt.tracer
        self.durable = rt.checkpointer is not None
        # retries since the last span (tracing only): the next span of this worker records them
        self.retry_log: list[tuple[int, float, BaseException]] | None = (
            [] if rt.tracer is not None else None
        )
        self._edges = {port: [s.edge for s in senders] for port, senders in worker.outputs.items()}
        # the sink this task writes itself (TaskNode.direct): its only output
        plain = self._edges.get(None, [])
        self._direct: SinkRunner | None = rt.direct.get(plain[0]) if len(plain) == 1 else None
        self._turns = turns
        self._seq: int | None = None  # the input batch being handled (ordered stages)
        self._turn_taken = False

    # -- input ----------------------------------------------------------------
    async def receive(self, deadline: float = math.inf, limit: int | None = None) -> Batch | None:
        """The next input batch (at most ``limit`` events); None at the end of the input.

        With a ``deadline`` (loop clock), an empty batch when it passes first.
        """
        if self._turns is not None and self._seq is not None:
            await self._end_turn()
        inbox = self.worker.inbox
        assert inbox is not None
        n = limit if limit is not None else self.max_batch
        try:
            if deadline == math.inf:
                batch = await inbox.receive(n)
            else:
                batch = _NOTHING
                with anyio.CancelScope(deadline=deadline):
                    batch = await inbox.receive(n)
        except anyio.EndOfStream:
            return None
        if self._turns is not None and batch.payloads:
            self._seq = self._turns.next_in
            self._turns.next_in += 1
        return batch

    async def _end_turn(self) -> None:
        turns = self._turns
        assert turns is not None and self._seq is not None
        if not self._turn_taken:
            await turns.wait(self._seq)
        turns.done()
        self._seq = None
        self._turn_taken = False

    async def finish(self) -> None:
        """The worker is done: pass on its turn (ordered stages)."""
        if self._turns is not None and self._seq is not None:
            await self._end_turn()

    # -- output ---------------------------------------------------------------
    async def forward(self, batch: Batch) -> None:
        """Run ``batch`` through this task's steps, then emit what is left."""
        for step in self.steps:
            out = await step.run(self, batch)
            if out is None or not out.payloads:
                return
            batch = out
        await self.emit(batch)

    async def emit(
        self, batch: Batch, port: str | None = None, progress: SendProgress | None = None
    ) -> None:
        """Send ``batch`` to the outputs of ``port`` (broadcast copies acknowledged apart)."""
        if not batch.payloads:
            return
        if self._turns is not None and self._seq is not None and not self._turn_taken:
            await self._turns.wait(self._seq)
            self._turn_taken = True
        if port is None and progress is None and self._direct is not None:
            await self._direct.write_here(batch)  # only built-in steps feed one: no progress
            return
        edges = self._edges.get(port)
        if not edges:
            return
        await emit_to(edges, batch, self.rt.ledger, progress)

    def wired(self, port: str | None) -> bool:
        """Whether anything reads the output ``port`` of this stage."""
        return bool(self._edges.get(port))

    def stop_requested(self) -> bool:
        """Whether the run is being stopped (the input ends early, not exhausted)."""
        return self.rt.stop_requested

    def from_state(self, n: int) -> AckToken:
        """A token for ``n`` results made from checkpointed state (see ``Ledger.from_state``)."""
        return self.rt.ledger.from_state(self.rt.state_tracker(self.stats.name), n)

    # -- finishing events -----------------------------------------------------
    def drop(self, stats: StatsLike, batch: Batch) -> None:
        self.rt.dropped(stats, batch)

    def expand(self, token: AckToken, children: int) -> None:
        ledger = self.rt.ledger
        if children >= 0:
            ledger.expanded_into(token, children)
        else:
            ledger.expanded_into_undo(token, -children)

    async def dead_letter(
        self,
        stats: StatsLike,
        batch: Batch,
        indices: Sequence[int],
        errors: Sequence[tuple[Exception, int]],
        *,
        passed: int | None = None,
    ) -> None:
        await self.rt.dead_letter(self.worker, stats, batch, indices, errors, passed=passed)

    async def retry(
        self,
        policy: RetryPolicy | None,
        call: Callable[[], Awaitable[Any]],
        stats: StatsLike,
        first_error: Exception | None = None,
    ) -> Any:
        return await call_with_retry(
            policy, call, stats, first_error=first_error, retries=self.retry_log
        )
