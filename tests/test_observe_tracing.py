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
