"""RunReport: what a run did, as a frozen value."""

from __future__ import annotations

from typing import Any

import attrs

from .._edge import EdgeStatistics
from ._stats import LatencyStatistics, NodeStatistics

__all__ = ("RunReport",)


@attrs.frozen
class RunReport:
    """Counters of a pipeline run, live (``handle.report()``) or final (``run()``).

    Every event that entered is accounted for exactly once::

        received + expanded == delivered + dead_lettered + filtered + in_flight

    ``expanded`` counts the extra copies fan-out and ``flat_map`` made (0 in a
    linear pipeline without ``flat_map``), and ``in_flight`` the events not
    finished: 0 after a completed run; after a stop whose deadline passed, the
    events that were not committed and will be delivered again on the next run.

    Attributes:
        received: Events read from sources (and sent through a handle).
        delivered: Events written by sinks (one per sink for broadcast copies).
        dead_lettered: Events the dead-letter sink took.
        filtered: Events dropped on purpose (``filter``, empty ``flat_map``, ``route`` to None).
        expanded: Extra events created by fan-out and ``flat_map``.
        in_flight: Events neither delivered, dead-lettered nor filtered.
        retries: Calls repeated under retry policies, all nodes together.
        elapsed: Seconds from start to end (or to now, while running).
        completed: True when the run drained completely (no deadline cut it short).
        nodes: Per-node statistics, by name.
        edges: Per-edge statistics, by name.
        committed: Per-source last committed offset.
        latency: End-to-end latency (event time to sink write), sampled per batch.
    """

    received: int
    delivered: int
    dead_lettered: int
    filtered: int
    expanded: int
    in_flight: int
    retries: int
    elapsed: float
    completed: bool
    nodes: dict[str, NodeStatistics]
    edges: dict[str, EdgeStatistics]
    committed: dict[str, Any]
    latency: LatencyStatistics

    @property
    def balanced(self) -> bool:
        """Whether the accounting invariant holds (it always should)."""
        return (
            self.received + self.expanded
            == self.delivered + self.dead_lettered + self.filtered + self.in_flight
        )

    @property
    def blocked_seconds(self) -> float:
        """Total seconds senders spent waiting on full edges (backpressure)."""
        return sum(e.blocked_seconds for e in self.edges.values())

    @property
    def throughput(self) -> float:
        """Events finished per second of the run."""
        done = self.delivered + self.dead_lettered + self.filtered
        return done / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The headline figures as a flat, JSON-ready dict."""
        return {
            "received": self.received,
            "delivered": self.delivered,
            "dead_lettered": self.dead_lettered,
            "filtered": self.filtered,
            "expanded": self.expanded,
            "in_flight": self.in_flight,
            "retries": self.retries,
            "elapsed": self.elapsed,
            "events_per_second": self.throughput,
            "completed": self.completed,
            "balanced": self.balanced,
            "blocked_seconds": self.blocked_seconds,
            "latency_p50": self.latency.p50,
            "latency_p99": self.latency.p99,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, as a JSON-ready dict."""
        data = self.summary()
        data["nodes"] = {k: attrs.asdict(v) for k, v in self.nodes.items()}
        data["edges"] = {k: attrs.asdict(v) for k, v in self.edges.items()}
        data["committed"] = {k: _jsonable(v) for k, v in self.committed.items()}
        data["latency"] = attrs.asdict(self.latency)
        return data


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
