"""Direct sinks: a sink whose write never waits is written by the one task that feeds it.

The plan decides which sinks are direct; the runtime then writes them from the feeding
task through the same write chain (retry, split, dead letter), with a checkpoint per
batch, and counts the events through their edge as if they had crossed it.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import trio_ingest as ti
from trio_ingest.graph._plan import compile_plan
from trio_ingest.testing import assert_accounted

pytestmark = pytest.mark.anyio


class Waiting(ti.Sink):
    """A sink that says nothing about waiting: it may wait."""

    async def write_batch(self, events: Sequence[Any]) -> None:
        await anyio.lowlevel.checkpoint()


class CountingMemory(ti.sinks.Memory):
    """A Memory sink with its own write, promising again that it never waits."""

    write_may_wait = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.sizes: list[int] = []

    async def write_batch(self, events: Sequence[Any]) -> None:
        self.sizes.append(len(events))
        for event in events:
            if event.payload == "bad":
                raise ValueError("bad payload")
        await super().write_batch(events)


class FullDisk(ti.sinks.Memory):
    write_may_wait = False

    async def write_batch(self, events: Sequence[Any]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


class CustomStage:
    name = "custom"

    async def run(self, inbox: Any, outbox: Any) -> None:
        async for event in inbox:
            await outbox.send(event)


def direct_sinks(graph: ti.Graph, *, serving: bool = False) -> set[str]:
    graph.validate()
    plan = compile_plan(graph, serving=serving)
    return {t.head.name for t in plan.tasks if t.direct}


def test_a_subclass_with_its_own_write_may_wait_unless_it_says_otherwise() -> None:
    class Plain(ti.sinks.Memory):
        async def write_batch(self, events: Sequence[Any]) -> None:
            await super().write_batch(events)

    class Renamed(ti.sinks.Memory):
        name = "renamed"

    assert ti.Sink.write_may_wait is True
    assert ti.sinks.Null.write_may_wait is False
    assert ti.sinks.Memory.write_may_wait is False
    assert Plain.write_may_wait is True  # a new write_batch makes no promise
    assert Renamed.write_may_wait is False  # the inherited write_batch keeps its promise
    assert CountingMemory.write_may_wait is False


def test_the_plan_writes_only_a_never_waiting_sink_fed_by_one_task_directly() -> None:
    def linear(*stages: Any, sink: ti.Sink) -> ti.Graph:
        return ti.Pipeline(ti.sources.from_iterable([1]), *stages, sink=sink)

    assert direct_sinks(linear(sink=ti.sinks.Memory())) == {"memory"}
    assert direct_sinks(linear(ti.map(str), ti.filter(bool), sink=ti.sinks.Null())) == {"null"}
    assert direct_sinks(linear(ti.map(str, workers=2), sink=ti.sinks.Null())) == set()
    assert direct_sinks(linear(ti.batch(10, 1.0), sink=ti.sinks.Null())) == {"null"}
    assert direct_sinks(linear(CustomStage(), sink=ti.sinks.Memory())) == set()
    assert direct_sinks(linear(sink=Waiting())) == set()
    assert direct_sinks(linear(sink=ti.sinks.Memory(workers=2))) == set()
    assert direct_sinks(linear(sink=ti.sinks.Memory(max_wait=0.1))) == set()
    # the handle feeds a serving pipeline's first edge too; the stage after it is one task
    assert direct_sinks(linear(sink=ti.sinks.Memory()), serving=True) == set()
    assert direct_sinks(linear(ti.map(str), sink=ti.sinks.Memory()), serving=True) == {"memory"}

    fan_in = ti.Graph()
    a = fan_in.add_source(ti.sources.from_iterable([1]), name="a")
    b = fan_in.add_source(ti.sources.from_iterable([2]), name="b")
    fan_in.add_sink(ti.sinks.Memory(), inputs=[a, b])
    assert direct_sinks(fan_in) == set()

    fan_out = ti.Graph()
    s = fan_out.add_source(ti.sources.from_iterable([1]))
    fan_out.add_sink(ti.sinks.Memory(), inputs=s, name="one")
    fan_out.add_sink(ti.sinks.Memory(), inputs=s, name="two")
    assert direct_sinks(fan_out) == set()

    routed = ti.Graph()
    s = routed.add_source(ti.sources.from_iterable([1]))
    r = routed.add_stage(ti.route(lambda p: "x", ["x"]), inputs=s, name="r")
    routed.add_sink(ti.sinks.Memory(), inputs=(r, "x"))
    assert direct_sinks(routed) == set()


@pytest.mark.parametrize("max_batch", [None, 3])
async def test_a_direct_sink_gets_every_event_counted_through_its_edge(
    max_batch: int | None,
) -> None:
    sink = CountingMemory(max_batch=max_batch)
    n = 100
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(list(range(n))), ti.map(lambda x: x + 1), sink=sink, max_batch=16
    )
    report = await pipeline.run()
    assert [e.payload for e in sink.events] == [i + 1 for i in range(n)]
    assert max(sink.sizes) == (max_batch or 16)  # the sink's own max_batch splits the batch
    assert_accounted(report)
    assert report.delivered == n
    (edge,) = report.edges.values() if isinstance(report.edges, dict) else report.edges
    assert edge.events_through == n
    assert edge.peak_depth == 0  # nothing waited in the edge


async def test_a_direct_sink_splits_and_dead_letters_a_bad_event() -> None:
    sink = CountingMemory()
    dead = ti.sinks.Memory()
    payloads = ["a", "b", "bad", "c"]
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(payloads),
        sink=sink,
        dead_letter=dead,
        retry=ti.RetryPolicy(max_attempts=1),
    )
    report = await pipeline.run()
    assert sorted(e.payload for e in sink.events) == ["a", "b", "c"]
    assert [d["error"] for d in dead.dead_letters] == ["bad payload"]
    assert_accounted(report)
    assert (report.delivered, report.dead_lettered) == (3, 1)


async def test_a_direct_sink_failure_is_raised_naming_the_sink() -> None:
    pipeline = ti.Pipeline(ti.sources.from_iterable([1, 2]), sink=FullDisk(name="disk"))
    with pytest.raises(ti.SinkError, match="disk or device error") as caught:
        await pipeline.run()
    assert "raised in sink 'disk' of the pipeline" in getattr(caught.value, "__notes__", [])


async def test_a_source_that_never_waits_still_lets_stop_in() -> None:
    # the list source's reads never wait and the sink's writes neither: only the direct
    # write's checkpoint lets the task that stops the run in before the list is done
    sink = ti.sinks.Null()
    pipeline = ti.Pipeline(ti.sources.from_iterable(list(range(200_000))), sink=sink, max_batch=8)
    assert direct_sinks(pipeline) == {"null"}
    reports = []

    async def run() -> None:
        reports.append(await pipeline.run())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        while sink.count == 0:
            await anyio.lowlevel.checkpoint()
        await pipeline.stop()
    (report,) = reports
    assert 0 < report.delivered < 200_000
    assert_accounted(report)
