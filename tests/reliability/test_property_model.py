"""Scenario 12, property model: a Hypothesis state machine drives a running graph.

The pipeline runs under Trio with a ``MockClock`` that only moves when the
model says so, in a thread of its own; every rule of the state machine is one
thing the outside world does to it: a producer sends a batch, time passes,
a sink goes down or comes back, the pipeline is asked to stop (with a
deadline that may be too short). After every step, once every task is
blocked, the invariants are checked on the live state:

* no edge holds more than its capacity;
* the accounting invariant holds on the live report;
* the source's committed offset is at most the lowest unfinished read (and
  no commit ever passed an unfinished event: checked inside ``commit``);
* the run has not failed.

Graphs are random: async stages with random failures (dead-lettered), a
filter, ``key_by`` with keyed workers, ``batch`` regrouping, broadcast to two
sinks, random capacities and batch sizes, sinks with latency and outages.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import trio_ingest as ti

from ._support import Ledger, LedgerSink, RecordingSource

T = TypeVar("T")


class _Switchable(LedgerSink):
    """A ledger sink that a rule can take down (every write fails) and bring back."""

    down = False

    async def write_batch(self, events: Any) -> None:
        if self.down:
            raise ti.TransientError("the sink is down")
        await super().write_batch(events)


class _PerSinkLedger(Ledger):
    """Finished means finished in *every* sink (broadcast copies), dead-lettered or filtered."""

    def __init__(self) -> None:
        super().__init__()
        self.sinks: list[Ledger] = []

    def finished(self, event_id: str) -> bool:
        if event_id in self.dead or event_id in self.filtered:
            return True
        return bool(self.sinks) and all(event_id in s.durable for s in self.sinks)


class _Loop:
    """A Trio run (MockClock, no autojump) in a thread, driven step by step from outside."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()
        self.token: trio.lowlevel.TrioToken | None = None
        self.nursery: trio.Nursery | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the trio thread did not start")

    def _run(self) -> None:
        async def main() -> None:
            self.token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self._ready.set()
                await trio.sleep_forever()

        try:
            trio.run(main, clock=self.clock)
        except BaseException as exc:  # reported by the next step or by close()
            self.error = exc
            self._ready.set()

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` in the loop, then wait until every task is blocked."""
        async def step() -> T:
            result = await fn()
            await trio.testing.wait_all_tasks_blocked()
            return result

        try:
            return trio.from_thread.run(step, trio_token=self.token)
        except (trio.Cancelled, trio.RunFinishedError) as exc:
            # the loop is gone: what ended it is the finding
            self._thread.join(10)
            raise AssertionError(f"the pipeline's loop ended: {self.error!r}") from (
                self.error or exc
            )

    def close(self) -> None:
        if self.token is not None and self.nursery is not None and self._thread.is_alive():
            nursery = self.nursery
            trio.from_thread.run_sync(nursery.cancel_scope.cancel, trio_token=self.token)
        self._thread.join(30)


class PipelineModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = _Loop()
        self.ledger = _PerSinkLedger()
        self.sinks: list[_Switchable] = []
        self.handle: ti.PipelineHandle | None = None
        self.source: RecordingSource | None = None
        self.graph: ti.Graph | None = None
        self.sent = 0
        self.stopping = False
        self.failure: BaseException | None = None
        self.capacity = 0

    # -- building ------------------------------------------------------------------
    @initialize(
        seed=st.integers(0, 10_000),
        capacity=st.integers(1, 24),
        max_batch=st.integers(1, 12),
        stages=st.lists(
            st.sampled_from(["slow", "fragile", "filter", "key_by", "keyed", "batch"]),
            max_size=4,
        ),
        broadcast=st.booleans(),
        latency=st.sampled_from([None, (0.0, 0.5)]),
        events=st.integers(0, 120),
    )
    def build(
        self, seed: int, capacity: int, max_batch: int, stages: list[str], broadcast: bool,
        latency: tuple[float, float] | None, events: int,
    ) -> None:
        ledger = self.ledger
        self.capacity = capacity
        graph = ti.Graph(
            dead_letter=LedgerSink(ledger, dead_letter=True, seed=seed),
            retry=ti.RetryPolicy(max_attempts=3, backoff=ti.ConstantBackoff(0.25)),
            capacity=capacity,
            max_batch=max_batch,
            shutdown_timeout=5.0,
        )
        inputs = [ti.Event(id=f"s{i}", payload={"i": i, "id": f"s{i}"}) for i in range(events)]
        self.source = RecordingSource(inputs, ledger, seed=seed, max_read=8, delay=(0.0, 0.3))
        previous = graph.add_source(self.source, name="src")

        async def slow(payload: Any) -> Any:
            await trio.sleep(0.1)
            return payload

        def fragile(payload: Any) -> Any:
            if payload["i"] % 11 == 4:
                raise ValueError("fragile")
            return payload

        def keep(payload: Any) -> bool:
            if payload["i"] % 5 == 2:
                ledger.filtered.add(payload["id"])
                return False
            return True

        for k, kind in enumerate(stages):
            stage: Any
            if kind == "slow":
                stage = ti.map(slow, workers=3)
            elif kind == "fragile":
                stage = ti.map(fragile)
            elif kind == "filter":
                stage = ti.filter(keep, workers=2)
            elif kind == "key_by":
                stage = ti.key_by(lambda p: p["i"] % 3)
            elif kind == "keyed":
                stage = ti.map(slow, workers=2)
            else:
                stage = ti.batch(5, 0.2)
            previous = graph.add_stage(stage, inputs=previous, name=f"n{k}")
        for j in range(2 if broadcast else 1):
            own = Ledger()
            ledger.sinks.append(own)
            sink = _Switchable(own, latency=latency, seed=seed + j, name=f"sink{j}")
            self.sinks.append(sink)
            graph.add_sink(sink, inputs=previous, name=f"sink{j}")
        self.graph = graph

        async def start() -> None:
            assert self.loop.nursery is not None

            async def serve(*, task_status: Any) -> None:
                try:
                    await graph.serve(task_status=task_status)
                except BaseException as exc:
                    self.failure = exc
                    raise

            self.handle = await self.loop.nursery.start(serve)

        self.loop.call(start)

    # -- the outside world -------------------------------------------------------------
    @precondition(lambda self: self.handle is not None and not self.stopping)
    @rule(k=st.integers(1, 20))
    def send(self, k: int) -> None:
        handle = self.handle
        assert handle is not None
        events = [
            ti.Event(id=f"h{n}", payload={"i": n, "id": f"h{n}"})
            for n in range(self.sent, self.sent + k)
        ]
        self.sent += k

        async def go() -> None:
            assert self.loop.nursery is not None

            async def producer() -> None:
                try:
                    await handle.send_batch(events)
                except anyio.ClosedResourceError:
                    pass  # stop() came first (or while it waited): "no more", as documented

            self.loop.nursery.start_soon(producer)

        self.loop.call(go)

    @precondition(lambda self: self.handle is not None)
    @rule(dt=st.sampled_from([0.05, 0.2, 1.0, 3.0]))
    def advance(self, dt: float) -> None:
        async def go() -> None:
            self.loop.clock.jump(dt)

        self.loop.call(go)

    @precondition(lambda self: bool(self.sinks))
    @rule(index=st.integers(0, 1), down=st.booleans())
    def outage(self, index: int, down: bool) -> None:
        sink = self.sinks[index % len(self.sinks)]

        async def go() -> None:
            sink.down = down

        self.loop.call(go)

    @precondition(lambda self: self.handle is not None and not self.stopping)
    @rule(timeout=st.sampled_from([0.01, 0.5, 5.0]))
    def stop(self, timeout: float) -> None:
        handle = self.handle
        assert handle is not None
        self.stopping = True

        async def go() -> None:
            assert self.loop.nursery is not None
            self.loop.nursery.start_soon(handle.stop, timeout)

        self.loop.call(go)

    # -- what must always hold ---------------------------------------------------------------
    def _live(self) -> ti.RunReport:
        handle = self.handle
        assert handle is not None

        async def read() -> ti.RunReport:
            return handle.report()

        return self.loop.call(read)

    @invariant()
    def no_failure(self) -> None:
        if self.failure is not None:
            raise AssertionError(f"the run failed: {self.failure!r}") from self.failure
        if self.loop.error is not None:
            raise AssertionError(f"the loop failed: {self.loop.error!r}") from self.loop.error

    @precondition(lambda self: self.handle is not None)
    @invariant()
    def edges_within_capacity(self) -> None:
        for name, edge in self._live().edges.items():
            assert edge.depth <= edge.capacity and edge.peak_depth <= edge.capacity, (name, edge)

    @precondition(lambda self: self.handle is not None)
    @invariant()
    def accounting_balances(self) -> None:
        report = self._live()
        assert report.balanced, report.summary()

    @precondition(lambda self: self.source is not None)
    @invariant()
    def committed_at_most_lowest_unfinished(self) -> None:
        source = self.source
        assert source is not None
        assert not source.violations, source.violations[:3]
        unfinished = [
            i for i, e in enumerate(source.events[: source.position])
            if not self.ledger.finished(e.id)
        ]
        if unfinished:
            assert source.committed <= unfinished[0], (source.committed, unfinished[0])

    def teardown(self) -> None:
        self.loop.close()


PipelineModel.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_pipeline_model = PipelineModel.TestCase

pytestmark = pytest.mark.filterwarnings("error")
