"""Scenario 5, sink outage: every write fails for a long stretch, then the sink recovers.

While the sink is down the pipeline must not buffer without end: intake stops
(backpressure) within a bounded time, no edge holds more than its capacity,
and the events inside the pipeline never exceed ``memory_bound()``. When the
sink recovers, every event lands; none is dead-lettered because the policy
outlasts the outage. Trio's MockClock makes the outage take no real time.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import trio_ingest as ti
from trio_ingest.testing import check, memory_ids, run_with_mock_clock

from ._support import make_events

PAUSE_WITHIN = 5.0  # virtual seconds after which intake must have stopped


def run_sink_outage(
    events: int = 5_000,
    *,
    outage: float = 300.0,
    capacity: int = 100,
    max_batch: int = 20,
) -> dict[str, Any]:
    """Run ``events`` into a sink that is down for the first ``outage`` virtual seconds."""
    store = ti.sinks.Memory(idempotent=True)
    dead = ti.sinks.Memory()
    policy = ti.RetryPolicy(
        max_attempts=100_000,
        backoff=ti.ExponentialBackoff(initial=0.05, multiplier=2, max_delay=2.0, jitter="full"),
    )
    samples: list[tuple[float, int, int]] = []  # (t, received, finished)
    out: dict[str, Any] = {}

    async def main() -> ti.RunReport:
        start = trio.current_time()
        sink = ti.testing.OutageSink(store, start=0.0, duration=outage)
        pipeline = ti.Pipeline(
            ti.sources.from_iterable(make_events(events, payload_bytes=64)),
            ti.map(lambda p: p, workers=2, name="relay"),  # a second edge
            sink=sink,
            dead_letter=dead,
            retry=policy,
            capacity=capacity,
            max_batch=max_batch,
        )
        out["bound"] = pipeline.memory_bound()
        out["sink"] = sink

        async def monitor() -> None:
            while True:
                report = pipeline.report()
                if report is not None:
                    finished = report.delivered + report.dead_lettered + report.filtered
                    samples.append((trio.current_time() - start, report.received, finished))
                await trio.sleep(0.25)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(monitor)
            report = await pipeline.run()
            nursery.cancel_scope.cancel()
        return report

    report = run_with_mock_clock(main)
    bound: int = out["bound"]
    verdict = check([f"e{i}" for i in range(events)], memory_ids(store), memory_ids(dead), report)
    verdict.assert_ok()
    assert verdict.dead_letters == 0 and report.completed

    during = [s for s in samples if s[0] < outage]
    assert during, "no sample inside the outage"
    # memory: what was read and not finished never exceeds the documented bound
    held = max(received - finished for _t, received, finished in during)
    assert held <= bound, f"{held} events held during the outage > memory_bound {bound}"
    # backpressure: intake stops, and soon; it stays stopped until the sink recovers
    last = during[-1][1]
    paused_at = next(t for t, received, _f in during if received == last)
    assert paused_at <= PAUSE_WITHIN, f"intake still running {paused_at:.2f}s into the outage"
    assert last <= bound < events, f"intake {last} vs bound {bound}: use more events"
    for name, edge in report.edges.items():
        assert edge.peak_depth <= edge.capacity, (name, edge)
    assert report.blocked_seconds >= outage - PAUSE_WITHIN, report.blocked_seconds
    sink = out["sink"]
    return {
        **verdict.figures(),
        "memory_bound": bound,
        "peak_held": held,
        "intake_paused_after": paused_at,
        "received_during_outage": last,
        "peak_depth": {k: e.peak_depth for k, e in report.edges.items()},
        "blocked_seconds": report.blocked_seconds,
        "failed_writes": sink.failures,
        "virtual_seconds": report.elapsed,
    }


def test_outage_pauses_intake_within_the_bound_and_everything_lands_after() -> None:
    figures = run_sink_outage(5_000)
    assert figures["failed_writes"] > 10


def test_outage_with_tiny_edges() -> None:
    run_sink_outage(500, outage=60.0, capacity=1, max_batch=1)
