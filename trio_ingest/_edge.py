"""Edges: bounded channels that carry batches and count their capacity in events.

A send blocks while the edge holds ``capacity`` events, so a slow consumer slows
its producers instead of filling memory. A receive waits for the first batch and
then drains whatever else is ready, up to ``max_batch`` events, into one batch:
batches grow by themselves under load and stay small (low latency) when idle.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Iterable
from typing import Any

import anyio
import attrs

from ._acks import AckToken
from ._event import Event, rebuild
from ._loop import ANYIO, LoopFunctions

_payload_of = operator.attrgetter("payload")


class EdgeBrokenError(anyio.BrokenResourceError):
    """A send found no receiver left: a consequence of a downstream node's failure."""


__all__ = ("Batch", "Edge", "EdgeBrokenError", "EdgeReceiver", "EdgeSender", "EdgeStatistics")


class Batch:
    """Events moving together, held as parallel lists.

    ``events`` carry the metadata (id, key, event time, headers) as they were
    when the event last got new metadata; ``payloads`` hold the current
    payloads; ``tokens`` the acknowledgement token of each event's source read.
    ``map`` only builds a new ``payloads`` list: no per-event objects on the hot
    path. Lists are never mutated in place, so broadcast branches share them.
    ``trace`` is the OpenTelemetry span of the node that last handled the batch
    (None unless tracing is on); batches cut from this one keep it.
    """

    __slots__ = ("events", "payloads", "tokens", "trace")

    def __init__(
        self, events: list[Event], payloads: list[Any], tokens: list[AckToken], trace: Any = None
    ) -> None:
        self.events = events
        self.payloads = payloads
        self.tokens = tokens
        self.trace = trace

    @classmethod
    def of(cls, events: list[Event], token: AckToken) -> Batch:
        """A batch of ``events`` that all come from the read ``token``."""
        return cls(events, list(map(_payload_of, events)), [token] * len(events))

    def __len__(self) -> int:
        return len(self.payloads)

    def __repr__(self) -> str:
        return f"<Batch of {len(self.payloads)}>"

    def split(self, n: int) -> tuple[Batch, Batch]:
        """Return the first ``n`` events and the rest, as two batches."""
        e, p, t, s = self.events, self.payloads, self.tokens, self.trace
        return Batch(e[:n], p[:n], t[:n], s), Batch(e[n:], p[n:], t[n:], s)

    @classmethod
    def concat(cls, batches: Iterable[Batch]) -> Batch:
        """One batch of all of ``batches``' events; it continues the first one's trace."""
        events: list[Event] = []
        payloads: list[Any] = []
        tokens: list[AckToken] = []
        trace = None
        for b in batches:
            events += b.events
            payloads += b.payloads
            tokens += b.tokens
            if trace is None:
                trace = b.trace
        return cls(events, payloads, tokens, trace)

    def select(self, keep: list[int]) -> Batch:
        """The events at the indices ``keep``, in that order."""
        e, p, t = self.events, self.payloads, self.tokens
        return Batch([e[i] for i in keep], [p[i] for i in keep], [t[i] for i in keep], self.trace)

    def traced(self, span: Any) -> Batch:
        """The same events as a new batch whose trace is ``span`` (this one may be shared)."""
        return Batch(self.events, self.payloads, self.tokens, span)

    def event(self, i: int) -> Event:
        """The ``i``-th event with its current payload."""
        e = self.events[i]
        p = self.payloads[i]
        return e if e.payload is p else rebuild(e, p, e.key)

    def materialize(self) -> list[Event]:
        """The events with their current payloads (new objects only where a payload changed)."""
        return [
            e if e.payload is p else rebuild(e, p, e.key)
            for e, p in zip(self.events, self.payloads, strict=True)
        ]


@attrs.frozen
class EdgeStatistics:
    """A snapshot of one edge.

    Attributes:
        name: ``"upstream->downstream"``.
        capacity: Most events the edge holds before a send blocks.
        depth: Events in the edge now.
        peak_depth: Most events it ever held.
        events_through: Events received from it so far.
        blocked_seconds: Total time senders spent waiting for space (backpressure).
        waiting_senders: Senders blocked right now.
    """

    name: str
    capacity: int
    depth: int
    peak_depth: int
    events_through: int
    blocked_seconds: float
    waiting_senders: int


class Edge:
    """A bounded, batching, many-to-many channel between two nodes.

    Each sending and receiving task holds its own endpoint (``sender()`` /
    ``receiver()``) and closes it when done; the edge ends for receivers when
    every sender closed and the buffered batches are drained.
    """

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"'capacity' must be >= 1: {capacity!r}")
        self.name = name
        self.capacity = capacity
        self._loop: LoopFunctions = ANYIO
        self._queue: deque[Batch] = deque()
        self._depth = 0
        self._peak = 0
        self._through = 0
        self._blocked = 0.0
        self._waiting_senders = 0
        self._wait_started = 0.0  # sum of the start times of the waits under way
        self._senders = 0
        self._receivers = 0
        self._data: anyio.Event | None = None  # set when data arrives or the last sender closes
        self._space: anyio.Event | None = None  # set when space frees or the last receiver closes

    def __repr__(self) -> str:
        return f"<Edge {self.name} {self._depth}/{self.capacity}>"

    def bind(self, loop: LoopFunctions) -> None:
        """Use ``loop``'s clock and checkpoints (the runtime binds its edges once per run)."""
        self._loop = loop

    # -- endpoints ------------------------------------------------------------
    def sender(self) -> EdgeSender:
        """A new send endpoint; the edge stays open until every one is closed."""
        self._senders += 1
        return EdgeSender(self)

    def receiver(self) -> EdgeReceiver:
        """A new receive endpoint."""
        self._receivers += 1
        return EdgeReceiver(self)

    def _close_sender(self) -> None:
        self._senders -= 1
        if self._senders == 0:
            self._wake_receivers()

    def _close_receiver(self) -> None:
        self._receivers -= 1
        if self._receivers == 0:
            self._wake_senders()

    def _wake_receivers(self) -> None:
        if self._data is not None:
            self._data.set()
            self._data = None

    def _wake_senders(self) -> None:
        if self._space is not None:
            self._space.set()
            self._space = None

    # -- state ----------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self._depth

    @property
    def closed(self) -> bool:
        """True when no sender is left (buffered batches may remain)."""
        return self._senders == 0

    def statistics(self) -> EdgeStatistics:
        blocked = self._blocked
        if self._waiting_senders:
            try:
                blocked += self._waiting_senders * self._loop.clock() - self._wait_started
            except RuntimeError:  # read outside the loop: only finished waits count
                pass
        return EdgeStatistics(
            name=self.name,
            capacity=self.capacity,
            depth=self._depth,
            peak_depth=self._peak,
            events_through=self._through,
            blocked_seconds=blocked,
            waiting_senders=self._waiting_senders,
        )

    # -- sending --------------------------------------------------------------
    def _put(self, batch: Batch) -> None:
        self._queue.append(batch)
        self._depth += len(batch)
        if self._depth > self._peak:
            self._peak = self._depth
        if self._data is not None:
            self._wake_receivers()

    def send_nowait(self, batch: Batch) -> None:
        """Put the whole batch in the edge now.

        Raises:
            anyio.WouldBlock: The edge has not room for every event of it.
            anyio.BrokenResourceError: No receiver is left.
        """
        if self._receivers == 0:
            raise EdgeBrokenError(f"edge {self.name} has no receiver left")
        if self._depth + len(batch) > self.capacity:
            raise anyio.WouldBlock
        if batch.payloads:
            self._put(batch)

    async def send(self, batch: Batch) -> None:
        """Put the batch in the edge, waiting for room; a checkpoint.

        A batch larger than the free room goes in parts, so the edge never holds
        more than ``capacity`` events. If cancelled while waiting, the parts
        already sent stay sent and the rest is not.

        Raises:
            anyio.BrokenResourceError: No receiver is left.
        """
        loop = self._loop
        await loop.checkpoint_if_cancelled()
        waited = False
        n = len(batch)
        while n:
            if self._receivers == 0:
                raise EdgeBrokenError(f"edge {self.name} has no receiver left")
            free = self.capacity - self._depth
            if free >= n:
                self._put(batch)
                break
            if free > 0:
                head, batch = batch.split(free)
                self._put(head)
                n = len(batch)
            if self._space is None:
                self._space = anyio.Event()
            space = self._space
            start = loop.clock()
            self._waiting_senders += 1
            self._wait_started += start
            try:
                await space.wait()
            finally:
                self._waiting_senders -= 1
                self._wait_started -= start
                self._blocked += loop.clock() - start
            waited = True
        if not waited:
            await loop.cancel_shielded_checkpoint()

    # -- receiving ------------------------------------------------------------
    def _take(self, max_batch: int) -> Batch:
        queue = self._queue
        first = queue.popleft()
        n = len(first)
        if n > max_batch:
            first, rest = first.split(max_batch)
            queue.appendleft(rest)
            n = max_batch
        elif queue and n < max_batch:
            parts = [first]
            while queue and n < max_batch:
                nxt = queue[0]
                m = len(nxt)
                if n + m <= max_batch:
                    parts.append(queue.popleft())
                    n += m
                else:
                    head, queue[0] = nxt.split(max_batch - n)
                    parts.append(head)
                    n = max_batch
            first = Batch.concat(parts)
        self._depth -= n
        self._through += n
        if self._space is not None:
            self._wake_senders()
        return first

    def receive_nowait(self, max_batch: int) -> Batch:
        """Take up to ``max_batch`` ready events as one batch.

        Raises:
            anyio.WouldBlock: Nothing is ready.
            anyio.EndOfStream: Nothing is ready and every sender has closed.
        """
        if self._queue:
            return self._take(max_batch)
        if self._senders == 0:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self, max_batch: int) -> Batch:
        """Wait for the first ready batch, then take up to ``max_batch`` ready events.

        Cancellation never loses a batch: data is taken only after the last wait.

        Raises:
            anyio.EndOfStream: Every sender has closed and the edge is empty.
        """
        await self._loop.checkpoint()
        while not self._queue:
            if self._senders == 0:
                raise anyio.EndOfStream
            if self._data is None:
                self._data = anyio.Event()
            await self._data.wait()
        return self._take(max_batch)


class EdgeSender:
    """One task's right to send on an edge; close it (``with sender:``) when done."""

    __slots__ = ("_closed", "edge")

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self._closed = False

    def close(self) -> None:
        """Give up this endpoint; idempotent."""
        if not self._closed:
            self._closed = True
            self.edge._close_sender()

    def __enter__(self) -> EdgeSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EdgeReceiver:
    """One task's right to receive from an edge; close it (``with receiver:``) when done."""

    __slots__ = ("_closed", "edge")

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self._closed = False

    def close(self) -> None:
        """Give up this endpoint; idempotent."""
        if not self._closed:
            self._closed = True
            self.edge._close_receiver()

    def __enter__(self) -> EdgeReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
