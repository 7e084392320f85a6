"""State stores and checkpoint epochs: ``state=ti.state.SQLite(path)`` survives stops, crashes."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_ingest as ti
from trio_ingest.sources._files import read_checkpoint
from trio_ingest.stages._stateful import StatefulStage
from trio_ingest.state import Checkpoint, StateError, decode, encode

pytestmark = pytest.mark.anyio

SIZE, DELAY = 10.0, 5.0


# -- the stores ------------------------------------------------------------------------


def test_encode_prefers_json_and_pickles_only_what_json_cannot_hold() -> None:
    plain = {"windows": [["u1", 10.0, 20.0, 3.5, 2]], "watermark": None, "partitions": []}
    fmt, data = encode(plain)
    assert fmt == "json" and json.loads(data) == plain
    assert decode(fmt, data) == plain
    for awkward in ({"acc": (1.0, 2)}, {"w": math.inf}, {1: "int key"}, {"s": {1, 2}}):
        fmt, data = encode(awkward)
        assert fmt == "pickle"
        assert decode(fmt, data) == awkward
    with pytest.raises(StateError, match="unknown state encoding 'xml'"):
        decode("xml", b"")


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_a_store_keeps_the_last_checkpoint_whole(kind: str, tmp_path: Path) -> None:
    store = ti.state.SQLite(tmp_path / "s.db") if kind == "sqlite" else ti.state.Memory()
    assert store.load() is None
    layout = {"stages": {"w": {"kind": "window"}}, "sources": ["src"]}
    first = Checkpoint(1, layout, {"w": encode({"a": 1})}, {"src": {"offset": 10}})
    store.save(first)
    second = Checkpoint(2, layout, {"w": encode({"a": 2})}, {})  # src read nothing new
    store.save(second)
    got = store.load()
    assert got is not None
    assert got.epoch == 2 and got.layout == layout
    assert decode(*got.stages["w"]) == {"a": 2}
    # a checkpoint names only the sources that moved: the last offset of the others stays
    assert got.offsets == ({"src": {"offset": 10}} if kind == "sqlite" else {})
    store.close()
    store.close()  # idempotent


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    store = ti.state.SQLite(tmp_path / "s.db")
    store.save(Checkpoint(1, {"stages": {}, "sources": []}, {"w": encode([1])}, {"a": 1}))
    with pytest.raises(StateError, match="cannot write state store"):
        # an offset JSON cannot encode fails inside the transaction: rolled back
        store.save(Checkpoint(2, {"stages": {}, "sources": []}, {"w": encode([2])},
                              {"a": object()}))
    got = store.load()
    assert got is not None and got.epoch == 1 and decode(*got.stages["w"]) == [1]
    assert got.offsets == {"a": 1}


def test_a_file_that_is_not_a_store_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="state store"):
        ti.state.SQLite(bad).load()


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ti.ConfigError, match="'path' must be a file path"):
        ti.state.SQLite("")
    with pytest.raises(ti.ConfigError, match="':memory:' does not survive"):
        ti.state.SQLite(":memory:")
    with pytest.raises(ti.ConfigError, match="'synchronous' must be"):
        ti.state.SQLite(tmp_path / "s.db", synchronous="OFF")
    src = ti.sources.from_iterable([1])
    with pytest.raises(ti.ConfigError, match="'state' must be a state store"):
        ti.Pipeline(src, sink=ti.sinks.Memory(), state="state.db")  # type: ignore[arg-type]
    with pytest.raises(ti.ConfigError, match="'checkpoint_interval' must be > 0"):
        ti.Graph(checkpoint_interval=0)


async def test_a_source_that_cannot_seek_is_refused_with_a_durable_store(tmp_path: Path) -> None:
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(iter([ti.Event("a", 1, event_time=0.0)]), name="numbers"),
        ti.windows.tumbling(SIZE, key=lambda p: 0, agg=ti.agg.count()),
        sink=ti.sinks.Memory(),
        state=ti.state.SQLite(tmp_path / "s.db"),
    )
    with pytest.raises(ti.ConfigError, match=r"source 'numbers' .* cannot seek"):
        await pipeline.run()


async def test_a_stage_that_cannot_checkpoint_is_refused(tmp_path: Path) -> None:
    class Opaque(StatefulStage):
        kind = "opaque"

    path = write_lines(tmp_path / "in.jsonl", [{"id": 1, "ts": 0.0}])
    pipeline = ti.Pipeline(
        ti.sources.JsonLines(path, time_field="ts"),
        Opaque("blob"),
        sink=ti.sinks.Memory(),
        state=ti.state.SQLite(tmp_path / "s.db"),
    )
    with pytest.raises(ti.ConfigError, match=r"stage 'blob' \(opaque\) cannot keep its state"):
        await pipeline.run()


async def test_reorder_keeps_its_held_events_across_a_stop(tmp_path: Path) -> None:
    rows = stream(300, seed=9, users=2, step=0.5)
    path = write_lines(tmp_path / "in.jsonl", rows[:200])

    def build(src: ti.Source, sink: ti.Sink) -> ti.Pipeline:
        return ti.Pipeline(src, ti.reorder(DELAY, name="order"), sink=sink,
                           dead_letter=ti.sinks.Memory(), checkpoint_interval=0.05,
                           state=ti.state.SQLite(tmp_path / "state.db"))

    first, second = ti.sinks.Memory(), ti.sinks.Memory()
    src = ti.sources.JsonLines(path, time_field="ts", follow=True, poll_interval=0.01)
    r1 = await run_until_read_then_stop(build(src, first), "order", 200)
    write_lines(path, rows[200:], mode="a")
    r2 = await build(ti.sources.JsonLines(path, time_field="ts"), second).run()
    times = [e.event_time for e in [*first.events, *second.events]]
    assert times == sorted(times)  # in order across the stop, none lost, none twice
    ids = [e.id for e in [*first.events, *second.events]]
    late = r1.nodes["order"].late + r2.nodes["order"].late
    assert len(ids) == len(set(ids)) == 300 - late
    assert r1.balanced and r2.balanced and r2.in_flight == 0


# -- restoring -----------------------------------------------------------------------------


def write_lines(path: Path, rows: list[dict[str, Any]], mode: str = "w") -> Path:
    with path.open(mode) as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def stream(n: int, seed: int, users: int = 5, step: float = 0.1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"id": i, "user": f"u{rng.randrange(users)}", "amount": rng.randrange(100),
         "ts": round(i * step - rng.random() * 3 * DELAY / 2, 3)}
        for i in range(n)
    ]


def reference(rows: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Tumbling sums per (user, start) and the late ids, in plain Python (one partition)."""
    windows: dict[str, dict[str, Any]] = {}
    late: set[str] = set()
    mark = -math.inf
    for row in rows:
        t = float(row["ts"])
        start = math.floor(t / SIZE) * SIZE
        if start + SIZE <= mark:
            late.add(str(row["id"]))
        else:
            w = windows.setdefault(
                f"spend:{row['user']}:{start}",
                {"key": row["user"], "start": start, "end": start + SIZE, "value": 0.0,
                 "count": 0},
            )
            w["value"] += row["amount"]
            w["count"] += 1
        mark = max(mark, t - DELAY)
    return windows, late


def table(path: Path, name: str = "spend") -> dict[str, dict[str, Any]]:
    with sqlite3.connect(path) as db:
        return {i: json.loads(p) for i, p in db.execute(f"SELECT id, payload FROM {name}")}


def spend_pipeline(
    src: ti.Source, tmp_path: Path, *, size: float = SIZE, name: str = "spend",
    interval: float = 5.0, sink: ti.Sink | None = None, dead: ti.Sink | None = None,
) -> ti.Pipeline:
    win = ti.windows.tumbling(size, key=lambda p: p["user"],
                              reduce=lambda acc, p: acc + p["amount"], initial=0.0,
                              max_delay=DELAY, name=name)
    return ti.Pipeline(
        src, win,
        sink=sink if sink is not None else ti.sinks.SQLite(tmp_path / "out.db", "spend"),
        dead_letter=dead if dead is not None else ti.sinks.Memory(),
        state=ti.state.SQLite(tmp_path / "state.db"),
        checkpoint_interval=interval,
    )


async def wait_for(condition: Any) -> None:
    while not condition():  # noqa: ASYNC110 -- polls counters the running pipeline updates
        await anyio.sleep(0.01)


async def run_until_read_then_stop(pipeline: ti.Pipeline, node: str, n: int) -> ti.RunReport:
    """Run ``pipeline`` until stage ``node`` took ``n`` events, then stop it gracefully."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(pipeline.run)
        await wait_for(lambda: (r := pipeline.report()) is not None
                       and r.nodes[node].events_in >= n)
        report = await pipeline.stop()
    assert report is not None
    return report


async def test_a_stop_keeps_open_windows_and_a_rerun_finishes_them(tmp_path: Path) -> None:
    rows = stream(600, seed=3)
    path = write_lines(tmp_path / "in.jsonl", rows[:400])
    src = ti.sources.JsonLines(path, time_field="ts", follow=True, poll_interval=0.01)
    first = await run_until_read_then_stop(spend_pipeline(src, tmp_path), "spend", 400)
    assert first.balanced and first.in_flight == 0
    written = table(tmp_path / "out.db")
    expected_400, _ = reference(rows[:400])
    # only closed windows went out: the open ones are in the state store, not emitted early
    open_ids = set(expected_400) - set(written)
    assert open_ids
    with sqlite3.connect(tmp_path / "state.db") as db:
        (fmt, data), = db.execute("SELECT format, data FROM ti_stage_state WHERE name='spend'")
        (position,), = db.execute("SELECT position FROM ti_source_offset")
    stored = decode(fmt, data)
    assert fmt == "json"
    assert {f"spend:{k}:{s}" for k, s, *_ in stored["windows"]} == open_ids
    assert json.loads(position)["offset"] == path.stat().st_size
    # more input arrives; the rerun resumes the windows and the file where they were
    write_lines(path, rows[400:], mode="a")
    second = await spend_pipeline(ti.sources.JsonLines(path, time_field="ts"), tmp_path).run()
    assert second.received == 200  # the first 400 lines are not read again
    assert second.balanced and second.in_flight == 0
    expected, late = reference(rows)
    assert table(tmp_path / "out.db") == expected
    assert first.nodes["spend"].late + second.nodes["spend"].late == len(late)


async def test_after_the_input_ended_a_rerun_with_more_input_dead_letters_it_as_late(
    tmp_path: Path,
) -> None:
    # the end of the input closed every window for good: folding new events into a window
    # already emitted would make a second result with the same id, which the idempotent
    # sink ignores -- the new events' contribution would vanish silently
    rows = stream(600, seed=5)
    path = write_lines(tmp_path / "in.jsonl", rows[:400])
    first = await spend_pipeline(ti.sources.JsonLines(path, time_field="ts"), tmp_path).run()
    assert first.completed and first.balanced
    written = table(tmp_path / "out.db")
    assert written == reference(rows[:400])[0]
    write_lines(path, rows[400:], mode="a")
    dead = ti.sinks.Memory()
    second = await spend_pipeline(
        ti.sources.JsonLines(path, time_field="ts"), tmp_path, dead=dead
    ).run()
    assert second.received == 200 and second.dead_lettered == 200 and second.balanced
    assert table(tmp_path / "out.db") == written  # no window counted again
    reasons = {e.payload.error for e in dead.events}
    assert all("closed when the input ended" in r for r in reasons), reasons


async def test_dedupe_and_stateful_map_resume_their_keys(tmp_path: Path) -> None:
    rows = [{"id": i, "user": f"u{i % 3}", "ts": float(i)} for i in range(30)]
    path = write_lines(tmp_path / "in.jsonl", rows[:15])

    def build(src: ti.Source, sink: ti.Sink) -> ti.Pipeline:
        return ti.Pipeline(
            src,
            ti.dedupe(lambda p: p["user"], ttl=100.0, name="once"),
            ti.stateful_map(lambda n, p: (n + 1, {**p, "n": n + 1}), 0,
                            key=lambda p: p["user"], name="nth"),
            sink=sink, state=ti.state.SQLite(tmp_path / "state.db"), checkpoint_interval=0.05,
        )

    sink1 = ti.sinks.Memory()
    src = ti.sources.JsonLines(path, time_field="ts", follow=True, poll_interval=0.01)
    await run_until_read_then_stop(build(src, sink1), "once", 15)
    assert [e.payload["id"] for e in sink1.events] == [0, 1, 2]
    write_lines(path, [*rows[15:], {"id": 99, "user": "u9", "ts": 31.0}], mode="a")
    sink2 = ti.sinks.Memory()
    report = await build(ti.sources.JsonLines(path, time_field="ts"), sink2).run()
    # dedupe still remembers u0..u2; stateful_map counts u9 from its own fresh state
    assert [(e.payload["id"], e.payload["n"]) for e in sink2.events] == [(99, 1)]
    assert report.received == 16 and report.filtered == 15 and report.balanced


async def test_stateful_map_keeps_its_ttl_clock_across_a_stop(tmp_path: Path) -> None:
    # u1 is updated last at t=1 and u2 at t=14 in the first run; the second run starts at
    # t=15: u1's state is older than ttl=10 and starts afresh, u2's goes on
    first = [{"id": 0, "user": "u1", "ts": 0.0}, {"id": 1, "user": "u1", "ts": 1.0},
             {"id": 2, "user": "u2", "ts": 14.0}]
    second = [{"id": 3, "user": "u1", "ts": 15.0}, {"id": 4, "user": "u2", "ts": 16.0}]
    path = write_lines(tmp_path / "in.jsonl", first)

    def build(src: ti.Source, sink: ti.Sink) -> ti.Pipeline:
        return ti.Pipeline(
            src,
            ti.stateful_map(lambda n, p: (n + 1, {**p, "n": n + 1}), 0,
                            key=lambda p: p["user"], ttl=10.0, name="nth"),
            sink=sink, state=ti.state.SQLite(tmp_path / "state.db"), checkpoint_interval=0.05,
        )

    src = ti.sources.JsonLines(path, time_field="ts", follow=True, poll_interval=0.01)
    await run_until_read_then_stop(build(src, ti.sinks.Memory()), "nth", 3)
    write_lines(path, second, mode="a")
    sink = ti.sinks.Memory()
    report = await build(ti.sources.JsonLines(path, time_field="ts"), sink).run()
    assert [(e.payload["user"], e.payload["n"]) for e in sink.events] == [("u1", 1), ("u2", 2)]
    assert report.balanced


async def test_a_second_run_on_a_store_in_use_is_refused_before_anything_moves(
    tmp_path: Path,
) -> None:
    rows = stream(100, seed=2)
    path = write_lines(tmp_path / "in.jsonl", rows)
    src = ti.sources.JsonLines(path, time_field="ts", follow=True, poll_interval=0.01)
    first = spend_pipeline(src, tmp_path)
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run)
        await wait_for(lambda: (r := first.report()) is not None
                       and r.nodes["spend"].events_in >= 100)
        other = ti.sinks.Memory()
        second = spend_pipeline(ti.sources.JsonLines(path, time_field="ts"), tmp_path,
                                sink=other)
        with pytest.raises(StateError, match=r"in use by another run \(pid \d+\)"):
            await second.run()
        assert other.events == []  # nothing moved
        await first.stop()
    # the first run let go of it: the store can be used (and read) again
    assert ti.state.SQLite(tmp_path / "state.db").load() is not None
    report = await spend_pipeline(ti.sources.JsonLines(path, time_field="ts"), tmp_path).run()
    assert report.balanced


async def test_a_changed_graph_does_not_silently_reuse_state(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", stream(50, seed=1))
    src = ti.sources.JsonLines(path, time_field="ts", follow=True, poll_interval=0.01)
    await run_until_read_then_stop(spend_pipeline(src, tmp_path), "spend", 50)
    other = spend_pipeline(ti.sources.JsonLines(path, time_field="ts"), tmp_path, size=20.0)
    with pytest.raises(StateError, match=r"stage 'spend' is .*size.: 20.0.* holds its state as"):
        await other.run()
    renamed = spend_pipeline(ti.sources.JsonLines(path, time_field="ts"), tmp_path, name="sp")
    with pytest.raises(StateError, match="holds state of stage 'spend'"):
        await renamed.run()


async def test_a_long_window_no_longer_holds_source_commits_back(tmp_path: Path) -> None:
    rows = [{"id": i, "user": f"u{i % 7}", "amount": i, "ts": float(i)} for i in range(300)]
    path = write_lines(tmp_path / "in.jsonl", rows)
    size = path.stat().st_size
    # without a durable store the open window holds its events' acks: nothing commits
    plain_src = ti.sources.JsonLines(path, time_field="ts", follow=True, poll_interval=0.01,
                                     checkpoint=tmp_path / "plain.ckpt")
    win = ti.windows.tumbling(1e9, key=lambda p: p["user"], agg=ti.agg.sum("amount"),
                              name="long")
    plain = ti.Pipeline(plain_src, win, sink=ti.sinks.Memory())
    async with anyio.create_task_group() as tg:
        tg.start_soon(plain.run)
        await wait_for(lambda: (r := plain.report()) is not None
                       and r.nodes["long"].events_in == 300)
        assert plain.report().committed["jsonlines"] is None  # type: ignore[union-attr]
        plain.abort()
    # with one, a checkpoint takes the window's state and the offset: the commit moves
    src = ti.sources.JsonLines(path, time_field="ts", follow=True, poll_interval=0.01,
                               checkpoint=tmp_path / "durable.ckpt")
    win = ti.windows.tumbling(1e9, key=lambda p: p["user"], agg=ti.agg.sum("amount"),
                              name="long")
    durable = ti.Pipeline(src, win, sink=ti.sinks.Memory(), checkpoint_interval=0.05,
                          state=ti.state.SQLite(tmp_path / "state.db"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(durable.run)
        await wait_for(lambda: (r := durable.report()) is not None
                       and r.committed["jsonlines"] == size)
        report = durable.report()
        assert report is not None and src.committed == size
        assert report.nodes["long"].events_out == 0  # the window is still open
        assert report.in_flight == 0 and report.balanced  # folded events are finished
        stored = read_checkpoint(tmp_path / "durable.ckpt")
        assert stored is not None and stored["offset"] == size  # the source's own commit too
        durable.abort()


@pytest.mark.parametrize("shape", ["sliding", "session"])
async def test_sliding_and_session_windows_resume_as_if_never_stopped(
    tmp_path: Path, shape: str
) -> None:
    rows = stream(800, seed=5, users=3, step=0.37)

    def window() -> Any:
        if shape == "sliding":
            return ti.windows.sliding(10.0, 2.5, key=lambda p: p["user"],
                                      agg=ti.agg.sum("amount"), max_delay=DELAY, name="w")
        # mean's accumulator is a tuple: this state goes through the pickle fallback
        return ti.windows.session(1.5, key=lambda p: p["user"], agg=ti.agg.mean("amount"),
                                  max_delay=DELAY, name="w")

    whole = write_lines(tmp_path / "whole.jsonl", rows)
    uninterrupted = ti.sinks.Memory()
    await ti.Pipeline(ti.sources.JsonLines(whole, time_field="ts"), window(),
                      sink=uninterrupted, dead_letter=ti.sinks.Memory()).run()
    expected = {e.id: e.payload for e in uninterrupted.events}

    path = write_lines(tmp_path / "in.jsonl", rows[:500])
    state = tmp_path / "state.db"
    first_sink, second_sink = ti.sinks.Memory(), ti.sinks.Memory()
    src = ti.sources.JsonLines(path, time_field="ts", follow=True, poll_interval=0.01)
    first = await run_until_read_then_stop(
        ti.Pipeline(src, window(), sink=first_sink, dead_letter=ti.sinks.Memory(),
                    state=ti.state.SQLite(state), checkpoint_interval=0.05),
        "w", 500,
    )
    with sqlite3.connect(state) as db:
        (fmt,), = db.execute("SELECT format FROM ti_stage_state")
    assert fmt == ("json" if shape == "sliding" else "pickle")
    write_lines(path, rows[500:], mode="a")
    second = await ti.Pipeline(
        ti.sources.JsonLines(path, time_field="ts"), window(), sink=second_sink,
        dead_letter=ti.sinks.Memory(), state=ti.state.SQLite(state),
    ).run()
    got = {e.id: e.payload for e in [*first_sink.events, *second_sink.events]}
    assert len(got) == len(first_sink.events) + len(second_sink.events)  # none emitted twice
    assert got == expected
    assert first.balanced and second.balanced and second.in_flight == 0


async def test_a_graph_takes_state_too_and_its_late_port_works(tmp_path: Path) -> None:
    rows = [{"id": 1, "user": "a", "amount": 1, "ts": 1.0},
            {"id": 2, "user": "a", "amount": 2, "ts": 30.0},
            {"id": 3, "user": "a", "amount": 4, "ts": 2.0}]  # late: [0, 10) closed at 25
    path = write_lines(tmp_path / "in.jsonl", rows)
    graph = ti.Graph(state=ti.state.SQLite(tmp_path / "state.db"), checkpoint_interval=1.0)
    graph.add_source(ti.sources.JsonLines(path, time_field="ts"), name="in")
    graph.add_stage(ti.windows.tumbling(10.0, key=lambda p: p["user"], agg=ti.agg.sum("amount"),
                                        max_delay=DELAY, name="w"), inputs="in")
    results, late = ti.sinks.Memory(), ti.sinks.Memory()
    graph.add_sink(results, inputs="w")
    graph.add_sink(late, inputs=[("w", "late")])
    report = await graph.run()
    assert sorted((e.id, e.payload["value"]) for e in results.events) == [
        ("w:a:0.0", 1), ("w:a:30.0", 2)]
    assert [e.id for e in late.events] == ["3"]
    assert report.balanced and report.committed["in"] == path.stat().st_size
    got = ti.state.SQLite(tmp_path / "state.db").load()
    assert got is not None and got.offsets["in"]["offset"] == path.stat().st_size
    assert decode(*got.stages["w"])["windows"] == []  # the input ended: every window emitted


async def test_join_latest_keeps_its_table_and_waiting_events_across_a_stop(
    tmp_path: Path,
) -> None:
    customers = write_lines(tmp_path / "customers.jsonl", [{"id": "c1", "name": "Ann", "ts": 1}])
    orders = write_lines(tmp_path / "orders.jsonl", [{"id": "o1", "customer": "c1", "ts": 2},
                                                     {"id": "o2", "customer": "c2", "ts": 3}])

    def build(follow: bool, sink: ti.Sink) -> ti.Graph:
        graph = ti.Graph(state=ti.state.SQLite(tmp_path / "state.db"), checkpoint_interval=0.05)
        for name, path in (("customers", customers), ("orders", orders)):
            graph.add_source(ti.sources.JsonLines(path, time_field="ts", follow=follow,
                                                  poll_interval=0.01), name=name)
        graph.add_stage(ti.join_latest(table="customers", key=lambda p: p["customer"],
                                       table_key=lambda p: p["id"], missing="wait"),
                        inputs=["orders", "customers"], name="enrich")
        graph.add_sink(sink, inputs="enrich")
        return graph

    first = ti.sinks.Memory()
    graph = build(True, first)
    async with anyio.create_task_group() as tg:
        tg.start_soon(graph.run)
        await wait_for(lambda: (r := graph.report()) is not None
                       and r.nodes["enrich"].events_in >= 3)
        await graph.stop()
    assert [(e.payload["id"], e.payload["name"]) for e in first.events] == [("o1", "Ann")]
    # o2 waits for c2 in the state store; c1's row is there too
    write_lines(customers, [{"id": "c2", "name": "Bob", "ts": 4}], mode="a")
    write_lines(orders, [{"id": "o3", "customer": "c1", "ts": 5}], mode="a")
    second = ti.sinks.Memory()
    report = await build(False, second).run()
    assert sorted((e.payload["id"], e.payload["name"]) for e in second.events) == [
        ("o2", "Bob"), ("o3", "Ann")]
    assert report.received == 2 and report.balanced and report.in_flight == 0


def test_the_guide_example_runs_as_written(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    guide = Path(__file__).resolve().parents[1] / "docs" / "guide" / "state.md"
    example = re.findall(r"```python\n(.*?)```", guide.read_text(), re.S)[-1]
    (tmp_path / "example.py").write_text(example)
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "['alice 0: 10 (1)', 'bob 0: 5 (1)']",
        "5 late by 7.0 s (window [0, 10) closed at watermark 11.0)",
        "1",
        "['alice 0: 10 (1)', 'alice 10: 10 (3)', 'bob 0: 5 (1)']",
    ]


def test_a_pipeline_file_takes_a_state_store(tmp_path: Path) -> None:
    import textwrap

    from click.testing import CliRunner

    from trio_ingest.cli._app import cli

    module = f"statemod_{tmp_path.name[-8:]}"
    (tmp_path / f"{module}.py").write_text("def user(p):\n    return p['user']\n")
    rows = stream(200, seed=4)
    write_lines(tmp_path / "in.jsonl", rows)
    (tmp_path / "win.toml").write_text(textwrap.dedent(f"""
        [pipeline]
        state = "state.db"
        checkpoint_interval = 0.5
        [source]
        type = "jsonl"
        path = "in.jsonl"
        time_field = "ts"
        [[stages]]
        type = "tumbling"
        size = 10.0
        max_delay = 5.0
        key = "{module}:user"
        agg = "sum:amount"
        name = "spend"
        [sink]
        type = "sqlite"
        path = "out.db"
        table = "spend"
        [dead_letter]
        type = "memory"
    """))
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "win.toml")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    expected, _late = reference(rows)
    assert {i: p["value"] for i, p in table(tmp_path / "out.db").items()} == {
        i: w["value"] for i, w in expected.items()}
    stored = ti.state.SQLite(tmp_path / "state.db").load()
    assert stored is not None and stored.offsets["jsonlines"]["line"] == 200


async def test_csv_resumes_at_the_stored_offset(tmp_path: Path) -> None:
    rows = stream(120, seed=6)
    path = tmp_path / "in.csv"

    def csv_lines(part: list[dict[str, Any]]) -> str:
        return "".join(f"{r['id']},{r['user']},{r['amount']},{r['ts']}\n" for r in part)

    path.write_text("id,user,amount,ts\n" + csv_lines(rows[:70]))

    def build(src: ti.Source) -> ti.Pipeline:
        win = ti.windows.tumbling(SIZE, key=lambda p: p["user"],
                                  reduce=lambda acc, p: acc + float(p["amount"]), initial=0.0,
                                  max_delay=DELAY, name="spend")
        return ti.Pipeline(src, win, sink=ti.sinks.SQLite(tmp_path / "out.db", "spend"),
                           dead_letter=ti.sinks.Memory(), checkpoint_interval=0.05,
                           state=ti.state.SQLite(tmp_path / "state.db"))

    src = ti.sources.CSV(path, time_field="ts", follow=True, poll_interval=0.01)
    await run_until_read_then_stop(build(src), "spend", 70)
    with path.open("a") as f:
        f.write(csv_lines(rows[70:]))
    report = await build(ti.sources.CSV(path, time_field="ts")).run()
    assert report.received == 50  # neither the header nor the first 70 rows again
    expected, _late = reference(rows)
    assert table(tmp_path / "out.db") == expected


async def test_a_cut_a_stage_holds_back_is_skipped_not_a_stall(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class HoldAll:
        """Holds every event until its input ends (a custom stage's buffer)."""

        name = "hold"

        async def run(self, inbox: ti.stages.Inbox, outbox: ti.stages.Outbox) -> None:
            held: list[ti.Event] = []
            async for events in inbox:
                held.extend(events)
                if len(held) >= 40:
                    await holding.wait()  # a checkpoint meanwhile cannot reach its cut
            await outbox.send(held)

    holding = anyio.Event()
    rows = [{"id": i, "user": "u", "amount": 1, "ts": float(i)} for i in range(40)]
    path = write_lines(tmp_path / "in.jsonl", rows)
    pipeline = ti.Pipeline(
        ti.sources.JsonLines(path, time_field="ts"), HoldAll(),
        ti.windows.tumbling(SIZE, key=lambda p: p["user"], agg=ti.agg.count(), name="w"),
        sink=(sink := ti.sinks.Memory()), state=ti.state.SQLite(tmp_path / "state.db"),
        checkpoint_interval=0.05, commit_timeout=0.1,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(pipeline.run)
        await wait_for(lambda: "checkpoint skipped" in caplog.text)
        holding.set()
    assert sorted(e.payload["count"] for e in sink.events) == [10, 10, 10, 10]
    stored = ti.state.SQLite(tmp_path / "state.db").load()
    assert stored is not None and stored.offsets["jsonlines"]["line"] == 40


async def test_a_serving_pipeline_keeps_its_windows_across_a_restart(tmp_path: Path) -> None:
    def build(sink: ti.Sink) -> ti.Pipeline:
        win = ti.windows.tumbling(SIZE, key=lambda p: p["user"], agg=ti.agg.sum("amount"),
                                  name="w")
        return ti.Pipeline(ti.sources.from_iterable([]), win, sink=sink,
                           state=ti.state.SQLite(tmp_path / "state.db"))

    first = ti.sinks.Memory()
    async with anyio.create_task_group() as tg:
        handle = await tg.start(build(first).serve)
        await handle.send_batch([ti.Event(f"e{i}", {"user": "a", "amount": i}, event_time=i)
                                 for i in range(1, 4)])
        report = await handle.stop()
    assert first.events == [] and report.in_flight == 0 and report.balanced
    second = ti.sinks.Memory()
    async with anyio.create_task_group() as tg:
        handle = await tg.start(build(second).serve)
        await handle.send(ti.Event("late-enough", {"user": "a", "amount": 10}, event_time=25.0))
        await wait_for(lambda: len(second.events) == 1)
        report = await handle.stop()
    # the window [0, 10) of the first run closed in the second, with its stored sum
    assert [(e.id, e.payload["value"], e.payload["count"]) for e in second.events] == [
        ("w:a:0.0", 6, 3)]
    assert report.balanced


rows_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 9), st.floats(0, 4)),
    min_size=1, max_size=80,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(
    rows=rows_strategy,
    stop_after=st.integers(0, 80),
    shape=st.sampled_from(["tumbling", "sliding", "session"]),
    max_delay=st.sampled_from([0.0, 1.0, 3.0]),
    max_batch=st.sampled_from([1, 5, 64]),
)
def test_a_stop_anywhere_then_a_restart_equals_one_uninterrupted_run(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, int, float]],
    stop_after: int, shape: str, max_delay: float, max_batch: int,
) -> None:
    """Random streams with bounded disorder, stopped after a random event and resumed
    from the state store: the results and the late count are the uninterrupted run's."""
    events = [ti.Event(f"e{i}", {"user": u, "amount": a}, event_time=i * 0.7 - back)
              for i, (u, a, back) in enumerate(rows)]

    def window() -> Any:
        common: dict[str, Any] = {"key": lambda p: p["user"], "agg": ti.agg.sum("amount"),
                                  "max_delay": max_delay, "name": "w"}
        if shape == "tumbling":
            return ti.windows.tumbling(3.0, **common)
        if shape == "sliding":
            return ti.windows.sliding(3.0, 1.5, **common)
        return ti.windows.session(1.0, **common)

    whole = ti.sinks.Memory()
    reference_report = trio.run(ti.Pipeline(ti.sources.from_iterable(events), window(),
                                            sink=whole, dead_letter=ti.sinks.Memory(),
                                            max_batch=max_batch).run)
    store = tmp_path_factory.mktemp("state") / "state.db"
    seen = 0

    def count_then_stop(p: Any) -> Any:
        nonlocal seen
        seen += 1
        if seen == stop_after:
            first.request_stop()  # the read under way goes on; no more reads
        return p

    sinks = [ti.sinks.Memory(), ti.sinks.Memory()]
    reports = []
    for sink in sinks:
        first = ti.Pipeline(ti.sources.from_iterable(events), ti.map(count_then_stop),
                            window(), sink=sink, dead_letter=ti.sinks.Memory(),
                            max_batch=max_batch, state=ti.state.SQLite(store))
        reports.append(trio.run(first.run))
    got = [(e.id, e.payload) for s in sinks for e in s.events]
    assert sorted(got, key=repr) == sorted(((e.id, e.payload) for e in whole.events), key=repr)
    assert sum(r.nodes["w"].late for r in reports) == reference_report.nodes["w"].late
    assert all(r.balanced and r.in_flight == 0 for r in reports)
