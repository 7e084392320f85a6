"""OpenTelemetry traces: one span per batch per node, chained from source to sink.

Off unless :func:`enable_tracing` found a tracer provider; then a run records,
for every batch, a span per node it went through. Each batch carries the span
of the node that last handled it (``Batch.trace``), so the next node's span is
its child and a trace shows the batch's path ``source -> stages -> sink``
across tasks. A source's span is a child of whatever span is current where
the pipeline was started (trio and asyncio tasks inherit context), so a
pipeline run inside an application span shows up under it.

When batches merge (a stage or sink drains several from its edge), the merged
batch continues the first one's trace and links the spans of the others
(``Batch.links``); every later span of it carries those links, so the trace of
each event reaches every node it passes, the sink's write included. A failure
has its own span (ERROR status, the exception as an event), and the dead-letter
write is its child.

Spans are recorded when a node finishes a batch, from the duration the runtime
measures anyway (no span is "current" while a stage function runs). Without
the ``otel`` extra, or with tracing not enabled, the runtime's only cost is one
``if tracer is not None`` per node and batch.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..runtime._hooks import RetryRecord, active_tracer, install_tracer

__all__ = ("BatchTracer", "active_tracer", "disable_tracing", "enable_tracing")

INSTRUMENTATION = "trio_ingest"


#: Longest event id put on a span (``trio_ingest.first_event_id`` / ``last_event_id``).
MAX_ID_LENGTH = 128


class BatchTracer:
    """Records the runtime's per-batch spans with one OpenTelemetry tracer.

    Each span carries ``trio_ingest.node``, ``trio_ingest.kind`` (the node kind),
    ``trio_ingest.events`` / ``events_out``, ``trio_ingest.outcome``, the batch's
    first and last event id (cut to :data:`MAX_ID_LENGTH` characters), span links
    to the traces of batches merged into this one, one ``retry`` event per retry
    (attempt, delay, error), and a sink's semantic-convention attributes. A
    failure (``outcome`` other than ``ok``) has ERROR status, and the exception
    as an event when there is one.
    """

    __slots__ = ("_error", "_in_context", "_link", "_status", "_tracer")

    def __init__(self, tracer: Any) -> None:
        from opentelemetry.trace import Link, Status, StatusCode, set_span_in_context

        self._tracer = tracer
        self._in_context = set_span_in_context
        self._status = Status
        self._error = StatusCode.ERROR
        self._link = Link

    def span(
        self,
        node: str,
        kind: str,
        parent: Any,
        events: int,
        events_out: int,
        seconds: float,
        outcome: str = "ok",
        error: BaseException | None = None,
        *,
        batch: Any = None,
        retries: Sequence[RetryRecord] = (),
        attributes: Mapping[str, Any] | None = None,
    ) -> Any:
        """Record a finished span: ``node`` took ``seconds`` until now on ``events`` events.

        ``parent`` is the span of the node before (from ``Batch.trace``) or None
        for a source. Returns the new span, to put on the batch going on.
        """
        end = time.time_ns()
        start = end - int(seconds * 1e9) if seconds > 0 else end
        context = self._in_context(parent) if parent is not None else None
        attrs: dict[str, Any] = {
            "trio_ingest.node": node,
            "trio_ingest.kind": kind,
            "trio_ingest.events": events,
            "trio_ingest.events_out": events_out,
            "trio_ingest.outcome": outcome,
        }
        links = None
        if batch is not None:
            ids = batch.events
            if ids:
                attrs["trio_ingest.first_event_id"] = str(ids[0].id)[:MAX_ID_LENGTH]
                attrs["trio_ingest.last_event_id"] = str(ids[-1].id)[:MAX_ID_LENGTH]
            if batch.links:
                links = [self._link(s.get_span_context()) for s in batch.links]
        if attributes:
            attrs.update(attributes)
        span = self._tracer.start_span(
            node, context=context, start_time=start, attributes=attrs, links=links
        )
        for attempt, delay, failure in retries:
            span.add_event("retry", {
                "trio_ingest.attempt": attempt,
                "trio_ingest.retry_delay": delay,
                "exception.type": type(failure).__name__,
                "exception.message": str(failure),
            }, timestamp=start)
        if error is not None:
            span.record_exception(error, timestamp=end)
            span.set_status(self._status(self._error, f"{type(error).__name__}: {error}"))
        elif outcome != "ok":
            span.set_status(self._status(self._error, f"{outcome}: {events - events_out} of "
                                                       f"{events} events"))
        span.end(end_time=end)
        return span


def enable_tracing(tracer_provider: Any = None) -> bool:
    """Record OpenTelemetry spans in the runs that start from now on.

    Needs the ``otel`` extra. With no ``tracer_provider``, uses the global one
    (``opentelemetry.trace.set_tracer_provider``); if none is configured
    tracing stays off (no cost) and this returns False.

    Args:
        tracer_provider: An ``opentelemetry.sdk.trace.TracerProvider`` (or any
            API-compatible provider), or None for the global one.

    Returns:
        True when spans will be recorded.

    Raises:
        ModuleNotFoundError: opentelemetry-api is not installed.
    """
    try:
        from opentelemetry import trace
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "tracing needs the 'otel' extra: pip install 'trio-ingest[otel]'", name=exc.name
        ) from exc
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        install_tracer(None)
        return False
    from .. import __version__

    install_tracer(BatchTracer(provider.get_tracer(INSTRUMENTATION, __version__)))
    return True


def disable_tracing() -> None:
    """Record no spans in the runs that start from now on."""
    install_tracer(None)
