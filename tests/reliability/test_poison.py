"""Scenario 6, poison events: events that always fail go to the dead-letter sink, alone.

A poison event in a stage is retried under the stage's policy and reaches the
dead-letter sink after exactly ``max_attempts`` calls, with its error and the
stage's name; the function is never called again for its neighbours. A
poison event in a sink (a data error: not retried) is isolated by splitting
the batch, so only it is dead-lettered. Every other event lands.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

import trio_ingest as ti
from trio_ingest.testing import check, memory_dead_letters, memory_ids, run_with_mock_clock

from ._support import make_events

MAX_ATTEMPTS = 4


def run_poison(
    events: int = 2_000, *, poison_rate: float = 0.02, seed: int = 0, where: str = "stage"
) -> dict[str, Any]:
    """Run ``events`` with a ``poison_rate`` share of poison ids failing in ``where``."""
    rng = random.Random(seed)
    inputs = make_events(events)
    poison = {e.id for e in inputs if rng.random() < poison_rate}
    calls: Counter[str] = Counter()
    store = ti.sinks.Memory(idempotent=True)
    dead = ti.sinks.Memory()
    stage_policy = ti.RetryPolicy(
        max_attempts=MAX_ATTEMPTS,
        backoff=ti.ExponentialBackoff(initial=0.1, jitter="full"),
        retry_on=(ValueError,),
    )

    def check_payload(payload: dict[str, Any]) -> dict[str, Any]:
        event_id = f"e{payload['i']}"
        calls[event_id] += 1
        if event_id in poison:
            raise ValueError(f"poison payload {event_id}")
        return payload

    stages: list[Any] = []
    sink: ti.Sink = store
    if where == "stage":
        stages.append(ti.map(check_payload, workers=3, retry=stage_policy, name="validate"))
    else:
        sink = ti.testing.PoisonSink(poison, store, name="picky")

    async def main() -> ti.RunReport:
        pipeline = ti.Pipeline(
            ti.sources.from_iterable(inputs),
            *stages,
            sink=sink,
            dead_letter=dead,
            retry=ti.RetryPolicy(max_attempts=MAX_ATTEMPTS, backoff=ti.ConstantBackoff(0.5)),
            capacity=300,
            max_batch=64,
        )
        return await pipeline.run()

    report = run_with_mock_clock(main)
    verdict = check([e.id for e in inputs], memory_ids(store), memory_ids(dead), report)
    verdict.assert_ok()
    assert poison, "no poison drawn: raise the rate"
    assert set(memory_ids(dead)) == poison, "exactly the poison events are dead-lettered"
    assert set(memory_ids(store)) == {e.id for e in inputs} - poison, "every other event lands"
    assert verdict.dead_letter_repeats == 0
    letters = memory_dead_letters(dead)
    if where == "stage":
        for letter in letters:
            assert letter.attempts == MAX_ATTEMPTS, letter
            assert calls[letter.event.id] == MAX_ATTEMPTS, (letter.event.id, calls)
            assert letter.node == "validate" and letter.error_type == "ValueError"
            assert letter.error == f"poison payload {letter.event.id}"
        # a healthy event's function ran once: a neighbour's failure never reruns it
        assert all(calls[e.id] == 1 for e in inputs if e.id not in poison)
    else:
        for letter in letters:
            # a data error is not retried (PermanentError is not in retry_on)
            assert letter.attempts == 1, letter
            assert letter.node == "picky"
            assert letter.error_type == "trio_ingest._errors.PermanentError"
            assert letter.event.id in letter.error
    return {**verdict.figures(), "poison": len(poison), "retries": report.retries}


@pytest.mark.parametrize("where", ["stage", "sink"])
def test_poison_events_are_dead_lettered_alone(where: str) -> None:
    run_poison(2_000, where=where, seed=3)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_poison_in_a_sink_with_dense_poison(seed: int) -> None:
    # many poison events per batch: splitting must still isolate each of them
    run_poison(600, poison_rate=0.2, seed=seed, where="sink")
