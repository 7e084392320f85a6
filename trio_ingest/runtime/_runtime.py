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

import abc
import contextlib
import errno
import logging
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import anyio
import anyio.abc
import anyio.lowlevel

from .._acks import AckToken, AckTracker, finish, retain
from .._budget import BudgetCounter, reason_of
from .._edge import Batch, Edge, EdgeBrokenError, EdgeReceiver, EdgeSender
from .._errors import (
    DeadLetterError,
    IngestError,
    RetryExhaustedError,
    SinkError,
    SourceError,
    StageError,
)
from .._event import DeadLetter, Event
from .._loop import ANYIO, LoopFunctions, current_loop
from .._retry import BreakerState, RetryPolicy
from ..graph._graph import Graph
from ..observe._logging import RUNTIME_RATE_LIMIT
from ..observe._stats import Histogram, NodeStats
from ..observe._tracing import active_tracer
from ..sinks._base import Sink
from ..sources._base import Read, Source
from ..stages._operators import (
    FAILED,
    BatchStage,
    ChainFailure,
    Map,
    MapBatch,
    MapChain,
    Operator,
    Route,
    apply_each,
    apply_each_async,
)
from ._plan import Plan, TaskNode, compile_plan
from ._report import RunReport

__all__ = ("PipelineHandle", "Runtime")

log = logging.getLogger("trio_ingest.runtime")
log.addFilter(RUNTIME_RATE_LIMIT)  # a failure storm logs a few lines per node and a count


class _BreakerOpen(Exception):
    """The circuit breaker is open: wait before the first attempt."""


class _GiveUp(Exception):
    """A retried call failed for good: ``attempts`` tries, last error ``error``."""

    def __init__(self, attempts: int, error: Exception) -> None:
        super().__init__(attempts, error)
        self.attempts = attempts
        self.error = error


async def call_with_retry(
    policy: RetryPolicy | None,
    call: Callable[[], Awaitable[Any]],
    stats: NodeStats,
    *,
    first_error: Exception | None = None,
    breaker: BreakerState | None = None,
) -> Any:
    """Call ``call()`` until it succeeds or ``policy`` gives up.

    ``first_error`` is the failure of an attempt already made. Sleeps with the
    event loop's clock. The one retry loop of trio_ingest.

    Raises:
        _GiveUp: With the attempt count and the last error.
    """
    attempts = 0 if first_error is None else 1
    error = first_error
    waits = policy.delays() if policy is not None else iter(())
    started = anyio.current_time()
    while True:
        if error is not None:
            if policy is None or not policy.retries(error) or attempts >= policy.max_attempts:
                raise _GiveUp(attempts, error)
            delay = next(waits)
            if policy.deadline is not None and (
                anyio.current_time() + delay - started > policy.deadline
            ):
                raise _GiveUp(attempts, error)
            stats.retries += 1
            log.warning(
                "%s: attempt %d failed (%s: %s); retrying in %.3fs",
                stats.name,
                attempts,
                type(error).__name__,
                error,
                delay,
                extra={"node": stats.name, "attempt": attempts, "error": str(error),
                       "error_type": type(error).__name__, "retry_in": delay},
            )
            await anyio.sleep(delay)
        if breaker is not None:
            wait = breaker.wait_time()
            if wait > 0:
                await anyio.sleep(wait)
        attempts += 1
        try:
            result = await call()
        except Exception as exc:
            stats.errors += 1
            if breaker is not None:
                breaker.failure()
            error = exc
        else:
            if breaker is not None:
                breaker.success()
            return result


def _hosted(node: object) -> contextlib.AbstractAsyncContextManager[object]:
    """The async context a source or sink asks to live in, from open to close.

    A connector whose client owns tasks (coredis keeps an AnyIO task group per
    connection pool) defines ``open_resources()``, an async context manager.
    The runner enters it in the node's own task before ``open()`` and leaves it
    after ``aclose()``: those tasks then nest inside the run's task group, and
    cancel scopes stay properly nested (entering a task group in ``open()`` and
    leaving it in ``aclose()`` cannot: ``aclose`` runs in a shielded scope).
    """
    opener = getattr(node, "open_resources", None)
    if opener is None:
        return contextlib.nullcontext()
    return opener()  # type: ignore[no-any-return]


def _note(exc: BaseException, role: str, name: str) -> None:
    """Name the node an error came from, on the error itself (not only on a group)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            _note(inner, role, name)
        return
    if not any(n.startswith("raised in ") for n in getattr(exc, "__notes__", ())):
        exc.add_note(f"raised in {role} {name!r} of the pipeline")


class _Worker:
    """The edge ends one task holds: its input, its outputs by port, its dead-letter end."""

    __slots__ = ("dead", "inbox", "outputs", "trace")

    def __init__(
        self,
        inbox: EdgeReceiver | None,
        outputs: dict[str | None, list[EdgeSender]],
        dead: EdgeSender | None,
    ) -> None:
        self.inbox = inbox
        self.outputs = outputs
        self.dead = dead
        self.trace: Any = None  # span of the batch a custom stage is handling (tracing)

    def close(self) -> None:
        if self.inbox is not None:
            self.inbox.close()
        for senders in self.outputs.values():
            for s in senders:
                s.close()
        if self.dead is not None:
            self.dead.close()

    def __enter__(self) -> _Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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
        self.trackers: dict[str, AckTracker] = {}
        self.e2e = Histogram()
        self.tracer = active_tracer()  # None unless observe.enable_tracing() found a provider
        self.received = 0
        self.delivered = 0
        self.dead_lettered = 0
        self.filtered = 0
        # the dead-letter budget's count (None: no budget); fed where events are counted
        self.budget = (BudgetCounter(graph.dead_letter_budget)
                       if graph.dead_letter_budget is not None else None)
        self.expanded = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.aborted = False
        self.done = anyio.Event() if _in_async_context() else None
        self.loop: LoopFunctions = ANYIO
        self._tg: anyio.abc.TaskGroup | None = None
        self._downstream_open = 0
        self._drained: anyio.Event | None = None
        self.runners: list[_Runner] = []
        self.source_runners: list[SourceRunner] = []
        for task in self.plan.tasks:
            runner = _make_runner(self, task)
            self.runners.append(runner)
            if isinstance(runner, SourceRunner):
                self.source_runners.append(runner)
        self.dead_letter_runner: SinkRunner | None = None
        if graph.dead_letter is not None:
            assert self.plan.dead_letter is not None
            self.dead_letter_runner = SinkRunner(
                self, None, graph.dead_letter, self.plan.dead_letter, dead_letter=True
            )
        self.handle: PipelineHandle | None = PipelineHandle(self) if serving else None

    # -- wiring -------------------------------------------------------------------
    def worker_ends(self, task: TaskNode) -> _Worker:
        """Fresh edge ends for one worker task of ``task`` (before any task starts)."""
        inbox = task.inbox.receiver() if task.inbox is not None else None
        outputs = {
            port: [down.inbox.sender() for down in downs if down.inbox is not None]
            for port, downs in task.outputs.items()
        }
        dead = self.plan.dead_letter.sender() if self.plan.dead_letter is not None else None
        return _Worker(inbox, outputs, dead)

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
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                downstream: list[_Runner] = [
                    r for r in self.runners if r not in self.source_runners
                ]
                if self.dead_letter_runner is not None:
                    downstream.insert(0, self.dead_letter_runner)
                self._downstream_open = len(downstream)
                # sinks first, sources last: nothing reads before everything can write
                for runner in sorted(downstream, key=lambda r: not isinstance(r, SinkRunner)):
                    await tg.start(self._run_downstream, runner)
                for source in self.source_runners:
                    await tg.start(source.run)
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
            self.finished_at = anyio.current_time()
            self.done.set()
            RUNTIME_RATE_LIMIT.flush()  # say how many similar lines the rate limit held back
        if failure is not None:
            raise failure

    async def _run_downstream(
        self, runner: _Runner, *, task_status: anyio.abc.TaskStatus[None]
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

    def request_stop(self) -> None:
        """Stop intake: cancel the sources' reads and close the handle; the rest drains."""
        for source in self.source_runners:
            source.stop_intake()
        if self.handle is not None:
            self.handle._close()

    def abort(self) -> None:
        """Hard stop: cancel every task; unfinished events stay uncommitted."""
        self.aborted = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    # -- finishing events ---------------------------------------------------------
    def dropped(self, stats: NodeStats, batch: Batch) -> None:
        """``batch`` was filtered out on purpose: finished now."""
        n = len(batch)
        stats.filtered += n
        self.filtered += n
        finish(batch.tokens)

    async def dead_letter(
        self,
        worker: _Worker,
        stats: NodeStats,
        batch: Batch,
        indices: Sequence[int],
        errors: Sequence[tuple[Exception, int]],
        *,
        passed: int | None = None,
    ) -> None:
        """Send the events at ``indices`` of ``batch`` to the dead-letter sink.

        ``errors[k]`` is the (last error, attempts) of ``indices[k]``; ``passed``
        is how many events of the batch the failing node passed on (default:
        the rest of ``batch``), for the dead-letter budget.

        Raises:
            StageError: There is no dead-letter sink (stages).
            RetryExhaustedError: There is no dead-letter sink (sinks).
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
            _note(failure, "stage", stats.name)
            raise failure from error
        if passed is None:
            passed = len(batch) - len(indices)
        letters = [
            DeadLetter.from_exception(batch.event(i), stats.name, error, attempts)
            for i, (error, attempts) in zip(indices, errors, strict=True)
        ]
        await self._send_letters(
            worker.dead, stats, letters, [batch.tokens[i] for i in indices], batch.trace,
            passed,
        )

    async def dead_letter_records(
        self,
        worker: _Worker,
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
        await self._send_letters(worker.dead, stats, letters, [token] * len(letters), None,
                                 passed)

    async def _send_letters(
        self,
        dead: EdgeSender,
        stats: NodeStats,
        letters: list[DeadLetter],
        tokens: list[AckToken],
        trace: Any,
        passed: int,
    ) -> None:
        """Log each letter, count them, and send them on with their acks to the dead-letter sink.

        Raises:
            DeadLetterBudgetError: These letters cross the budget; they are not
                sent, so their acks never finish and nothing past them commits.
        """
        if self.budget is not None:
            self.budget.dead_lettered(
                (reason_of(lt.error_type, lt.error) for lt in letters), passed=passed
            )
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
        await dead.edge.send(Batch(events, list(letters), tokens, trace))

    # -- reporting ----------------------------------------------------------------
    def report(self) -> RunReport:
        """A snapshot of the counters (final once the run is over)."""
        end = self.finished_at if self.finished_at is not None else _now_or(self.started_at)
        elapsed = end - self.started_at if self.started_at is not None else 0.0
        in_flight = sum(
            token.pending for tracker in self.trackers.values() for token in tracker._open
        )
        nodes = {name: s.statistics() for name, s in self.stats.items()}
        if self.dead_letter_runner is not None:
            nodes["dead_letter"] = self.dead_letter_stats.statistics()
        edges = {e.name: e.statistics() for e in self.plan.edges()}
        for runner in self.runners:
            for e in getattr(runner, "key_edges", ()):
                edges[e.name] = e.statistics()
        return RunReport(
            received=self.received,
            delivered=self.delivered,
            dead_lettered=self.dead_lettered,
            filtered=self.filtered,
            expanded=self.expanded,
            in_flight=in_flight,
            retries=sum(s.retries for s in self.stats.values()) + self.dead_letter_stats.retries,
            elapsed=elapsed,
            completed=self.finished_at is not None and not self.aborted and in_flight == 0,
            nodes=nodes,
            edges=edges,
            committed={name: t.committed for name, t in self.trackers.items()},
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


# -- runners ------------------------------------------------------------------------


class _Runner(abc.ABC):
    """Runs one task node: its head plus the operators fused after it."""

    role = "stage"

    def __init__(self, rt: Runtime, task: TaskNode | None) -> None:
        self.rt = rt
        self.task = task
        self.ops: list[tuple[Operator, NodeStats]] = []
        if task is not None:
            chain = [task.head, *task.fused] if isinstance(task.head.obj, Operator) else task.fused
            self.ops = [(n.obj, rt.stats[n.name]) for n in chain]
            self.name = task.head.name
            self.stats = rt.stats[task.head.name]
        self.steps = self._steps()

    @abc.abstractmethod
    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Open the node, report ready through ``task_status``, run to the end."""

    def _steps(self) -> list[Any]:
        """The ops, with runs of sync ``map`` stages composed into one pass."""
        steps: list[Any] = []
        run: list[tuple[Operator, NodeStats]] = []

        def close_run() -> None:
            if len(run) > 1:
                steps.append((MapChain([o for o, _ in run]), list(run)))
            elif run:
                steps.append(run[0])
            run.clear()

        for op, stats in self.ops:
            if isinstance(op, Map) and not op.is_async:
                run.append((op, stats))
                continue
            close_run()
            steps.append((op, stats))
        close_run()
        return steps

    async def process(self, worker: _Worker, batch: Batch) -> Batch:
        """Apply the operator chain to ``batch``; failed events are retried or dead-lettered."""
        rt = self.rt
        clock = rt.loop.clock
        tracer = rt.tracer
        for op, stats in self.steps:
            n_in = len(batch)
            started = clock()
            if isinstance(op, MapChain):
                results, failures = op.apply(batch.payloads)
                dead: set[int] = set()
                if failures:
                    dead = await self._recover_chain(worker, op, stats, batch, results, failures)
                batch = Batch(batch.events, results, batch.tokens, batch.trace)
                if dead:
                    batch = batch.select([i for i in range(n_in) if i not in dead])
                took = (clock() - started) / len(stats)
                for _op, s in stats:
                    s.record_batch(n_in, len(batch), took)
                if tracer is not None:
                    span = batch.trace
                    for _op, s in stats:
                        span = tracer.span(s.name, s.kind, span, n_in, len(batch), took,
                                           "dead_letter" if dead else "ok")
                    batch = batch.traced(span)
                if not batch.payloads:
                    break
                continue
            if isinstance(op, MapBatch):
                results, failures = await self._whole_batch(worker, op, stats, batch)
            elif op.is_async:
                results, failures = await apply_each_async(op.call_async, op.inputs(batch))
            else:
                results, failures = apply_each(op.call, op.inputs(batch))
            dead = set()
            if failures:
                dead = await self._recover(worker, op, stats, batch, results, failures)
            if isinstance(op, Route):
                return await self._route(worker, op, stats, batch, results, dead, started)
            step = op.assemble(batch, results, dead)
            if step.dropped is not None:
                rt.dropped(stats, step.dropped)
            if step.expanded:
                rt.expanded += step.expanded
            parent = batch.trace
            batch = step.batch
            stats.record_batch(n_in, len(batch), clock() - started)
            if tracer is not None:
                outcome = "dead_letter" if dead else "ok"
                span = tracer.span(stats.name, stats.kind, parent, n_in, len(batch),
                                   clock() - started, outcome)
                batch = batch.traced(span)
            if not batch.payloads:
                break
        return batch

    async def _whole_batch(
        self, worker: _Worker, op: MapBatch, stats: NodeStats, batch: Batch
    ) -> tuple[list[Any], list[tuple[int, Exception]]]:
        def call() -> list[Any]:
            out = list(op.fn(batch.payloads))
            if len(out) != len(batch):
                raise ValueError(
                    f"map_batch {op.name!r} returned {len(out)} payloads for {len(batch)} events"
                )
            return out

        try:
            return call(), []
        except Exception as exc:
            stats.errors += 1

            async def again() -> list[Any]:
                return call()

            try:
                return await call_with_retry(op.retry, again, stats, first_error=exc), []
            except _GiveUp as gave_up:
                n = len(batch)
                errors = [(gave_up.error, gave_up.attempts)] * n
                await self.rt.dead_letter(worker, stats, batch, range(n), errors)
                return [FAILED] * n, [(i, gave_up.error) for i in range(n)]

    async def _retry_one(
        self, op: Operator, stats: NodeStats, item: Any, error: Exception | None
    ) -> Any:
        """Call ``op`` on ``item`` (again, after ``error``) under its retry policy.

        Raises:
            _GiveUp: The policy gave up.
        """
        if op.is_async:

            async def again() -> Any:
                return await op.call_async(item)
        else:

            async def again() -> Any:
                return op.call(item)

        if error is not None:
            stats.errors += 1
        return await call_with_retry(op.retry, again, stats, first_error=error)

    async def _recover(
        self,
        worker: _Worker,
        op: Operator,
        stats: NodeStats,
        batch: Batch,
        results: list[Any],
        failures: list[tuple[int, Exception]],
    ) -> set[int]:
        """Retry the failed calls under the stage's policy; dead-letter what still fails."""
        if isinstance(op, MapBatch):
            return {i for i, _ in failures}  # already retried and dead-lettered as a whole
        inputs = op.inputs(batch)
        dead: list[int] = []
        errors: list[tuple[Exception, int]] = []
        for i, exc in failures:
            try:
                results[i] = await self._retry_one(op, stats, inputs[i], exc)
            except _GiveUp as gave_up:
                dead.append(i)
                errors.append((gave_up.error, gave_up.attempts))
        await self.rt.dead_letter(worker, stats, batch, dead, errors)
        return set(dead)

    async def _recover_chain(
        self,
        worker: _Worker,
        chain: MapChain,
        stats: list[tuple[Operator, NodeStats]],
        batch: Batch,
        results: list[Any],
        failures: list[tuple[int, Exception]],
    ) -> set[int]:
        """Finish the events a composed chain failed on, one stage at a time."""
        dead: set[int] = set()
        for i, failure in failures:
            assert isinstance(failure, ChainFailure)
            k, item, error = failure.index, failure.item, failure.error
            error_or_none: Exception | None = error
            while k < len(stats):
                op, op_stats = stats[k]
                try:
                    item = await self._retry_one(op, op_stats, item, error_or_none)
                except _GiveUp as gave_up:
                    dead.add(i)
                    failed = Batch([batch.events[i]], [item], [batch.tokens[i]])
                    await self.rt.dead_letter(
                        worker, op_stats, failed, [0], [(gave_up.error, gave_up.attempts)],
                        passed=len(batch) - len(failures),
                    )
                    break
                error_or_none = None
                k += 1
            else:
                results[i] = item
        return dead

    async def _route(
        self,
        worker: _Worker,
        op: Route,
        stats: NodeStats,
        batch: Batch,
        results: list[Any],
        dead: set[int],
        started: float,
    ) -> Batch:
        by_port: dict[str, list[int]] = {port: [] for port in op.ports}
        dropped: list[int] = []
        unknown: list[int] = []
        for i, port in enumerate(results):
            if i in dead:
                continue
            if port is None:
                dropped.append(i)
            elif port in by_port:
                by_port[port].append(i)
            elif op.default is not None:
                by_port[op.default].append(i)
            else:
                unknown.append(i)
        if dropped:
            self.rt.dropped(stats, batch.select(dropped))
        if unknown:
            errors = [
                (LookupError(f"route {op.name!r} has no port {results[i]!r}"), 1) for i in unknown
            ]
            await self.rt.dead_letter(worker, stats, batch, unknown, errors)
        if self.rt.tracer is not None:
            n_out = sum(len(indices) for indices in by_port.values())
            outcome = "dead_letter" if dead or unknown else "ok"
            batch = batch.traced(self.rt.tracer.span(stats.name, stats.kind, batch.trace,
                                                     len(batch), n_out,
                                                     anyio.current_time() - started, outcome))
        sent = 0
        for port, indices in by_port.items():
            if indices:
                part = batch if len(indices) == len(batch) else batch.select(indices)
                sent += len(part)
                await self.emit(worker.outputs.get(port, []), part)
        stats.record_batch(len(batch), sent, anyio.current_time() - started)
        return Batch([], [], [])

    async def emit(self, senders: list[EdgeSender], batch: Batch) -> None:
        """Send ``batch`` to every output (broadcast copies are acknowledged separately)."""
        n = len(batch)
        if not n:
            return
        k = len(senders)
        if k > 1:
            retain(batch.tokens, k - 1)
            self.rt.expanded += n * (k - 1)
        for sender in senders:
            await sender.edge.send(batch)


class SourceRunner(_Runner):
    """Reads a source, runs the fused chain, feeds the first edges; commits offsets."""

    role = "source"

    def __init__(self, rt: Runtime, task: TaskNode) -> None:
        super().__init__(rt, task)
        self.source: Source = task.head.obj
        self.tracker = AckTracker(self.name)
        rt.trackers[self.name] = self.tracker
        self._stopping = False
        self._read_scope: anyio.CancelScope | None = None
        self.worker = rt.worker_ends(task)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            async with _hosted(self.source):
                await self._run(task_status=task_status)
        except Exception as exc:
            _note(exc, "source", self.name)
            raise

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        rt = self.rt
        try:
            try:
                await self.source.open()
            except Exception as exc:
                _note(exc, "source", self.name)
                raise
            task_status.started()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._commit_loop)
                with self.worker:
                    await self._read_loop()
                await rt.wait_drained()
                tg.cancel_scope.cancel()
        except Exception as exc:
            _note(exc, "source", self.name)
            raise
        finally:
            try:
                with anyio.move_on_after(rt.graph.commit_timeout, shield=True):
                    await self._commit()
            finally:
                # closed even when that last commit failed (a checkpoint on a full disk)
                with anyio.move_on_after(rt.graph.commit_timeout, shield=True):
                    await self.source.aclose()

    async def _read_loop(self) -> None:
        rt = self.rt
        source = self.source
        stats = self.stats
        tracker = self.tracker
        worker = self.worker
        outputs = worker.outputs.get(None, [])
        max_batch = rt.max_batch
        while not self._stopping:
            # stop() cancels only the read: a batch already read is pushed through
            read = None
            if source.read_may_wait:
                with anyio.CancelScope() as self._read_scope:
                    read = await source.read(max_batch)
                self._read_scope = None
            else:
                read = await source.read(max_batch)  # returns at once: no scope needed
            if read is None:
                return
            if not isinstance(read, Read):
                raise SourceError(
                    f"{type(source).__name__}.read() must return a Read or None, got {read!r}"
                )
            events = read.events
            n = len(events)
            rejected = read.rejected
            token = tracker.issue(read.offset, n + len(rejected))
            rt.received += n + len(rejected)
            if rt.budget is not None:
                rt.budget.admitted(n + len(rejected))
            stats.events_in += n + len(rejected)
            stats.batches += 1
            if rejected:
                await rt.dead_letter_records(worker, stats, rejected, token, n)
            if not n:
                continue
            stats.events_out += n
            batch = Batch.of(events, token)
            if rt.tracer is not None:  # a source's span marks when its read returned
                batch.trace = rt.tracer.span(self.name, "source", None, n, n, 0.0)
            if self.ops:
                batch = await self.process(worker, batch)
            await self.emit(outputs, batch)

    def stop_intake(self) -> None:
        """Read no more: cancel the read under way (a batch already read goes on)."""
        self._stopping = True
        if self._read_scope is not None:
            self._read_scope.cancel()

    async def _commit(self) -> None:
        offsets = self.tracker.take_committable()
        if offsets:
            await self.source.commit(offsets)
            self.tracker.committed = offsets[-1]

    async def _commit_loop(self) -> None:
        interval = self.source.commit_interval
        while True:
            await self.tracker.wait_changed()
            with anyio.move_on_after(self.rt.graph.commit_timeout, shield=True):
                await self._commit()
            if interval > 0:
                await anyio.sleep(interval)


class StageRunner(_Runner):
    """``workers`` tasks on one input edge, with optional ordering or key partitioning."""

    def __init__(self, rt: Runtime, task: TaskNode) -> None:
        super().__init__(rt, task)
        self.workers = [rt.worker_ends(task) for _ in range(task.workers)]
        self.key_edges: list[Edge] = []
        if task.keyed:
            # one private queue per worker: a key always lands on the same worker
            self.key_edges = [
                Edge(f"{self.name}#{i}", rt.max_batch * 2) for i in range(task.workers)
            ]
            self._dispatch_in = self.workers[0].inbox
            for w, edge in zip(self.workers[1:], self.key_edges[1:], strict=False):
                assert w.inbox is not None
                w.inbox.close()
                w.inbox = edge.receiver()
            self.workers[0].inbox = self.key_edges[0].receiver()
            self._dispatch_out = [edge.sender() for edge in self.key_edges]
        self._next_in = 0
        self._next_out = 0
        self._turns: dict[int, anyio.Event] = {}

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                if self.key_edges:
                    tg.start_soon(self._dispatch)
                for worker in self.workers:
                    tg.start_soon(self._work, worker)
        except Exception as exc:
            _note(exc, "stage", self.name)
            raise

    async def _dispatch(self) -> None:
        inbox = self._dispatch_in
        assert inbox is not None
        outs = self._dispatch_out
        n = len(outs)
        with inbox:
            try:
                while True:
                    try:
                        batch = await inbox.edge.receive(self.rt.max_batch)
                    except anyio.EndOfStream:
                        return
                    parts: list[list[int]] = [[] for _ in range(n)]
                    for i, event in enumerate(batch.events):
                        parts[hash(event.key) % n].append(i)
                    for out, indices in zip(outs, parts, strict=True):
                        if indices:
                            part = batch if len(indices) == len(batch) else batch.select(indices)
                            await out.edge.send(part)
            finally:
                for out in outs:
                    out.close()

    async def _work(self, worker: _Worker) -> None:
        ordered = self.task is not None and self.task.ordered
        outputs = worker.outputs.get(None, [])
        inbox = worker.inbox
        assert inbox is not None
        max_batch = self.rt.max_batch
        with worker:
            while True:
                try:
                    batch = await inbox.edge.receive(max_batch)
                except anyio.EndOfStream:
                    return
                if ordered:
                    seq = self._next_in
                    self._next_in += 1
                    out = await self.process(worker, batch)
                    await self._wait_turn(seq)
                    try:
                        await self.emit(outputs, out)
                    finally:
                        self._pass_turn()
                else:
                    out = await self.process(worker, batch)
                    await self.emit(outputs, out)

    async def _wait_turn(self, seq: int) -> None:
        if self._next_out != seq:
            event = self._turns[seq] = anyio.Event()
            await event.wait()

    def _pass_turn(self) -> None:
        self._next_out += 1
        event = self._turns.pop(self._next_out, None)
        if event is not None:
            event.set()


class BatchRunner(_Runner):
    """Regroups its input into batches of ``max_size``, or what came within ``max_wait``."""

    def __init__(self, rt: Runtime, task: TaskNode) -> None:
        super().__init__(rt, task)
        self.stage: BatchStage = task.head.obj
        self.worker = rt.worker_ends(task)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await self._work()
        except Exception as exc:
            _note(exc, "stage", self.name)
            raise

    async def _work(self) -> None:
        stage = self.stage
        worker = self.worker
        outputs = worker.outputs.get(None, [])
        assert worker.inbox is not None
        edge = worker.inbox.edge
        clock = self.rt.loop.clock
        accumulator = _Accumulator(edge, stage.max_size, stage.max_wait, clock)
        with worker:
            while (batch := await accumulator.next()) is not None:
                started = clock()
                n = len(batch)
                if self.rt.tracer is not None:
                    batch = batch.traced(self.rt.tracer.span(self.name, self.stats.kind,
                                                             batch.trace, n, n, 0.0))
                if self.ops:
                    batch = await self.process(worker, batch)
                await self.emit(outputs, batch)
                self.stats.record_batch(n, len(batch), clock() - started)


class _Accumulator:
    """Batches of ``max_size`` events, or fewer once ``max_wait`` passed since the first.

    ``await next()`` returns the next batch, or None at the end of the stream.
    Cancelling ``next()`` loses nothing: what it gathered stays for the next call.
    (A plain object rather than an async generator: nothing is left to finalise
    when its consumer fails, PEP 789.)
    """

    def __init__(self, edge: Edge, max_size: int, max_wait: float, clock: Any) -> None:
        self.edge = edge
        self.max_size = max_size
        self.max_wait = max_wait
        self.clock = clock
        self.ended = False
        self._parts: list[Batch] = []
        self._held = 0
        self._deadline = math.inf

    async def next(self) -> Batch | None:
        clock = self.clock
        while True:
            if self._parts and (
                self._held >= self.max_size or self.ended or clock() >= self._deadline
            ):
                parts, self._parts = self._parts, []
                self._held = 0
                self._deadline = math.inf
                return parts[0] if len(parts) == 1 else Batch.concat(parts)
            if self.ended:
                return None
            # an absolute deadline: "now + (deadline - now)" can round below the deadline,
            # and under a mock clock that never advances the loop would spin forever
            with anyio.CancelScope(deadline=self._deadline):
                try:
                    got = await self.edge.receive(self.max_size - self._held)
                except anyio.EndOfStream:
                    self.ended = True
                else:
                    if not self._parts:
                        self._deadline = clock() + self.max_wait
                    self._parts.append(got)
                    self._held += len(got)


class SinkRunner(_Runner):
    """``workers`` tasks writing batches with retries, splitting and dead letters."""

    role = "sink"

    def __init__(
        self,
        rt: Runtime,
        task: TaskNode | None,
        sink: Sink,
        inbox: Edge,
        *,
        dead_letter: bool = False,
    ) -> None:
        super().__init__(rt, task)
        self.sink = sink
        self.is_dead_letter = dead_letter
        if dead_letter:
            self.name = "dead_letter"
            self.stats = rt.dead_letter_stats
            self.workers = [_Worker(inbox.receiver(), {}, None) for _ in range(sink.workers)]
        else:
            assert task is not None
            self.workers = [rt.worker_ends(task) for _ in range(task.workers)]
        self.policy = sink.retry if sink.retry is not None else rt.graph.retry
        self.max_batch = sink.max_batch or rt.max_batch
        self.breaker = (
            BreakerState(sink.breaker, anyio.current_time) if sink.breaker is not None else None
        )
        self.wants_events = sink.write_events_needed()
        self._unflushed: list[AckToken] = []
        self._unflushed_count = 0
        self._unflushed_since = math.inf
        if sink.buffered and sink.workers != 1:
            raise IngestError(f"buffered sink {self.name!r} must have workers=1")

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            async with _hosted(self.sink):
                await self._run(task_status=task_status)
        except Exception as exc:
            _note(exc, "dead-letter sink" if self.is_dead_letter else "sink", self.name)
            raise

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        role = "dead-letter sink" if self.is_dead_letter else "sink"
        try:
            try:
                await self.sink.open()
            except Exception as exc:
                _note(exc, role, self.name)
                raise
            task_status.started()
            async with anyio.create_task_group() as tg:
                for worker in self.workers:
                    tg.start_soon(self._work, worker)
            await self._flush()
        except Exception as exc:
            _note(exc, role, self.name)
            raise
        finally:
            with anyio.move_on_after(self.rt.graph.commit_timeout, shield=True):
                await self.sink.aclose()

    async def _work(self, worker: _Worker) -> None:
        assert worker.inbox is not None
        edge = worker.inbox.edge
        sink = self.sink
        with worker:
            if sink.max_wait > 0 or sink.buffered:
                clock = self.rt.loop.clock
                accumulator = _Accumulator(edge, self.max_batch, sink.max_wait, clock)
                while not accumulator.ended:
                    # a buffered sink flushes on age even when no new events come
                    flush_at = self._unflushed_since + sink.flush_interval
                    batch = None
                    with anyio.CancelScope(deadline=flush_at if sink.buffered else math.inf):
                        batch = await accumulator.next()
                    if batch is not None:
                        await self._write(worker, batch)
                    if sink.buffered and self._flush_due():
                        await self._flush()
                return
            while True:
                try:
                    batch = await edge.receive(self.max_batch)
                except anyio.EndOfStream:
                    return
                await self._write(worker, batch)

    def _flush_due(self) -> bool:
        sink = self.sink
        if not self._unflushed:
            return False
        return self._unflushed_count >= sink.flush_every or (
            anyio.current_time() >= self._unflushed_since + sink.flush_interval
        )

    async def _flush(self) -> None:
        if not self.sink.buffered:
            return
        await self.sink.flush()
        tokens, self._unflushed = self._unflushed, []
        self._unflushed_count = 0
        self._unflushed_since = math.inf
        self._count_finished(len(tokens))
        finish(tokens)

    def _count_finished(self, n: int) -> None:
        # counted when acked (for buffered sinks: at flush), so the live report balances
        if self.is_dead_letter:
            self.rt.dead_lettered += n
        else:
            self.rt.delivered += n
            if self.rt.budget is not None:
                self.rt.budget.delivered(n)

    async def _write(self, worker: _Worker, batch: Batch) -> None:
        clock = self.rt.loop.clock
        started = clock()
        items = batch.materialize() if self.wants_events else batch.payloads
        write = self.sink.write_batch
        try:
            if self.breaker is not None and self.breaker.is_open:
                raise _BreakerOpen
            await write(items)  # the fast path: one call, no retry machinery
        except Exception as exc:
            first = None if isinstance(exc, _BreakerOpen) else exc
            if first is not None:
                self.stats.errors += 1
                if self.breaker is not None:
                    self.breaker.failure()

            async def attempt() -> None:
                await write(items)

            try:
                await call_with_retry(
                    self.policy, attempt, self.stats, first_error=first, breaker=self.breaker
                )
            except _GiveUp as gave_up:
                await self._failed(worker, batch, gave_up)
                return
        else:
            if self.breaker is not None:
                self.breaker.success()
        n = len(batch)
        self.stats.record_batch(n, n, clock() - started)
        if self.rt.tracer is not None:
            self.rt.tracer.span(self.name, self.stats.kind, batch.trace, n, n, clock() - started)
        now = time.time()
        events = batch.events
        self.rt.e2e.observe(now - events[0].event_time)
        if n > 1:
            self.rt.e2e.observe(now - events[-1].event_time)
        if self.sink.buffered:
            if not self._unflushed:
                self._unflushed_since = clock()
            self._unflushed += batch.tokens
            self._unflushed_count += n
        else:
            self._count_finished(n)
            finish(batch.tokens)

    async def _failed(self, worker: _Worker, batch: Batch, gave_up: _GiveUp) -> None:
        if self.is_dead_letter:
            self._dead_letter_failed(batch, gave_up)
        disk = _disk_failure(gave_up.error)
        if disk is not None:
            # the disk or device failed, not the data: dead-lettering would acknowledge
            # every event; stop instead, leaving them to be delivered again
            raise SinkError(
                f"sink {self.name!r} cannot write: disk or device error {disk}; "
                "stopping so that nothing unwritten is acknowledged"
            ) from gave_up.error
        retryable = self.policy.retries(gave_up.error)
        if len(batch) > 1 and not retryable:
            # a data error: split to find the bad events, deliver the rest
            half = len(batch) // 2
            head, tail = batch.split(half)
            await self._write(worker, head)
            await self._write(worker, tail)
            return
        n = len(batch)
        self.stats.events_in += n  # received, though not written: in == written + dead-lettered
        if self.rt.tracer is not None:
            batch = batch.traced(self.rt.tracer.span(self.name, self.stats.kind, batch.trace, n,
                                                     0, 0.0, "dead_letter", gave_up.error))
        await self.rt.dead_letter(
            worker, self.stats, batch, range(n), [(gave_up.error, gave_up.attempts)] * n
        )

    def _dead_letter_failed(self, batch: Batch, gave_up: _GiveUp) -> NoReturn:
        event = batch.events[0]
        raise DeadLetterError(
            "dead_letter",
            event.id,
            f"the dead-letter sink failed: {gave_up.error!r}",
            configured=True,
        ) from gave_up.error


# failures of the storage under a sink, never of an event: they stop the run
_DISK_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EIO", "EDQUOT", "EROFS") if hasattr(errno, name)
)
_SQLITE_FULL, _SQLITE_IOERR = 13, 10  # sqlite3 result codes (the low byte of extended ones)
_SQLSTATE_DISK_FULL = "53100"  # PostgreSQL's disk_full


def _disk_failure(error: BaseException) -> str | None:
    """Describe the disk-full or I/O failure behind ``error`` (itself or a cause), if any.

    Knows ``OSError`` (ENOSPC, EIO, EDQUOT, EROFS), sqlite3's SQLITE_FULL and
    SQLITE_IOERR, and PostgreSQL's ``disk_full``, by their attributes (no import).
    """
    current: BaseException | None = error
    for _ in range(8):
        if current is None:
            return None
        number = current.errno if isinstance(current, OSError) else None
        if number is not None and number in _DISK_ERRNOS:
            return f"{errno.errorcode.get(number, str(number))} ({os.strerror(number)})"
        code = getattr(current, "sqlite_errorcode", None)
        if isinstance(code, int) and (code & 0xFF) in (_SQLITE_FULL, _SQLITE_IOERR):
            return f"{getattr(current, 'sqlite_errorname', code)} ({current})"
        if getattr(current, "sqlstate", None) == _SQLSTATE_DISK_FULL:
            return f"disk_full ({current})"
        current = current.__cause__ or current.__context__
    return None


class CustomRunner(_Runner):
    """Runs a user's stage object: ``await stage.run(inbox, outbox)`` per worker."""

    def __init__(self, rt: Runtime, task: TaskNode) -> None:
        super().__init__(rt, task)
        self.stage = task.head.obj
        self.workers = [rt.worker_ends(task) for _ in range(task.workers)]

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                for worker in self.workers:
                    tg.start_soon(self._work, worker)
        except Exception as exc:
            _note(exc, "stage", self.name)
            raise

    async def _work(self, worker: _Worker) -> None:
        from ._custom import RuntimeInbox, RuntimeOutbox

        held: dict[str, deque[AckToken]] = {}
        with worker:
            inbox = RuntimeInbox(self, worker, held)
            outbox = RuntimeOutbox(self, worker, held)
            await self.stage.run(inbox, outbox)
            left = sum(len(q) for q in held.values())
            if left:
                raise IngestError(
                    f"custom stage {self.name!r} returned holding {left} event(s) it never "
                    "sent, dropped or dead-lettered"
                )


def _make_runner(rt: Runtime, task: TaskNode) -> _Runner:
    head = task.head
    if head.role == "source":
        return SourceRunner(rt, task)
    if head.role == "sink":
        assert task.inbox is not None
        return SinkRunner(rt, task, head.obj, task.inbox)
    if isinstance(head.obj, BatchStage):
        return BatchRunner(rt, task)
    if isinstance(head.obj, Operator):
        return StageRunner(rt, task)
    return CustomRunner(rt, task)


class PipelineHandle:
    """Control of a pipeline started with ``nursery.start(pipeline.serve)``.

    The handle is also a producer: ``send`` / ``send_batch`` feed the events
    into the first source's outputs and block while those edges are full.
    """

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self.tracker = AckTracker("handle")
        rt.trackers["handle"] = self.tracker
        first = rt.source_runners[0].task
        assert first is not None
        self._senders = [
            down.inbox.sender() for down in first.outputs.get(None, []) if down.inbox is not None
        ]
        self._closed = False
        self._count = 0
        self._stats = NodeStats("handle", "source")
        rt.stats["handle"] = self._stats

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            for s in self._senders:
                s.close()

    async def send(self, item: Event | Any) -> None:
        """Feed one event (or a payload: its id will be ``"handle-<n>"``).

        Raises:
            anyio.ClosedResourceError: After ``stop()``.
        """
        await self.send_batch([item])

    async def send_batch(self, items: Sequence[Event | Any]) -> None:
        """Feed several events at once; blocks while the first edges are full.

        Raises:
            anyio.ClosedResourceError: After ``stop()``, or when ``stop()`` came while
                this call waited for room (the events not yet taken were not accepted).
        """
        if self._closed:
            raise anyio.ClosedResourceError("the pipeline is stopping; it takes no more events")
        events: list[Event] = []
        for item in items:
            if isinstance(item, Event):
                events.append(item)
            else:
                events.append(Event(id=f"handle-{self._count}", payload=item))
            self._count += 1
        if not events:
            return
        rt = self._rt
        token = self.tracker.issue(self._count, len(events))
        rt.received += len(events)
        if rt.budget is not None:
            rt.budget.admitted(len(events))
        self._stats.events_in += len(events)
        self._stats.events_out += len(events)
        batch = Batch.of(events, token)
        if rt.tracer is not None:
            batch.trace = rt.tracer.span("handle", "source", None, len(events), len(events), 0.0)
        k = len(self._senders)
        if k > 1:
            retain(batch.tokens, k - 1)
            rt.expanded += len(events) * (k - 1)
        try:
            for sender in self._senders:
                await sender.edge.send(batch)
        except EdgeBrokenError:
            if not self._closed:
                raise  # a node failed: the run's own error says which
            # stopped while waiting for room: its consumers are gone, say so as documented
            raise anyio.ClosedResourceError(
                "the pipeline stopped before it took these events"
            ) from None

    async def stop(self, timeout: float | None = None) -> RunReport:
        """Stop intake, drain, flush and commit; cut it short after ``timeout`` seconds.

        What is still in flight at the deadline is not committed: it will be
        delivered again by the next run (``report().in_flight`` counts it).
        ``timeout`` defaults to the graph's ``shutdown_timeout``.
        """
        rt = self._rt
        rt.request_stop()
        if timeout is None:
            timeout = rt.graph.shutdown_timeout
        assert rt.done is not None
        with anyio.move_on_after(timeout):
            await rt.done.wait()
        if not rt.done.is_set():
            log.warning("shutdown deadline of %.1fs passed; cancelling what is in flight", timeout)
            rt.abort()
            await rt.done.wait()
        return rt.report()

    def report(self) -> RunReport:
        """The live counters (final after the pipeline ended)."""
        return self._rt.report()

    @property
    def stopped(self) -> bool:
        """True once the pipeline has finished."""
        return self._rt.done is not None and self._rt.done.is_set()
