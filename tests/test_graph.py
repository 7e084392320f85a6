"""Graph building and validation: every malformed shape fails before anything runs."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import trio_ingest as ti
from trio_ingest.testing import assert_accounted


def src(items: object = (1, 2, 3)) -> ti.Source:
    return ti.sources.from_iterable(list(items))  # type: ignore[call-overload]


def test_no_source() -> None:
    g = ti.Graph()
    with pytest.raises(ti.GraphError, match="the graph has no source"):
        g.validate()


def test_no_sink() -> None:
    g = ti.Graph()
    g.add_source(src())
    with pytest.raises(ti.GraphError, match="the graph has no sink"):
        g.validate()


def test_duplicate_names() -> None:
    g = ti.Graph()
    g.add_source(src(), name="a")
    with pytest.raises(ti.GraphError, match="duplicate node name 'a'"):
        g.add_stage(ti.map(str), inputs="a", name="a")


def test_default_names_are_unique_and_derived_from_functions() -> None:
    def enrich(p: object) -> object:
        return p

    g = ti.Graph()
    s = g.add_source(src())
    a = g.add_stage(ti.map(enrich), inputs=s)
    b = g.add_stage(ti.map(enrich), inputs=a)
    c = g.add_stage(ti.map(lambda p: p), inputs=b)
    assert (s, a, b, c) == ("source", "enrich", "enrich-2", "map")


def test_same_object_twice() -> None:
    g = ti.Graph()
    stage = ti.map(str)
    g.add_source(src(), name="s")
    g.add_stage(stage, inputs="s")
    with pytest.raises(ti.GraphError, match="already in the graph"):
        g.add_stage(stage, inputs="s")


def test_node_with_no_input() -> None:
    g = ti.Graph()
    g.add_source(src(), name="s")
    g.add_stage(ti.map(str), name="orphan")
    g.add_sink(ti.sinks.Memory(), inputs="s")
    with pytest.raises(ti.GraphError, match="stage 'orphan' has no input"):
        g.validate()


def test_unknown_input() -> None:
    g = ti.Graph()
    g.add_source(src(), name="s")
    g.add_sink(ti.sinks.Memory(), inputs="nope", name="out")
    with pytest.raises(ti.GraphError, match="sink 'out' reads from unknown node 'nope'"):
        g.validate()


def test_cycle() -> None:
    g = ti.Graph()
    g.add_source(src(), name="s")
    g.add_stage(ti.map(str), inputs=["s"], name="a")
    g.add_stage(ti.map(str), inputs=["a"], name="b")
    g.connect("b", "a")
    g.add_sink(ti.sinks.Memory(), inputs="b")
    with pytest.raises(ti.GraphError, match=r"cycle: .*a.*b.*a|cycle: .*b.*a.*b"):
        g.validate()


def test_sink_never_reached() -> None:
    g = ti.Graph()
    g.add_source(src(), name="s")
    g.add_sink(ti.sinks.Memory(), inputs="s")
    g.add_stage(ti.map(str), inputs=["loop2"], name="loop1")
    g.add_stage(ti.map(str), inputs=["loop1"], name="loop2")
    g.add_sink(ti.sinks.Memory(), inputs="loop2", name="island")
    with pytest.raises(ti.GraphError, match="cycle"):
        g.validate()


def test_output_goes_nowhere() -> None:
    g = ti.Graph()
    g.add_source(src(), name="s")
    g.add_stage(ti.map(str), inputs="s", name="dangling")
    g.add_sink(ti.sinks.Memory(), inputs="s")
    with pytest.raises(ti.GraphError, match="stage 'dangling' output goes nowhere"):
        g.validate()


def test_reading_from_a_sink() -> None:
    g = ti.Graph()
    g.add_source(src(), name="s")
    g.add_sink(ti.sinks.Memory(), inputs="s", name="out")
    g.add_stage(ti.map(str), inputs="out", name="after")
    with pytest.raises(ti.GraphError, match="reads from sink 'out', which has no output"):
        g.validate()


def test_route_ports_must_be_used_and_named() -> None:
    g = ti.Graph()
    g.add_source(src(), name="s")
    g.add_stage(ti.route(lambda p: "a", ports=["a", "b"]), inputs="s", name="r")
    g.add_sink(ti.sinks.Memory(), inputs=[("r", "a")])
    with pytest.raises(ti.GraphError, match="route 'r' port 'b' goes nowhere"):
        g.validate()
    g.add_sink(ti.sinks.Memory(), inputs="r", name="portless")
    with pytest.raises(ti.GraphError, match="reads from route 'r' without a port"):
        g.validate()


def test_unknown_port() -> None:
    g = ti.Graph()
    g.add_source(src(), name="s")
    g.add_stage(ti.route(lambda p: "a", ports=["a"]), inputs="s", name="r")
    g.add_sink(ti.sinks.Memory(), inputs=[("r", "zzz")])
    with pytest.raises(ti.GraphError, match="route 'r' has no port 'zzz'"):
        g.validate()


def test_pipeline_rejects_routes_and_bad_values() -> None:
    with pytest.raises(ti.GraphError, match="needs a Graph"):
        ti.Pipeline(src(), ti.route(lambda p: "a", ports=["a"]), sink=ti.sinks.Memory())
    with pytest.raises(ti.ConfigError, match="'capacity' must be >= 1: 0"):
        ti.Pipeline(src(), sink=ti.sinks.Memory(), capacity=0)
    with pytest.raises(ti.ConfigError, match="'max_batch' must be >= 1: -3"):
        ti.Pipeline(src(), sink=ti.sinks.Memory(), max_batch=-3)
    with pytest.raises(ti.ConfigError, match="'workers' must be >= 1: 0"):
        ti.map(str, workers=0)
    with pytest.raises(ti.ConfigError, match="'dead_letter' must be a Sink"):
        ti.Pipeline(src(), sink=ti.sinks.Memory(), dead_letter="dead.jsonl")  # type: ignore[arg-type]
    with pytest.raises(ti.ConfigError, match="map\\(\\) needs a callable"):
        ti.map(3)  # type: ignore[arg-type]


def test_config_errors_are_value_errors() -> None:
    assert issubclass(ti.ConfigError, ValueError) and issubclass(ti.GraphError, ti.ConfigError)


def test_memory_bound_counts_edges_and_batches_in_hand() -> None:
    p = ti.Pipeline(
        src(),
        ti.map(str),
        ti.map(str, workers=3),
        sink=ti.sinks.Memory(),
        capacity=100,
        max_batch=10,
        dead_letter=ti.sinks.Memory(),
    )
    # edges: source->map-2 (map fused into the source), map-2->memory, dead letters: 3 x 100;
    # in hand: source 10, map-2 3x10, sink 10, dead-letter sink 10; served (the handle
    # feeds the first stage through an edge of its own): + that edge 100 + the map's 10
    assert p.memory_bound() == 300 + 10 + 30 + 10 + 10 + 100 + 10


class _ReadSizes(ti.sources.FromIterable):
    def __init__(self, n: int) -> None:
        super().__init__([ti.Event(id=str(i), payload=i) for i in range(n)])
        self.asked: list[int] = []

    async def read(self, max_events: int) -> Any:
        self.asked.append(max_events)
        return await super().read(max_events)


@pytest.mark.parametrize(
    ("stages", "sink_batch", "expected"),
    [
        ((), 5_000, 1_000),  # a sink's large batches, read at most one edge's capacity
        ((), 300, 300),
        ((), None, 256),  # a sink without a batch size of its own: the pipeline's
        ((ti.map(str),), 5_000, 256),  # a stage in between processes max_batch at a time
    ],
)
async def test_a_source_that_feeds_only_sinks_reads_in_their_batch_size(
    stages: tuple[Any, ...], sink_batch: int | None, expected: int
) -> None:
    source = _ReadSizes(2_500)
    sink = ti.sinks.Memory(max_batch=sink_batch)
    report = await ti.Pipeline(source, *stages, sink=sink).run()
    assert report.delivered == 2_500 and len(sink.events) == 2_500
    assert set(source.asked) == {expected}


def test_memory_bound_counts_every_place_that_holds_events() -> None:
    class Gathering(ti.sinks.Memory):
        buffered = True
        flush_every = 5_000

    base = dict(capacity=100, max_batch=10)
    plain = ti.Pipeline(src(), sink=ti.sinks.Memory(), **base).memory_bound()  # type: ignore[arg-type]
    assert plain == 100 + 10 + 10
    batched = ti.Pipeline(src(), ti.batch(700, 1.0), sink=ti.sinks.Memory(), **base)  # type: ignore[arg-type]
    assert batched.memory_bound() == 2 * 100 + 10 + 700 + 10
    big_sink = ti.Pipeline(src(), sink=ti.sinks.Memory(max_batch=900), **base)  # type: ignore[arg-type]
    # the source feeds the sink directly: it reads in the sink's batch size, at most one
    # edge's capacity (100), and holds that read in hand
    assert big_sink.memory_bound() == 100 + 100 + 900
    buffered = ti.Pipeline(src(), sink=Gathering(), **base)  # type: ignore[arg-type]
    assert buffered.memory_bound() == 100 + 10 + 10 + 5_000
    keyed = ti.Pipeline(
        src(), ti.key_by(str), ti.map(str, workers=3), sink=ti.sinks.Memory(), **base  # type: ignore[arg-type]
    )
    # edges 2 x 100; source 10; 3 workers x 10 + 3 key queues x 20 + the dispatcher's 10;
    # sink 10; served: + the key_by's own edge 100 and task 10
    assert keyed.memory_bound() == 200 + 10 + 30 + 60 + 10 + 10 + 100 + 10


pytestmark = pytest.mark.anyio


async def test_fan_in_broadcast_and_routing() -> None:
    g = ti.Graph(dead_letter=ti.sinks.Memory())
    g.add_source(
        ti.sources.from_iterable([ti.Event(id=f"a{i}", payload=i) for i in range(50)]), name="a"
    )
    g.add_source(
        ti.sources.from_iterable([ti.Event(id=f"b{i}", payload=100 + i) for i in range(50)]),
        name="b",
    )
    g.add_stage(ti.map(lambda p: p * 2), inputs=["a", "b"], name="double")
    g.add_stage(
        ti.route(
            lambda p: None if p % 10 == 0 else ("big" if p >= 100 else "small"),
            ports=["big", "small"],
        ),
        inputs="double",
        name="size",
    )
    big, small, archive = ti.sinks.Memory(), ti.sinks.Memory(), ti.sinks.Memory()
    g.add_sink(big, inputs=[("size", "big")], name="big")
    g.add_sink(small, inputs=[("size", "small")], name="small")
    g.add_sink(archive, inputs="double", name="archive")  # broadcast from "double"
    report = await g.run()
    assert_accounted(report)
    assert report.received == 100 and report.expanded == 100  # one extra copy each
    assert sorted(archive.payloads) == sorted(
        [i * 2 for i in range(50)] + [(100 + i) * 2 for i in range(50)]
    )
    assert all(p >= 100 and p % 10 for p in big.payloads)
    assert all(p < 100 and p % 10 for p in small.payloads)
    assert report.filtered == len([p for p in archive.payloads if p % 10 == 0])
    assert report.delivered == len(big.events) + len(small.events) + len(archive.events)
    assert report.committed == {"a": 50, "b": 50}


async def test_route_unknown_port_is_dead_lettered_or_defaulted() -> None:
    for default, expect_dead in ((None, 3), ("x", 0)):
        g = ti.Graph(dead_letter=ti.sinks.Memory())
        g.add_source(ti.sources.from_iterable(["x", "y", "zz", "q", "y"]), name="s")
        g.add_stage(ti.route(lambda p: p, ports=["x", "y"], default=default), inputs="s", name="r")
        xs, ys = ti.sinks.Memory(), ti.sinks.Memory()
        g.add_sink(xs, inputs=[("r", "x")])
        g.add_sink(ys, inputs=[("r", "y")])
        report = await g.run()
        assert report.dead_lettered == expect_dead - 1 if expect_dead else report.dead_lettered == 0
        assert_accounted(report)
        assert len(ys.events) == 2


async def test_route_by_key_is_stable_per_key() -> None:
    g = ti.Graph()
    g.add_source(
        ti.sources.from_iterable(
            [ti.Event(id=str(i), payload=i, key=f"k{i % 5}") for i in range(100)]
        ),
        name="s",
    )
    g.add_stage(ti.route_by_key(["p0", "p1", "p2"]), inputs="s", name="r")
    sinks = [ti.sinks.Memory() for _ in range(3)]
    for i, sink in enumerate(sinks):
        g.add_sink(sink, inputs=[("r", f"p{i}")])
    await g.run()
    owner = {}
    for i, sink in enumerate(sinks):
        for e in sink.events:
            assert owner.setdefault(e.key, i) == i
    assert sum(len(s.events) for s in sinks) == 100


async def test_a_graph_cannot_run_twice_at_once() -> None:
    p = ti.Pipeline(ti.sources.synthetic(None), sink=ti.testing.HangingSink())
    async with anyio.create_task_group() as tg:
        await tg.start(p.serve)
        with pytest.raises(ti.ConfigError, match="already running"):
            await p.run()
        tg.cancel_scope.cancel()
