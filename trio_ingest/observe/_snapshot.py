"""What exporters read: a running pipeline's report, raw histograms and graph shape.

Everything here is read at request time (a scrape, a snapshot), on the event
loop that runs the pipeline: nothing on the hot path knows about exporters.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ConfigError
from ..runtime._stats import Histogram

if TYPE_CHECKING:
    from .._pipeline import Graph
    from ..graph._graph import GraphModel
    from ..runtime._handle import PipelineHandle
    from ..runtime._report import RunReport
    from ..runtime._runtime import Runtime

__all__ = ("PipelineView", "history_sample", "snapshot")

#: Version of the JSON layout served at ``/api/snapshot``.
SNAPSHOT_VERSION = 1


class PipelineView:
    """Read access to one pipeline (a ``Graph``/``Pipeline`` or a ``PipelineHandle``).

    Raises:
        ConfigError: ``pipeline`` is neither.
    """

    def __init__(self, pipeline: Graph | PipelineHandle) -> None:
        from .._pipeline import Graph
        from ..runtime._handle import PipelineHandle

        if isinstance(pipeline, PipelineHandle):
            self._graph: GraphModel = pipeline._rt.graph
            self._handle_runtime: Runtime | None = pipeline._rt
        elif isinstance(pipeline, Graph):
            self._graph = pipeline
            self._handle_runtime = None
        else:
            raise ConfigError(
                f"'pipeline' must be a Graph, Pipeline or PipelineHandle: {pipeline!r}"
            )

    @property
    def graph(self) -> GraphModel:
        return self._graph

    @property
    def runtime(self) -> Runtime | None:
        """The run under way (or the last one); None before the first run."""
        if self._handle_runtime is not None:
            return self._handle_runtime
        # the graph keeps its current runtime privately; observers are its only other readers
        runtime: Runtime | None = getattr(self._graph, "_runtime", None)
        return runtime

    @property
    def state(self) -> str:
        """``idle`` (never started), ``running`` or ``finished``."""
        rt = self.runtime
        if rt is None or rt.started_at is None:
            return "idle"
        return "finished" if rt.finished else "running"

    @property
    def hidden(self) -> frozenset[str]:
        """Placeholder sources of a serving pipeline (fed by its handle): not shown."""
        rt = self.runtime
        if rt is None or rt.handle is None:
            return frozenset()
        return frozenset(
            name for name, node in self._graph.nodes.items()
            if node.role == "source" and getattr(node.obj, "placeholder", False)
        )

    def report(self) -> RunReport | None:
        """The live report (None before the first run), without placeholder sources.

        Read from another thread (a collector in prometheus_client's own HTTP
        server), a collection may change size under the read: it is retried.
        """
        rt = self.runtime
        if rt is None:
            return None
        for _ in range(2):
            try:
                report = rt.report()
                break
            except RuntimeError:  # "deque mutated during iteration": the loop moved on
                continue
        else:
            report = rt.report()
        hidden = self.hidden
        if hidden:
            report = attrs.evolve(
                report, nodes={k: v for k, v in report.nodes.items() if k not in hidden}
            )
        return report

    def histograms(self) -> tuple[dict[str, Histogram], Histogram | None]:
        """Per-node batch latency histograms, and the end-to-end one (live objects)."""
        rt = self.runtime
        if rt is None:
            return {}, None
        nodes = {name: s.latency for name, s in rt.stats.items()}
        if rt.dead_letter_runner is not None:
            nodes["dead_letter"] = rt.dead_letter_stats.latency
        return nodes, rt.e2e

    def sources(self) -> dict[str, dict[str, Any]]:
        """Per source: committed offset, reads not yet committable, and lag if it knows it.

        A source that can tell how far behind the head of its log it is may
        define ``lag() -> float | None`` (cheap and synchronous: a value it
        keeps up to date, read at every scrape).
        """
        rt = self.runtime
        out: dict[str, dict[str, Any]] = {}
        hidden = self.hidden
        for name, node in self._graph.nodes.items():
            if node.role == "source" and name not in hidden:
                out[name] = {"committed": None, "open_reads": 0, "lag": _lag(node.obj)}
                parts = _partition_lag(node.obj)
                if parts is not None:  # a partitioned source (Kafka): lag per partition
                    out[name]["partition_lag"] = parts
        if rt is not None:
            for name, tracker in rt.ledger.trackers.items():
                if name in hidden:
                    continue
                entry = out.setdefault(name, {"committed": None, "open_reads": 0, "lag": None})
                entry["committed"] = _jsonable(tracker.committed)
                entry["open_reads"] = tracker.open_reads
        return out

    def topology(self) -> dict[str, Any]:
        """Nodes (name, role, kind, inbox edge) and links (from, to, port, edge) to draw."""
        graph = self._graph
        rt = self.runtime
        report_nodes = rt.stats if rt is not None else {}
        plan = rt.plan if rt is not None else None

        def inbox_of(name: str) -> tuple[str | None, str | None]:
            """(name of the edge feeding ``name``, node it is fused into) from the running plan."""
            if plan is None or name not in plan.by_node:
                return None, None
            task = plan.by_node[name]
            if task.head.name != name:
                return None, task.head.name
            return (task.inbox.name if task.inbox is not None else None), None

        nodes: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        hidden = self.hidden
        for name, node in graph.nodes.items():
            if name in hidden:
                continue
            edge, fused_into = inbox_of(name)
            nodes.append(
                {"name": name, "role": node.role, "kind": node.kind, "edge": edge,
                 "fused_into": fused_into}
            )
            links.extend(
                {"from": up, "to": name, "port": port, "edge": edge}
                for up, port in node.inputs if up not in hidden
            )
        if "handle" in report_nodes and "handle" not in graph.nodes:
            # a serving pipeline's handle feeds the consumers of the first source
            nodes.insert(0, {"name": "handle", "role": "source", "kind": "source", "edge": None,
                             "fused_into": None})
            first = next((n for n in graph.nodes.values() if n.role == "source"), None)
            if first is not None:
                links.extend(
                    {"from": "handle", "to": down, "port": None, "edge": inbox_of(down)[0]}
                    for down in graph.consumers().get((first.name, None), [])
                )
        if graph.dead_letter is not None:
            nodes.append({"name": "dead_letter", "role": "sink", "kind": "dead_letter",
                          "edge": plan.dead_letter.name if plan and plan.dead_letter else None,
                          "fused_into": None})
        return {"nodes": nodes, "links": links}


def snapshot(pipeline: Graph | PipelineHandle | PipelineView) -> dict[str, Any]:
    """The JSON-ready document served at ``/api/snapshot``.

    ``RunReport.to_dict()`` of the live report, plus ``version``, ``time``
    (Unix seconds, for rates between two snapshots), ``state`` (``idle``,
    ``running``, ``finished``), ``graph`` (``nodes``: name, role, kind, the
    ``edge`` feeding it, the node it is ``fused_into``; ``links``: from, to,
    port, edge) and ``sources`` (committed offset, open reads, lag).

    Raises:
        ConfigError: ``pipeline`` is not a graph or a handle.
    """
    view = pipeline if isinstance(pipeline, PipelineView) else PipelineView(pipeline)
    report = view.report()
    if report is not None:
        data = report.to_dict()
    else:
        data = {"received": 0, "delivered": 0, "dead_lettered": 0, "filtered": 0,
                "expanded": 0, "in_flight": 0, "retries": 0, "elapsed": 0.0,
                "events_per_second": 0.0, "completed": False, "balanced": True,
                "blocked_seconds": 0.0, "latency_p50": 0.0, "latency_p99": 0.0,
                "nodes": {}, "edges": {}, "committed": {},
                "latency": _zero_latency()}
    elapsed = data["elapsed"]
    for edge in data["edges"].values():
        # backpressure as people read it: the average number of senders waiting, and the
        # share of the run's time the edge was full (blocked_seconds is summed over senders)
        edge["average_waiting_senders"] = edge["blocked_seconds"] / elapsed if elapsed > 0 else 0.0
        edge["full_share"] = min(edge["full_seconds"] / elapsed, 1.0) if elapsed > 0 else 0.0
    data["version"] = SNAPSHOT_VERSION
    data["time"] = time.time()
    data["state"] = view.state
    data["graph"] = view.topology()
    data["sources"] = view.sources()
    finite: dict[str, Any] = _finite(data)
    return finite


def history_sample(pipeline: PipelineView) -> dict[str, Any] | None:
    """One point of the server's history ring buffer (None before the first run).

    The running totals the dashboard's charts are drawn from (it takes rates
    between consecutive points): ``time``, ``elapsed``, ``received``,
    ``delivered``, ``dead_lettered``, ``filtered``, ``latency`` (end-to-end
    ``count``, ``sum``, ``p99``) and per edge ``blocked_seconds`` and
    ``full_seconds``.
    """
    report = pipeline.report()
    if report is None:
        return None
    latency = report.latency
    sample = {
        "time": time.time(),
        "elapsed": report.elapsed,
        "received": report.received,
        "delivered": report.delivered,
        "dead_lettered": report.dead_lettered,
        "filtered": report.filtered,
        "latency": {"count": latency.count, "sum": latency.sum, "p99": latency.p99},
        "edges": {
            name: {"blocked_seconds": edge.blocked_seconds, "full_seconds": edge.full_seconds}
            for name, edge in report.edges.items()
        },
    }
    finite: dict[str, Any] = _finite(sample)
    return finite


def _zero_latency() -> dict[str, Any]:
    s = Histogram().statistics()
    return {"count": s.count, "p50": s.p50, "p95": s.p95, "p99": s.p99, "max": s.max,
            "sum": s.sum}


def _partition_lag(source: object) -> dict[str, float] | None:
    probe = getattr(source, "partition_lag", None)
    if not callable(probe):
        return None
    try:
        value = probe()
    except Exception:  # noqa: BLE001 -- a failing optional probe must not break a scrape
        return None
    if not isinstance(value, dict):
        return None
    return {str(k): float(v) for k, v in value.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def _lag(source: object) -> float | None:
    lag = getattr(source, "lag", None)
    if not callable(lag):
        return None
    try:
        value = lag()
    except Exception:  # noqa: BLE001 -- a failing optional probe must not break a scrape
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _finite(value: Any) -> Any:
    """Replace NaN and infinities (not JSON) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
