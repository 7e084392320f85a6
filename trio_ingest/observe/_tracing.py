"""OpenTelemetry traces: one span per batch per node, chained from source to sink.

Off unless :func:`enable_tracing` found a tracer provider; then a run records,
for every batch, a span per node it went through. Each batch carries the span
of the node that last handled it (``Batch.trace``), so the next node's span is
its child and a trace shows the batch's path ``source -> stages -> sink``
across tasks. A source's span is a child of whatever span is current where
the pipeline was started (trio and asyncio tasks inherit context), so a
pipeline run inside an application span shows up under it.

Spans are recorded when a node finishes a batch, from the duration the runtime
measures anyway (no span is "current" while a stage function runs). Without
the ``otel`` extra, or with tracing not enabled, the runtime's only cost is one
``if tracer is not None`` per node and batch.
"""

from __future__ import annotations

import time
from typing import Any

from ..runtime._hooks import active_tracer, install_tracer

__all__ = ("BatchTracer", "active_tracer", "disable_tracing", "enable_tracing")

INSTRUMENTATION = "trio_ingest"


class BatchTracer:
    """Records the runtime's per-batch spans with one OpenTelemetry tracer."""

    __slots__ = ("_error", "_in_context", "_status", "_tracer")

    def __init__(self, tracer: Any) -> None:
        from opentelemetry.trace import Status, StatusCode, set_span_in_context

        self._tracer = tracer
        self._in_context = set_span_in_context
        self._status = Status
        self._error = StatusCode.ERROR

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
    ) -> Any:
        """Record a finished span: ``node`` took ``seconds`` until now on ``events`` events.

        ``parent`` is the span of the node before (from ``Batch.trace``) or None
        for a source. Returns the new span, to put on the batch going on.
        """
        end = time.time_ns()
        start = end - int(seconds * 1e9) if seconds > 0 else end
        context = self._in_context(parent) if parent is not None else None
        span = self._tracer.start_span(
            node,
            context=context,
            start_time=start,
            attributes={
                "trio_ingest.node": node,
                "trio_ingest.kind": kind,
                "trio_ingest.events": events,
                "trio_ingest.events_out": events_out,
                "trio_ingest.outcome": outcome,
            },
        )
        if error is not None:
            span.record_exception(error)
            span.set_status(self._status(self._error, f"{type(error).__name__}: {error}"))
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
