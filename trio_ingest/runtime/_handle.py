"""The embedding handle: control of a serving pipeline, and a producer into it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from .._acks import Completion
from .._edge import EdgeBrokenError, SendProgress
from .._event import Event
from .._ids import IdMaker
from ._intake import Intake
from ._stats import NodeStats

if TYPE_CHECKING:
    from ._report import RunReport
    from ._runtime import Runtime

__all__ = ("PipelineHandle",)

log = logging.getLogger("trio_ingest.runtime")


class PipelineHandle:
    """Control of a pipeline started with ``nursery.start(pipeline.serve)``.

    The handle is also a producer: ``send`` / ``send_batch`` feed events into
    the first source's outputs and block (first come, first served) while those
    edges are full. It shares the sources' intake: an event is counted and
    acknowledged only once an edge has taken it, so a cancelled send has no
    effect.
    """

    name = "handle"

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        first = rt.source_runners[0].task
        assert first is not None
        senders = [
            down.inbox.sender() for down in first.outputs.get(None, []) if down.inbox is not None
        ]
        self._stats = NodeStats(self.name, "source")
        rt.stats[self.name] = self._stats
        self.tracker = rt.ledger.tracker(self.name, keeps_offsets=False)
        self._intake = Intake(rt.ledger, self.tracker, self._stats, senders, rt.tracer)
        self._closed = False
        self._new_id = IdMaker(self.name)
        self._count = 0

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._intake.close()

    async def send(self, item: Event | Any) -> None:
        """Feed one event, or a payload (it gets a new unique id, ``"handle:<run>-<n>"``).

        A cancelled send has no effect: the event was not taken.

        Raises:
            anyio.ClosedResourceError: After ``stop()``.
        """
        await self.send_batch([item])

    async def send_batch(
        self,
        items: Sequence[Event | Any],
        *,
        progress: SendProgress | None = None,
        completion: Completion | None = None,
    ) -> None:
        """Feed several events at once; blocks while the first edges are full.

        Up to the first edge's capacity, the events go in together or, if the call
        is cancelled, not at all. A larger batch goes in parts; pass a
        :class:`~trio_ingest.SendProgress` to read how many went in before a
        cancellation (the rest were not taken: send them again).

        Pass a :class:`~trio_ingest.Completion` to learn when the events taken are
        finished, and how (``await completion.wait()``: delivered, dead-lettered,
        filtered), without waiting for anybody else's events::

            done = ti.Completion()
            await handle.send_batch(events, completion=done)
            outcome = await done.wait()  # every event written, dead-lettered or filtered

        Raises:
            anyio.ClosedResourceError: After ``stop()``, or when ``stop()`` came while
                this call waited for room (the events not yet taken were not accepted).
        """
        if self._closed:
            raise anyio.ClosedResourceError("the pipeline is stopping; it takes no more events")
        new_id = self._new_id
        events = [item if isinstance(item, Event) else Event(new_id(), item) for item in items]
        if not events:
            return
        checkpointer = self._rt.checkpointer
        if checkpointer is not None:
            await checkpointer.gate()  # a checkpoint under way: nothing enters until it is cut
        self._count += len(events)
        try:
            await self._intake.admit(events, self._count, progress, completion)
        except EdgeBrokenError:
            if not self._closed:
                raise  # a node failed: the run's own error says which
            # stopped while waiting for room: its consumers are gone, say so as documented
            raise anyio.ClosedResourceError(
                "the pipeline stopped before it took these events"
            ) from None

    async def stop(self, timeout: float | None = None) -> RunReport:
        """Stop intake, drain, flush and commit; cut it short after ``timeout`` seconds.

        What is still in flight at the deadline is not committed: it will be
        delivered again by the next run (``report().in_flight`` counts it). A
        sink write stuck past the deadline is abandoned, so ``stop`` returns
        within ``timeout`` plus a short cleanup bound. ``timeout`` defaults to the
        graph's ``shutdown_timeout``.
        """
        return await self._rt.stop(timeout)

    def report(self) -> RunReport:
        """The live counters (final after the pipeline ended)."""
        return self._rt.report()

    @property
    def capacity(self) -> int:
        """Events that go in together: the smallest capacity of the first edges."""
        return min(sender.edge.capacity for sender in self._intake.senders)

    @property
    def closed(self) -> bool:
        """True once ``stop()`` began: the handle takes no more events."""
        return self._closed

    @property
    def stopped(self) -> bool:
        """True once the pipeline has finished."""
        return self._rt.done is not None and self._rt.done.is_set()
