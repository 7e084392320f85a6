"""ti.Completion: a caller awaits that the events it admitted are finished, and learns how."""

from __future__ import annotations

import gc
from collections.abc import Sequence

import anyio
import msgspec
import pytest

import trio_ingest as ti
from trio_ingest.testing import assert_accounted

pytestmark = pytest.mark.anyio


class Order(msgspec.Struct):
    n: int


class GatedSink(ti.Sink):
    """Writes at once, except events whose payload says ``hold``: those wait for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.ids: list[str] = []

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        if any(isinstance(e.payload, dict) and e.payload.get("hold") for e in events):
            await self.gate.wait()
        self.ids.extend(e.id for e in events)


def pipeline(sink: ti.Sink, dead: ti.Sink, capacity: int = 16) -> ti.Pipeline:
    return ti.Pipeline(
        ti.sources.from_iterable([]),
        ti.filter(lambda p: not p.get("skip")),
        ti.validate(Order, convert=False),
        sink=sink,
        dead_letter=dead,
        capacity=capacity,
    )


async def test_counts_each_way_an_event_can_finish() -> None:
    sink, dead = GatedSink(), ti.sinks.Memory()
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline(sink, dead).serve)
        done = ti.Completion()
        events = [
            ti.Event("ok1", {"n": 1}),
            ti.Event("skip", {"n": 2, "skip": True}),
            ti.Event("bad", {"n": "x"}),
            ti.Event("ok2", {"n": 3}),
        ]
        await handle.send_batch(events, completion=done)
        outcome = await done.wait()
        assert (outcome.delivered, outcome.dead_lettered, outcome.filtered) == (2, 1, 1)
        assert outcome.letters == [("bad", '$.n: expected int, got "x"')]
        assert sorted(sink.ids) == ["ok1", "ok2"]  # written before the answer
        report = await handle.stop()
    assert_accounted(report)


async def test_does_not_wait_for_earlier_unrelated_events() -> None:
    sink, dead = GatedSink(), ti.sinks.Memory()
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline(sink, dead).serve)
        first, second = ti.Completion(), ti.Completion()
        await handle.send_batch([ti.Event("held", {"n": 1, "hold": True})], completion=first)
        # the sink is stuck on the first event; the second request's events are filtered
        await handle.send_batch([{"n": 2, "skip": True}] * 3, completion=second)
        with anyio.fail_after(5):
            await second.wait()
        assert second.filtered == 3 and not first.done
        assert handle.tracker.committed is None  # the in-order watermark is still held back
        sink.gate.set()
        with anyio.fail_after(5):
            await first.wait()
        assert first.delivered == 1 and sink.ids == ["held"]
        await handle.stop()


async def test_a_cancelled_waiter_changes_no_accounting() -> None:
    sink, dead = GatedSink(), ti.sinks.Memory()
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline(sink, dead).serve)
        done = ti.Completion()
        await handle.send_batch([{"n": 1, "hold": True}, {"n": 2}], completion=done)
        with anyio.move_on_after(0.05) as scope:
            await done.wait()
        assert scope.cancelled_caught and not done.done
        sink.gate.set()
        report = await handle.stop()
    assert done.done and done.delivered == 2  # finished all the same, counted once
    assert report.delivered == 2
    assert_accounted(report)


async def test_a_batch_larger_than_the_edge_completes_as_one() -> None:
    sink, dead = GatedSink(), ti.sinks.Memory()
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline(sink, dead, capacity=4).serve)
        done = ti.Completion()
        await handle.send_batch([{"n": i} for i in range(50)], completion=done)
        await done.wait()
        assert done.delivered == 50
        await handle.stop()


async def test_an_empty_admission_is_done_at_once() -> None:
    done = ti.Completion()
    with anyio.fail_after(1):
        assert (await done.wait()).finished == 0


async def test_nothing_is_kept_per_finished_request() -> None:
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline(sink, dead).serve)
        gc.collect()
        before = sum(isinstance(o, ti.Completion) for o in gc.get_objects())
        for i in range(500):
            done = ti.Completion()
            await handle.send_batch([{"n": i}, {"n": "bad"}], completion=done)
            await done.wait()
        del done
        gc.collect()
        after = sum(isinstance(o, ti.Completion) for o in gc.get_objects())
        assert after == before
        assert handle.tracker.open_reads == 0
        await handle.stop()
