"""Compile a validated graph into tasks and edges, fusing what needs no boundary.

A sync, single-worker, stateless operator whose only input is a node that
feeds nothing else runs inside that node's task (operator fusion, as Flink's
chaining and Akka's fusing): no channel hop, no task switch. Edges stand only
where concurrency, async I/O, fan-in/fan-out, routing or a sink ask for one.
"""

from __future__ import annotations

from typing import Any

import attrs

from .._edge import Edge
from ..stages._operators import BatchStage, Operator, Route
from ._graph import GraphModel as Graph
from ._graph import Node

__all__ = ("Plan", "TaskNode", "compile_plan")


@attrs.define(eq=False)
class TaskNode:
    """One head node plus the operators fused after it, run by ``workers`` tasks."""

    head: Node
    fused: list[Node] = attrs.field(factory=list)
    inbox: Edge | None = None
    upstream: list[TaskNode] = attrs.field(factory=list)
    # output port (None for plain nodes) -> downstream task nodes
    outputs: dict[str | None, list[TaskNode]] = attrs.field(factory=dict)
    workers: int = 1
    keyed: bool = False
    ordered: bool = False
    #: Most events one read of a source task takes (0: the graph's ``max_batch``).
    read_size: int = 0
    #: A sink written by its one upstream task itself, not through its edge (see
    #: :func:`_direct`).
    direct: bool = False

    @property
    def last(self) -> Node:
        return self.fused[-1] if self.fused else self.head

    @property
    def name(self) -> str:
        return self.head.name


@attrs.define(eq=False)
class Plan:
    tasks: list[TaskNode]
    by_node: dict[str, TaskNode]
    capacity: int
    max_batch: int
    dead_letter: Edge | None
    dead_letter_sink: Any = None

    def edges(self) -> list[Edge]:
        out = [t.inbox for t in self.tasks if t.inbox is not None]
        if self.dead_letter is not None:
            out.append(self.dead_letter)
        return out

    def memory_bound(self) -> int:
        """Most events the running graph holds at once: every place that can hold one.

        Edges (their capacity, the dead-letter edge too), plus what each worker of
        each node holds in hand: a batch of ``max_batch`` (a source's read, a
        stage's input), or what the node itself says it holds (``in_hand``: a
        ``batch()`` stage's ``max_size``, a sink's own ``max_batch`` and a buffered
        sink's unflushed ``flush_every``), twice that for an ordered stage (a
        finished batch may wait for its turn), and the per-worker key queues of a
        keyed stage with their dispatcher's batch.
        """
        bound = sum(e.capacity for e in self.edges())
        for t in self.tasks:
            objs = [t.head.obj, *(n.obj for n in t.fused)]
            per_worker = max(t.read_size, *(_in_hand(obj, self.max_batch) for obj in objs))
            in_hand = t.workers * per_worker
            if t.ordered:
                in_hand *= 2
            if t.keyed:
                in_hand += t.workers * self.key_queue_capacity + self.max_batch
            bound += in_hand
        if self.dead_letter_sink is not None:
            bound += self.dead_letter_sink.workers * _in_hand(self.dead_letter_sink, self.max_batch)
        return bound

    @property
    def key_queue_capacity(self) -> int:
        """Capacity of each worker's private key queue in a keyed stage."""
        return self.max_batch * KEY_QUEUE_BATCHES


#: A keyed stage's per-worker queue holds this many batches.
KEY_QUEUE_BATCHES = 2


def _in_hand(obj: Any, max_batch: int) -> int:
    """Events one worker of the node ``obj`` may hold beyond its input edge."""
    in_hand = getattr(obj, "in_hand", None)
    return max(max_batch, int(in_hand(max_batch))) if in_hand is not None else max_batch


def _read_size(task: TaskNode, max_batch: int, capacity: int) -> int:
    """Most events one read of the source ``task`` takes.

    ``max_batch``, except for a source that feeds only sinks, with no stage in
    between: it reads in the sinks' own batch size (the smallest of them, at most
    one edge's capacity), so that a sink that writes large batches (Parquet:
    10,000) is not fed them in many small reads. Measured with
    ``benchmarks/bench_sinks_db.py``'s Parquet race: 0.63-0.73x of the plain
    pyarrow script with reads of 256, 0.80x with reads of 1,000.
    """
    consumers = [c for targets in task.outputs.values() for c in targets]
    if task.fused or not consumers or any(c.head.role != "sink" for c in consumers):
        return max_batch
    wanted = min(c.head.obj.max_batch or max_batch for c in consumers)
    return max(max_batch, min(wanted, capacity))


def _direct(
    task: TaskNode, consumers: dict[tuple[str, str | None], list[str]], serving: bool
) -> bool:
    """Whether the sink ``task`` is written by its upstream task itself, with no task switch.

    A sink whose ``write_batch`` never waits (``write_may_wait = False``: Null, Memory)
    gains nothing from a task of its own: handing each batch over costs two task steps
    and leaves the batch to go cold in the cache. It is written by the task that feeds
    it when that is the only one: one input, which no other node reads, from a task of
    one worker whose head is a source (not one the handle also feeds) or a built-in
    operator or ``batch()`` (a custom stage's ``emit`` may be cancelled half-way, and
    must keep an edge's rule); and the sink writes every batch as it comes (one worker,
    no ``max_wait``, not buffered). Measured with ``python -m benchmarks --only sink_feed``: see
    docs/performance.md.
    """
    sink = task.head.obj
    if task.head.role != "sink" or sink.write_may_wait or sink.workers != 1:
        return False
    if sink.max_wait > 0 or sink.buffered or len(task.upstream) != 1:
        return False
    (up, port), *more = task.head.inputs
    feeder = task.upstream[0]
    if more or port is not None or consumers.get((up, None)) != [task.head.name]:
        return False
    if feeder.workers != 1 or feeder.last.name != up:
        return False
    if feeder.head.role == "source":
        return not serving  # a serving pipeline's handle feeds that edge too
    return isinstance(feeder.head.obj, Operator | BatchStage)  # never a custom stage's emit


def _fusable_into(
    graph: Graph, node: Node, consumers: dict[tuple[str, str | None], list[str]], serving: bool
) -> str | None:
    obj = node.obj
    if node.role != "stage" or not isinstance(obj, Operator) or isinstance(obj, Route):
        return None
    if not obj.fusable or len(node.inputs) != 1:
        return None
    up_name, port = node.inputs[0]
    upstream = graph.nodes[up_name]
    if port is not None or consumers.get((up_name, None)) != [node.name]:
        return None
    if upstream.role == "source":
        # a serving pipeline's handle feeds the first edge: keep the source's chain out
        return None if serving else up_name
    if isinstance(upstream.obj, Operator) and not isinstance(upstream.obj, Route):
        return up_name
    return None


def _topological(graph: Graph) -> list[Node]:
    order: list[Node] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for up, _port in graph.nodes[name].inputs:
            visit(up)
        order.append(graph.nodes[name])

    for name in graph.nodes:
        visit(name)
    return order


def compile_plan(graph: Graph, *, serving: bool) -> Plan:
    """Turn ``graph`` (already validated) into task nodes joined by edges."""
    consumers = graph.consumers()
    by_node: dict[str, TaskNode] = {}
    tasks: list[TaskNode] = []
    keyed_upstream: dict[str, bool] = {}
    order = _topological(graph)
    # a serving pipeline's handle feeds the first source's consumers; when that source is
    # a placeholder (it never produces), their edges are named after the handle
    fed = next((n for n in order if n.role == "source"), None) if serving else None
    if fed is not None and not getattr(fed.obj, "placeholder", False):
        fed = None
    for node in order:
        keyed_upstream[node.name] = bool(getattr(node.obj, "sets_key", False)) or any(
            keyed_upstream[up] for up, _ in node.inputs
        )
        owner = _fusable_into(graph, node, consumers, serving)
        if owner is not None:
            task = by_node[owner]
            task.fused.append(node)
            by_node[node.name] = task
            continue
        task = TaskNode(head=node)
        obj = node.obj
        if node.role == "stage":
            task.workers = int(getattr(obj, "workers", 1))
            task.ordered = bool(getattr(obj, "ordered", False)) and task.workers > 1
            task.keyed = (
                task.workers > 1
                and not task.ordered
                and isinstance(obj, Operator)
                and any(keyed_upstream[up] for up, _ in node.inputs)
            )
        elif node.role == "sink":
            task.workers = obj.workers
        if node.role != "source":
            ups = {by_node[up].last.name for up, _ in node.inputs}
            if fed is not None and (fed.name, None) in node.inputs:
                ups.discard(fed.name)
                ups.add("handle")
            task.inbox = Edge(f"{'+'.join(sorted(ups))}->{node.name}", graph.capacity)
        by_node[node.name] = task
        tasks.append(task)
    for task in tasks:
        for up, port in task.head.inputs:
            upstream = by_node[up]
            upstream.outputs.setdefault(port, []).append(task)
            if upstream not in task.upstream:
                task.upstream.append(upstream)
    for task in tasks:
        if task.head.role == "source":
            task.read_size = _read_size(task, graph.max_batch, graph.capacity)
        task.direct = _direct(task, consumers, serving)
    dead_letter = None
    if graph.dead_letter is not None:
        dead_letter = Edge("*->dead_letter", graph.capacity)
    return Plan(tasks, by_node, graph.capacity, graph.max_batch, dead_letter, graph.dead_letter)
