"""The dead-letter budget: the value, its counter, and a run that crosses it."""

from __future__ import annotations

from pathlib import Path

import pytest

import trio_ingest as ti
from trio_ingest._budget import BudgetCounter, DeadLetterBudget, DeadLetterBudgetError, reason_of
from trio_ingest.sources._files import read_checkpoint

# -- the value ------------------------------------------------------------------------


def test_defaults_and_parse() -> None:
    budget = DeadLetterBudget()
    assert (budget.max_ratio, budget.window, budget.min_events, budget.max_consecutive) == (
        0.5, 1000, 10, 100)
    assert DeadLetterBudget.parse("off") is None
    assert DeadLetterBudget.parse("ratio=0.2, consecutive=7") == DeadLetterBudget(
        max_ratio=0.2, max_consecutive=7)
    assert DeadLetterBudget.parse(budget.describe()) == budget


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_ratio": 0}, "'max_ratio' must be a number in (0, 1]: 0"),
        ({"max_ratio": 1.5}, "'max_ratio' must be a number in (0, 1]: 1.5"),
        ({"window": 0}, "'window' must be an int >= 1: 0"),
        ({"max_consecutive": True}, "'max_consecutive' must be an int >= 1: True"),
        ({"window": 5, "min_events": 6}, "'min_events' must be <= 'window' (5): 6"),
    ],
)
def test_validators_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ti.ConfigError) as info:
        DeadLetterBudget(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [("ratio", "KEY=VALUE"), ("speed=3", "KEY=VALUE"), ("window=x", "window must be a number")],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ti.ConfigError, match=message):
        DeadLetterBudget.parse(text)


def test_reason_of_drops_line_numbers_and_details() -> None:
    assert reason_of("MalformedLine", "line 12: bad JSON: Expecting value") == (
        "MalformedLine: bad JSON")
    assert reason_of("builtins.KeyError", "'x'") == "KeyError: 'x'"


# -- the counter ----------------------------------------------------------------------


def test_ratio_over_the_window() -> None:
    counter = BudgetCounter(DeadLetterBudget(max_ratio=0.5, window=100, min_events=10,
                                             max_consecutive=1000))
    counter.admitted(100)
    counter.dead_lettered(["a"] * 50, passed=50)  # exactly half: allowed
    with pytest.raises(DeadLetterBudgetError) as info:
        counter.dead_lettered(["b"], passed=0)
    assert info.value.rule == "ratio"
    assert info.value.reasons[0] == ("a", 50)
    assert "most common reason: a (50x)" in str(info.value)
    assert "--dead-letter-budget" in str(info.value)
    assert "\n" not in str(info.value)


def test_the_window_slides() -> None:
    counter = BudgetCounter(DeadLetterBudget(max_ratio=0.5, window=100, max_consecutive=1000))
    counter.admitted(100)
    counter.dead_lettered(["a"] * 50, passed=50)
    # the next 200 events are clean: the old dead letters leave the window
    for _ in range(20):
        counter.admitted(10)
        counter.delivered(10)
    counter.admitted(10)
    counter.dead_lettered(["a"] * 10)  # 10 of the last ~100: fine
    assert counter.dead_total == 60


def test_min_events_before_the_ratio_is_judged() -> None:
    counter = BudgetCounter(DeadLetterBudget(min_events=10, max_consecutive=1000))
    counter.admitted(5)
    counter.dead_lettered(["a"] * 5)  # 5 of 5, but too few to judge
    counter.admitted(5)
    with pytest.raises(DeadLetterBudgetError):
        counter.dead_lettered(["a"])


def test_consecutive_run_and_what_breaks_it() -> None:
    counter = BudgetCounter(DeadLetterBudget(max_ratio=1, max_consecutive=3))
    counter.admitted(1000)
    counter.dead_lettered(["a"] * 3)
    counter.delivered(1)  # a delivery breaks the run
    counter.dead_lettered(["a"] * 3)
    counter.dead_lettered(["a"] * 5, passed=1)  # a mixed batch breaks it too
    counter.dead_lettered(["a"] * 3)
    with pytest.raises(DeadLetterBudgetError) as info:
        counter.dead_lettered(["a"])
    assert info.value.rule == "consecutive"
    assert "4 dead letters in a row" in str(info.value)


# -- in a run -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_input_that_turns_bad_commits_nothing_past_the_breach(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    rows = [f'{{"id": {i}}}' for i in range(500)] + ["not json"] * 3000
    data.write_text("\n".join(rows) + "\n")
    checkpoint = tmp_path / "in.checkpoint"
    source = ti.sources.JsonLines(data, checkpoint=checkpoint, commit_interval=0)
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    pipeline = ti.Pipeline(source, sink=sink, dead_letter=dead, max_batch=100,
                           dead_letter_budget=ti.DeadLetterBudget(max_ratio=1.0))
    with pytest.raises(ti.DeadLetterBudgetError, match="in a row"):
        await pipeline.run()
    saved = read_checkpoint(checkpoint)
    assert saved is not None
    # reads of 100 lines: the 2nd all-bad read (lines 601-700) crosses 100 in a row
    assert saved["line"] <= 600
    assert len(dead.events) <= 100
    assert len(sink.events) == 500


@pytest.mark.anyio
async def test_a_run_of_bad_input_fails_and_commits_nothing_past_the_breach(
    tmp_path: Path,
) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(f"bad line {i}\n" for i in range(3000)))
    checkpoint = tmp_path / "in.checkpoint"
    source = ti.sources.JsonLines(data, checkpoint=checkpoint, commit_interval=0)
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    pipeline = ti.Pipeline(source, sink=sink, dead_letter=dead, max_batch=100,
                           dead_letter_budget=ti.DeadLetterBudget())
    with pytest.raises(ti.DeadLetterBudgetError) as info:
        await pipeline.run()
    message = str(info.value)
    assert "MalformedLine: bad JSON" in message and "--dead-letter-budget" in message
    report = pipeline.report()
    assert report is not None
    # the first read of 100 bad lines already crosses it: nothing was sent or committed
    assert report.dead_lettered == 0 and dead.events == []
    assert read_checkpoint(checkpoint) is None


@pytest.mark.anyio
async def test_a_stage_failing_on_everything_fails_the_run(tmp_path: Path) -> None:
    def boom(payload: object) -> object:
        raise KeyError("price")

    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    source = ti.sources.from_iterable(range(5000))
    pipeline = ti.Pipeline(source, ti.map(boom), sink=sink, dead_letter=dead,
                           dead_letter_budget=ti.DeadLetterBudget(max_ratio=1.0))
    with pytest.raises(ti.DeadLetterBudgetError, match="in a row") as info:
        await pipeline.run()
    assert "KeyError: 'price'" in str(info.value)
    assert len(dead.events) <= 100


@pytest.mark.anyio
async def test_a_few_bad_lines_pass_within_the_budget(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    rows = [f'{{"id": {i}}}' if i % 7 else "oops" for i in range(5000)]
    data.write_text("\n".join(rows) + "\n")
    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    report = await ti.Pipeline(ti.sources.JsonLines(data), sink=sink, dead_letter=dead,
                               dead_letter_budget=ti.DeadLetterBudget()).run()
    ti.testing.assert_accounted(report)
    assert report.completed
    assert report.dead_lettered == len([r for r in rows if r == "oops"])
    assert report.delivered + report.dead_lettered == 5000


@pytest.mark.anyio
async def test_alternate_failures_in_a_fused_chain_are_not_a_run() -> None:
    # a slow sink lags far behind the stage: the run must be judged by what the stage passed
    def odd_only(x: int) -> int:
        if x % 2 == 0:
            raise ValueError("even")
        return x

    sink, dead = ti.sinks.Memory(), ti.sinks.Memory()
    report = await ti.Pipeline(
        ti.sources.from_iterable(range(4000)), ti.map(odd_only), ti.map(lambda x: x),
        sink=sink, dead_letter=dead, capacity=5000,
        dead_letter_budget=ti.DeadLetterBudget(max_ratio=0.6, max_consecutive=5),
    ).run()
    assert report.completed and report.dead_lettered == 2000
