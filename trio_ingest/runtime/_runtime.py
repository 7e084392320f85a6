"""The runtime: one task group per running graph; every task has an owner.

Layout of a run::

    task group (the pipeline's scope; cancelling it is the hard stop)
      dead-letter sink task ─┐
      sink tasks (workers)   ├ opened first (``tg.start``): a bad sink fails before data moves
      stage tasks (workers)  │
      source tasks ──────────┘ each with an intake scope (``stop()`` cancels only these)
                               and a commit loop (commits shielded and bounded)

End of stream is a closed edge: a source that ends (or is stopped) closes its
edge ends, each stage drains its input, flushes, closes its outputs, and so on
down to the sinks. Batching, retries, dead letters, acknowledgements and
metrics are done here, once, for every source, stage and sink.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import anyio.abc
import anyio.lowlevel

from .._acks import AckToken, AckTracker
from .._batch import Batch
from .._edge import Edge, EdgeBrokenError, EdgeSender
from .._errors import DeadLetterError, RetryExhaustedError, StageError
from .._event import DeadLetter, Event
from .._loop import ANYIO, LoopFunctions, current_loop
from .._ratelimit import RUNTIME_RATE_LIMIT
from ..graph._graph import GraphModel as Graph
from ..graph._plan import Plan, TaskNode, compile_plan
from ..stages._context import StatsLike
from ..stages._operators import ChainStep, OperatorStep, compose
from ._checkpoint import Checkpointer
from ._common import Worker, log, note
from ._hooks import active_tracer
from ._ledger import Ledger
from ._report import RunReport
from ._sink_task import SinkRunner
from ._source_task import SourceRunner
from ._stage_task import StageRunner
from ._stats import Histogram, NodeStats

if TYPE_CHECKING:
    from ._handle import PipelineHandle

__all__ = ("ABORT_CLEANUP_SECONDS", "Runtime")

Runner: TypeAlias = SourceRunner | StageRunner | SinkRunner

#: After a hard stop, how long closing connections and the last commits may take.
ABORT_CLEANUP_SECONDS = 1.0


class Runtime:
    """One run of a graph. Created by ``Graph.run`` / ``Graph.serve``."""

    def __init__(self, graph: Graph, *, serving: bool) -> None:
        self.graph = graph
        self.serving = serving
        self.plan: Plan = compile_plan(graph, serving=serving)
        self.max_batch = graph.max_batch
        self.stats: dict[str, NodeStats] = {
            name: NodeStats(name, node.kind) for name, node in graph.nodes.items()
        }
        self.dead_letter_stats = NodeStats("dead_letter", "dead_letter")
        self.ledger = Ledger(graph.dead_letter_budget)
        self.e2e = Histogram()
        self.tracer = active_tracer()  # None unless observe.enable_tracing() found a provider
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.aborted = False
        self._cleanup_deadline = math.inf  # after abort(): closing and committing are bounded
        self.done = anyio.Event() if _in_async_context() else None
        self.loop: LoopFunctions = ANYIO
        self._tg: anyio.abc.TaskGroup | None = None
        self._downstream_open = 0
        self._drained: anyio.Event | None = None
        self.stop_requested = False
        self._state_trackers: dict[str, AckTracker] = {}
        self.runners: list[Runner] = []
        self.source_runners: list[SourceRunner] = []
        for task in self.plan.tasks:
            runner = _make_runner(self, task)
            self.runners.append(runner)
            if isinstance(runner, SourceRunner):  # narrows the type; roles say the same
                self.source_runners.append(runner)
        # sinks that the task feeding them writes itself, by their input edge
        self.direct: dict[Edge, SinkRunner] = {
            runner.task.inbox: runner
            for runner in self.runners
            if isinstance(runner, SinkRunner) and runner.task is not None and runner.task.direct
            and runner.task.inbox is not None
        }
        self.dead_letter_runner: SinkRunner | None = None
        if graph.dead_letter is not None:
            assert self.plan.dead_letter is not None
            self.dead_letter_runner = SinkRunner(
                self, None, graph.dead_letter, self.plan.dead_letter, dead_letter=True
            )
        # checkpoint epochs with a durable state store (None: state lives in memory only)
        self.checkpointer: Checkpointer | None = (
            Checkpointer(self, graph.state) if graph.state.durable else None
        )
        self.handle: PipelineHandle | None = None
        if serving:
            from ._handle import PipelineHandle

            self.handle = PipelineHandle(self)

    # -- wiring -------------------------------------------------------------------
    def worker_ends(self, task: TaskNode) -> Worker:
        """Fresh edge ends for one worker task of ``task`` (before any task starts)."""
        inbox = task.inbox.receiver() if task.inbox is not None else None
        outputs = {
            port: [down.inbox.sender() for down in downs if down.inbox is not None]
            for port, downs in task.outputs.items()
        }
        dead = self.plan.dead_letter.sender() if self.plan.dead_letter is not None else None
        return Worker(inbox, outputs, dead)

    def steps_of(self, task: TaskNode | None) -> list[OperatorStep | ChainStep]:
        """The per-event steps of ``task``'s pass: its head and the operators fused after it."""
        if task is None:
            return []
        return compose([(n.obj, self.stats[n.name]) for n in (task.head, *task.fused)])

    # -- running ------------------------------------------------------------------
    async def run(
        self, *, task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        if self.done is None:
            self.done = anyio.Event()
        self._drained = anyio.Event()
        self.loop = current_loop()
        for edge in self.plan.edges():
            edge.bind(self.loop)
        for runner in self.runners:
            for edge in getattr(runner, "key_edges", ()):
                edge.bind(self.loop)
        self.started_at = self.loop.clock()
        failure: BaseException | None = None
        checkpointer = self.checkpointer
        try:
            if checkpointer is not None:
                await checkpointer.restore()  # before anything opens: a mismatch moves nothing
            async with anyio.create_task_group() as tg:
                self._tg = tg
                downstream: list[Runner] = [
                    r for r in self.runners if r not in self.source_runners
                ]
                if self.dead_letter_runner is not None:
                    downstream.insert(0, self.dead_letter_runner)
                self._downstream_open = len(downstream)
                # sinks first, sources last: nothing reads before everything can write
                for runner in sorted(downstream, key=lambda r: r.role != "sink"):
                    await tg.start(self._run_downstream, runner)
                for source in self.source_runners:
                    await tg.start(source.run)
                if checkpointer is not None:
                    tg.start_soon(checkpointer.run_periodic)
                task_status.started(self.handle)
        except BaseExceptionGroup as group:
            failure = _primary_failure(group)
            if failure is None:
                # only a cancel and what it caused (a sender woken by its consumer's exit
                # finds the edge broken): a cancel from outside goes on as a plain
                # cancellation, our own abort() ends the run quietly, cut short
                await anyio.lowlevel.checkpoint_if_cancelled()
                if not self.aborted:
                    raise
        finally:
            if checkpointer is not None:
                await checkpointer.aclose()
            self.finished_at = anyio.current_time()
            self.done.set()
            RUNTIME_RATE_LIMIT.flush()  # say how many similar lines the rate limit held back
        if failure is not None:
            raise failure

    async def _run_downstream(
        self, runner: Runner, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        try:
            await runner.run(task_status=task_status)
        finally:
            self._downstream_open -= 1
            if self._downstream_open == 0 and self._drained is not None:
                self._drained.set()

    async def wait_drained(self) -> None:
        """Wait until every stage and sink task has finished."""
        assert self._drained is not None
        await self._drained.wait()

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def state_tracker(self, stage: str) -> AckTracker:
        """The tracker of results a stage makes from checkpointed state (no source read)."""
        tracker = self._state_trackers.get(stage)
        if tracker is None:
            tracker = self._state_trackers[stage] = self.ledger.tracker(
                f"{stage}#state", keeps_offsets=False
            )
        return tracker

    def request_stop(self) -> None:
        """Stop intake: cancel the sources' reads and close the handle; the rest drains."""
        self.stop_requested = True
        for source in self.source_runners:
            source.stop_intake()
        if self.handle is not None:
            self.handle._close()

    def abort(self) -> None:
        """Hard stop: cancel every task; unfinished events stay uncommitted."""
        if not self.aborted:
            self.aborted = True
            self._cleanup_deadline = _now_or(0.0) + ABORT_CLEANUP_SECONDS
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def cleanup_timeout(self) -> float:
        """Bound of one shielded commit or close: ``commit_timeout``, shorter after abort()."""
        timeout = self.graph.commit_timeout
        if self.aborted:
            timeout = min(timeout, max(0.0, self._cleanup_deadline - anyio.current_time()))
        return timeout

    async def stop(self, timeout: float | None = None) -> RunReport:
        """Stop intake, drain, flush, commit; abort what is left after ``timeout`` seconds.

        Returns within ``timeout`` plus :data:`ABORT_CLEANUP_SECONDS`: a sink call
        stuck past the deadline is abandoned and its events stay uncommitted.
        """
        self.request_stop()
        if timeout is None:
            timeout = self.graph.shutdown_timeout
        assert self.done is not None
        with anyio.move_on_after(timeout):
            await self.done.wait()
        if not self.done.is_set():
            log.warning("shutdown deadline of %.1fs passed; cancelling what is in flight", timeout)
            self.abort()
            with anyio.move_on_after(ABORT_CLEANUP_SECONDS + 0.5):
                await self.done.wait()
        return self.report()

    # -- finishing events ---------------------------------------------------------
    def dropped(self, stats: StatsLike, batch: Batch) -> None:
        """``batch`` was filtered out on purpose: finished now."""
        stats.filtered += len(batch)
        self.ledger.filtered_out(batch.tokens)

    async def dead_letter(
        self,
        worker: Worker,
        stats: StatsLike,
        batch: Batch,
        indices: Sequence[int],
        errors: Sequence[tuple[Exception, int]],
        *,
        passed: int | None = None,
    ) -> None:
        """Send the events at ``indices`` of ``batch`` to the dead-letter sink.

        ``errors[k]`` is the (last error, attempts) of ``indices[k]``; ``passed`` is how
        many events of the batch the failing node passed on (default: the rest of
        ``batch``), for the dead-letter budget.

        Raises:
            StageError: There is no dead-letter sink (stages).
            RetryExhaustedError: There is no dead-letter sink (sinks).
            DeadLetterBudgetError: These dead letters cross the budget.
        """
        if not indices:
            return
        if worker.dead is None:
            error, attempts = errors[0]
            event_id = batch.events[indices[0]].id
            if stats.kind in ("sink", "dead_letter"):
                raise RetryExhaustedError(stats.name, attempts, error) from error
            if stats.kind == "source":
                raise DeadLetterError(stats.name, event_id, str(error)) from error
            failure = StageError(stats.name, event_id, error)
            note(failure, "stage", stats.name)
            raise failure from error
        letters = [
            DeadLetter.from_exception(batch.event(i), stats.name, error, attempts)
            for i, (error, attempts) in zip(indices, errors, strict=True)
        ]
        if passed is None:
            passed = len(batch) - len(indices)
        trace = batch.trace
        if self.tracer is not None and stats.kind not in ("sink", "dead_letter"):
            # the failure's own span (ERROR, with the exception): the dead-letter write is its
            # child (a sink records its failure span itself before it gets here)
            trace = self.tracer.span(stats.name, stats.kind, trace, len(indices), 0, 0.0,
                                     "dead_letter", errors[0][0], batch=batch.select(list(indices)))
        await self._send_letters(
            worker.dead, stats, letters, [batch.tokens[i] for i in indices], trace, passed,
            batch.links,
        )

    async def dead_letter_records(
        self,
        worker: Worker,
        stats: NodeStats,
        letters: list[DeadLetter],
        token: AckToken,
        passed: int = 0,
    ) -> None:
        """Dead-letter records a source rejected (``passed``: the events of the same read)."""
        if not letters:
            return
        if worker.dead is None:
            letter = letters[0]
            raise DeadLetterError(stats.name, letter.event.id, letter.error)
        await self._send_letters(
            worker.dead, stats, letters, [token] * len(letters), None, passed
        )

    async def _send_letters(
        self,
        dead: EdgeSender,
        stats: StatsLike,
        letters: list[DeadLetter],
        tokens: list[AckToken],
        trace: Any,
        passed: int,
        links: tuple[Any, ...] = (),
    ) -> None:
        """Log each letter, count them, and send them on with their acks to the dead-letter sink.

        Raises:
            DeadLetterBudgetError: These letters cross the budget; they are not sent, so
                their acks never finish and nothing past them commits.
        """
        self.ledger.dead_lettering(letters, passed, tokens)
        for letter in letters:
            event = letter.event
            kind = letter.error_type.rpartition(".")[2]  # the class name, as logged on retries
            log.warning(
                "%s: dead-lettering event %r after %d attempt(s): %s: %s",
                stats.name,
                event.id,
                letter.attempts,
                kind,
                letter.error,
                extra={"node": stats.name, "event_id": event.id, "attempt": letter.attempts,
                       "error": letter.error, "error_type": kind},
            )
        stats.dead_lettered += len(letters)
        events = [
            Event(id=lt.event.id, payload=lt, key=lt.event.key, event_time=lt.event.event_time)
            for lt in letters
        ]
        await dead.send(Batch(events, list(letters), tokens, trace, links))

    # -- reporting ----------------------------------------------------------------
    def report(self) -> RunReport:
        """A snapshot of the counters (final once the run is over)."""
        end = self.finished_at if self.finished_at is not None else _now_or(self.started_at)
        elapsed = end - self.started_at if self.started_at is not None else 0.0
        ledger = self.ledger
        in_flight = ledger.in_flight
        nodes = {name: s.statistics() for name, s in self.stats.items()}
        if self.dead_letter_runner is not None:
            nodes["dead_letter"] = self.dead_letter_stats.statistics()
        edges = {e.name: e.statistics() for e in self.plan.edges()}
        for runner in self.runners:
            for e in getattr(runner, "key_edges", ()):
                edges[e.name] = e.statistics()
        return RunReport(
            received=ledger.received,
            delivered=ledger.delivered,
            dead_lettered=ledger.dead_lettered,
            filtered=ledger.filtered,
            expanded=ledger.expanded,
            in_flight=in_flight,
            retries=sum(s.retries for s in self.stats.values()) + self.dead_letter_stats.retries,
            elapsed=elapsed,
            completed=self.finished_at is not None and not self.aborted and in_flight == 0,
            nodes=nodes,
            edges=edges,
            committed={
                name: t.committed
                for name, t in ledger.trackers.items()
                if t not in self._state_trackers.values()
            },
            latency=self.e2e.statistics(),
        )


def _in_async_context() -> bool:
    try:
        anyio.get_current_task()
    except RuntimeError:  # anyio's NoEventLoopError: no loop runs in this thread
        return False
    return True


def _now_or(fallback: float | None) -> float:
    try:
        return anyio.current_time()
    except RuntimeError:  # a report read after the run, outside the loop
        return fallback or 0.0


def _primary_failure(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """What to raise for a failed run: the lone real error, unwrapped, or a group of them.

    Cancellations and broken edges (a sender finding its failed consumer gone)
    are consequences of the real failure, not failures of their own. Returns
    None when nothing else is left (let the group through as it is).
    """
    cancelled = anyio.get_cancelled_exc_class()
    _consequences, rest = group.split(lambda exc: isinstance(exc, cancelled | EdgeBrokenError))
    if rest is None:
        return None
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(rest)
    return leaves[0] if len(leaves) == 1 else rest


def _make_runner(rt: Runtime, task: TaskNode) -> Runner:
    role = task.head.role
    if role == "source":
        return SourceRunner(rt, task)
    if role == "sink":
        assert task.inbox is not None
        return SinkRunner(rt, task, task.head.obj, task.inbox)
    return StageRunner(rt, task)
