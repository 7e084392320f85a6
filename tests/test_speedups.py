"""The optional C speed-up (trio_ingest/_speedups.c) behaves exactly like the Python code."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trio_ingest as ti
from trio_ingest import _batch
from trio_ingest._batch import Batch, EventBatch

pytestmark = pytest.mark.anyio

if os.environ.get("CI") == "true":
    # the figures of benchmarks/ are measured with it: CI must not lose it unnoticed
    from trio_ingest import _speedups as speedups
else:
    speedups = pytest.importorskip(
        "trio_ingest._speedups", reason="the C speed-up was not built (no C compiler)"
    )


def test_the_batches_use_the_speed_up() -> None:
    assert _batch._rebuild is speedups.rebuild
    assert _batch._metadata is speedups.columns
    assert _batch._payloads is speedups.payloads
    assert type(vars(ti.Event)["id"]).__name__ == "member_descriptor"
    from trio_ingest.sources import _memory

    assert _memory._all_of_type is speedups.all_of_type


payloads = st.one_of(st.none(), st.integers(), st.text(max_size=5),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=3))


@given(
    st.lists(
        st.tuples(payloads, payloads, st.booleans(), st.one_of(st.none(), st.text(max_size=3))),
        max_size=40,
    )
)
def test_rebuild_equals_the_python_materialize(rows: list[tuple[Any, Any, bool, Any]]) -> None:
    events = [
        ti.Event(id=f"e{i}", payload=old, key=key, event_time=float(i), headers={"h": str(i)})
        for i, (old, _new, _keep, key) in enumerate(rows)
    ]
    # where kept, the very payload object the event holds (what map leaves of it)
    current = [
        e.payload if keep else new for e, (_old, new, keep, _key) in zip(events, rows, strict=True)
    ]
    batch = Batch(events, current, [None] * len(events))  # type: ignore[list-item]
    fast = speedups.rebuild(ti.Event, events, current)
    slow = batch._materialize_py()
    assert fast == slow
    assert all(type(e) is ti.Event for e in fast)
    assert [e.payload for e in fast] == current
    for before, after, payload in zip(events, fast, current, strict=True):
        assert after.id == before.id and after.key == before.key
        assert after.event_time == before.event_time and after.headers == before.headers
        if before.payload is payload:
            assert after is before  # unchanged events are not copied


@given(st.lists(st.tuples(payloads, st.one_of(st.none(), st.text(max_size=3))), max_size=40))
def test_columns_equal_the_python_columns(rows: list[tuple[Any, Any]]) -> None:
    events = [
        ti.Event(id=f"e{i}", payload=p, key=key, event_time=i / 3, headers={"h": str(i)})
        for i, (p, key) in enumerate(rows)
    ]
    new_payloads = [{"n": i} for i in range(len(events))]
    batch = EventBatch(Batch(events, new_payloads, [None] * len(events)))  # type: ignore[list-item]
    fast = batch.columns()
    real, _batch._metadata = _batch._metadata, None
    try:
        slow = batch.columns()
    finally:
        _batch._metadata = real
    assert fast == slow
    assert fast[1] is new_payloads  # the payload column is the batch's own list
    assert fast[0] == [e.id for e in events] and fast[3] == [e.event_time for e in events]


@given(st.lists(st.sampled_from(["event", "payload", "subclass"]), max_size=20))
def test_all_of_type_is_the_exact_type_check(kinds: list[str]) -> None:
    class Sub(ti.Event):
        __slots__ = ()

    made: dict[str, Any] = {"event": ti.Event(id="a"), "payload": {"a": 1}, "subclass": Sub("b")}
    items = [made[k] for k in kinds]
    assert speedups.all_of_type(items, ti.Event) == (set(map(type, items)) <= {ti.Event})


async def test_from_iterable_wraps_payloads_mixed_with_events_either_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio_ingest.sources import _memory

    async def run() -> list[ti.Event]:
        sink = ti.sinks.Memory()
        items: list[Any] = [ti.Event(id="e0", payload=0), {"p": 1}, ti.Event(id="e2", payload=2)]
        await ti.Pipeline(ti.sources.from_iterable(items, name="src"), sink=sink).run()
        return sink.events

    with_c = await run()
    monkeypatch.setattr(_memory, "_all_of_type", None)
    without = await run()
    assert [e.id for e in with_c] == [e.id for e in without] == ["e0", "src:1", "e2"]


@given(st.lists(st.tuples(payloads, st.one_of(st.none(), st.text(max_size=3))), max_size=40))
def test_payloads_and_fields_read_what_the_python_code_reads(rows: list[tuple[Any, Any]]) -> None:
    events = [
        ti.Event(id=f"e{i}", payload=p, key=key, event_time=i / 7, headers={"h": str(i)})
        for i, (p, key) in enumerate(rows)
    ]
    fast = speedups.payloads(events)
    assert fast == _batch._payloads_py(events)
    assert all(a is b for a, b in zip(fast, _batch._payloads_py(events), strict=True))
    for e in events:  # the member descriptors read the tuple's items
        assert (e.id, e.payload, e.key, e.event_time, e.headers) == tuple(e)
        assert e.payload is e[1] and e.headers is e[4]


def test_an_event_always_holds_its_five_fields() -> None:
    # the field descriptors read at fixed offsets: no Event of another size can exist
    with pytest.raises(TypeError, match="holds exactly 5 fields, not 2"):
        tuple.__new__(ti.Event, ("a", 1))

    class Sub(ti.Event):
        pass

    with pytest.raises(TypeError, match="Sub holds exactly 5 fields, not 6"):
        tuple.__new__(Sub, ("a", 1, None, 0.0, {}, "extra"))
    sub = Sub("s", {"p": 1})
    assert (sub.id, sub.payload, type(sub)) == ("s", {"p": 1}, Sub)
    with pytest.raises(TypeError, match="tuple subclass"):
        speedups.tuple_fields(dict, ())
    with pytest.raises(TypeError, match=r"tuple_fields\(type, fields: tuple\)"):
        speedups.tuple_fields(Sub, [("x", "doc")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most 5 fields"):
        speedups.tuple_fields(Sub, tuple(("f", "d") for _ in range(6)))
    assert ti.Event.id.__doc__ == "Unique, non-empty identity; sinks deduplicate on it."


def test_the_speed_ups_refuse_what_is_not_a_batch_of_events() -> None:
    event = ti.Event(id="a", payload=1)
    with pytest.raises(ValueError, match="differ in length"):
        speedups.rebuild(ti.Event, [event], [])
    with pytest.raises(TypeError, match="not an event"):
        speedups.rebuild(ti.Event, [("a", 1)], [2])
    with pytest.raises(TypeError, match="tuple subclass"):
        speedups.rebuild(dict, [event], [2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be lists"):
        speedups.rebuild(ti.Event, (event,), [2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not an event"):
        speedups.columns([event, ("a", 1)])
    with pytest.raises(TypeError, match="must be a list"):
        speedups.columns((event,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="all_of_type"):
        speedups.all_of_type((event,), ti.Event)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="item 1 is not an event"):
        speedups.payloads([event, ("a", 1)])
    with pytest.raises(TypeError, match="must be a list"):
        speedups.payloads((event,))  # type: ignore[arg-type]


async def test_a_pipeline_without_the_speed_up_delivers_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def run() -> list[ti.Event]:
        sink = ti.sinks.Memory()
        events = [ti.Event(id=str(i), payload={"v": i}, event_time=1.0) for i in range(600)]
        pipeline = ti.Pipeline(
            ti.sources.from_iterable(events), ti.map(lambda p: {**p, "w": 1}), sink=sink
        )
        await pipeline.run()
        return sink.events

    with_c = await run()
    monkeypatch.setattr(_batch, "_rebuild", None)
    single = EventBatch(Batch([ti.Event(id="x", payload=1)], [2], [None]))  # type: ignore[list-item]
    assert single[0].payload == 2 and single[0].id == "x"
    without = await run()
    assert with_c == without
    assert [e.payload for e in without] == [{"v": i, "w": 1} for i in range(600)]
