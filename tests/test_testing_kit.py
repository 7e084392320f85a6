"""The public test kit (``trio_ingest.testing``): virtual time, faults, the oracle, crashes."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trio_ingest as ti
from trio_ingest.testing import (
    MALFORMED,
    FaultySource,
    Oracle,
    OutageSink,
    PoisonSink,
    SlowSink,
    crash_until_done,
    memory_ids,
    run_with_mock_clock,
    sqlite_ids,
)

RETRY = ti.RetryPolicy(
    max_attempts=10_000, backoff=ti.ExponentialBackoff(initial=0.5, max_delay=5.0)
)


def _events(n: int) -> list[ti.Event]:
    return [ti.Event(f"e{i}", {"i": i}) for i in range(n)]


# -- virtual time ----------------------------------------------------------------------


def test_run_with_mock_clock_runs_a_pipeline_through_a_long_outage_instantly() -> None:
    store, dead = ti.sinks.Memory(idempotent=True), ti.sinks.Memory()
    sink = OutageSink(store, start=0.0, duration=600.0)
    clock = trio.testing.MockClock(autojump_threshold=0)
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(_events(200)), sink=sink, dead_letter=dead, retry=RETRY
    )
    report = run_with_mock_clock(pipeline, clock=clock)
    assert report.completed and report.delivered == 200
    assert sink.failures > 10 and clock.current_time() >= 600.0  # ten virtual minutes
    Oracle(e.id for e in _events(200)).verdict(memory_ids(store), memory_ids(dead), report) \
        .assert_ok()


def test_run_with_mock_clock_runs_an_async_function_with_its_arguments() -> None:
    async def wait(seconds: float, tag: str) -> tuple[str, float]:
        start = trio.current_time()
        await trio.sleep(seconds)
        return tag, trio.current_time() - start

    assert run_with_mock_clock(wait, 3600.0, "hour") == ("hour", 3600.0)


def test_run_with_mock_clock_refuses_what_it_cannot_run() -> None:
    with pytest.raises(TypeError, match="needs a Pipeline"):
        run_with_mock_clock(42)  # type: ignore[arg-type]
    pipeline = ti.Pipeline(ti.sources.from_iterable([1]), sink=ti.sinks.Memory())
    with pytest.raises(TypeError, match="takes no arguments"):
        run_with_mock_clock(pipeline, 1)


# -- fault parts -------------------------------------------------------------------------


def _validate(payload: Any) -> Any:
    if payload == MALFORMED:
        raise ti.PermanentError("malformed record")
    return payload


def test_faulty_source_duplicates_disorder_and_malformed_records_are_all_accounted() -> None:
    events = _events(500)
    source = FaultySource(events, duplicates=0.1, out_of_order=8, malformed=0.05, seed=3)
    store, dead = ti.sinks.Memory(idempotent=True), ti.sinks.Memory()
    pipeline = ti.Pipeline(source, ti.map(_validate), sink=store, dead_letter=dead)
    report = run_with_mock_clock(pipeline)
    ti.testing.assert_accounted(report)
    assert source.duplicated and source.malformed_served
    assert len(source.sequence) == 500 + len(source.duplicated)
    assert source.sequence != sorted(source.sequence, key=lambda x: int(x[1:])), "not shuffled"
    verdict = Oracle(e.id for e in events).verdict(memory_ids(store), memory_ids(dead), report)
    verdict.assert_ok()
    dead_ids = set(memory_ids(dead))
    assert dead_ids == set(source.malformed_served)
    assert source.committed == len(source.sequence)


def test_faulty_source_serves_the_same_stream_for_the_same_seed() -> None:
    async def sequence(seed: int) -> list[str]:
        source = FaultySource(_events(100), duplicates=0.2, out_of_order=5, seed=seed)
        await source.open()
        return source.sequence

    assert trio.run(sequence, 1) == trio.run(sequence, 1) != trio.run(sequence, 2)


def test_poison_sink_dead_letters_exactly_the_chosen_ids() -> None:
    store, dead = ti.sinks.Memory(idempotent=True), ti.sinks.Memory()
    poison = {"e7", "e70", "e123"}
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(_events(300)), sink=PoisonSink(poison, store), dead_letter=dead
    )
    report = run_with_mock_clock(pipeline)
    assert set(memory_ids(dead)) == poison
    assert set(memory_ids(store)) == {f"e{i}" for i in range(300)} - poison
    ti.testing.assert_accounted(report)


def test_flaky_sink_fails_its_first_calls_then_delivers() -> None:
    flaky = ti.testing.FlakySink(fail_first=3, max_batch=1000)
    pipeline = ti.Pipeline(ti.sources.from_iterable(_events(10)), sink=flaky, retry=RETRY)
    report = run_with_mock_clock(pipeline)
    assert [failed for _t, failed in flaky.calls[:4]] == [True, True, True, False]
    assert report.retries == 3 and report.delivered == 10


def test_slow_sink_takes_virtual_time_per_write() -> None:
    slow = SlowSink(delay=2.0, max_batch=10)
    clock = trio.testing.MockClock(autojump_threshold=0)
    pipeline = ti.Pipeline(ti.sources.from_iterable(_events(100)), sink=slow, max_batch=10)
    report = run_with_mock_clock(pipeline, clock=clock)
    assert report.delivered == 100
    assert clock.current_time() >= 2.0 * slow.writes >= 20.0


# -- the oracle ------------------------------------------------------------------------------


def test_the_oracle_names_lost_duplicated_and_unexpected_ids() -> None:
    verdict = Oracle(["a", "b", "c", "d"], filtered=["d"]).verdict(["a", "a", "x"], ["b"])
    assert verdict.lost == {"c"} and verdict.unexpected == {"x"}
    assert verdict.duplicate_rows == 1
    with pytest.raises(AssertionError, match=r"lost 1 id\(s\): 'c'.*duplicate.*unexpected"):
        verdict.assert_ok()
    Oracle(["a", "b"]).verdict(["a"], ["b"]).assert_ok()


def test_assert_accounted_fails_on_a_broken_identity() -> None:
    report = run_with_mock_clock(
        ti.Pipeline(ti.sources.from_iterable(_events(5)), sink=ti.sinks.Memory())
    )
    ti.testing.assert_accounted(report)
    import attrs

    with pytest.raises(AssertionError, match="accounting broken: received 6"):
        ti.testing.assert_accounted(attrs.evolve(report, received=6))


# -- the crash harness -----------------------------------------------------------------------

FACTORY = '''
import os
import trio_ingest as ti

def build():
    return ti.Pipeline(
        ti.sources.JsonLines(os.environ["KIT_INPUT"], checkpoint=os.environ["KIT_CHECKPOINT"],
                             commit_interval=0.01),
        ti.map(lambda p: p),
        sink=ti.sinks.SQLite(os.environ["KIT_DB"], "events", max_batch=20),
        dead_letter=ti.sinks.JsonLines(os.environ["KIT_DEAD"]),
        max_batch=20, capacity=100,
    )
'''


def _crash_job(tmp_path: Path, lines: int) -> tuple[str, dict[str, str], list[str], Path]:
    program = tmp_path / "job.py"
    program.write_text(textwrap.dedent(FACTORY))
    ids = []
    with open(tmp_path / "in.jsonl", "w") as f:
        for i in range(lines):
            if i % 97 == 5:
                f.write('{"id": broken\n')  # dead-lettered as "<path>:<line>"
                ids.append(f"{tmp_path / 'in.jsonl'}:{i + 1}")
            else:
                f.write(json.dumps({"id": f"e{i}", "pad": "x" * 200}) + "\n")
                ids.append(f"e{i}")
    env = dict(os.environ)
    env.update(
        KIT_INPUT=str(tmp_path / "in.jsonl"), KIT_CHECKPOINT=str(tmp_path / "in.ckpt"),
        KIT_DB=str(tmp_path / "out.sqlite"), KIT_DEAD=str(tmp_path / "dead.jsonl"),
    )
    return f"{program}:build", env, ids, tmp_path


def test_crash_harness_kills_at_chosen_points_and_nothing_is_lost(tmp_path: Path) -> None:
    target, env, ids, d = _crash_job(tmp_path, 4_000)
    result = crash_until_done(
        target, inputs=ids, env=env, kill_at=[500, 1_500, 2_500],
        rows=lambda: sqlite_ids(d / "out.sqlite", "events"),
        dead=lambda: ti.testing.dead_letter_ids(d / "dead.jsonl"),
    )
    result.verdict.assert_ok()
    assert result.kills == 3 and result.runs == 4
    assert all(p >= at for p, at in zip(result.progress_at_kills, [500, 1_500, 2_500],
                                         strict=True))
    assert result.last_report["completed"] is True
    assert result.verdict.dead_letters >= 40


def test_crash_harness_random_kills_with_a_seed(tmp_path: Path) -> None:
    target, env, ids, d = _crash_job(tmp_path, 3_000)
    kills: list[int] = []
    result = crash_until_done(
        target, inputs=ids, env=env, kills=2, seed=5, on_kill=kills.append,
        rows=lambda: sqlite_ids(d / "out.sqlite", "events"),
        dead=lambda: ti.testing.dead_letter_ids(d / "dead.jsonl"),
    )
    result.verdict.assert_ok()
    assert kills == [1, 2] and result.runs == 3


def test_crash_harness_reports_a_run_that_fails_by_itself(tmp_path: Path) -> None:
    program = tmp_path / "bad.py"
    program.write_text("def build():\n    raise RuntimeError('factory broke')\n")
    with pytest.raises(RuntimeError, match=r"(?s)exited with status 1.*factory broke"):
        crash_until_done(f"{program}:build", inputs=["a"], rows=list, kills=0)


def test_crash_harness_runs_a_command_of_your_own(tmp_path: Path) -> None:
    out = tmp_path / "ids.txt"
    script = f"open({str(out)!r}, 'w').write('a\\nb\\n')"
    result = crash_until_done(
        [sys.executable, "-c", script], inputs=["a", "b", "c"], kills=0,
        rows=lambda: out.read_text().split(),
    )
    assert result.verdict.lost == {"c"} and result.last_report == {}
