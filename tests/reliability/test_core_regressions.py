"""Regression tests for the core bugs the reliability scenarios found.

1. A buffered sink's events counted as delivered at write time but acknowledged
   only at flush: the live report (and the report of a cut-short run) counted
   them twice, as delivered and in flight (found by the cancellation fuzz).
2. A buffered sink's age flush computed "due" two ways that floating point can
   make disagree (``since + interval - now`` for the wait, ``now - since >=
   interval`` for the check): at some clock values the wait ended, the check
   said "not yet", and the sink task spun forever at one instant of
   MockClock time (found by the cancellation fuzz: a hang).
3. A run cancelled from outside, or cut short by its own hard stop (the
   shutdown deadline, the CLI's second signal), raised
   ``ExceptionGroup[EdgeBrokenError]`` instead of being cancelled / ending
   cut short, when a sender woken by its consumer's exit resumed before its
   cancellation was delivered (found by the fuzz on asyncio).
4. A sink write failing with ENOSPC/EIO was treated as a data error: the batch
   was split and every event dead-lettered (all acknowledged) instead of the
   run stopping (found by the disk-full scenario).
5. When the last commit of a stopping source failed (a checkpoint on a broken
   disk), the source was never closed: its file stayed open (found by the torn
   checkpoint scenario, as a ResourceWarning).
6. A producer blocked in ``handle.send_batch`` (full edge) when ``stop()`` cut the
   run short got the internal ``EdgeBrokenError`` instead of the documented
   ``anyio.ClosedResourceError`` (found by the property model).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import trio_ingest as ti
from trio_ingest.testing import run_with_mock_clock

pytestmark = pytest.mark.anyio


class Buffered(ti.Sink):
    """Holds writes until flush; ``stored`` is what a flush made durable."""

    buffered = True
    flush_every = 1_000_000

    def __init__(self, flush_interval: float = 1.0) -> None:
        super().__init__(name="buffered")
        self.flush_interval = flush_interval
        self.buffer: list[ti.Event] = []
        self.stored: list[ti.Event] = []
        self.flushed_at: list[float] = []

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        self.buffer.extend(events)

    async def flush(self) -> None:
        self.flushed_at.append(anyio.current_time())
        self.stored += self.buffer
        self.buffer = []


async def test_live_report_balances_while_a_buffered_sink_holds_unflushed_events() -> None:
    sink = Buffered(flush_interval=3600)
    pipeline = ti.Pipeline(ti.sources.from_iterable([]), sink=sink)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        await handle.send_batch([ti.Event(id=str(i), payload=i) for i in range(5)])
        await anyio.wait_all_tasks_blocked()  # written into the buffer, not flushed
        assert len(sink.buffer) == 5
        live = handle.report()
        assert live.balanced, live.summary()
        assert live.delivered == 0 and live.in_flight == 5  # written, not yet acknowledged
        final = await handle.stop()
    assert final.balanced and final.delivered == 5 and final.in_flight == 0
    assert [e.id for e in sink.stored] == ["0", "1", "2", "3", "4"]


def test_cut_short_run_with_a_buffered_sink_still_balances() -> None:
    sink = Buffered(flush_interval=3600)

    async def endless(n: int = 0) -> Any:
        while True:
            yield n
            n += 1
            await trio.sleep(0.01)

    async def main() -> ti.RunReport:
        pipeline = ti.Pipeline(ti.sources.from_iterable(endless()), sink=sink)
        with trio.move_on_after(1.0):
            await pipeline.run()
        report = pipeline.report()
        assert report is not None
        return report

    report = run_with_mock_clock(main)
    assert report.received > 10 and not report.completed
    assert report.balanced, report.summary()
    # the last flush at the end acknowledged what it made durable, no more
    assert report.delivered == len(sink.stored)


# 7.477173042134244 + 1.0 == 8.477173042134243, whose distance back to the start
# rounds to 0.9999999999999991 < 1.0: the clock value that made the flush loop spin
_SPIN_SCRIPT = textwrap.dedent(
    """
    import trio, trio.testing, trio_ingest as ti

    class Buffered(ti.Sink):
        buffered = True
        flush_every = 10**9
        flush_interval = 1.0
        def __init__(self):
            super().__init__(name="buffered")
            self.buffer, self.flushed_at = [], []
        async def write_batch(self, events):
            self.buffer += events
        async def flush(self):
            self.flushed_at.append(trio.current_time())

    class OneThenWait(ti.Source):
        reads = 0
        async def read(self, max_events):
            self.reads += 1
            if self.reads == 1:
                return ti.Read([ti.Event(id="a", payload=1)], 1)
            await trio.sleep(5)
            return None

    sink = Buffered()
    clock = trio.testing.MockClock(autojump_threshold=0)
    clock.jump(7.477173042134244)
    trio.run(ti.Pipeline(OneThenWait(), sink=sink).run, clock=clock)
    start = 7.477173042134244
    assert abs(sink.flushed_at[0] - (start + 1.0)) < 1e-9, sink.flushed_at
    print("ok", sink.flushed_at)
    """
)


def test_age_flush_of_a_buffered_sink_does_not_spin_at_an_unlucky_clock_value() -> None:
    # in a subprocess: the bug was an endless loop at one MockClock instant
    done = subprocess.run(
        [sys.executable, "-c", _SPIN_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")


class _DropAndLeave:
    """A custom stage that takes one batch, drops it, cancels the run and returns."""

    name = "leaver"

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None

    async def run(self, inbox: Any, outbox: Any) -> None:
        # let the source fill the edge and block on its next send first
        await anyio.wait_all_tasks_blocked()
        async for events in inbox:
            outbox.drop(events)
            assert self.scope is not None
            # no checkpoint from here on: the source, woken by the space this receive
            # freed, resumes only after this task closed its end of the edge
            self.scope.cancel()
            return


class _DropAndAbort(_DropAndLeave):
    """The same, but the stop is the pipeline's own hard stop (what a shutdown deadline does)."""

    name = "aborter"

    def __init__(self) -> None:
        super().__init__()
        self.pipeline: ti.Pipeline | None = None

    async def run(self, inbox: Any, outbox: Any) -> None:
        await anyio.wait_all_tasks_blocked()
        async for events in inbox:
            outbox.drop(events)
            assert self.pipeline is not None and self.pipeline._runtime is not None
            self.pipeline._runtime.abort()  # the CLI's forced stop calls this too
            return


async def test_a_hard_stop_ends_the_run_without_a_broken_edge_error() -> None:
    stage = _DropAndAbort()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(range(100)), stage, sink=ti.sinks.Memory(), capacity=1,
        max_batch=1,
    )
    stage.pipeline = pipeline
    report = await pipeline.run()  # ends, cut short, without raising
    assert not report.completed and report.balanced


async def test_cancelling_a_run_from_outside_raises_no_broken_edge() -> None:
    stage = _DropAndLeave()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(range(100)), stage, sink=ti.sinks.Memory(), capacity=1,
        max_batch=1,
    )
    with anyio.CancelScope() as scope:
        stage.scope = scope
        await pipeline.run()  # must end as a plain cancellation, absorbed by the scope
    assert scope.cancelled_caught
    report = pipeline.report()
    assert report is not None and report.balanced and not report.completed


class _DiskFull(ti.Sink):
    """Stores ``good`` writes, then fails every write with ``errno``."""

    def __init__(self, errno_: int, good: int) -> None:
        super().__init__(name="disk")
        self.errno = errno_
        self.good = good
        self.stored: list[str] = []

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        import os

        if len(self.stored) >= self.good:
            raise OSError(self.errno, os.strerror(self.errno))
        self.stored += [e.id for e in events]


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EIO", "EDQUOT", "EROFS"])
async def test_a_sink_out_of_disk_stops_the_run_instead_of_dead_lettering(errno_name: str) -> None:
    import errno

    sink = _DiskFull(getattr(errno, errno_name), good=10)
    dead = ti.sinks.Memory()
    source = ti.sources.from_iterable(range(100))
    pipeline = ti.Pipeline(source, sink=sink, dead_letter=dead, max_batch=5, capacity=10)
    with pytest.raises(ti.SinkError, match=f"disk.*{errno_name}") as caught:
        await pipeline.run()
    assert isinstance(caught.value.__cause__, OSError)
    assert dead.events == []  # not dead-lettered: nothing wrong with the events
    report = pipeline.report()
    assert report is not None and report.balanced
    assert report.delivered == len(sink.stored) == 10
    assert source.committed <= 10  # only what the sink stored was acknowledged


class _CannotCommit(ti.Source):
    """Three reads, then the end; every commit fails; remembers whether it was closed."""

    def __init__(self) -> None:
        self.reads = 0
        self.closed = False

    async def read(self, max_events: int) -> ti.Read | None:
        self.reads += 1
        if self.reads > 3:
            return None
        return ti.Read([ti.Event(id=str(self.reads), payload=self.reads)], self.reads)

    async def commit(self, offsets: Sequence[Any]) -> None:
        raise ti.SourceError("cannot write checkpoint: [Errno 28] No space left on device")

    async def aclose(self) -> None:
        self.closed = True


async def test_a_source_whose_commits_fail_is_still_closed() -> None:
    source = _CannotCommit()
    with pytest.raises(ti.SourceError, match="No space left"):
        await ti.Pipeline(source, sink=ti.sinks.Memory()).run()
    assert source.closed


async def test_a_producer_waiting_for_room_when_stop_cuts_short_gets_closed_resource() -> None:
    pipeline = ti.Pipeline(
        ti.sources.from_iterable([]), sink=ti.testing.HangingSink(), capacity=1, max_batch=1
    )
    outcome: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)

        async def producer() -> None:
            try:
                await handle.send_batch([ti.Event(id=str(i), payload=i) for i in range(5)])
            except Exception as exc:
                outcome.append(exc)

        tg.start_soon(producer)
        await anyio.wait_all_tasks_blocked()  # the producer waits for room
        report = await handle.stop(timeout=0.01)
    assert len(outcome) == 1 and isinstance(outcome[0], anyio.ClosedResourceError), outcome
    assert not report.completed and report.balanced
