"""The sink task: ``workers`` tasks writing batches through the write chain.

The write chain, one concern per layer: breaker (an open circuit waits before the
first attempt) -> retry (the sink's policy) -> split (a data error bisects the
batch to find the bad events, the rest is delivered) -> dead letter (what still
fails, with its reason). A disk or device failure stops the run instead: it is
not the data's fault, and dead-lettering would acknowledge every event.
"""

from __future__ import annotations

import errno
import math
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import anyio.abc

from .._acks import AckToken
from .._batch import Batch, EventBatch
from .._edge import Edge, EdgeReceiver
from .._errors import DeadLetterError, IngestError, SinkError
from .._retry import BreakerState
from ..sinks._base import Sink
from ..stages._context import GiveUp
from ._common import Worker, call_with_retry, hosted, note
from ._hooks import RetryRecord

if TYPE_CHECKING:
    from ..graph._plan import TaskNode
    from ._runtime import Runtime

__all__ = ("SinkRunner",)


class _BreakerOpen(Exception):
    """The circuit breaker is open: wait before the first attempt."""


class _Accumulator:
    """Batches of ``max_size`` events, or fewer once ``max_wait`` passed since the first.

    ``await next()`` returns the next batch, or None at the end of the stream.
    Cancelling ``next()`` loses nothing: what it gathered stays for the next call.
    (A plain object rather than an async generator: nothing is left to finalise
    when its consumer fails, PEP 789.)
    """

    def __init__(self, inbox: EdgeReceiver, max_size: int, max_wait: float, clock: Any) -> None:
        self.inbox = inbox
        self.max_size = max_size
        self.max_wait = max_wait
        self.clock = clock
        self.ended = False
        self._parts: list[Batch] = []
        self._held = 0
        self._deadline = math.inf

    async def next(self) -> Batch | None:
        clock = self.clock
        while True:
            if self._parts and (
                self._held >= self.max_size or self.ended or clock() >= self._deadline
            ):
                parts, self._parts = self._parts, []
                self._held = 0
                self._deadline = math.inf
                return parts[0] if len(parts) == 1 else Batch.concat(parts)
            if self.ended:
                return None
            # an absolute deadline: "now + (deadline - now)" can round below the deadline,
            # and under a mock clock that never advances the loop would spin forever
            with anyio.CancelScope(deadline=self._deadline):
                try:
                    got = await self.inbox.receive(self.max_size - self._held)
                except anyio.EndOfStream:
                    self.ended = True
                else:
                    if not self._parts:
                        self._deadline = clock() + self.max_wait
                    self._parts.append(got)
                    self._held += len(got)


class SinkRunner:
    """``workers`` tasks writing batches with retries, splitting and dead letters."""

    role = "sink"

    def __init__(
        self,
        rt: Runtime,
        task: TaskNode | None,
        sink: Sink,
        inbox: Edge,
        *,
        dead_letter: bool = False,
    ) -> None:
        self.rt = rt
        self.task = task
        self.sink = sink
        self.is_dead_letter = dead_letter
        self.inbox = inbox
        if dead_letter:
            self.name = "dead_letter"
            self.stats = rt.dead_letter_stats
            self.workers = [Worker(inbox.receiver(), {}, None) for _ in range(sink.workers)]
        else:
            assert task is not None
            self.name = task.head.name
            self.stats = rt.stats[self.name]
            self.workers = [rt.worker_ends(task) for _ in range(task.workers)]
        self.policy = sink.retry if sink.retry is not None else rt.graph.retry
        self.max_batch = sink.max_batch or rt.max_batch
        self.breaker = (
            BreakerState(sink.breaker, anyio.current_time) if sink.breaker is not None else None
        )
        self.wants_events = sink.write_events_needed()
        # semantic-convention span attributes a connector declares (db.system, ...)
        self.span_attributes: dict[str, Any] | None = getattr(sink, "span_attributes", None)
        self._unflushed: list[AckToken] = []
        self._unflushed_count = 0
        self._unflushed_since = math.inf
        self._flushing: anyio.Event | None = None  # set when the flush in progress ends
        if sink.buffered and sink.workers != 1:
            raise IngestError(f"buffered sink {self.name!r} must have workers=1")

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            async with hosted(self.sink):
                await self._run(task_status=task_status)
        except Exception as exc:
            note(exc, "dead-letter sink" if self.is_dead_letter else "sink", self.name)
            raise

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        role = "dead-letter sink" if self.is_dead_letter else "sink"
        try:
            try:
                await self.sink.open()
            except Exception as exc:
                note(exc, role, self.name)
                raise
            task_status.started()
            async with anyio.create_task_group() as tg:
                for worker in self.workers:
                    tg.start_soon(self._work, worker)
            await self._flush()
        except Exception as exc:
            note(exc, role, self.name)
            raise
        finally:
            with anyio.move_on_after(self.rt.cleanup_timeout(), shield=True):
                await self.sink.aclose()

    async def _work(self, worker: Worker) -> None:
        inbox = worker.inbox
        assert inbox is not None
        sink = self.sink
        with worker:
            if sink.max_wait > 0 or sink.buffered:
                clock = self.rt.loop.clock
                accumulator = _Accumulator(inbox, self.max_batch, sink.max_wait, clock)
                async with anyio.create_task_group() as flushes:
                    while not accumulator.ended:
                        # a buffered sink flushes on age even when no new events come
                        flush_at = self._unflushed_since + sink.flush_interval
                        batch = None
                        with anyio.CancelScope(deadline=flush_at if sink.buffered else math.inf):
                            batch = await accumulator.next()
                        if batch is not None:
                            await self._write(worker, batch)
                        if sink.buffered and self._flush_due():
                            if sink.flush_overlaps:
                                await self._start_flush(flushes)
                            else:
                                await self._flush()
                return
            while True:
                try:
                    batch = await inbox.receive(self.max_batch)
                except anyio.EndOfStream:
                    return
                await self._write(worker, batch)

    async def write_here(self, batch: Batch) -> None:
        """Write ``batch`` from the task that feeds this sink (``TaskNode.direct``).

        As a send to the edge would: a checkpoint, and a cancelled one has no effect (a
        direct sink's write never waits; only a retry's backoff does, and only a hard stop
        cancels the feeding task there, leaving the batch uncommitted). The write chain is
        the sink task's own, in chunks of the sink's ``max_batch``.
        """
        loop = self.rt.loop
        await loop.checkpoint_if_cancelled()
        worker = self.workers[0]
        self.inbox.hand_over(len(batch))
        try:
            while len(batch) > self.max_batch:
                head, batch = batch.split(self.max_batch)
                await self._write(worker, head)
            await self._write(worker, batch)
        except Exception as exc:
            note(exc, "sink", self.name)
            raise
        await loop.cancel_shielded_checkpoint()

    def _flush_due(self) -> bool:
        sink = self.sink
        if not self._unflushed:
            return False
        return self._unflushed_count >= sink.flush_every or (
            anyio.current_time() >= self._unflushed_since + sink.flush_interval
        )

    async def _flush(self) -> None:
        if not self.sink.buffered:
            return
        if self._flushing is not None:
            await self._flushing.wait()
        await self.sink.flush()
        tokens, self._unflushed = self._unflushed, []
        self._unflushed_count = 0
        self._unflushed_since = math.inf
        self._finished(tokens)

    async def _start_flush(self, flushes: anyio.abc.TaskGroup) -> None:
        """Flush what is buffered in a task of its own; writing goes on meanwhile."""
        if self._flushing is not None:
            await self._flushing.wait()  # one flush at a time
        tokens, self._unflushed = self._unflushed, []
        self._unflushed_count = 0
        self._unflushed_since = math.inf
        done = self._flushing = anyio.Event()

        async def flush() -> None:
            try:
                await self.sink.flush()  # takes the buffer before its first await
            finally:
                self._flushing = None
                done.set()
            self._finished(tokens)  # only once durable; a failure fails the run unacked

        flushes.start_soon(flush)

    def _finished(self, tokens: list[AckToken]) -> None:
        # counted when acked (for buffered sinks: at flush), so the live report balances
        if self.is_dead_letter:
            self.rt.ledger.dead_lettered_by_sink(tokens)
        else:
            self.rt.ledger.delivered_by_sink(tokens)

    async def _write(self, worker: Worker, batch: Batch) -> None:
        clock = self.rt.loop.clock
        started = clock()
        items = EventBatch(batch) if self.wants_events else batch.payloads
        write = self.sink.write_batch
        retries: list[RetryRecord] | None = [] if self.rt.tracer is not None else None
        try:
            if self.breaker is not None and self.breaker.is_open:
                raise _BreakerOpen
            await write(items)  # the fast path: one call, no retry machinery
        except Exception as exc:
            first = None if isinstance(exc, _BreakerOpen) else exc
            if first is not None:
                self.stats.errors += 1
                if self.breaker is not None:
                    self.breaker.failure()

            async def attempt() -> None:
                await write(items)

            try:
                await call_with_retry(
                    self.policy, attempt, self.stats, first_error=first, breaker=self.breaker,
                    retries=retries,
                )
            except GiveUp as gave_up:
                await self._failed(worker, batch, gave_up, retries or ())
                return
        else:
            if self.breaker is not None:
                self.breaker.success()
        n = len(batch)
        self.stats.record_batch(n, n, clock() - started)
        if self.rt.tracer is not None:
            self.rt.tracer.span(self.name, self.stats.kind, batch.trace, n, n, clock() - started,
                                batch=batch, retries=retries or (), attributes=self.span_attributes)
        now = time.time()
        events = batch.events
        self.rt.e2e.observe(now - events[0].event_time)
        if n > 1:
            self.rt.e2e.observe(now - events[-1].event_time)
        if self.sink.buffered:
            if not self._unflushed:
                self._unflushed_since = clock()
            self._unflushed += batch.tokens
            self._unflushed_count += n
        else:
            self._finished(batch.tokens)

    async def _failed(
        self, worker: Worker, batch: Batch, gave_up: GiveUp, retries: Sequence[RetryRecord] = ()
    ) -> None:
        if self.is_dead_letter:
            self._dead_letter_failed(batch, gave_up)
        disk = _disk_failure(gave_up.error)
        if disk is not None:
            # the disk or device failed, not the data: dead-lettering would acknowledge
            # every event; stop instead, leaving them to be delivered again
            raise SinkError(
                f"sink {self.name!r} cannot write: disk or device error {disk}; "
                "stopping so that nothing unwritten is acknowledged"
            ) from gave_up.error
        retryable = self.policy.retries(gave_up.error)
        if len(batch) > 1 and not retryable:
            # a data error: split to find the bad events, deliver the rest
            half = len(batch) // 2
            head, tail = batch.split(half)
            await self._write(worker, head)
            await self._write(worker, tail)
            return
        n = len(batch)
        self.stats.events_in += n  # received, though not written: in == written + dead-lettered
        if self.rt.tracer is not None:
            batch = batch.traced(self.rt.tracer.span(
                self.name, self.stats.kind, batch.trace, n, 0, 0.0, "dead_letter", gave_up.error,
                batch=batch, retries=retries, attributes=self.span_attributes,
            ))
        await self.rt.dead_letter(
            worker, self.stats, batch, range(n), [(gave_up.error, gave_up.attempts)] * n
        )

    def _dead_letter_failed(self, batch: Batch, gave_up: GiveUp) -> NoReturn:
        event = batch.events[0]
        raise DeadLetterError(
            "dead_letter",
            event.id,
            f"the dead-letter sink failed: {gave_up.error!r}",
            configured=True,
        ) from gave_up.error


# failures of the storage under a sink, never of an event: they stop the run
_DISK_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EIO", "EDQUOT", "EROFS") if hasattr(errno, name)
)
_SQLITE_FULL, _SQLITE_IOERR = 13, 10  # sqlite3 result codes (the low byte of extended ones)
_SQLSTATE_DISK_FULL = "53100"  # PostgreSQL's disk_full


def _disk_failure(error: BaseException) -> str | None:
    """Describe the disk-full or I/O failure behind ``error`` (itself or a cause), if any.

    Knows ``OSError`` (ENOSPC, EIO, EDQUOT, EROFS), sqlite3's SQLITE_FULL and
    SQLITE_IOERR, and PostgreSQL's ``disk_full``, by their attributes (no import).
    """
    current: BaseException | None = error
    for _ in range(8):
        if current is None:
            return None
        number = current.errno if isinstance(current, OSError) else None
        if number is not None and number in _DISK_ERRNOS:
            return f"{errno.errorcode.get(number, str(number))} ({os.strerror(number)})"
        code = getattr(current, "sqlite_errorcode", None)
        if isinstance(code, int) and (code & 0xFF) in (_SQLITE_FULL, _SQLITE_IOERR):
            return f"{getattr(current, 'sqlite_errorname', code)} ({current})"
        if getattr(current, "sqlstate", None) == _SQLSTATE_DISK_FULL:
            return f"disk_full ({current})"
        current = current.__cause__ or current.__context__
    return None
