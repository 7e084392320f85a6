"""Intake: how events enter a running graph. Sources and the embedding handle share it.

An intake owns the send ends of the first edges, the commit watermark of what came
in through it, and its node's counters. Two ways in, one rule (a cancelled
operation has no effect):

- :meth:`Intake.enter`: a source read. Its events are in hand already (read from
  a file, a stream): they are admitted when read, run through the source's fused
  stages, then sent with :func:`emit_to`. ``stop()`` cancels only the read, never
  this send; a hard stop leaves them uncommitted, to be read again.
- :meth:`Intake.admit`: the handle. Room is reserved on every first edge first
  (FIFO, cancellable with no effect), then the chunk is admitted (token issued,
  counted) and put in one step, so an event is counted only once an edge took it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._acks import AckToken, AckTracker, Completion
from .._batch import Batch
from .._edge import Edge, EdgeSender, SendProgress, put_all, reserve_all, send_all
from .._event import Event

if TYPE_CHECKING:
    from ._ledger import Ledger
    from ._stats import NodeStats

__all__ = ("Intake", "emit_to")


async def emit_to(
    edges: Sequence[Edge], batch: Batch, ledger: Ledger, progress: SendProgress | None = None
) -> None:
    """Send ``batch`` to every edge of ``edges``; a broadcast's copies are acknowledged apart.

    The copies are counted before the send (a fast consumer may finish one before
    the send returns) and uncounted for whatever a cancellation kept from going in.
    """
    k = len(edges)
    if k > 1:
        ledger.copied(batch.tokens, k - 1)
    if progress is None and k > 1:
        progress = SendProgress()
    try:
        await send_all(edges, batch, progress)
    except BaseException:
        if k > 1 and progress is not None:
            ledger.not_copied(batch.tokens[progress.sent :], k - 1)
        raise


class Intake:
    """The way into the first edges for one source (or the handle)."""

    __slots__ = ("_edges", "ledger", "senders", "stats", "tracer", "tracker")

    def __init__(
        self,
        ledger: Ledger,
        tracker: AckTracker,
        stats: NodeStats,
        senders: Sequence[EdgeSender],
        tracer: Any = None,
    ) -> None:
        self.ledger = ledger
        self.tracker = tracker
        self.stats = stats
        self.senders = list(senders)
        self._edges = [s.edge for s in self.senders]
        self.tracer = tracer

    def close(self) -> None:
        for sender in self.senders:
            sender.close()

    @property
    def closed(self) -> bool:
        return all(s.closed for s in self.senders)

    def enter(
        self,
        events: list[Event],
        offset: Any,
        rejected: int = 0,
        partition: Any = None,
        completion: Completion | None = None,
    ) -> AckToken:
        """Admit a read of ``events`` (plus ``rejected`` records) ending at ``offset``.

        A read of a ``partition`` joins that partition's commit watermark (its lane);
        its token joins ``completion``, when given.
        """
        n = len(events) + rejected
        token = self.ledger.admit(self.tracker.lane(partition), offset, n, 1, completion)
        stats = self.stats
        stats.events_in += n
        stats.events_out += len(events)
        stats.batches += 1
        return token

    def enter_parts(
        self, events: list[Event], offset: Any, parts: Sequence[tuple[int, Completion | None]]
    ) -> list[AckToken]:
        """Admit a read made of parts (``(count, completion)`` each): one token per part.

        Returns the token of each event, in order.
        """
        tokens: list[AckToken] = []
        for count, completion in parts:
            token = self.ledger.admit(self.tracker, offset, count, 1, completion)
            tokens += [token] * count
        if len(tokens) != len(events):
            raise AssertionError(f"the parts of a read count {len(tokens)} events, not "
                                 f"{len(events)} (a source bug)")
        stats = self.stats
        stats.events_in += len(events)
        stats.events_out += len(events)
        stats.batches += 1
        return tokens

    def traced(self, batch: Batch) -> Batch:
        """``batch`` with the intake's span as its trace (when tracing is on)."""
        if self.tracer is not None:
            n = len(batch)
            batch.trace = self.tracer.span(self.stats.name, "source", None, n, n, 0.0, batch=batch)
        return batch

    async def admit(
        self,
        events: list[Event],
        offset: Any,
        progress: SendProgress | None = None,
        completion: Completion | None = None,
    ) -> None:
        """Admit ``events`` exactly as far as the first edges take them.

        Waits (FIFO) for room; chunks of at most the smallest capacity go in
        whole. A cancellation admits nothing of the chunk under way;
        ``progress.sent`` counts the events admitted before it. The token of each
        chunk joins ``completion``, when given.

        Raises:
            EdgeBrokenError: A first edge has no receiver left.
        """
        edges = self._edges
        k = len(edges)
        n = len(events)
        step = min(e.capacity for e in edges)
        done = 0
        waited = False
        while done < n:
            size = min(n - done, step)
            waited = await reserve_all(edges, size) or waited
            chunk = events if size == n else events[done : done + size]
            token = self.ledger.admit(self.tracker, offset, size, k, completion)
            stats = self.stats
            stats.events_in += size
            stats.events_out += size
            stats.batches += 1
            put_all(edges, self.traced(Batch.of(chunk, token)), size)
            done += size
            if progress is not None:
                progress.sent = done
        if not waited:
            await edges[0]._loop.cancel_shielded_checkpoint()
