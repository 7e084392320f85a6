"""The graph model: nodes, edges between them, validation. Pure: nothing here runs.

``trio_ingest.Graph`` and ``trio_ingest.Pipeline`` (in ``trio_ingest._pipeline``) add
running to these models; the runtime reads the model and its plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

import attrs

from .._budget import DeadLetterBudget
from .._errors import ConfigError, GraphError
from .._retry import RetryPolicy, check_policy
from .._validators import check, instance_of, positive, positive_int
from ..sinks._base import Sink
from ..sources._base import Source
from ..stages._custom import CustomStage, is_custom_stage
from ..stages._operators import BatchStage, Operator, Route
from ..stages._stateful import StatefulStage
from ..state._store import Memory, StateStore

__all__ = ("GraphModel", "Node", "NodeRef", "PipelineModel")

NodeRef: TypeAlias = "str | tuple[str, str]"
StageLike: TypeAlias = "Operator | BatchStage | CustomStage | StatefulStage"


@attrs.define(eq=False)
class Node:
    """One node of a graph: a source, a stage or a sink, and where it reads from."""

    name: str
    role: Literal["source", "stage", "sink"]
    obj: Any
    inputs: list[tuple[str, str | None]] = attrs.field(factory=list)

    @property
    def kind(self) -> str:
        if self.role == "stage":
            return str(getattr(self.obj, "kind", "custom"))
        return self.role


def _parse_ref(ref: object) -> tuple[str, str | None]:
    if isinstance(ref, str):
        return ref, None
    if (
        isinstance(ref, tuple)
        and len(ref) == 2
        and isinstance(ref[0], str)
        and isinstance(ref[1], str)
    ):
        return ref[0], ref[1]
    raise ConfigError(f"an input must be a node name or a (route name, port) pair: {ref!r}")


class GraphModel:
    """A directed acyclic graph of sources, stages and sinks.

    A node with several consumers broadcasts every event to each of them; a
    node with several inputs merges them (fan-in); a :func:`~trio_ingest.route`
    stage sends each event to one of its named ports, read as ``(name, port)``::

        g = ti.Graph(dead_letter=ti.sinks.Memory())
        g.add_source(orders, name="orders")
        g.add_source(refunds, name="refunds")
        g.add_stage(ti.map(normalise), inputs=["orders", "refunds"], name="normalise")
        g.add_stage(ti.route(lambda p: p["region"], ports=["eu", "us"]), inputs="normalise",
                    name="by_region")
        g.add_sink(eu_db, inputs=[("by_region", "eu")])
        g.add_sink(us_db, inputs=[("by_region", "us")])
        g.add_sink(archive, inputs="normalise")          # broadcast: every event here too
        report = await g.run()

    Args:
        dead_letter: Where failed events go, with their reason. Without one, a
            failed event fails the run instead of being dropped.
        retry: Default retry policy of sinks (stages retry only when given one).
        capacity: Events each edge holds before its senders block.
        max_batch: Most events a node takes from its input at once.
        shutdown_timeout: Default deadline of ``stop()``'s drain.
        commit_timeout: Bound on one (shielded) source commit.
        dead_letter_budget: How many dead letters the run may produce before it
            fails with :class:`~trio_ingest.DeadLetterBudgetError` (committing
            nothing past the breach); ``None`` (the default): no limit.
        state: Where stateful stages keep their state (``ti.state.SQLite(path)``);
            default ``ti.state.Memory()``. With a durable store the runtime takes a
            checkpoint epoch (every stage's state and every source's offset, in one
            transaction) every ``checkpoint_interval`` seconds and at a graceful
            stop, and restores from it on start.
        checkpoint_interval: Seconds between two checkpoint epochs (durable store only).

    Raises:
        ConfigError: An option is out of range (one line naming it).
    """

    def __init__(
        self,
        *,
        dead_letter: Sink | None = None,
        retry: RetryPolicy | None = None,
        capacity: int = 1_000,
        max_batch: int = 256,
        shutdown_timeout: float = 30.0,
        commit_timeout: float = 10.0,
        dead_letter_budget: DeadLetterBudget | None = None,
        state: StateStore | None = None,
        checkpoint_interval: float = 5.0,
    ) -> None:
        if dead_letter is not None and not isinstance(dead_letter, Sink):
            raise ConfigError(f"'dead_letter' must be a Sink or None: {dead_letter!r}")
        check_policy(retry)
        self.capacity = check(positive_int, "capacity", capacity)
        self.max_batch = check(positive_int, "max_batch", max_batch)
        check(positive, "shutdown_timeout", shutdown_timeout)
        check(positive, "commit_timeout", commit_timeout)
        check(
            instance_of(DeadLetterBudget, type(None), what="a DeadLetterBudget or None"),
            "dead_letter_budget",
            dead_letter_budget,
        )
        check(
            instance_of(StateStore, type(None), what="a state store (ti.state.*) or None"),
            "state",
            state,
        )
        check(positive, "checkpoint_interval", checkpoint_interval)
        self.dead_letter = dead_letter
        self.dead_letter_budget = dead_letter_budget
        self.state: StateStore = state if state is not None else Memory()
        self.checkpoint_interval = float(checkpoint_interval)
        self.retry = retry if retry is not None else RetryPolicy()
        self.shutdown_timeout = float(shutdown_timeout)
        self.commit_timeout = float(commit_timeout)
        self.nodes: dict[str, Node] = {}

    # -- building -------------------------------------------------------------
    def _name_for(self, obj: Any, name: str | None, fallback: str) -> str:
        # a name the user chose must be unique; a default one is made unique
        if name is None and getattr(obj, "name_given", True):
            name = getattr(obj, "name", None) or None
        if name is not None:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"'name' must be a non-empty str: {name!r}")
            if name in self.nodes:
                raise GraphError(f"duplicate node name {name!r}")
            return name
        base = getattr(obj, "name", None) or fallback
        candidate, n = base, 1
        while candidate in self.nodes:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def _add(
        self,
        role: Literal["source", "stage", "sink"],
        obj: Any,
        name: str | None,
        inputs: NodeRef | Sequence[NodeRef] | None,
        fallback: str,
    ) -> str:
        if any(node.obj is obj for node in self.nodes.values()) or obj is self.dead_letter:
            raise GraphError(f"{obj!r} is already in the graph: create one object per node")
        node_name = self._name_for(obj, name, fallback)
        node = Node(node_name, role, obj)
        if inputs is not None:
            refs = [inputs] if isinstance(inputs, str | tuple) else list(inputs)
            node.inputs = [_parse_ref(r) for r in refs]
        self.nodes[node_name] = node
        return node_name

    def add_source(self, source: Source, *, name: str | None = None) -> str:
        """Add a source; returns its node name.

        Raises:
            ConfigError: ``source`` is not a Source, or ``name`` is not a non-empty str.
            GraphError: ``name`` is taken, or ``source`` is already in the graph.
        """
        if not isinstance(source, Source):
            raise ConfigError(f"add_source() needs a Source: {source!r}")
        return self._add("source", source, name, None, "source")

    def add_stage(
        self,
        stage: StageLike,
        *,
        inputs: NodeRef | Sequence[NodeRef] | None = None,
        name: str | None = None,
    ) -> str:
        """Add a stage reading from ``inputs`` (names, or ``(route, port)``); returns its name.

        Raises:
            ConfigError: ``stage`` is not a stage, ``name`` is not a non-empty str,
                or an input is neither a name nor a ``(route, port)`` pair.
            GraphError: ``name`` is taken, or ``stage`` is already in the graph.
        """
        if not isinstance(stage, Operator | BatchStage | StatefulStage) and not is_custom_stage(
            stage
        ):
            raise ConfigError(
                f"add_stage() needs a stage (ti.map(...), ti.filter(...), ... or an object with "
                f"a name and an async run(inbox, outbox)): {stage!r}"
            )
        return self._add("stage", stage, name, inputs, getattr(stage, "kind", "stage"))

    def add_sink(
        self,
        sink: Sink,
        *,
        inputs: NodeRef | Sequence[NodeRef] | None = None,
        name: str | None = None,
    ) -> str:
        """Add a sink reading from ``inputs``; returns its node name.

        Raises:
            ConfigError: ``sink`` is not a Sink, ``name`` is not a non-empty str,
                or an input is neither a name nor a ``(route, port)`` pair.
            GraphError: ``name`` is taken, or ``sink`` is already in the graph.
        """
        if not isinstance(sink, Sink):
            raise ConfigError(f"add_sink() needs a Sink: {sink!r}")
        return self._add("sink", sink, name, inputs, type(sink).__name__.lower())

    def connect(self, upstream: NodeRef, downstream: str) -> None:
        """Make ``downstream`` read from ``upstream`` too.

        Raises:
            GraphError: ``downstream`` is not a node of the graph.
            ConfigError: ``upstream`` is neither a name nor a ``(route, port)`` pair.
        """
        if downstream not in self.nodes:
            raise GraphError(f"unknown node {downstream!r}")
        self.nodes[downstream].inputs.append(_parse_ref(upstream))

    # -- validation -----------------------------------------------------------
    def consumers(self) -> dict[tuple[str, str | None], list[str]]:
        """Map each output (node, port) to the nodes reading it, in insertion order."""
        out: dict[tuple[str, str | None], list[str]] = {}
        for node in self.nodes.values():
            for ref in node.inputs:
                out.setdefault(ref, []).append(node.name)
        return out

    def validate(self) -> None:
        """Check the graph's shape; called by ``run`` and ``serve`` before anything starts.

        Raises:
            GraphError: With a one-line message naming the offending node.
        """
        nodes = self.nodes
        if not any(n.role == "source" for n in nodes.values()):
            raise GraphError("the graph has no source")
        if not any(n.role == "sink" for n in nodes.values()):
            raise GraphError("the graph has no sink")
        for node in nodes.values():
            if node.role == "source" and node.inputs:
                raise GraphError(f"source {node.name!r} cannot have inputs")
            if node.role != "source" and not node.inputs:
                raise GraphError(f"{node.role} {node.name!r} has no input")
            for up, port in node.inputs:
                if up not in nodes:
                    raise GraphError(f"{node.role} {node.name!r} reads from unknown node {up!r}")
                upstream = nodes[up]
                if upstream.role == "sink":
                    raise GraphError(
                        f"{node.role} {node.name!r} reads from sink {up!r}, which has no output"
                    )
                if isinstance(upstream.obj, Route):
                    if port is None:
                        raise GraphError(
                            f"{node.role} {node.name!r} reads from route {up!r} without a port; "
                            f"use ({up!r}, port) with port in {upstream.obj.ports}"
                        )
                    if port not in upstream.obj.ports:
                        raise GraphError(
                            f"route {up!r} has no port {port!r} (ports: {upstream.obj.ports})"
                        )
                elif port is not None and port not in getattr(upstream.obj, "extra_ports", ()):
                    raise GraphError(
                        f"{node.role} {node.name!r} reads port {port!r} of {up!r}, "
                        "which is not a route"
                    )
            if len(set(node.inputs)) != len(node.inputs):
                raise GraphError(f"{node.role} {node.name!r} reads the same input twice")
        self._check_cycles()
        consumers = self.consumers()
        for node in nodes.values():
            if node.role == "sink":
                continue
            if isinstance(node.obj, Route):
                for port in node.obj.ports:
                    if (node.name, port) not in consumers:
                        raise GraphError(f"route {node.name!r} port {port!r} goes nowhere")
            elif (node.name, None) not in consumers:
                raise GraphError(f"{node.role} {node.name!r} output goes nowhere")
        reached = self._reachable(consumers)
        for node in nodes.values():
            if node.name not in reached:
                raise GraphError(f"{node.role} {node.name!r} is never reached from any source")

    def _check_cycles(self) -> None:
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(name: str) -> None:
            state[name] = 1
            stack.append(name)
            for up, _port in self.nodes[name].inputs:
                if state.get(up) == 1:
                    cycle = [*stack[stack.index(up) :], up]
                    raise GraphError("cycle: " + " <- ".join(cycle))
                if up not in state:
                    visit(up)
            stack.pop()
            state[name] = 2

        for name in self.nodes:
            if name not in state:
                visit(name)

    def _reachable(self, consumers: dict[tuple[str, str | None], list[str]]) -> set[str]:
        todo = [n.name for n in self.nodes.values() if n.role == "source"]
        seen = set(todo)
        while todo:
            name = todo.pop()
            for (up, _port), downs in consumers.items():
                if up == name:
                    for d in downs:
                        if d not in seen:
                            seen.add(d)
                            todo.append(d)
        return seen

    def memory_bound(self) -> int:
        """Most events the running graph holds at once, run with ``run()`` or ``serve()``.

        Every place that can hold an event counts (see ``Plan.memory_bound``):
        edge capacities, and what each worker of each node holds in hand (a
        batch, a ``batch()`` stage's ``max_size``, a sink's own ``max_batch`` and
        unflushed ``flush_every``, key queues). Payload sizes times this number
        bound the pipeline's memory. A serving pipeline keeps an edge after its
        source (the handle feeds it), so the larger of the two plans counts.
        """
        self.validate()
        from ._plan import compile_plan  # the plan module builds on this one

        return max(compile_plan(self, serving=s).memory_bound() for s in (False, True))


class PipelineModel(GraphModel):
    """A linear graph: one source, stages in order, one sink.

    Args:
        source: Where events come from.
        *stages: Applied in order.
        sink: Where delivered events go.

    The keyword arguments ``dead_letter``, ``retry``, ``capacity``, ``max_batch``,
    ``shutdown_timeout``, ``commit_timeout``, ``dead_letter_budget``, ``state`` and
    ``checkpoint_interval`` are as for :class:`Graph`.

    Raises:
        ConfigError: An argument is invalid (the message names it), as for
            :class:`GraphModel`.
        GraphError: A stage is a route (a Pipeline has one line), or the
            graph fails :meth:`GraphModel.validate`.
    """

    def __init__(
        self,
        source: Source,
        *stages: StageLike,
        sink: Sink,
        dead_letter: Sink | None = None,
        retry: RetryPolicy | None = None,
        capacity: int = 1_000,
        max_batch: int = 256,
        shutdown_timeout: float = 30.0,
        commit_timeout: float = 10.0,
        dead_letter_budget: DeadLetterBudget | None = None,
        state: StateStore | None = None,
        checkpoint_interval: float = 5.0,
    ) -> None:
        super().__init__(
            dead_letter=dead_letter,
            retry=retry,
            capacity=capacity,
            max_batch=max_batch,
            shutdown_timeout=shutdown_timeout,
            commit_timeout=commit_timeout,
            dead_letter_budget=dead_letter_budget,
            state=state,
            checkpoint_interval=checkpoint_interval,
        )
        previous = self.add_source(source)
        for stage in stages:
            if isinstance(stage, Route):
                raise GraphError(f"route {stage.name!r} needs a Graph: a Pipeline has one line")
            previous = self.add_stage(stage, inputs=previous)
        self.add_sink(sink, inputs=previous)
        self.validate()
