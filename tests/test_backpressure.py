"""Backpressure: a sink that never completes stops the producer at the edges' capacity."""

from __future__ import annotations

import anyio
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_ingest as ti
from trio_ingest.testing import run_with_mock_clock


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 200),
    max_batch=st.integers(1, 64),
    workers=st.integers(1, 3),
    bursts=st.lists(st.integers(1, 150), min_size=1, max_size=8),
    stage_delay=st.sampled_from([0.0, 0.001, 0.01]),
)
def test_producer_blocks_once_the_edges_are_full(
    capacity: int, max_batch: int, workers: int, bursts: list[int], stage_delay: float
) -> None:
    async def slow(p: int) -> int:
        if stage_delay:
            await anyio.sleep(stage_delay)
        return p

    sink = ti.testing.HangingSink()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable([]),
        ti.map(slow, workers=workers),
        sink=sink,
        capacity=capacity,
        max_batch=max_batch,
    )
    bound = pipeline.memory_bound()

    async def main() -> None:
        sent = 0
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(pipeline.serve)
            blocked = False
            in_hand = 0  # the burst a blocked send_batch still holds (the caller's memory)
            for n in bursts:
                in_hand = n
                with trio.move_on_after(5) as scope:
                    await handle.send_batch(list(range(sent, sent + n)))
                if scope.cancelled_caught:
                    blocked = True
                    break
                sent += n
            live = handle.report()
            for edge in live.edges.values():
                assert edge.peak_depth <= edge.capacity, edge
            if blocked:
                assert live.received <= bound + in_hand
                first = next(e for name, e in live.edges.items() if name.endswith("->slow"))
                # blocked because the chunk it waits with does not fit (chunks go in whole)
                assert first.capacity - first.depth < min(in_hand, first.capacity)
                assert first.blocked_seconds > 0
            else:
                assert sum(bursts) <= bound
            report = await handle.stop(timeout=1)
            assert report.delivered == 0 and report.in_flight == report.received
            assert report.balanced

    run_with_mock_clock(main)
