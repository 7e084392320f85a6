"""memory_bound() holds against what a blocked pipeline really holds, counted and in RSS."""

from __future__ import annotations

import gc

import psutil
import pytest
import trio
import trio.testing

import trio_ingest as ti
from trio_ingest.testing import run_with_mock_clock

PAYLOAD = 64 * 1024  # bytes per event: large, so RSS is dominated by the events held


def blocked_in_flight(pipeline: ti.Pipeline) -> tuple[int, int]:
    """Feed ``pipeline`` until its intake blocks; return (events in flight, RSS growth)."""
    process = psutil.Process()
    out: list[int] = []

    async def main() -> None:
        gc.collect()
        before = process.memory_info().rss
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(pipeline.serve)
            sent = 0
            while True:
                with trio.move_on_after(5) as scope:  # virtual time: blocked for good
                    await handle.send(bytes(PAYLOAD) + sent.to_bytes(8, "big"))
                if scope.cancelled_caught:
                    break
                sent += 1
            gc.collect()
            out.extend([handle.report().in_flight, process.memory_info().rss - before])
            await handle.stop(timeout=1)

    run_with_mock_clock(main)
    return out[0], out[1]


@pytest.mark.parametrize(
    "holders",
    ["batch stage", "sink max_batch", "buffered sink", "key queues"],
)
def test_a_blocked_pipeline_holds_no_more_than_its_bound(holders: str) -> None:
    stages: list[object] = []
    sink: ti.Sink = ti.testing.HangingSink()
    if holders == "batch stage":
        stages = [ti.batch(400, 1_000.0)]
    elif holders == "sink max_batch":
        sink = ti.testing.HangingSink(max_batch=300, max_wait=1_000.0)
    elif holders == "buffered sink":

        class Buffered(ti.sinks.Memory):
            buffered = True
            flush_every = 500
            flush_interval = 10_000.0

            async def flush(self) -> None:  # a flush that never completes: all stays held
                await trio.sleep_forever()

        stages = [ti.map(lambda p: p)]
        sink = Buffered()
    else:
        stages = [ti.key_by(lambda p: p[-1]), ti.map(_stall, workers=4)]
    pipeline = ti.Pipeline(
        ti.sources.from_iterable([]), *stages, sink=sink, capacity=50, max_batch=10  # type: ignore[arg-type]
    )
    bound = pipeline.memory_bound()
    held, grown = blocked_in_flight(pipeline)
    assert held <= bound
    assert held >= 0.4 * bound  # the bound is not loose either: those places really fill
    assert grown <= bound * PAYLOAD * 1.5 + 16 * 2**20


async def _stall(p: bytes) -> bytes:
    await trio.sleep_forever()
    return p
