"""Prometheus exposition: a collector that reads the live report at scrape time.

Nothing is recorded for Prometheus on the hot path: the runtime keeps its
per-batch counters (``runtime._stats``) and this collector turns them into
metric families when scraped. Needs the ``metrics`` extra (prometheus_client).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from ..runtime._stats import BUCKETS, Histogram
from ._snapshot import PipelineView

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .._pipeline import Graph
    from ..runtime._handle import PipelineHandle

__all__ = ("PrometheusCollector", "exposition", "prometheus_available")

MISSING_MESSAGE = (
    "Prometheus metrics need the 'metrics' extra (prometheus_client): "
    "pip install 'trio-ingest[metrics]'"
)

# The runtime's histograms have 10 round log buckets per decade; Prometheus gets 3 per
# decade (bounds 1, 2, 5 x 10^k). Each is one of the fixed bounds, so the cumulative
# counts are exact.
_EXPORTED = tuple(i for i in range(len(BUCKETS)) if i % 10 in (0, 3, 7))
_LE_LABELS = tuple(BUCKETS[i] for i in _EXPORTED)

#: ``trio_ingest_events_total`` outcomes and the NodeStatistics field behind each.
OUTCOMES = (
    ("in", "events_in"),
    ("out", "events_out"),
    ("error", "errors"),
    ("retry", "retries"),
    ("dead_letter", "dead_lettered"),
    ("filtered", "filtered"),
)


def prometheus_available() -> bool:
    """True when prometheus_client can be imported."""
    try:
        import prometheus_client  # noqa: F401 -- only checking it is there
    except ImportError:
        return False
    return True


def cumulative_buckets(histogram: Histogram) -> list[tuple[float, int]]:
    """``(upper bound, count at or below it)`` pairs in Prometheus' form, ending at +Inf."""
    running = list(accumulate(histogram.counts))
    out = [(le, running[i]) for le, i in zip(_LE_LABELS, _EXPORTED, strict=True)]
    out.append((float("inf"), histogram.count))
    return out


class PrometheusCollector:
    """A prometheus_client collector for one pipeline, read at scrape time.

    Register it in any registry, e.g. one your application already serves::

        prometheus_client.REGISTRY.register(ti.observe.PrometheusCollector(pipeline))

    Scrape from the event loop running the pipeline (``serve_metrics`` does)
    for a consistent snapshot; from another thread the figures are each
    correct but may be a few batches apart.

    Args:
        pipeline: A ``Graph``/``Pipeline`` (before, during or after its run)
            or the ``PipelineHandle`` of a serving one.

    Raises:
        ConfigError: ``pipeline`` is none of those.
    """

    def __init__(self, pipeline: Graph | PipelineHandle) -> None:
        self._view = pipeline if isinstance(pipeline, PipelineView) else PipelineView(pipeline)

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        view = self._view
        report = view.report()
        state = view.state
        running = GaugeMetricFamily(
            "trio_ingest_running", "1 while the pipeline runs, 0 before and after."
        )
        running.add_metric([], 1.0 if state == "running" else 0.0)
        yield running
        if report is None:
            return

        def total(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            return family

        yield total("trio_ingest_received", "Events read from sources.", report.received)
        yield total("trio_ingest_delivered", "Events written by sinks (one per copy).",
                    report.delivered)
        yield total("trio_ingest_dead_lettered", "Events the dead-letter sink took.",
                    report.dead_lettered)
        yield total("trio_ingest_filtered", "Events dropped on purpose.", report.filtered)
        yield total("trio_ingest_expanded", "Extra events made by fan-out and flat_map.",
                    report.expanded)
        yield total("trio_ingest_retries", "Calls repeated under retry policies.", report.retries)
        in_flight = GaugeMetricFamily(
            "trio_ingest_in_flight", "Events neither delivered, dead-lettered nor filtered."
        )
        in_flight.add_metric([], report.in_flight)
        yield in_flight
        elapsed = GaugeMetricFamily(
            "trio_ingest_elapsed_seconds", "Seconds since the run started (to its end once over).",
            unit="seconds",
        )
        elapsed.add_metric([], report.elapsed)
        yield elapsed

        info = GaugeMetricFamily("trio_ingest_node_info", "Nodes and their kind (value 1).",
                                 labels=["node", "kind"])
        events = CounterMetricFamily(
            "trio_ingest_events",
            "Events per node by outcome: in, out, error (failed calls), retry, "
            "dead_letter, filtered.",
            labels=["node", "outcome"],
        )
        batches = CounterMetricFamily("trio_ingest_batches", "Batches processed per node.",
                                      labels=["node"])
        busy = CounterMetricFamily("trio_ingest_busy_seconds",
                                   "Seconds each node spent processing batches.",
                                   labels=["node"], unit="seconds")
        for name, node in report.nodes.items():
            info.add_metric([name, node.kind], 1.0)
            for outcome, field in OUTCOMES:
                events.add_metric([name, outcome], getattr(node, field))
            batches.add_metric([name], node.batches)
            busy.add_metric([name], node.busy_seconds)
        yield from (info, events, batches, busy)

        node_histograms, e2e = view.histograms()
        latency = HistogramMetricFamily(
            "trio_ingest_batch_latency_seconds",
            "Time a node took to process one batch.",
            labels=["node"], unit="seconds",
        )
        for name in report.nodes:
            histogram = node_histograms.get(name)
            if histogram is not None:
                latency.add_metric([name], _buckets(histogram), sum_value=histogram.sum)
        yield latency
        if e2e is not None:
            end_to_end = HistogramMetricFamily(
                "trio_ingest_end_to_end_latency_seconds",
                "Event time to sink write (sampled: first and last event of each batch).",
                unit="seconds",
            )
            end_to_end.add_metric([], _buckets(e2e), sum_value=e2e.sum)
            yield end_to_end

        depth = GaugeMetricFamily("trio_ingest_edge_depth", "Events in the edge now.",
                                  labels=["edge"])
        capacity = GaugeMetricFamily("trio_ingest_edge_capacity",
                                     "Most events the edge holds before senders block.",
                                     labels=["edge"])
        peak = GaugeMetricFamily("trio_ingest_edge_peak_depth", "Most events the edge held.",
                                 labels=["edge"])
        through = CounterMetricFamily("trio_ingest_edge_events", "Events taken from the edge.",
                                      labels=["edge"])
        blocked = CounterMetricFamily(
            "trio_ingest_edge_backpressure_seconds",
            "Seconds senders spent waiting for room in the edge, summed over senders: "
            "its rate is the average number of waiting senders.",
            labels=["edge"], unit="seconds",
        )
        full = CounterMetricFamily(
            "trio_ingest_edge_full_seconds",
            "Seconds during which the edge was full (a sender waited): its rate is the "
            "share of time the edge was full, 0 to 1.",
            labels=["edge"], unit="seconds",
        )
        waiting = GaugeMetricFamily("trio_ingest_edge_waiting_senders",
                                    "Senders blocked on the full edge now.", labels=["edge"])
        for name, edge in report.edges.items():
            depth.add_metric([name], edge.depth)
            capacity.add_metric([name], edge.capacity)
            peak.add_metric([name], edge.peak_depth)
            through.add_metric([name], edge.events_through)
            blocked.add_metric([name], edge.blocked_seconds)
            full.add_metric([name], edge.full_seconds)
            waiting.add_metric([name], edge.waiting_senders)
        yield from (depth, capacity, peak, through, blocked, full, waiting)

        committed = GaugeMetricFamily(
            "trio_ingest_source_committed_offset",
            "Last offset each source committed (sources with numeric offsets).",
            labels=["source"],
        )
        open_reads = GaugeMetricFamily(
            "trio_ingest_source_open_reads",
            "Reads of each source not committable yet (some of their events are unfinished).",
            labels=["source"],
        )
        lag = GaugeMetricFamily(
            "trio_ingest_source_lag",
            "How far each source is behind the head of its log (sources that know it).",
            labels=["source"],
        )
        partition_lag = GaugeMetricFamily(
            "trio_ingest_source_partition_lag",
            "Messages not yet read, per partition of a partitioned source (Kafka).",
            labels=["source", "partition"],
        )
        for name, source in view.sources().items():
            for partition, value in source.get("partition_lag", {}).items():
                partition_lag.add_metric([name, partition], value)
            offset = source["committed"]
            if isinstance(offset, int | float) and not isinstance(offset, bool):
                committed.add_metric([name], offset)
            open_reads.add_metric([name], source["open_reads"])
            if source["lag"] is not None:
                lag.add_metric([name], source["lag"])
        yield from (committed, open_reads, lag, partition_lag)


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    from prometheus_client.utils import floatToGoString

    return [
        (floatToGoString(le), count)  # type: ignore[no-untyped-call]
        for le, count in cumulative_buckets(histogram)
    ]


def exposition(view: Any, accept: str = "", *, process: bool = True) -> tuple[bytes, str]:
    """Render ``view``'s metrics for a scrape with this ``Accept`` header: (body, content type).

    With ``process`` (the default), the standard process, platform and GC
    collectors of prometheus_client come too (``process_resident_memory_bytes``,
    ``process_cpu_seconds_total``, ``process_open_fds``, ``python_info``,
    ``python_gc_*``), as any Prometheus client library exports them.

    Raises:
        ImportError: prometheus_client is not installed.
    """
    from prometheus_client import (
        CollectorRegistry,
        GCCollector,
        PlatformCollector,
        ProcessCollector,
    )
    from prometheus_client.exposition import choose_encoder

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PrometheusCollector(view))
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
