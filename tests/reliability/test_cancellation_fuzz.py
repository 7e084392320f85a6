"""Scenario 10, cancellation fuzz: cancel a pipeline anywhere; no event is acked unwritten.

Each seeded run builds a random pipeline (async workers with random delays,
ordered or not, filters, failing stages, regrouping, a slow, flaky, maybe
buffered sink) and cancels it at a random point: a deadline at a random
moment, right after a source read, inside a stage call, inside a sink write
(before it became durable), inside a source commit, or a graceful stop with
a random (often too short) shutdown deadline.

:class:`~._support.RecordingSource` checks each commit at the moment it
happens: every event before the committed offset must be durably in the sink,
dead-lettered or filtered. Then a restart from the committed offset with a
healthy sink must finish the rest: lost = 0, and the report of the cancelled
run still balances.
"""

from __future__ import annotations

import random
from typing import Any

import anyio

import trio_ingest as ti
from trio_ingest.testing import check, run_with_mock_clock

from ._support import Ledger, LedgerSink, RecordingSource, make_events

MODES = ("deadline", "after_read", "in_stage", "in_sink", "in_commit", "graceful")


class _Cancel:
    """Cancels the run's scope when its counter reaches ``at`` (from any callback)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.scope: anyio.CancelScope | None = None
        self.fired = False

    def tick(self, count: int) -> None:
        if count >= self.at and not self.fired and self.scope is not None:
            self.fired = True
            self.scope.cancel()


def _build(
    rng: random.Random,
    seed: int,
    events: list[ti.Event],
    ledger: Ledger,
    start: int,
    *,
    hazards: bool,
    cancel: _Cancel | None,
    mode: str,
    scale: float,
) -> tuple[ti.Pipeline, RecordingSource, LedgerSink]:
    def hook(name: str) -> Any:
        return cancel.tick if cancel is not None and mode == name else None

    source = RecordingSource(
        events,
        ledger,
        start=start,
        seed=seed,
        max_read=rng.randint(1, 40),
        delay=(0.0, 0.005 * scale) if rng.random() < 0.5 else None,
        on_read=hook("after_read"),
    )
    stage_calls = [0]
    stage_hook = hook("in_stage")

    async def slow(payload: dict[str, Any]) -> dict[str, Any]:
        stage_calls[0] += 1
        if stage_hook is not None:
            stage_hook(stage_calls[0])
        await anyio.sleep(rng.uniform(0, 0.01 * scale))
        return payload

    def keep(payload: dict[str, Any]) -> bool:
        if payload["i"] % 7 == 3:
            ledger.filtered.add(f"e{payload['i']}")
            return False
        return True

    def fragile(payload: dict[str, Any]) -> dict[str, Any]:
        if hazards and payload["i"] % 13 == 5:
            raise ValueError(f"cannot take e{payload['i']}")
        return payload

    stages: list[Any] = []
    menu = ["slow", "filter", "fragile", "batch", "sync"]
    for kind in rng.sample(menu, rng.randint(1, len(menu))):
        if kind == "slow":
            stages.append(ti.map(slow, workers=rng.randint(1, 4), ordered=rng.random() < 0.3))
        elif kind == "filter":
            stages.append(ti.filter(keep, workers=rng.choice([1, 2])))
        elif kind == "fragile":
            stages.append(ti.map(fragile))
        elif kind == "batch":
            stages.append(ti.batch(rng.randint(1, 30), 0.01 * scale))
        else:
            stages.append(ti.map(lambda p: p))
    buffered = rng.random() < 0.3
    sink = LedgerSink(
        ledger,
        buffered=buffered,
        latency=(0.0, 0.02 * scale) if (mode == "in_sink" or rng.random() < 0.7) else None,
        failure_rate=rng.choice([0.0, 0.2]) if hazards else 0.0,
        seed=seed,
        on_write=hook("in_sink"),
        workers=1 if buffered else rng.choice([1, 2]),
        max_batch=rng.choice([None, 1, 7]),
    )
    dead = LedgerSink(ledger, dead_letter=True, latency=(0.0, 0.005 * scale), seed=seed + 1)
    pipeline = ti.Pipeline(
        source,
        *stages,
        sink=sink,
        dead_letter=dead,
        retry=ti.RetryPolicy(max_attempts=3, backoff=ti.ConstantBackoff(0.01 * scale)),
        capacity=rng.randint(1, 64),
        max_batch=rng.randint(1, 32),
        shutdown_timeout=rng.choice([0.001, 0.05, 1.0]) * scale + 0.001,
    )
    if mode == "in_commit" and cancel is not None:
        original = source.commit

        async def commit(offsets: Any) -> None:
            cancel.tick(len(source.commits) + 1)
            await original(offsets)

        source.commit = commit  # type: ignore[method-assign]
    return pipeline, source, sink


async def _one_run(seed: int, mode: str, scale: float) -> dict[str, Any]:
    rng = random.Random(seed)
    events = make_events(rng.randint(1, 300))
    ledger = Ledger()
    cancel = _Cancel(rng.randint(1, 12))
    pipeline, source, _sink = _build(
        rng, seed, events, ledger, 0, hazards=True, cancel=cancel, mode=mode, scale=scale
    )
    with anyio.CancelScope() as scope:
        cancel.scope = scope
        if mode == "deadline":
            scope.deadline = anyio.current_time() + rng.uniform(0, 0.3 * scale)
        if mode == "graceful":
            async with anyio.create_task_group() as tg:
                handle = await tg.start(pipeline.serve)
                await anyio.sleep(rng.uniform(0, 0.3 * scale))
                report = await handle.stop()
        else:
            await pipeline.run()
    report = pipeline.report()
    assert report is not None
    where = f"seed {seed} mode {mode}"
    assert not source.violations, f"{where}: {source.violations[:3]}"
    assert report.balanced, f"{where}: cancelled run unbalanced: {report.summary()}"
    committed = source.committed
    for e in events[:committed]:
        assert ledger.finished(e.id), f"{where}: {e.id} acked but not written"
    # restart from the committed offset with a healthy sink: the rest must land
    pipeline2, source2, _sink2 = _build(
        rng, seed, events, ledger, committed, hazards=False, cancel=None, mode="", scale=scale
    )
    report2 = await pipeline2.run()
    assert not source2.violations, f"{where} (restart): {source2.violations[:3]}"
    assert source2.committed == len(events), where
    verdict = check(
        [e.id for e in events],
        list(ledger.durable),  # distinct ids: duplicates are counted below
        list(ledger.dead),
        report2,
        filtered=ledger.filtered,
    )
    assert not verdict.problems(), f"{where}: {verdict.problems()}"
    return {
        "events": len(events),
        "committed_at_cancel": committed,
        "in_flight_at_cancel": report.in_flight,
        "redelivered": sum(c - 1 for c in ledger.durable.values()),
        "cancel_fired": cancel.fired or mode in ("deadline", "graceful"),
    }


def run_cancellation_fuzz(
    runs: int = 120, *, first_seed: int = 0, backend: str = "trio"
) -> dict[str, Any]:
    """``runs`` seeded runs, each cancelled at a random point, then restarted."""
    totals: dict[str, Any] = {"runs": 0, "events": 0, "redelivered": 0, "lost": 0, "by_mode": {}}
    for seed in range(first_seed, first_seed + runs):
        mode = MODES[seed % len(MODES)]
        if backend == "trio":
            figures = run_with_mock_clock(_one_run, seed, mode, 1.0)
        else:
            figures = anyio.run(_one_run, seed, mode, 0.1, backend=backend)
        totals["runs"] += 1
        totals["events"] += figures["events"]
        totals["redelivered"] += figures["redelivered"]
        fired = totals["by_mode"].setdefault(mode, [0, 0])
        fired[0] += 1
        cut = figures["cancel_fired"] and figures["committed_at_cancel"] < figures["events"]
        fired[1] += bool(cut)
    return totals


def test_cancelled_anywhere_no_event_is_acked_before_it_was_written() -> None:
    totals = run_cancellation_fuzz(150)
    # the fuzz really cut runs short in every mode (not only after they had finished)
    for mode, (runs, cut) in totals["by_mode"].items():
        assert cut > 0, (mode, runs, cut)


def test_cancellation_fuzz_on_asyncio() -> None:
    # real time there (no mock clock), so fewer runs, with delays scaled down
    run_cancellation_fuzz(12, first_seed=1_000, backend="asyncio")
