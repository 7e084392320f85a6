"""The runtime end to end: stages, workers, order, errors, dead letters, accounting."""

from __future__ import annotations

import random
import sys
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sniffio

import trio_ingest as ti
from trio_ingest import _batch
from trio_ingest.testing import assert_accounted

pytestmark = pytest.mark.anyio


def events(n: int) -> list[ti.Event]:
    return [ti.Event(id=str(i), payload={"value": i}) for i in range(n)]


async def test_backend_really_is_the_one_asked_for(anyio_backend: str) -> None:
    assert sniffio.current_async_library() == anyio_backend


async def test_the_public_contract() -> None:
    async def enrich_async(p: dict[str, int]) -> dict[str, object]:
        await anyio.sleep(random.random() / 1000)
        return {**p, "enriched": True}

    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events(10_000)),
        ti.map(lambda p: {**p, "double": p["value"] * 2}),
        ti.filter(lambda p: p["value"] % 10 != 0),
        ti.map(enrich_async, workers=4, ordered=True),
        sink=sink,
        dead_letter=dead,
        retry=ti.RetryPolicy(
            max_attempts=5,
            backoff=ti.ExponentialBackoff(initial=0.05, multiplier=2, max_delay=5, jitter="full"),
        ),
        capacity=1_000,
        max_batch=256,
    )
    report = await pipeline.run()
    assert report.received == report.delivered + report.dead_lettered + report.filtered
    assert report.received == 10_000 and report.filtered == 1_000 and report.delivered == 9_000
    values = [e.payload["value"] for e in sink.events]
    assert values == [v for v in range(10_000) if v % 10]  # ordered=True kept input order
    assert all(
        e.payload["enriched"] and e.payload["double"] == 2 * e.payload["value"] for e in sink.events
    )
    assert [e.id for e in sink.events] == [str(v) for v in values]  # ids survive map
    assert report.completed and report.in_flight == 0
    assert report.committed["source"] == 10_000


async def test_payload_sources_get_ids_from_positions() -> None:
    sink = ti.sinks.Memory()
    await ti.Pipeline(ti.sources.from_iterable(["a", "b"]), sink=sink).run()
    assert [(e.id, e.payload) for e in sink.events] == [("source:0", "a"), ("source:1", "b")]


async def test_async_iterable_source() -> None:
    async def gen():  # type: ignore[no-untyped-def]
        for i in range(5):
            await anyio.lowlevel.checkpoint()
            yield i

    sink = ti.sinks.Memory()
    report = await ti.Pipeline(ti.sources.from_iterable(gen()), sink=sink).run()
    assert sink.payloads == [0, 1, 2, 3, 4] and report.delivered == 5


async def test_event_metadata_survives_map_and_map_event_sees_it() -> None:
    src = [ti.Event(id="a", payload=1, key="k", event_time=10.0, headers={"h": "1"})]
    sink = ti.sinks.Memory()
    seen: list[ti.Event] = []

    def look(e: ti.Event) -> ti.Event:
        seen.append(e)
        import attrs

        return attrs.evolve(e, payload=e.payload * 100, headers={"h": "2"})

    await ti.Pipeline(
        ti.sources.from_iterable(src), ti.map(lambda p: p + 1), ti.map_event(look), sink=sink
    ).run()
    assert seen[0].payload == 2 and seen[0].key == "k"
    out = sink.events[0]
    assert (out.id, out.payload, out.key, out.event_time, dict(out.headers)) == (
        "a",
        200,
        "k",
        10.0,
        {"h": "2"},
    )


async def test_flat_map_children_have_deterministic_ids_and_are_accounted() -> None:
    sink = ti.sinks.Memory()
    report = await ti.Pipeline(
        ti.sources.from_iterable([ti.Event(id="p", payload=3), ti.Event(id="q", payload=0)]),
        ti.flat_map(lambda n: range(n)),
        sink=sink,
    ).run()
    assert [(e.id, e.payload) for e in sink.events] == [("p:0", 0), ("p:1", 1), ("p:2", 2)]
    assert report.received == 2 and report.expanded == 2 and report.filtered == 1
    assert_accounted(report)
    assert report.committed["source"] == 2


async def test_map_batch_inspect_key_by() -> None:
    sink = ti.sinks.Memory()
    tapped: list[int] = []
    await ti.Pipeline(
        ti.sources.from_iterable(range(10)),
        ti.map_batch(lambda ps: [p * 10 for p in ps]),
        ti.tap(tapped.append),
        ti.key_by(lambda p: p % 3),
        sink=sink,
    ).run()
    assert sink.payloads == [p * 10 for p in range(10)]
    assert sorted(tapped) == sink.payloads
    assert [e.key for e in sink.events] == [(p * 10) % 3 for p in range(10)]


async def test_batch_stage_groups_by_size() -> None:
    sink = ti.sinks.Memory()
    sizes: list[int] = []

    class Sizes(ti.Sink):
        async def write_batch(self, evs):  # type: ignore[no-untyped-def]
            sizes.append(len(evs))
            await sink.write_batch(evs)

    await ti.Pipeline(
        ti.sources.from_iterable(range(1000)),
        ti.batch(max_size=300, max_wait=5.0),
        sink=Sizes(max_batch=1000),
        max_batch=50,
    ).run()
    assert sizes[:3] == [300, 300, 300] and sum(sizes) == 1000
    assert sink.payloads == list(range(1000))


async def test_batch_stage_flushes_after_max_wait() -> None:
    sizes: list[int] = []

    class Sizes(ti.Sink):
        async def write_batch(self, evs):  # type: ignore[no-untyped-def]
            sizes.append(len(evs))

    async def slow():  # type: ignore[no-untyped-def]
        for i in range(6):
            yield i
            await anyio.sleep(0.02 if i != 2 else 0.3)

    await ti.Pipeline(
        ti.sources.from_iterable(slow()),
        ti.batch(max_size=100, max_wait=0.15),
        sink=Sizes(),
    ).run()
    assert sum(sizes) == 6 and len(sizes) >= 2 and max(sizes) < 6


async def test_workers_unordered_deliver_everything() -> None:
    async def jitter(p: int) -> int:
        await anyio.sleep(random.random() / 500)
        return p

    sink = ti.sinks.Memory()
    report = await ti.Pipeline(
        ti.sources.from_iterable(range(2000)), ti.map(jitter, workers=8), sink=sink, max_batch=16
    ).run()
    assert sorted(sink.payloads) == list(range(2000)) and report.delivered == 2000


async def test_key_by_keeps_per_key_order_across_workers() -> None:
    async def jitter(p: tuple[str, int]) -> tuple[str, int]:
        await anyio.sleep(random.random() / 1000)
        return p

    items = [(f"k{random.randrange(7)}", i) for i in range(3000)]
    sink = ti.sinks.Memory()
    await ti.Pipeline(
        ti.sources.from_iterable(items),
        ti.key_by(lambda p: p[0]),
        ti.map(jitter, workers=4),
        sink=sink,
        max_batch=8,
    ).run()
    assert len(sink.events) == 3000
    for key in {k for k, _ in items}:
        got = [i for k, i in sink.payloads if k == key]
        assert got == sorted(got), key


async def test_stage_error_without_dead_letter_surfaces_naming_the_stage() -> None:
    def explode(p: int) -> int:
        if p == 7:
            raise ValueError("bad seven")
        return p

    with pytest.raises(ti.StageError, match="stage 'explode' failed on event 'source:7'") as info:
        await ti.Pipeline(
            ti.sources.from_iterable(range(100)), ti.map(explode), sink=ti.sinks.Memory()
        ).run()
    assert isinstance(info.value.__cause__, ValueError)
    assert any("explode" in note for note in info.value.__notes__)


async def test_no_task_outlives_a_failed_run() -> None:
    before = len(_tasks())

    async def explode(p: int) -> int:
        raise KeyError(p)

    # three workers may fail in the same scheduling round: one error, or a group of them
    with pytest.raises((ti.StageError, ExceptionGroup)) as info:
        await ti.Pipeline(
            ti.sources.synthetic(None), ti.map(explode, workers=3), sink=ti.sinks.Memory()
        ).run()
    if isinstance(info.value, ExceptionGroup):
        assert info.value.split(ti.StageError)[1] is None
    await anyio.lowlevel.checkpoint()
    assert len(_tasks()) == before


def _tasks() -> list[object]:
    if sniffio.current_async_library() == "asyncio":
        import asyncio

        return list(asyncio.all_tasks())
    import trio

    root = trio.lowlevel.current_root_task()
    assert root is not None
    out: list[object] = []
    todo = [root]
    while todo:
        t = todo.pop()
        out.append(t)
        for nursery in t.child_nurseries:
            todo.extend(nursery.child_tasks)
    return out


async def test_stage_errors_go_to_the_dead_letter_sink_with_reason() -> None:
    calls: dict[int, int] = {}

    def flaky(p: int) -> int:
        calls[p] = calls.get(p, 0) + 1
        if p % 5 == 0:
            raise ValueError(f"no multiples of five: {p}")
        return p * 2

    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    report = await ti.Pipeline(
        ti.sources.from_iterable(range(50)),
        ti.map(lambda p: p),
        ti.map(flaky, name="double"),
        ti.map(lambda p: p + 1),
        sink=sink,
        dead_letter=dead,
    ).run()
    assert report.delivered == 40 and report.dead_lettered == 10
    assert_accounted(report)
    assert all(n == 1 for n in calls.values())  # a failure never re-calls its neighbours
    letters = {e.id: e.payload for e in dead.events}
    assert sorted(letters, key=lambda i: int(i.split(":")[1])) == [
        f"source:{i}" for i in range(0, 50, 5)
    ]
    letter = letters["source:10"]
    assert letter.node == "double" and letter.error_type == "ValueError"
    assert letter.error == "no multiples of five: 10" and letter.attempts == 1
    assert letter.event.payload == 10  # as it was when it failed
    assert report.nodes["double"].dead_lettered == 10


async def test_stage_retry_policy_retries_the_event() -> None:
    fails = {3: 2}

    async def sometimes(p: int) -> int:
        if fails.get(p, 0):
            fails[p] -= 1
            raise ti.TransientError("later")
        return p

    sink = ti.sinks.Memory()
    report = await ti.Pipeline(
        ti.sources.from_iterable(range(6)),
        ti.map(sometimes, retry=ti.RetryPolicy(max_attempts=3, backoff=ti.ConstantBackoff(0))),
        sink=sink,
    ).run()
    assert sorted(sink.payloads) == list(range(6)) and report.retries == 2


async def test_composed_maps_recover_from_the_failing_stage_on() -> None:
    attempts = {"n": 0}

    def second(p: int) -> int:
        if p == 4 and attempts["n"] < 2:
            attempts["n"] += 1
            raise ti.TransientError("retry me")
        return p * 10

    sink = ti.sinks.Memory()
    report = await ti.Pipeline(
        ti.sources.from_iterable(range(8)),
        ti.map(lambda p: p + 1),
        ti.map(second, retry=ti.RetryPolicy(max_attempts=3, backoff=ti.ConstantBackoff(0))),
        ti.map(lambda p: -p),
        sink=sink,
    ).run()
    assert sink.payloads == [-(p + 1) * 10 for p in range(8)]
    assert report.nodes["second"].retries == 2


async def test_permanent_sink_errors_split_the_batch_and_dead_letter_only_the_bad() -> None:
    poison = {"source:13", "source:77"}
    sink = ti.testing.PoisonSink(poison)
    dead = ti.sinks.Memory()
    report = await ti.Pipeline(
        ti.sources.from_iterable(range(100)), sink=sink, dead_letter=dead, max_batch=64
    ).run()
    assert {e.id for e in dead.events} == poison
    assert len(sink.inner.events) == 98  # type: ignore[attr-defined]
    assert {e.payload.attempts for e in dead.events} == {1}
    assert_accounted(report)


async def test_sink_failure_without_dead_letter_fails_the_run() -> None:
    sink = ti.testing.FlakySink(fail_first=10)
    with pytest.raises(ti.RetryExhaustedError, match="gave up after 2 attempt"):
        await ti.Pipeline(
            ti.sources.from_iterable(range(3)),
            sink=sink,
            retry=ti.RetryPolicy(max_attempts=2, backoff=ti.ConstantBackoff(0)),
        ).run()


async def test_failing_source_open_fails_before_data_moves() -> None:
    class Broken(ti.Source):
        async def open(self) -> None:
            raise ti.SourceError("cannot connect")

    sink = ti.sinks.Memory()
    with pytest.raises(ti.SourceError, match="cannot connect"):
        await ti.Pipeline(Broken(), sink=sink).run()
    assert sink.events == []


async def test_a_custom_source_may_return_its_events_in_any_sequence() -> None:
    class Tuples(ti.Source):
        def __init__(self) -> None:
            super().__init__()
            self.reads = [(ti.Event(id="a", payload=1), ti.Event(id="b", payload=2))]

        async def read(self, max_events: int) -> ti.Read | None:
            return ti.Read(self.reads.pop(), offset=1) if self.reads else None

    sink = ti.sinks.Memory()
    report = await ti.Pipeline(Tuples(), ti.map(lambda p: p * 10), sink=sink).run()
    assert [(e.id, e.payload) for e in sink.events] == [("a", 10), ("b", 20)]
    assert report.delivered == 2 and report.balanced


@pytest.mark.parametrize("built", ["C", "Python"])
@pytest.mark.parametrize("parts", [None, ((1, None),)])
@pytest.mark.parametrize("item", [{"not": "an event"}, "abcde", ("a", 1, None, 0.0)])
async def test_a_source_reading_something_else_than_events_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch, built: str, parts: Any, item: Any
) -> None:
    # the same SourceError with or without the C loop, before anything is admitted
    if built == "Python":
        monkeypatch.setattr(_batch, "_payloads", _batch._payloads_py)

    class Payloads(ti.Source):
        async def read(self, max_events: int) -> ti.Read | None:
            return ti.Read([item], offset=1, parts=parts)  # a source bug

    sink = ti.sinks.Memory()
    with pytest.raises(ti.SourceError, match=r"Payloads\.read\(\) returned a Read whose events"):
        await ti.Pipeline(Payloads(), sink=sink).run()
    assert sink.events == []


async def test_failing_sink_open_fails_before_sources_open() -> None:
    opened = []

    class Src(ti.sources.FromIterable):
        async def open(self) -> None:
            opened.append(True)
            await super().open()

    class Bad(ti.Sink):
        async def open(self) -> None:
            raise OSError("read-only")

    with pytest.raises(OSError, match="read-only"):
        await ti.Pipeline(Src([1]), sink=Bad()).run()
    assert opened == []


async def test_two_failures_raise_an_exception_group() -> None:
    calls = 0
    both = anyio.Event()

    async def boom(p: int) -> int:
        # the two fail together, whatever the scheduling: the first waits for the second
        nonlocal calls
        calls += 1
        if calls == 2:
            both.set()
        else:
            await both.wait()
        raise RuntimeError(p)

    g = ti.Graph()
    g.add_source(ti.sources.from_iterable([1]), name="a")
    g.add_source(ti.sources.from_iterable([2]), name="b")
    g.add_stage(ti.map(boom, name="ma"), inputs="a")
    g.add_stage(ti.map(boom, name="mb"), inputs="b")
    g.add_sink(ti.sinks.Memory(), inputs=["ma", "mb"])
    if sys.version_info >= (3, 11) and hasattr(pytest, "RaisesGroup"):
        with pytest.RaisesGroup(ti.StageError, ti.StageError, flatten_subgroups=True):
            await g.run()
    else:  # pragma: no cover
        with pytest.raises(ExceptionGroup):
            await g.run()


async def test_serve_handle_is_a_producer_and_stops_gracefully() -> None:
    class MySink(ti.Sink):
        def __init__(self) -> None:
            super().__init__()
            self.got: list[str] = []

        async def write_batch(self, evs):  # type: ignore[no-untyped-def]
            self.got.extend(e.id for e in evs)

    sink = MySink()
    pipeline = ti.Pipeline(ti.sources.from_iterable(events(10)), ti.map(lambda p: p), sink=sink)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        await anyio.sleep(0.05)  # the source is exhausted; serve keeps running
        assert not handle.stopped
        await handle.send(ti.Event(id="x", payload={}))
        await handle.send_batch([{"a": 1}, {"a": 2}])
        report = await handle.stop(timeout=10)
    assert report.completed and report.received == 13 and report.delivered == 13
    assert "x" in sink.got and any(i.startswith("handle:") for i in sink.got)
    assert handle.report().delivered == 13
    with pytest.raises(anyio.ClosedResourceError):
        await handle.send(1)


async def test_handle_send_blocks_while_the_first_edge_is_full() -> None:
    pipeline = ti.Pipeline(
        ti.sources.from_iterable([]),
        ti.map(lambda p: p, workers=2),
        sink=ti.testing.HangingSink(),
        capacity=10,
        max_batch=5,
    )
    sent = 0
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        with anyio.move_on_after(0.3):
            for i in range(1000):
                await handle.send(i)
                sent += 1
        # edges of 10 + batches held by 2 workers and the sink (5 each) bound what got in
        assert 10 <= sent <= pipeline.memory_bound()
        report = await handle.stop(timeout=0.2)
    assert not report.completed
    # the send cut short by move_on_after counts as received and in flight, never lost
    assert sent <= report.received <= sent + 1
    assert report.in_flight == report.received and report.delivered == 0
    assert_accounted(report)


async def test_stop_with_a_hung_sink_honours_its_deadline() -> None:
    sink = ti.testing.HangingSink()
    pipeline = ti.Pipeline(ti.sources.synthetic(None), ti.map(lambda p: p), sink=sink, capacity=50)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        await anyio.sleep(0.1)
        start = anyio.current_time()
        report = await handle.stop(timeout=0.5)
        took = anyio.current_time() - start
    assert 0.5 <= took < 1.5
    assert sink.started >= 1 and report.delivered == 0
    assert report.in_flight == report.received > 0  # not committed: redelivered next run
    assert report.committed["synthetic"] is None
    assert_accounted(report)


async def test_stop_drains_what_is_in_flight() -> None:
    slow = ti.testing.FlakySink(latency=(0.001, 0.003), seed=1)
    src = ti.sources.synthetic(None, seed=1)
    pipeline = ti.Pipeline(src, ti.map(lambda p: p), sink=slow, capacity=100)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        await anyio.sleep(0.2)
        report = await handle.stop(timeout=30)
    assert report.completed and report.received > 0
    assert report.delivered == report.received == len(slow.inner.events)  # type: ignore[attr-defined]
    assert report.committed["synthetic"] == report.received


async def test_cancelling_the_caller_cancels_the_pipeline() -> None:
    with anyio.move_on_after(0.2) as scope:
        await ti.Pipeline(ti.sources.synthetic(None), sink=ti.testing.HangingSink()).run()
    assert scope.cancelled_caught


async def test_backpressure_producer_blocks_at_capacity() -> None:
    """With a sink that never completes, the producer stops once the edges are full."""
    src = ti.sources.synthetic(None)
    pipeline = ti.Pipeline(
        src,
        ti.map(lambda p: p, workers=2),
        sink=ti.testing.HangingSink(),
        capacity=100,
        max_batch=10,
    )
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        await anyio.sleep(0.3)
        live = handle.report()
        report = await handle.stop(timeout=0.1)
    edges = live.edges
    assert all(e.peak_depth <= e.capacity for e in edges.values())
    assert live.received <= pipeline.memory_bound()
    first = edges["synthetic->map"]
    assert first.depth == first.capacity == 100 and first.blocked_seconds > 0.1
    assert_accounted(report)


async def test_synthetic_source_duplicates_and_rate() -> None:
    sink = ti.sinks.Memory(idempotent=True)
    report = await ti.Pipeline(ti.sources.synthetic(500, duplicates=0.2, seed=3), sink=sink).run()
    assert report.delivered == 500
    assert 300 < len(sink.events) < 480  # duplicate ids stored once
    start = anyio.current_time()
    await ti.Pipeline(ti.sources.synthetic(20, rate=100.0), sink=ti.sinks.Null()).run()
    assert anyio.current_time() - start >= 0.15


class BufferSink(ti.Sink):
    """Holds writes until flush(): events count as delivered, acks wait for flush."""

    buffered = True
    flush_every = 1_000_000
    flush_interval = 0.2

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[ti.Event] = []
        self.durable: list[ti.Event] = []
        self.flushes = 0

    async def write_batch(self, evs):  # type: ignore[no-untyped-def]
        self.pending.extend(evs)

    async def flush(self) -> None:
        self.flushes += 1
        self.durable += self.pending
        self.pending = []


async def test_buffered_sink_acks_only_after_flush_and_flushes_on_age() -> None:
    sink = BufferSink()
    src = ti.sources.from_iterable(events(100))
    pipeline = ti.Pipeline(src, sink=sink)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        await anyio.sleep(0.05)
        assert len(sink.pending) == 100 and sink.durable == []
        assert handle.report().committed["source"] is None  # written, not yet durable
        await anyio.sleep(0.4)  # no new events: the age flush still happens
        assert len(sink.durable) == 100 and sink.flushes >= 1
        assert handle.report().committed["source"] == 100
        await handle.stop()


class OverlapSink(ti.Sink):
    """A buffered sink whose flush takes the buffer at once: writing goes on meanwhile.

    Its first flush waits for ``release``; the others finish at once.
    """

    buffered = True
    flush_overlaps = True
    flush_every = 10
    flush_interval = 3600.0

    def __init__(self, fail_flush: bool = False) -> None:
        super().__init__()
        self.pending: list[ti.Event] = []
        self.durable: list[str] = []
        self.release = anyio.Event()
        self.flush_started = anyio.Event()
        self.flushing = 0
        self.most_flushing = 0
        self.written_during_flush = 0
        self.fail_flush = fail_flush

    async def write_batch(self, evs):  # type: ignore[no-untyped-def]
        if self.flushing:
            self.written_during_flush += len(evs)
        self.pending.extend(evs)

    async def flush(self) -> None:
        taken, self.pending = self.pending, []
        self.flushing += 1
        self.most_flushing = max(self.most_flushing, self.flushing)
        self.flush_started.set()
        try:
            await self.release.wait()
            if self.fail_flush:
                raise ti.SinkError("the disk went away (injected)")
            self.durable += [e.id for e in taken]
        finally:
            self.flushing -= 1


async def test_an_overlapping_flush_lets_writes_go_on_and_acks_only_when_durable() -> None:
    sink = OverlapSink()
    pipeline = ti.Pipeline(ti.sources.from_iterable(events(100)), sink=sink, max_batch=5)
    reports: list[ti.RunReport] = []

    async def run() -> None:
        reports.append(await pipeline.run())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await sink.flush_started.wait()
        # writing goes on while the first flush is held (up to one more buffer)
        while sink.written_during_flush == 0:  # noqa: ASYNC110 -- a condition, not a time
            await anyio.sleep(0.001)
        live = pipeline.report()
        assert live is not None and live.delivered == 0  # nothing is durable yet
        assert live.committed["source"] is None
        sink.release.set()
    (report,) = reports
    assert sorted(sink.durable) == sorted(e.id for e in events(100))  # each row once
    assert report.delivered == 100 and report.committed["source"] == 100
    assert sink.most_flushing == 1  # one flush at a time
    assert_accounted(report)


async def test_a_failed_overlapping_flush_fails_the_run_and_acks_nothing_unflushed() -> None:
    sink = OverlapSink(fail_flush=True)
    pipeline = ti.Pipeline(ti.sources.from_iterable(events(100)), sink=sink, max_batch=5)
    sink.release.set()
    with pytest.raises(ti.SinkError, match="injected"):
        await pipeline.run()
    assert sink.durable == []
    live = pipeline.report()
    assert live is not None and live.delivered == 0
    assert live.committed["source"] is None


async def test_a_running_graph_stops_gracefully_from_another_task() -> None:
    sink = ti.testing.FlakySink(latency=(0.001, 0.002), seed=2)
    pipeline = ti.Pipeline(ti.sources.synthetic(None), sink=sink)
    reports: list[ti.RunReport] = []

    async def run() -> None:
        reports.append(await pipeline.run())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        # wait for deliveries, not for a time: a loaded machine may take long to start
        while (live := pipeline.report()) is None or live.delivered == 0:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        stopped = await pipeline.stop(timeout=10)
    assert stopped is not None and stopped.completed
    assert reports[0].delivered == reports[0].received > 0
