"""Edges: bounded channels that carry batches and count their capacity in events.

A send blocks while the edge has no room for the batch, so a slow consumer slows
its producers instead of filling memory. Blocked senders are served in arrival
order (FIFO, as Trio's and AnyIO's memory channels do). A receive waits for the
first batch and then drains whatever else is ready, up to ``max_batch`` events,
into one batch: batches grow by themselves under load and stay small (low
latency) when idle.

Trio's rule holds for every send: a cancelled send has no effect. A batch no
larger than the capacity goes in whole or not at all; a larger one goes in
chunks of at most ``capacity`` events, and :class:`SendProgress` says exactly how
many went in before a cancellation. :func:`send_all` puts one batch into several
edges (broadcast) with the same rule: room is reserved on every edge first, then
the batch goes into all of them at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import anyio
import attrs

from ._batch import Batch
from ._loop import ANYIO, EventLike, LoopFunctions
from ._validators import check, positive_int

__all__ = (
    "Edge",
    "EdgeBrokenError",
    "EdgeReceiver",
    "EdgeSender",
    "EdgeStatistics",
    "SendProgress",
    "put_all",
    "reserve_all",
    "send_all",
)


class EdgeBrokenError(anyio.BrokenResourceError):
    """A send found no receiver left: a consequence of a downstream node's failure."""


@attrs.define
class SendProgress:
    """How much of a batch a send has put in, readable after a cancellation.

    Attributes:
        sent: Events of the batch taken by the edge(s) so far, from its start.
    """

    sent: int = 0


@attrs.frozen
class EdgeStatistics:
    """A snapshot of one edge.

    Attributes:
        name: ``"upstream->downstream"``.
        capacity: Most events the edge holds before a send blocks.
        depth: Events in the edge now.
        peak_depth: Most events it ever held.
        events_through: Events received from it so far.
        blocked_seconds: Total time senders spent waiting for room, summed over
            senders (two senders blocked for one second count two).
        waiting_senders: Senders blocked right now.
        full_seconds: Time during which at least one sender was blocked.
    """

    name: str
    capacity: int
    depth: int
    peak_depth: int
    events_through: int
    blocked_seconds: float
    waiting_senders: int
    full_seconds: float = 0.0


class _Waiter:
    """One blocked sender: the room it needs, and the event set when it is granted."""

    __slots__ = ("event", "granted", "need")

    def __init__(self, need: int, event: EventLike) -> None:
        self.need = need
        self.granted = False
        self.event = event


class Edge:
    """A bounded, batching, many-to-many channel between two nodes.

    Each sending and receiving task holds its own endpoint (``sender()`` /
    ``receiver()``) and closes it when done; the edge ends for receivers when
    every sender closed and the buffered batches are drained.
    """

    def __init__(self, name: str, capacity: int) -> None:
        check(positive_int, "capacity", capacity)
        self.name = name
        self.capacity = capacity
        self._loop: LoopFunctions = ANYIO
        self._queue: deque[Batch] = deque()
        self._depth = 0
        self._reserved = 0  # room granted to senders that have not put their batch yet
        self._peak = 0
        self._through = 0
        self._blocked = 0.0
        self._full = 0.0
        self._full_since = 0.0
        self._wait_started = 0.0  # sum of the start times of the waits under way
        self._waiters: deque[_Waiter] = deque()
        self._senders = 0
        self._receivers = 0
        self._data: EventLike | None = None  # set when data arrives or the last sender closes

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
            for waiter in self._waiters:  # nobody will make room: let them find it broken
                waiter.event.set()
            self._waiters.clear()

    def _wake_receivers(self) -> None:
        if self._data is not None:
            self._data.set()
            self._data = None

    # -- state ----------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self._depth

    @property
    def closed(self) -> bool:
        """True when no sender is left (buffered batches may remain)."""
        return self._senders == 0

    @property
    def room(self) -> int:
        """Events that can go in now without waiting."""
        return self.capacity - self._depth - self._reserved

    def statistics(self) -> EdgeStatistics:
        blocked = self._blocked
        full = self._full
        waiting = len(self._waiters)
        if waiting:
            try:
                now = self._loop.clock()
            except RuntimeError:  # read outside the loop: only finished waits count
                pass
            else:
                blocked += waiting * now - self._wait_started
                full += now - self._full_since
        return EdgeStatistics(
            name=self.name,
            capacity=self.capacity,
            depth=self._depth,
            peak_depth=self._peak,
            events_through=self._through,
            blocked_seconds=blocked,
            waiting_senders=waiting,
            full_seconds=full,
        )

    # -- sending --------------------------------------------------------------
    def _check_receivers(self) -> None:
        if self._receivers == 0:
            raise EdgeBrokenError(f"edge {self.name} has no receiver left")

    def _put(self, batch: Batch) -> None:
        self._queue.append(batch)
        self._depth += len(batch)
        if self._depth > self._peak:
            self._peak = self._depth
        if self._data is not None:
            self._wake_receivers()

    def hand_over(self, n: int) -> None:
        """Count ``n`` events its receiver takes straight from the sender (a direct write).

        Raises:
            EdgeBrokenError: No receiver is left.
        """
        self._check_receivers()
        self._through += n

    def try_reserve(self, n: int) -> bool:
        """Reserve room for ``n`` events now if no one waits ahead and it is free."""
        self._check_receivers()
        if not self._waiters and self.room >= n:
            self._reserved += n
            return True
        return False

    async def reserve(self, n: int) -> None:
        """Wait (FIFO) until room for ``n`` events (at most ``capacity``) is reserved.

        A cancelled wait reserves nothing.

        Raises:
            EdgeBrokenError: No receiver is left.
        """
        if self.try_reserve(n):
            return
        loop = self._loop
        waiter = _Waiter(n, loop.event())
        start = loop.clock()
        if not self._waiters:
            self._full_since = start
        self._waiters.append(waiter)
        self._wait_started += start
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:  # granted, then cancelled before it could use the room
                self.release(n)
            else:
                self._remove_waiter(waiter)
            raise
        finally:
            now = loop.clock()
            self._wait_started -= start
            self._blocked += now - start
            if not self._waiters:
                self._full += now - self._full_since
        if not waiter.granted:
            self._check_receivers()
            raise AssertionError("edge waiter woken without room (trio_ingest bug)")

    def _remove_waiter(self, waiter: _Waiter) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return
        self._grant()  # a smaller waiter behind it may fit now

    def release(self, n: int) -> None:
        """Give back room reserved with :meth:`reserve` that will not be used."""
        self._reserved -= n
        self._grant()

    def put_reserved(self, batch: Batch, n: int) -> None:
        """Put ``batch`` into room reserved for ``n`` events (``len(batch) <= n``)."""
        self._reserved -= n
        if batch.payloads:
            self._put(batch)
        if n > len(batch):
            self._grant()

    def _grant(self) -> None:
        waiters = self._waiters
        while waiters and self.room >= waiters[0].need:
            waiter = waiters.popleft()
            self._reserved += waiter.need
            waiter.granted = True
            waiter.event.set()

    def send_nowait(self, batch: Batch) -> None:
        """Put the whole batch in the edge now.

        Raises:
            anyio.WouldBlock: The edge has no room for all of it (or others wait first).
            EdgeBrokenError: No receiver is left.
        """
        n = len(batch)
        if not self.try_reserve(n):
            raise anyio.WouldBlock
        self.put_reserved(batch, n)

    async def send(self, batch: Batch, progress: SendProgress | None = None) -> None:
        """Put the batch in the edge, waiting (FIFO) for room; a checkpoint.

        A batch no larger than the capacity goes in whole; a larger one in chunks
        of ``capacity`` events. A cancelled send puts nothing more in: ``progress``
        then says how many events went in.

        Raises:
            EdgeBrokenError: No receiver is left.
        """
        await send_all([self], batch, progress)

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
        if self._waiters:
            self._grant()
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
                self._data = self._loop.event()
            await self._data.wait()
        return self._take(max_batch)


async def send_all(
    edges: Sequence[Edge], batch: Batch, progress: SendProgress | None = None
) -> None:
    """Put ``batch`` into every edge of ``edges`` (a broadcast), waiting FIFO for room.

    Room is reserved on every edge before the batch goes into any, so a
    cancellation has no effect on the chunk under way; chunks already put stay
    put, and ``progress.sent`` counts their events. A checkpoint.

    Raises:
        EdgeBrokenError: An edge has no receiver left.
    """
    n = len(batch)
    if not edges or n == 0:
        await ANYIO.checkpoint()
        return
    loop = edges[0]._loop
    await loop.checkpoint_if_cancelled()
    if len(edges) == 1:  # the common case, once per batch: one edge with room
        edge = edges[0]
        if n <= edge.capacity and edge.try_reserve(n):
            edge.put_reserved(batch, n)
            if progress is not None:
                progress.sent = n
            await loop.cancel_shielded_checkpoint()
            return
    waited = False
    done = 0
    step = min(e.capacity for e in edges)
    while done < n:
        size = min(n - done, step)
        waited = await reserve_all(edges, size) or waited
        chunk = batch if size == n else _slice(batch, done, done + size)
        put_all(edges, chunk, size)
        done += size
        if progress is not None:
            progress.sent = done
    if not waited:
        await loop.cancel_shielded_checkpoint()


async def reserve_all(edges: Sequence[Edge], n: int) -> bool:
    """Reserve room for ``n`` events on every edge (FIFO); all or, if cancelled, none.

    Returns whether it had to wait (a wait is a checkpoint; otherwise none was made).

    Raises:
        EdgeBrokenError: An edge has no receiver left.
    """
    waited = False
    reserved: list[Edge] = []
    try:
        for edge in edges:
            if not edge.try_reserve(n):
                waited = True
                await edge.reserve(n)
            reserved.append(edge)
    except BaseException:
        for edge in reserved:
            edge.release(n)
        raise
    return waited


def put_all(edges: Sequence[Edge], batch: Batch, n: int) -> None:
    """Put ``batch`` into the room for ``n`` events :func:`reserve_all` reserved on ``edges``."""
    for edge in edges:
        edge.put_reserved(batch, n)


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    e, p, t = batch.events, batch.payloads, batch.tokens
    return Batch(e[start:stop], p[start:stop], t[start:stop], batch.trace, batch.links)


class EdgeSender:
    """One task's right to send on an edge; close it (``with sender:``) when done."""

    __slots__ = ("_closed", "edge")

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError(f"this send end of edge {self.edge.name} is closed")

    async def send(self, batch: Batch, progress: SendProgress | None = None) -> None:
        """Send ``batch`` (see :meth:`Edge.send`).

        Raises:
            anyio.ClosedResourceError: This endpoint was closed.
            EdgeBrokenError: No receiver is left.
        """
        self._check_open()
        await send_all([self.edge], batch, progress)

    def send_nowait(self, batch: Batch) -> None:
        """Send ``batch`` now or not at all (see :meth:`Edge.send_nowait`).

        Raises:
            anyio.ClosedResourceError: This endpoint was closed.
            anyio.WouldBlock: No room for all of it now.
            EdgeBrokenError: No receiver is left.
        """
        self._check_open()
        self.edge.send_nowait(batch)

    def close(self) -> None:
        """Give up this endpoint; idempotent."""
        if not self._closed:
            self._closed = True
            self.edge._close_sender()

    @property
    def closed(self) -> bool:
        return self._closed

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

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError(
                f"this receive end of edge {self.edge.name} is closed"
            )

    async def receive(self, max_batch: int) -> Batch:
        """Receive up to ``max_batch`` events (see :meth:`Edge.receive`).

        Raises:
            anyio.ClosedResourceError: This endpoint was closed.
            anyio.EndOfStream: Every sender has closed and the edge is empty.
        """
        self._check_open()
        return await self.edge.receive(max_batch)

    def receive_nowait(self, max_batch: int) -> Batch:
        """Take up to ``max_batch`` ready events (see :meth:`Edge.receive_nowait`).

        Raises:
            anyio.ClosedResourceError: This endpoint was closed.
            anyio.WouldBlock: Nothing is ready.
            anyio.EndOfStream: Nothing is ready and every sender has closed.
        """
        self._check_open()
        return self.edge.receive_nowait(max_batch)

    def close(self) -> None:
        """Give up this endpoint; idempotent."""
        if not self._closed:
            self._closed = True
            self.edge._close_receiver()

    def __enter__(self) -> EdgeReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
