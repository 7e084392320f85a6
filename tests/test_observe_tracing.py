"""OpenTelemetry traces: a span per batch per node, chained from source to sink."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import trio_ingest as ti

pytest.importorskip("opentelemetry.sdk", reason="tracing tests need the 'otel' extra")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert ti.observe.enable_tracing(provider) is True
    try:
        yield exporter
    finally:
        ti.observe.disable_tracing()
        provider.shutdown()


def path_to_root(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """Names from ``span`` up through its parents."""
    names = [span.name]
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


def index(finished: Any) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in finished}


async def test_a_trace_follows_each_batch_from_source_to_sink(
    spans: InMemorySpanExporter,
) -> None:
    # map and filter are fused into the source's task; the sink sits behind an edge
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(range(100), name="numbers"),
        ti.map(lambda p: p * 2, name="double"),
        ti.filter(lambda p: p % 3 != 0, name="no_threes"),
        sink=ti.sinks.Memory(name="store"),
        max_batch=10,
    )
    report = await pipeline.run()
    finished = spans.get_finished_spans()
    by_id = index(finished)
    names = {s.name for s in finished}
    assert names == {"numbers", "double", "no_threes", "store"}
    sources = [s for s in finished if s.name == "numbers"]
    assert sum(s.attributes["trio_ingest.events"] for s in sources) == 100
    assert all(s.parent is None for s in sources)
    sinks = [s for s in finished if s.name == "store"]
    assert sum(s.attributes["trio_ingest.events"] for s in sinks) == report.delivered
    for sink in sinks:
        assert path_to_root(sink, by_id) == ["store", "no_threes", "double", "numbers"]
        assert len({s.context.trace_id for s in map(by_id.get, _ids(sink, by_id))}) == 1
    filtered = [s for s in finished if s.name == "no_threes"]
    assert sum(
        s.attributes["trio_ingest.events"] - s.attributes["trio_ingest.events_out"]
        for s in filtered
    ) == report.filtered
    for s in finished:
        assert s.attributes["trio_ingest.node"] == s.name
        assert s.attributes["trio_ingest.outcome"] == "ok"
        assert s.end_time is not None and s.start_time is not None
        assert s.end_time >= s.start_time


def _ids(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[int]:
    out = [span.context.span_id]
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        out.append(span.context.span_id)
    return out


async def test_fan_out_and_dead_letters_are_traced(spans: InMemorySpanExporter) -> None:
    logging.getLogger("trio_ingest.runtime").setLevel(logging.ERROR)
    try:
        graph = ti.Graph(dead_letter=ti.sinks.Memory(), max_batch=8)
        graph.add_source(ti.sources.from_iterable(range(40)), name="src")
        graph.add_stage(ti.map(lambda p: p + 1, workers=2), inputs="src", name="inc")
        graph.add_sink(ti.sinks.Memory(), inputs="inc", name="ok_sink")
        graph.add_sink(ti.testing.PoisonSink({"src:3", "src:17"}, ti.sinks.Memory()), inputs="inc",
                       name="bad_sink")
        report = await graph.run()
    finally:
        logging.getLogger("trio_ingest.runtime").setLevel(logging.NOTSET)
    assert report.dead_lettered == 2
    finished = spans.get_finished_spans()
    by_id = index(finished)
    for name in ("ok_sink", "bad_sink"):
        for s in (s for s in finished if s.name == name):
            assert path_to_root(s, by_id) == [name, "inc", "src"]
    failed = [s for s in finished
              if s.name == "bad_sink" and s.attributes["trio_ingest.outcome"] == "dead_letter"]
    assert sorted(s.attributes["trio_ingest.events"] for s in failed) == [1, 1]
    assert all(s.status.status_code is StatusCode.ERROR for s in failed)
    assert all(any(e.name == "exception" for e in s.events) for s in failed)
    letters = [s for s in finished if s.name == "dead_letter"]
    assert sum(s.attributes["trio_ingest.events"] for s in letters) == 2
    for s in letters:
        assert path_to_root(s, by_id) == ["dead_letter", "bad_sink", "inc", "src"]


async def test_a_run_inside_an_application_span_is_its_child(
    spans: InMemorySpanExporter,
) -> None:
    from opentelemetry import trace

    tracer = trace.get_tracer("app", tracer_provider=spans_provider(spans))
    with tracer.start_as_current_span("nightly-import") as job:
        await ti.Pipeline(ti.sources.from_iterable(range(5)), sink=ti.sinks.Memory()).run()
    finished = spans.get_finished_spans()
    source = next(s for s in finished if s.attributes.get("trio_ingest.kind") == "source")
    assert source.parent is not None
    assert source.parent.span_id == job.get_span_context().span_id


def spans_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def test_tracing_off_records_nothing() -> None:
    # no provider given and no global one configured: tracing stays off
    assert ti.observe.enable_tracing() is False
    pipeline = ti.Pipeline(ti.sources.from_iterable(range(5)), sink=ti.sinks.Memory())
    await pipeline.run()
    runtime = pipeline._runtime
    assert runtime is not None and runtime.tracer is None


async def test_disable_tracing(spans: InMemorySpanExporter) -> None:
    ti.observe.disable_tracing()
    await ti.Pipeline(ti.sources.from_iterable(range(5)), sink=ti.sinks.Memory()).run()
    assert spans.get_finished_spans() == ()


class _PassThrough:
    name = "custom"

    async def run(self, inbox: ti.stages.Inbox, outbox: ti.stages.Outbox) -> None:
        async for events in inbox:
            await outbox.send(events)


async def test_a_custom_stage_continues_the_trace(spans: InMemorySpanExporter) -> None:
    await ti.Pipeline(
        ti.sources.from_iterable(range(20), name="numbers"),
        _PassThrough(),
        sink=ti.sinks.Memory(name="store"),
        max_batch=5,
    ).run()
    finished = spans.get_finished_spans()
    by_id = index(finished)
    sinks = [s for s in finished if s.name == "store"]
    assert sinks
    for sink in sinks:
        assert path_to_root(sink, by_id)[-1] == "numbers"  # reaches back to the source


async def test_merged_batches_link_every_trace_to_the_sink(spans: InMemorySpanExporter) -> None:
    # the source emits batches of 5 (an edge holds no more: a source that feeds a sink reads
    # in the sink's batch size, at most one edge's capacity); the sink waits to gather 100
    # events, merging 20 batches
    sink = ti.sinks.Memory(max_batch=100, max_wait=60.0, name="store")
    pipeline = ti.Pipeline(ti.sources.from_iterable(range(100), name="numbers"), sink=sink,
                           max_batch=5, capacity=5)
    await pipeline.run()
    finished = spans.get_finished_spans()
    sources = [s for s in finished if s.name == "numbers"]
    writes = [s for s in finished if s.name == "store"]
    assert len(sources) == 20
    assert len(writes) < len(sources)  # batches did merge
    reached = set()
    for write in writes:
        reached.add(write.context.trace_id)
        reached.update(link.context.trace_id for link in write.links)
    assert {s.context.trace_id for s in sources} <= reached


def test_concat_keeps_the_first_trace_and_links_the_others() -> None:
    from trio_ingest._batch import Batch

    token: Any = None
    parts = [Batch([ti.Event(str(i), i)], [i], [token], trace=f"span{i}") for i in range(3)]
    parts.append(Batch([ti.Event("x", 0)], [0], [token]))  # untraced
    merged = Batch.concat(parts)
    assert merged.trace == "span0"
    assert merged.links == ("span1", "span2")
    again = Batch.concat([merged, Batch([ti.Event("y", 0)], [0], [token], trace="span9",
                                        links=("span1", "span7"))])
    assert again.links == ("span1", "span2", "span9", "span7")  # each once, in order
    head, tail = again.split(1)
    assert head.links == tail.links == again.links
    assert again.select([0]).links == again.traced("other").links == again.links
    many = Batch.concat(Batch([ti.Event(str(i), i)], [i], [token], trace=i) for i in range(200))
    assert len(many.links) == Batch.MAX_LINKS


async def test_a_failing_stage_is_an_error_and_its_dead_letters_hang_off_it(
    spans: InMemorySpanExporter,
) -> None:
    def check(p: int) -> int:
        if p == 7:
            raise ValueError("seven is not allowed")
        return p

    logging.getLogger("trio_ingest.runtime").setLevel(logging.ERROR)
    try:
        pipeline = ti.Pipeline(
            ti.sources.from_iterable(range(20), name="src"),
            ti.map(check, name="check", workers=2),
            sink=ti.sinks.Memory(name="store"),
            dead_letter=ti.sinks.Memory(),
            max_batch=4,
        )
        report = await pipeline.run()
    finally:
        logging.getLogger("trio_ingest.runtime").setLevel(logging.NOTSET)
    assert report.dead_lettered == 1
    finished = spans.get_finished_spans()
    by_id = index(finished)
    failing = [s for s in finished
               if s.name == "check" and s.status.status_code is StatusCode.ERROR]
    assert failing, "the failing stage shows as an error"
    exceptions = [e for s in failing for e in s.events if e.name == "exception"]
    assert [e.attributes["exception.type"] for e in exceptions] == ["ValueError"]
    assert exceptions[0].attributes["exception.message"] == "seven is not allowed"
    healthy = [s for s in finished if s.name == "check" and s not in failing]
    assert all(s.status.status_code is not StatusCode.ERROR for s in healthy)
    (letter,) = [s for s in finished if s.name == "dead_letter"]
    assert letter.parent is not None
    parent = by_id[letter.parent.span_id]
    assert parent.name == "check"
    assert parent.status.status_code is StatusCode.ERROR
    assert parent.attributes["trio_ingest.first_event_id"] == "src:7"
    assert path_to_root(letter, by_id) == ["dead_letter", "check", "src"]


async def test_retries_are_span_events(spans: InMemorySpanExporter) -> None:
    store = ti.sinks.Memory()
    sink = ti.testing.FlakySink(store, fail_first=2, name="flaky")
    sink.retry = ti.RetryPolicy(max_attempts=5, backoff=ti.ConstantBackoff(0.0))
    logging.getLogger("trio_ingest.runtime").setLevel(logging.ERROR)
    try:
        await ti.Pipeline(ti.sources.from_iterable(range(3), name="src"), sink=sink).run()
    finally:
        logging.getLogger("trio_ingest.runtime").setLevel(logging.NOTSET)
    assert len(store.events) == 3
    (write,) = [s for s in spans.get_finished_spans() if s.name == "flaky"]
    retries = [e for e in write.events if e.name == "retry"]
    assert [e.attributes["trio_ingest.attempt"] for e in retries] == [1, 2]
    assert all(e.attributes["trio_ingest.retry_delay"] == 0.0 for e in retries)
    assert retries[0].attributes["exception.type"] == "TransientError"
    assert write.status.status_code is not StatusCode.ERROR


async def test_spans_carry_the_searchable_attributes(
    spans: InMemorySpanExporter, tmp_path: Any
) -> None:
    events = [ti.Event(f"order-{i}", {"n": i}) for i in range(6)]
    sink = ti.sinks.SQLite(tmp_path / "t.db", "orders", name="db")
    await ti.Pipeline(ti.sources.from_iterable(events, name="src"),
                      ti.map(lambda p: p, name="same"), sink=sink, max_batch=6).run()
    finished = spans.get_finished_spans()
    (write,) = [s for s in finished if s.name == "db"]
    assert write.attributes["db.system"] == "sqlite"
    assert write.attributes["db.collection.name"] == "orders"
    assert write.attributes["trio_ingest.kind"] == "sink"
    assert write.attributes["trio_ingest.events"] == 6
    assert write.attributes["trio_ingest.first_event_id"] == "order-0"
    assert write.attributes["trio_ingest.last_event_id"] == "order-5"
    (stage,) = [s for s in finished if s.name == "same"]
    assert stage.attributes["trio_ingest.kind"] == "map"
    long_id = "x" * 1000
    from trio_ingest.observe._tracing import MAX_ID_LENGTH

    await ti.Pipeline(ti.sources.from_iterable([ti.Event(long_id, 1)], name="long"),
                      sink=ti.sinks.Memory()).run()
    (source,) = [s for s in spans.get_finished_spans() if s.name == "long"]
    assert source.attributes["trio_ingest.first_event_id"] == long_id[:MAX_ID_LENGTH]


def test_built_in_sinks_declare_semantic_convention_attributes() -> None:
    postgres = ti.sinks.Postgres("postgresql://127.0.0.1/test", "public.orders")
    assert postgres.span_attributes == {"db.system": "postgresql",
                                        "db.collection.name": "public.orders"}
    redis = ti.sinks.RedisStreams("events")
    assert redis.span_attributes == {"messaging.system": "redis",
                                     "messaging.destination.name": "events"}
