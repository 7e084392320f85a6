"""Regression tests of the runtime v2 defects: cancelled sends, the handle's memory, ids,
StopIteration, poison events, the stop deadline."""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio
import anyio.to_thread
import pytest

import trio_ingest as ti
from trio_ingest.testing import assert_accounted, run_with_mock_clock

pytestmark = pytest.mark.anyio


async def wait_until(condition: object) -> None:
    while not condition():  # type: ignore[operator]  # noqa: ASYNC110 -- polling a counter
        await anyio.sleep(0.001)


def hanging_pipeline(sink: ti.Sink, capacity: int = 4) -> ti.Pipeline:
    return ti.Pipeline(
        ti.sources.from_iterable([]), sink=sink, capacity=capacity, max_batch=capacity
    )


async def test_a_cancelled_handle_send_is_not_counted_and_not_in_flight() -> None:
    sink = ti.testing.HangingSink()
    pipeline = hanging_pipeline(sink)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        sent = 0
        for i in range(20):
            with anyio.move_on_after(0.05) as scope:
                await handle.send({"n": i})
            if scope.cancelled_caught:
                break
            sent += 1
        assert 0 < sent < 20
        live = handle.report()
        assert live.received == sent  # the cancelled send did not count
        report = await handle.stop(timeout=0.2)
    assert report.received == sent and report.in_flight == sent  # hung sink: none finished
    assert report.balanced


async def test_a_cancelled_send_batch_delivers_none_of_it() -> None:
    gate = anyio.Event()

    class Gate(ti.Sink):
        def __init__(self) -> None:
            super().__init__()
            self.ids: list[str] = []

        async def write_batch(self, events: Sequence[ti.Event]) -> None:
            await gate.wait()
            self.ids += [e.id for e in events]

    sink = Gate()
    pipeline = hanging_pipeline(sink, capacity=4)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        await handle.send_batch([ti.Event(f"a{i}", i) for i in range(4)])
        await wait_until(lambda: handle.report().edges and all(
            e.depth == 0 for e in handle.report().edges.values()))
        await handle.send_batch([ti.Event(f"b{i}", i) for i in range(4)])  # fills the edge
        with anyio.move_on_after(0.05):
            await handle.send_batch([ti.Event(f"c{i}", i) for i in range(3)])
        gate.set()
        report = await handle.stop(timeout=5)
    assert not any(i.startswith("c") for i in sink.ids)
    assert len(sink.ids) == 8 and report.delivered == 8 and report.in_flight == 0
    assert_accounted(report)


async def test_a_large_send_batch_reports_exactly_what_it_admitted() -> None:
    sink = ti.testing.HangingSink()
    pipeline = hanging_pipeline(sink, capacity=4)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        progress = ti.SendProgress()
        with anyio.move_on_after(0.1):
            await handle.send_batch(list(range(30)), progress=progress)
        assert 0 < progress.sent < 30
        assert handle.report().received == progress.sent
        await handle.stop(timeout=0.2)


async def test_a_cancelled_outbox_send_keeps_its_events_held() -> None:
    class Stubborn:
        name = "stubborn"

        async def run(self, inbox: ti.stages.Inbox, outbox: ti.stages.Outbox) -> None:
            async for events in inbox:
                while True:
                    with anyio.move_on_after(0.01):
                        await outbox.send(events)
                        break

    slow_gate = anyio.Event()

    class Slow(ti.Sink):
        async def write_batch(self, events: Sequence[ti.Event]) -> None:
            await slow_gate.wait()

    async def release() -> None:
        await anyio.sleep(0.2)
        slow_gate.set()

    pipeline = ti.Pipeline(
        ti.sources.from_iterable(range(50)), Stubborn(), sink=Slow(), capacity=5, max_batch=5
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(release)
        report = await pipeline.run()
    assert report.delivered == 50 and report.in_flight == 0
    assert report.committed["source"] == 50
    assert_accounted(report)


async def test_the_handle_keeps_nothing_per_finished_send() -> None:
    sink = ti.sinks.Null() if hasattr(ti.sinks, "Null") else ti.sinks.Memory()
    pipeline = ti.Pipeline(ti.sources.from_iterable([]), sink=sink)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        for i in range(5_000):
            await handle.send(i)
        await wait_until(lambda: handle.report().in_flight == 0)
        tracker = handle.tracker
        assert tracker.open_reads == 0 and tracker.take_committable() == []
        assert tracker.committed == 5_000
        await handle.stop()


async def test_made_up_ids_never_collide_across_runs(tmp_path: object) -> None:
    import pathlib

    db = pathlib.Path(str(tmp_path)) / "out.db"
    for _run in range(2):
        pipeline = ti.Pipeline(ti.sources.from_iterable([]), sink=ti.sinks.SQLite(db, "t"))
        async with anyio.create_task_group() as tg:
            handle = await tg.start(pipeline.serve)
            await handle.send_batch([{"n": i} for i in range(100)])
            await handle.stop()
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM t").fetchone() == (200, 200)


async def test_two_payload_sources_of_one_graph_make_different_ids(tmp_path: object) -> None:
    import pathlib
    import sqlite3

    db = pathlib.Path(str(tmp_path)) / "g.db"
    g = ti.Graph()
    g.add_source(ti.sources.from_iterable(range(1_000)), name="a")
    g.add_source(ti.sources.from_iterable(range(500)), name="b")
    g.add_sink(ti.sinks.SQLite(db, "t"), inputs=["a", "b"])
    report = await g.run()
    assert report.delivered == 1_500
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1_500,)


@pytest.mark.parametrize("stage", ["map", "filter", "chain"])
async def test_stop_iteration_from_a_stage_function_fails_only_that_event(stage: str) -> None:
    def boom(p: int) -> int:
        if p == 7:
            raise StopIteration
        return p

    stages: list[object]
    if stage == "map":
        stages = [ti.map(boom)]
    elif stage == "filter":
        stages = [ti.filter(lambda p: boom(p) >= 0)]
    else:
        stages = [ti.map(lambda p: p), ti.map(boom), ti.map(lambda p: p)]
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    report = await ti.Pipeline(
        ti.sources.from_iterable(range(20)), *stages, sink=sink, dead_letter=dead  # type: ignore[arg-type]
    ).run()
    assert sorted(e.payload for e in sink.events) == [p for p in range(20) if p != 7]
    assert [e.id for e in dead.events] == ["source:7"]
    assert "StopIteration" in dead.events[0].payload.error_type + dead.events[0].payload.error
    assert report.committed["source"] == 20
    assert_accounted(report)


async def test_an_unhashable_key_is_dead_lettered_not_fatal() -> None:
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    report = await ti.Pipeline(
        ti.sources.from_iterable([{"k": 1}, {"k": [1, 2]}, {"k": 3}]),
        ti.key_by(lambda p: p["k"]),
        ti.map(lambda p: p, workers=2),
        sink=sink,
        dead_letter=dead,
    ).run()
    assert len(sink.events) == 2 and [e.id for e in dead.events] == ["source:1"]
    assert dead.events[0].payload.error_type == "TypeError"
    assert_accounted(report)


@pytest.mark.parametrize("bad", ["12:00", "1", [1], True, float("nan")])
def test_event_time_is_validated_when_the_event_is_made(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="event_time"):
        ti.Event("x", 1, event_time=bad)  # type: ignore[arg-type]


async def test_stop_is_bounded_when_a_sink_write_is_stuck_in_a_thread() -> None:
    class Stuck(ti.Sink):
        async def write_batch(self, events: Sequence[ti.Event]) -> None:
            await anyio.to_thread.run_sync(time.sleep, 8, abandon_on_cancel=True)

    pipeline = ti.Pipeline(ti.sources.from_iterable([]), sink=Stuck())
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        await handle.send_batch(list(range(10)))
        await wait_until(lambda: handle.report().nodes["stuck"].events_in == 0)
        started = time.monotonic()
        report = await handle.stop(timeout=0.5)
        took = time.monotonic() - started
    assert took < 0.5 + ti.runtime.ABORT_CLEANUP_SECONDS + 2.0  # not the 8 s of the thread
    assert report.in_flight == 10 and report.delivered == 0


def test_blocked_producers_are_served_fairly() -> None:
    """Many producers behind a slow sink each get about the same share (FIFO wake-up)."""
    import trio
    import trio.testing

    class Slow(ti.Sink):
        async def write_batch(self, events: Sequence[ti.Event]) -> None:
            await trio.sleep(0.01)

    counts = [0] * 64

    async def main() -> None:
        pipeline = ti.Pipeline(
            ti.sources.from_iterable([]), sink=Slow(), capacity=16, max_batch=4
        )
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(pipeline.serve)

            async def produce(k: int) -> None:
                while True:
                    await handle.send(k)
                    counts[k] += 1

            async with trio.open_nursery() as producers:
                for k in range(len(counts)):
                    producers.start_soon(produce, k)
                await trio.sleep(20)
                producers.cancel_scope.cancel()
            report = await handle.stop(timeout=5)
        assert report.balanced

    run_with_mock_clock(main)
    assert min(counts) > 0
    assert max(counts) <= 2 * min(counts), counts
