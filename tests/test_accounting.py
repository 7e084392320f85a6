"""Property: on random graphs with random failures, every event is accounted for."""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_ingest as ti


def build(
    seed: int, n: int, capacity: int, max_batch: int
) -> tuple[ti.Graph, list[ti.sinks.Memory]]:
    rng = random.Random(seed)

    def failing(rate: float):  # type: ignore[no-untyped-def]
        def fn(p: int) -> int:
            if rng.random() < rate:
                raise ValueError("random failure")
            return p

        return fn

    def maybe_async(fn):  # type: ignore[no-untyped-def]
        if rng.random() < 0.5:
            return fn

        async def afn(p: int) -> int:
            if rng.random() < 0.2:
                await anyio.lowlevel.checkpoint()
            return fn(p)

        return afn

    g = ti.Graph(
        dead_letter=ti.sinks.Memory(),
        capacity=capacity,
        max_batch=max_batch,
        retry=ti.RetryPolicy(max_attempts=2, backoff=ti.ConstantBackoff(0)),
    )
    sources = [
        g.add_source(
            ti.sources.from_iterable(
                [ti.Event(id=f"s{k}-{i}", payload=i, key=i % 3) for i in range(n)]
            ),
            name=f"s{k}",
        )
        for k in range(rng.randint(1, 2))
    ]
    frontier = list(sources)
    for depth in range(rng.randint(1, 4)):
        kind = rng.choice(["map", "filter", "flat_map", "key_by", "map_batch", "batch"])
        workers = rng.choice([1, 1, 2, 3])
        fn = maybe_async(failing(rng.choice([0.0, 0.05, 0.2])))
        if kind == "map":
            stage = ti.map(fn, workers=workers, ordered=rng.random() < 0.3)
        elif kind == "filter":
            stage = ti.filter(lambda p, fn=fn: p % 3, workers=workers)
        elif kind == "flat_map":
            stage = ti.flat_map(lambda p: [p] * (p % 3), workers=workers)
        elif kind == "key_by":
            stage = ti.key_by(lambda p: p % 4)
        elif kind == "map_batch":
            stage = ti.map_batch(lambda ps: [p + 1 for p in ps])
        else:
            stage = ti.batch(rng.randint(1, 50), 0.001)
        inputs = frontier if rng.random() < 0.5 else [rng.choice(frontier)]
        leftover = [f for f in frontier if f not in inputs]
        name = g.add_stage(stage, inputs=inputs, name=f"n{depth}")
        frontier = [name, *leftover]
    sinks = []
    for i, upstream in enumerate(frontier):
        for j in range(rng.randint(1, 2)):  # 2: broadcast
            sink = ti.testing.FlakySink(
                ti.sinks.Memory(), failure_rate=rng.choice([0.0, 0.3]), seed=seed + i + j
            )
            g.add_sink(sink, inputs=upstream, name=f"sink{i}-{j}")
            sinks.append(sink.inner)
    return g, sinks  # type: ignore[return-value]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(0, 300),
    capacity=st.integers(1, 64),
    max_batch=st.integers(1, 64),
    backend=st.sampled_from(["trio", "asyncio"]),
)
def test_accounting_invariant_on_random_graphs(
    seed: int, n: int, capacity: int, max_batch: int, backend: str
) -> None:
    graph, sinks = build(seed, n, capacity, max_batch)
    report = anyio.run(graph.run, backend=backend)
    assert report.balanced, report.summary()
    assert report.in_flight == 0 and report.completed
    assert report.delivered == sum(len(s.events) for s in sinks)
    dead = graph.dead_letter
    assert isinstance(dead, ti.sinks.Memory)
    assert report.dead_lettered == len(dead.events)
    for edge in report.edges.values():
        assert edge.peak_depth <= edge.capacity, edge
    for name, offset in report.committed.items():
        assert offset == (n if n else None), name


pytestmark = pytest.mark.filterwarnings("error")
