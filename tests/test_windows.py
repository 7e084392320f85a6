"""Event-time windows: results and late events against a plain-Python reference, both backends."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_ingest as ti
from trio_ingest.stages.windows import Watermark
from trio_ingest.testing import run_with_mock_clock

BACKENDS = ("trio", "asyncio")


# -- the reference: the same semantics in a plain loop ------------------------------


def reference_fixed(
    events: Sequence[tuple[str, float, float]],
    size: float,
    every: float | None,
    max_delay: float,
    lateness: float,
) -> tuple[dict[tuple[str, float], tuple[float, int]], list[int]]:
    """Windows ``(key, start) -> (sum, count)`` and the indices of late events."""
    wm = -math.inf
    top = -math.inf
    windows: dict[tuple[str, float], tuple[float, int]] = {}
    late: list[int] = []
    step = size if every is None else every
    for i, (key, amount, t) in enumerate(events):
        starts = []
        k = math.floor(t / step)
        while k * step + size > t:
            if k * step <= t:
                starts.append(k * step)
            k -= 1
        alive = [s for s in starts if s + size + lateness > wm]
        if not alive:
            late.append(i)
        for s in alive:
            total, n = windows.get((key, s), (0.0, 0))
            windows[(key, s)] = (total + amount, n + 1)
        top = max(top, t)
        wm = max(wm, top - max_delay)
    return windows, late


def make_events(rows: Sequence[tuple[str, float, float]]) -> list[ti.Event]:
    return [
        ti.Event(f"e{i}", {"user": u, "amount": a}, event_time=t)
        for i, (u, a, t) in enumerate(rows)
    ]


def run_window(
    rows: Sequence[tuple[str, float, float]],
    stage: ti.windows.WindowStage | ti.windows.Reorder,
    backend: str,
    max_batch: int = 256,
) -> tuple[ti.RunReport, list[ti.Event], list[ti.Event]]:
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(make_events(rows)),
        stage,
        sink=sink,
        dead_letter=dead,
        max_batch=max_batch,
    )
    report = anyio.run(pipeline.run, backend=backend)
    return report, list(sink.events), list(dead.events)


def accounted(report: ti.RunReport) -> None:
    assert report.in_flight == 0
    assert report.received + report.expanded == (
        report.delivered + report.dead_lettered + report.filtered
    )


# bounded disorder: times drift forward, each event jittered back by up to 8 s
streams = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.integers(min_value=1, max_value=9),
        st.floats(min_value=0.0, max_value=3.0),
        st.floats(min_value=0.0, max_value=8.0),
    ),
    max_size=60,
).map(
    lambda items: [
        (u, float(a), round(sum(d for _, _, d, _ in items[: i + 1]) - back, 3))
        for i, (u, a, _d, back) in enumerate(items)
    ]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=streams,
    size=st.sampled_from([1.0, 2.5, 5.0, 10.0]),
    slide=st.sampled_from([None, 0.5, 1.0]),
    max_delay=st.sampled_from([0.0, 1.0, 3.0]),
    lateness=st.sampled_from([0.0, 2.0]),
    max_batch=st.sampled_from([1, 7, 256]),
    backend=st.sampled_from(BACKENDS),
)
def test_fixed_windows_equal_the_reference(
    rows: list[tuple[str, float, float]],
    size: float,
    slide: float | None,
    max_delay: float,
    lateness: float,
    max_batch: int,
    backend: str,
) -> None:
    common: dict[str, Any] = {
        "key": lambda p: p["user"],
        "reduce": lambda acc, p: acc + p["amount"],
        "initial": 0.0,
        "max_delay": max_delay,
        "allowed_lateness": lateness,
        "name": "spend",
    }
    every = None if slide is None else size * slide
    if every is None:
        stage = ti.windows.tumbling(size, **common)
    else:
        stage = ti.windows.sliding(size, every, **common)
    report, results, dead = run_window(rows, stage, backend, max_batch)

    windows, late = reference_fixed(rows, size, every, max_delay, lateness)
    got = {(e.payload["key"], e.payload["start"]): e for e in results}
    assert len(got) == len(results)  # one result per window
    assert {k: (e.payload["value"], e.payload["count"]) for k, e in got.items()} == windows
    for (key, start), e in got.items():
        assert e.id == f"spend:{key}:{start}"
        assert e.payload["end"] == start + size == e.event_time
    assert sorted(int(d.payload.event.id[1:]) for d in dead) == late
    assert all("late by" in d.payload.error for d in dead)
    assert report.nodes["spend"].late == len(late)
    accounted(report)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_issue_contract_and_the_late_reason(backend: str) -> None:
    rows = [("u", 1.0, 100.0), ("u", 2.0, 109.0), ("u", 4.0, 122.0), ("u", 8.0, 104.7)]
    win = ti.windows.tumbling(
        10.0,
        key=lambda p: p["user"],
        reduce=lambda acc, p: acc + p["amount"],
        initial=0.0,
        max_delay=5.0,
        name="spend",
    )
    report, results, dead = run_window(rows, win, backend)
    assert [(e.id, e.payload, e.event_time) for e in results] == [
        (
            "spend:u:100.0",
            {"key": "u", "start": 100.0, "end": 110.0, "value": 3.0, "count": 2},
            110.0,
        ),
        (
            "spend:u:120.0",
            {"key": "u", "start": 120.0, "end": 130.0, "value": 4.0, "count": 1},
            130.0,
        ),
    ]
    [letter] = [d.payload for d in dead]
    assert letter.event.id == "e3" and letter.node == "spend"
    assert letter.error == "late by 12.3 s (window [100, 110) closed at watermark 117.0)"
    assert report.nodes["spend"].late == 1
    accounted(report)


@pytest.mark.parametrize("backend", BACKENDS)
def test_late_events_go_to_the_late_port_when_a_graph_wires_it(backend: str) -> None:
    g = ti.Graph()
    src = g.add_source(
        ti.sources.from_iterable(make_events([("u", 1, 10), ("u", 1, 30), ("u", 1, 5)]))
    )
    win = g.add_stage(
        ti.windows.tumbling(10, agg=ti.agg.count(), key=lambda p: p["user"]), inputs=src
    )
    results, late = ti.sinks.Memory(), ti.sinks.Memory()
    g.add_sink(results, inputs=win, name="results")
    g.add_sink(late, inputs=(win, "late"), name="late")
    report = anyio.run(g.run, backend=backend)
    assert [e.id for e in late.events] == ["e2"]
    assert [e.payload["start"] for e in results.events] == [10, 30]
    assert report.dead_lettered == 0 and report.nodes["tumbling"].late == 1
    accounted(report)


def test_a_late_event_with_no_dead_letter_sink_fails_the_run() -> None:
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(make_events([("u", 1, 30), ("u", 1, 5)])),
        ti.windows.tumbling(10, agg=ti.agg.count()),
        sink=ti.sinks.Memory(),
    )
    with pytest.raises(ti.StageError, match=r"late by 25\.0 s"):
        trio.run(pipeline.run)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ready_aggregations_combine(backend: str) -> None:
    rows = [("a", 3, 1), ("a", 1, 2), ("a", 8, 3), ("b", 5, 4)]
    agg = ti.agg.combine(
        n=ti.agg.count(),
        total=ti.agg.sum("amount"),
        low=ti.agg.min("amount"),
        high=ti.agg.max("amount"),
        mean=ti.agg.mean(lambda p: p["amount"]),
        seen=ti.agg.collect("amount"),
    )
    _report, results, _dead = run_window(
        rows, ti.windows.tumbling(10, agg=agg, key=lambda p: p["user"]), backend
    )
    values = {e.payload["key"]: e.payload["value"] for e in results}
    assert values == {
        "a": {"n": 3, "total": 12, "low": 1, "high": 8, "mean": 4.0, "seen": [3, 1, 8]},
        "b": {"n": 1, "total": 5, "low": 5, "high": 5, "mean": 5.0, "seen": [5]},
    }


def test_a_failing_key_or_reduce_dead_letters_that_event_alone() -> None:
    rows = [("a", 1, 1), ("a", 0, 2), ("a", 2, 3)]
    win = ti.windows.tumbling(
        10, key=lambda p: p["user"], reduce=lambda acc, p: acc + 1 / p["amount"], initial=0.0
    )
    report, results, dead = run_window(rows, win, "trio")
    assert [d.payload.event.id for d in dead] == ["e1"]
    assert "ZeroDivisionError" in dead[0].payload.error_type
    assert [(e.payload["value"], e.payload["count"]) for e in results] == [(1.5, 2)]
    accounted(report)


@pytest.mark.parametrize("agg", ["sum", "count", "reduce"])
@pytest.mark.parametrize("max_batch", [1, 4, 256])
def test_events_failing_mid_batch_leave_the_rest_of_the_batch_folded(
    agg: str, max_batch: int
) -> None:
    # one read, one window start: the fast pass folds until an event fails, then the
    # careful loop reports that event alone and folds the rest
    payloads: list[Any] = [
        {"user": "a", "amount": 1.0},
        {"amount": 2.0},  # no key
        {"user": ["not", "hashable"], "amount": 3.0},
        {"user": "a"},  # no amount: sum fails, count does not
        {"user": "b", "amount": "x"},  # a str amount: sum fails on the new window
        {"user": "a", "amount": 4.0},
    ]
    events = [ti.Event(f"e{i}", p, event_time=1.0 + i / 10) for i, p in enumerate(payloads)]
    aggs: dict[str, dict[str, Any]] = {
        "sum": {"agg": ti.agg.sum("amount")},
        "count": {"agg": ti.agg.count()},
        "reduce": {"reduce": lambda acc, p: acc + p["amount"], "initial": 0.0},
    }
    win = ti.windows.tumbling(10, key=lambda p: p["user"], name="w", **aggs[agg])
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events), win, sink=sink, dead_letter=dead, max_batch=max_batch
    )
    report = anyio.run(pipeline.run)
    got = {e.payload["key"]: (e.payload["value"], e.payload["count"]) for e in sink.events}
    failed = sorted(d.payload.event.id for d in dead.events)
    if agg == "count":
        assert got == {"a": (3, 3), "b": (1, 1)} and failed == ["e1", "e2"]
    else:
        assert got == {"a": (5.0, 2)} and failed == ["e1", "e2", "e3", "e4"]
    assert report.nodes["w"].errors == len(failed)
    accounted(report)


@pytest.mark.parametrize("max_batch", [1, 3])
def test_a_failing_event_does_not_move_the_watermark(max_batch: int) -> None:
    # reads of 3: [a@1], [b@11, (no key)@19, b@12], [a@5]. Only folded events move the
    # watermark (to 12): with allowed_lateness=8, [0, 10) is still open for a@5
    payloads: list[tuple[dict[str, Any], float]] = [
        ({"user": "a"}, 1.0), ({"user": "a"}, 1.5), ({"user": "a"}, 2.0),
        ({"user": "b"}, 11.0), ({}, 19.0), ({"user": "b"}, 12.0),
        ({"user": "a"}, 5.0),
    ]
    events = [ti.Event(f"e{i}", p, event_time=t) for i, (p, t) in enumerate(payloads)]
    win = ti.windows.tumbling(
        10, key=lambda p: p["user"], agg=ti.agg.count(), allowed_lateness=8, name="w"
    )
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(events), win, sink=sink, dead_letter=dead, max_batch=max_batch
    )
    report = anyio.run(pipeline.run)
    assert [d.payload.event.id for d in dead.events] == ["e4"]  # the failing one, not e6
    assert {(e.payload["key"], e.payload["value"]) for e in sink.events} == {("a", 4), ("b", 2)}
    assert report.nodes["w"].late == 0
    accounted(report)


def test_configuration_errors_name_the_field() -> None:
    with pytest.raises(ti.ConfigError, match="'size' must be"):
        ti.windows.tumbling(0, agg=ti.agg.count())
    with pytest.raises(ti.ConfigError, match="'max_delay' must be"):
        ti.windows.tumbling(1, agg=ti.agg.count(), max_delay=-1)
    with pytest.raises(ti.ConfigError, match="needs 'reduce'"):
        ti.windows.tumbling(1)
    with pytest.raises(ti.ConfigError, match="'merge'"):
        ti.windows.session(1, reduce=lambda a, p: a, initial=0)


# -- sessions -------------------------------------------------------------------------


def test_sessions_split_on_the_gap_and_merge_when_an_event_bridges_them() -> None:
    # 0 and 8 are two sessions (gap 5) until 4 arrives within max_delay and joins them
    rows = [("a", 1, 0), ("a", 2, 8), ("b", 7, 1), ("a", 4, 4), ("a", 8, 30), ("a", 16, 34)]
    win = ti.windows.session(5, agg=ti.agg.sum("amount"), key=lambda p: p["user"], max_delay=6)
    seen: list[Any] = []

    async def main() -> None:
        report, results, dead = await _run_async(rows, win)
        seen.extend([report, results, dead])

    run_with_mock_clock(main)
    report, results, dead = seen
    got = sorted(
        (
            e.payload["key"],
            e.payload["start"],
            e.payload["end"],
            e.payload["value"],
            e.payload["count"],
        )
        for e in results
    )
    assert got == [("a", 0, 13, 7, 3), ("a", 30, 39, 24, 2), ("b", 1, 6, 7, 1)]
    assert {e.id for e in results} == {"session:a:0", "session:a:30", "session:b:1"}
    assert dead == []
    accounted(report)


def test_sessions_in_order_equal_grouping_by_gap() -> None:
    rows = [("a", 1, t) for t in (0, 1, 2.5, 9, 9.5, 20, 24.9, 30)]
    win = ti.windows.session(5, agg=ti.agg.count(), key=lambda p: p["user"])
    _report, results, _dead = run_window(rows, win, "trio", max_batch=3)
    assert [(e.payload["start"], e.payload["end"], e.payload["count"]) for e in results] == [
        (0, 7.5, 3),
        (9, 14.5, 2),
        (20, 29.9, 2),
        (30, 35, 1),
    ]


async def _run_async(
    rows: Sequence[tuple[str, float, float]], stage: ti.windows.WindowStage
) -> tuple[ti.RunReport, list[ti.Event], list[ti.Event]]:
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(make_events(rows)), stage, sink=sink, dead_letter=dead
    )
    report = await pipeline.run()
    return report, list(sink.events), list(dead.events)


# -- watermarks and idle inputs ----------------------------------------------------------


def test_watermark_is_the_minimum_across_partitions_and_skips_idle_ones() -> None:
    wm = Watermark(max_delay=2.0, idle_timeout=10.0)
    wm.observe("p1", 50.0, now=0.0)
    assert wm.value == 48.0
    wm.observe("p2", 20.0, now=1.0)
    assert wm.value == 48.0  # never goes back
    wm.observe("p1", 80.0, now=2.0)
    assert wm.value == 48.0  # p2 holds it at 18
    wm.observe("p2", 60.0, now=3.0)
    assert wm.value == 58.0
    wm.observe("p1", 100.0, now=5.0)
    assert wm.next_idle(5.0) == 13.0  # p2 was last seen at 3
    wm.refresh(12.9)
    assert wm.value == 58.0
    wm.refresh(13.0)  # p2 is idle: p1 alone decides
    assert wm.value == 98.0
    wm.refresh(15.0)  # both idle: the largest event time seen
    assert wm.value == 100.0
    assert wm.next_idle(15.0) == math.inf
    wm.end()
    assert wm.value == math.inf


def test_idle_timeout_closes_windows_of_a_silent_input_under_a_mock_clock() -> None:
    sink = ti.sinks.Memory()
    win = ti.windows.tumbling(10, agg=ti.agg.count(), max_delay=5, idle_timeout=30)
    pipeline = ti.Pipeline(ti.sources.from_iterable([]), win, sink=sink, max_batch=16)
    checks: dict[str, Any] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(pipeline.serve)
            start = trio.current_time()
            for i, t in enumerate([1, 4, 12]):
                await handle.send(ti.Event(f"x{i}", {"n": i}, event_time=t))
            while handle.report().nodes["tumbling"].events_in < 3:  # noqa: ASYNC110 -- a counter
                await trio.sleep(0.01)
            live = handle.report()
            checks["in_flight_while_open"] = live.in_flight
            # the window closes only when the input goes silent (virtual time)
            while not sink.events:  # noqa: ASYNC110 -- polling the sink's list
                await trio.sleep(0.5)
            checks["closed_after"] = trio.current_time() - start
            checks["first"] = [(e.payload["start"], e.payload["count"]) for e in sink.events]
            report = await handle.stop()
            checks["report"] = report
        checks["all"] = [(e.payload["start"], e.payload["count"]) for e in sink.events]

    run_with_mock_clock(main)
    # open windows hold their events' acknowledgements: nothing finished yet
    assert checks["in_flight_while_open"] == 3
    assert 30 <= checks["closed_after"] < 31
    assert checks["first"] == [(0, 2)]  # all silent: watermark = largest time seen (12)
    assert checks["all"] == [(0, 2), (10, 1)]
    accounted(checks["report"])


def test_memory_bound_counts_the_window_stage() -> None:
    pipeline = ti.Pipeline(
        ti.sources.from_iterable([]),
        ti.windows.tumbling(10, agg=ti.agg.count()),
        sink=ti.sinks.Memory(),
        capacity=100,
        max_batch=10,
    )
    plain = ti.Pipeline(
        ti.sources.from_iterable([]),
        ti.batch(10, 1.0),
        sink=ti.sinks.Memory(),
        capacity=100,
        max_batch=10,
    )
    assert pipeline.memory_bound() == plain.memory_bound() + 10


# -- reorder ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=streams,
    max_delay=st.sampled_from([0.0, 2.0, 8.0]),
    max_batch=st.sampled_from([1, 5, 256]),
    backend=st.sampled_from(BACKENDS),
)
def test_reorder_emits_in_event_time_order_and_routes_the_late(
    rows: list[tuple[str, float, float]], max_delay: float, max_batch: int, backend: str
) -> None:
    report, out, dead = run_window(rows, ti.reorder(max_delay), backend, max_batch)
    wm, top, late = -math.inf, -math.inf, []
    for i, (_u, _a, t) in enumerate(rows):
        if t < wm:
            late.append(i)
        top = max(top, t)
        wm = max(wm, top - max_delay)
    kept = [i for i in range(len(rows)) if i not in set(late)]
    # in event-time order; ties keep arrival order
    assert [e.id for e in out] == [f"e{i}" for i in sorted(kept, key=lambda i: rows[i][2])]
    assert sorted(int(d.payload.event.id[1:]) for d in dead) == late
    assert report.nodes["reorder"].late == len(late)
    accounted(report)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=streams,
    gap=st.sampled_from([0.5, 2.0, 5.0]),
    max_batch=st.sampled_from([1, 7, 256]),
)
def test_sessions_equal_grouping_by_gap_when_nothing_is_late(
    rows: list[tuple[str, float, float]], gap: float, max_batch: int
) -> None:
    # a max_delay larger than any disorder: nothing is late, sessions are exact
    win = ti.windows.session(gap, agg=ti.agg.sum("amount"), key=lambda p: p["user"], max_delay=100)
    report, results, dead = run_window(rows, win, "trio", max_batch)
    expected = []
    for key in sorted({u for u, _a, _t in rows}):
        times = sorted((t, a) for u, a, t in rows if u == key)
        group: list[tuple[float, float]] = []
        for t, a in times:
            if group and t - group[-1][0] >= gap:
                expected.append(
                    (key, group[0][0], group[-1][0] + gap, sum(x for _, x in group), len(group))
                )
                group = []
            group.append((t, a))
        if group:
            expected.append(
                (key, group[0][0], group[-1][0] + gap, sum(x for _, x in group), len(group))
            )
    got = sorted(
        (
            e.payload["key"],
            e.payload["start"],
            e.payload["end"],
            e.payload["value"],
            e.payload["count"],
        )
        for e in results
    )
    assert got == sorted(expected)
    assert dead == []
    accounted(report)


class CommitWatchingSink(ti.sinks.Memory):
    """Records, at each write, the source's committed offset (events before it are done)."""

    def __init__(self) -> None:
        super().__init__()
        self.pipeline: ti.Pipeline | None = None
        self.seen: list[tuple[Any, list[ti.Event]]] = []

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        assert self.pipeline is not None
        live = self.pipeline.report()
        assert live is not None
        self.seen.append((live.committed.get("source"), list(events)))
        await super().write_batch(events)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_source_never_commits_past_an_event_of_an_unwritten_window(backend: str) -> None:
    # the first event's window [50, 60) closes late; earlier windows of later reads first
    rows = [("slow", 1.0, 55.0)] + [("fast", 1.0, float(t)) for t in range(1, 131)]
    sink = CommitWatchingSink()
    win = ti.windows.tumbling(
        10, agg=ti.agg.count(), key=lambda p: p["user"], max_delay=60, name="w"
    )
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(make_events(rows)), win, sink=sink, max_batch=4, capacity=8
    )
    sink.pipeline = pipeline
    report = anyio.run(pipeline.run, backend=backend)
    assert report.committed["source"] == len(rows)
    ids = [[e.id for e in batch] for _c, batch in sink.seen]
    slow = next(k for k, batch in enumerate(ids) if "w:slow:50" in batch)
    assert slow > 0  # fast windows were written first, while the slow one was open
    # the slow window holds event 0, of the first read: until its result is written,
    # nothing of this source may be committed
    assert [c for c, _b in sink.seen[: slow + 1]] == [None] * (slow + 1)
    assert report.in_flight == 0
