"""Scenario 4, flaky sink: 30% of writes fail for a while, then the sink recovers.

With a policy that allows enough attempts nothing is lost and nothing is
dead-lettered; the waits between attempts, read off Trio's MockClock, are
jittered (full jitter: uniform in [0, cap]) rather than one fixed delay.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import trio_ingest as ti
from trio_ingest.testing import check, memory_ids, run_with_mock_clock

INITIAL = 0.01
MAX_DELAY = 1.0


def run_flaky_sink(
    events: int = 3_000, *, seed: int = 0, failure_rate: float = 0.3, flaky_for: float = 20.0
) -> dict[str, Any]:
    """Run ``events`` through a sink failing ``failure_rate`` of writes for ``flaky_for`` s.

    Returns the figures; raises AssertionError when a promise is broken.
    """
    store = ti.sinks.Memory(idempotent=True)
    dead = ti.sinks.Memory()
    policy = ti.RetryPolicy(
        max_attempts=15,
        backoff=ti.ExponentialBackoff(
            initial=INITIAL, multiplier=2, max_delay=MAX_DELAY, jitter="full"
        ),
    )
    holder: dict[str, Any] = {}

    async def main() -> ti.RunReport:
        start = trio.current_time()
        flaky = ti.testing.FlakySink(
            store, failure_rate=failure_rate, flaky_until=start + flaky_for, seed=seed,
            max_batch=50,
        )
        holder["sink"] = flaky
        # the source spreads the events over twice the flaky stretch, so both halves are seen
        source = ti.sources.synthetic(events, rate=events / (2 * flaky_for), seed=seed, prefix="e")
        pipeline = ti.Pipeline(
            source, sink=flaky, dead_letter=dead, retry=policy, capacity=200, max_batch=50
        )
        return await pipeline.run()

    report = run_with_mock_clock(main)
    flaky: ti.testing.FlakySink = holder["sink"]
    verdict = check(
        [f"e{i}" for i in range(events)], memory_ids(store), memory_ids(dead), report
    )
    verdict.assert_ok()
    assert verdict.dead_letters == 0, "retries were enough: nothing should be dead-lettered"
    assert report.completed and report.delivered == events
    # the waits: a failed call is followed by its retry after the backoff delay
    failed = sum(1 for _t, bad in flaky.calls if bad)
    delays = [
        later - at
        for (at, bad), (later, _) in zip(flaky.calls, flaky.calls[1:], strict=False)
        if bad
    ]
    assert failed > 0 and report.retries == failed
    assert all(0 <= d <= MAX_DELAY + 1e-9 for d in delays), max(delays)
    assert len({round(d, 9) for d in delays}) > len(delays) // 2, "delays are not jittered"
    return {
        **verdict.figures(),
        "writes": len(flaky.calls),
        "failed_writes": failed,
        "retries": report.retries,
        "distinct_delays": len({round(d, 9) for d in delays}),
        "max_delay": max(delays, default=0.0),
        "virtual_seconds": report.elapsed,
    }


def test_flaky_sink_loses_nothing_and_retries_with_jitter() -> None:
    figures = run_flaky_sink(3_000, seed=1)
    assert figures["failed_writes"] > 10  # the failures really happened


def test_flaky_sink_with_several_seeds() -> None:
    for seed in range(2, 6):
        run_flaky_sink(500, seed=seed, flaky_for=5.0)
