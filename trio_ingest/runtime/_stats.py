"""The runtime's one metrics model: plain counters updated once per batch.

Exporters (Prometheus, JSON, ``top``, the dashboard) all read these through
``statistics()`` snapshots; nothing on the hot path knows about them.
"""

from __future__ import annotations

import bisect
import math

import attrs

__all__ = ("Histogram", "LatencyStatistics", "NodeStatistics", "NodeStats")

# Bucket upper bounds in seconds: 10 per decade from 1 µs to 1000 s, round numbers (the
# Renard R10 series, nearly even on a log scale) so that exported ``le`` labels read 2e-06,
# not 1.995e-06; every decade holds 1, 2 and 5, the bounds Prometheus gets.
_R10 = ("1", "1.25", "1.6", "2", "2.5", "3.2", "4", "5", "6.3", "8")
BUCKETS: tuple[float, ...] = (
    *(float(f"{m}e{e}") for e in range(-6, 3) for m in _R10), 1e3
)
_INF = math.inf
_bisect_left = bisect.bisect_left


@attrs.frozen
class LatencyStatistics:
    """Percentiles (seconds) of one latency histogram; ``count`` samples."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float
    sum: float


class Histogram:
    """A fixed log-bucket histogram: constant memory, percentiles within ~12%."""

    __slots__ = ("count", "counts", "max", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def observe(self, value: float) -> None:
        if not 0.0 <= value < _INF:  # NaN, negative (a clock step) or infinite: 0
            value = 0.0
        self.counts[_bisect_left(BUCKETS, value)] += 1
        self.count += 1
        self.sum += value
        if value > self.max:
            self.max = value

    def percentile(self, q: float) -> float:
        """Upper bound of the bucket holding the ``q``-quantile (0 when empty)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank and c:
                return min(BUCKETS[i] if i < len(BUCKETS) else self.max, self.max)
        return self.max

    def statistics(self) -> LatencyStatistics:
        return LatencyStatistics(
            count=self.count,
            p50=self.percentile(0.50),
            p95=self.percentile(0.95),
            p99=self.percentile(0.99),
            max=self.max,
            sum=self.sum,
        )


@attrs.frozen
class NodeStatistics:
    """A snapshot of one node's counters.

    Attributes:
        name: The node's name.
        kind: ``source``, ``map``, ``filter``, ..., ``sink`` or ``dead_letter``.
        events_in: Events the node received (for a source: read).
        events_out: Events it passed on (for a sink: written).
        errors: Failed calls (each failed attempt counts once).
        retries: Calls repeated under a retry policy.
        dead_lettered: Events this node sent to the dead-letter sink.
        filtered: Events this node dropped on purpose.
        batches: Batches processed.
        busy_seconds: Time spent processing batches.
        latency: Per-batch processing time.
        late: Events behind the watermark of an event-time stage (routed or dead-lettered).
    """

    name: str
    kind: str
    events_in: int
    events_out: int
    errors: int
    retries: int
    dead_lettered: int
    filtered: int
    batches: int
    busy_seconds: float
    latency: LatencyStatistics
    late: int = 0


class NodeStats:
    """The live, mutable counters of one node."""

    __slots__ = (
        "batches",
        "busy_seconds",
        "dead_lettered",
        "errors",
        "events_in",
        "events_out",
        "filtered",
        "kind",
        "late",
        "latency",
        "name",
        "retries",
    )

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        self.events_in = 0
        self.events_out = 0
        self.errors = 0
        self.retries = 0
        self.dead_lettered = 0
        self.filtered = 0
        self.late = 0
        self.batches = 0
        self.busy_seconds = 0.0
        self.latency = Histogram()

    def record_batch(self, n_in: int, n_out: int, seconds: float) -> None:
        self.events_in += n_in
        self.events_out += n_out
        self.batches += 1
        self.busy_seconds += seconds
        self.latency.observe(seconds)

    def statistics(self) -> NodeStatistics:
        return NodeStatistics(
            name=self.name,
            kind=self.kind,
            events_in=self.events_in,
            events_out=self.events_out,
            errors=self.errors,
            retries=self.retries,
            dead_lettered=self.dead_lettered,
            filtered=self.filtered,
            batches=self.batches,
            busy_seconds=self.busy_seconds,
            latency=self.latency.statistics(),
            late=self.late,
        )
