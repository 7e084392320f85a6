"""Per-partition commit watermarks (``Read.partition``): no broker needed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

import trio_ingest as ti
from trio_ingest._acks import AckTracker, finish


def test_lanes_keep_one_watermark_per_partition() -> None:
    root = AckTracker("src")
    a1 = root.lane("a").issue(("a", 1), 2)
    b1 = root.lane("b").issue(("b", 1), 1)
    a2 = root.lane("a").issue(("a", 2), 1)
    plain = root.lane(None).issue(7, 1)
    assert root.lane(None) is root and root.open_reads == 4
    finish([b1, a2])  # b is done; a's second read waits for its first
    assert root.take_committable() == [("b", 1)]
    finish([a1, a1])
    finish([plain])
    assert root.take_committable() == [7, ("a", 1), ("a", 2)]
    assert root.take_committable() == [] and root.open_reads == 0
    assert root.open_tokens() == []


class TwoPartitions(ti.Source):
    """Reads alternate between partitions "slow" and "fast", 10 events each."""

    name = "two"
    read_may_wait = False

    def __init__(self, reads: int) -> None:
        self.reads = reads
        self.n = 0
        self.commits: list[list[Any]] = []

    async def read(self, max_events: int) -> ti.sources.Read | None:
        if self.n == self.reads:
            return None
        part = ("slow", "fast")[self.n % 2]
        self.n += 1
        events = [ti.Event(id=f"{part}-{self.n}-{i}", payload=part) for i in range(10)]
        return ti.sources.Read(events, offset=(part, self.n), partition=part)

    async def commit(self, offsets: Sequence[Any]) -> None:
        self.commits.append(list(offsets))


class HoldSlow(ti.Sink):
    """Writes "fast" events at once; holds "slow" ones until released."""

    def __init__(self) -> None:
        super().__init__(name="hold", workers=4, max_batch=10)  # 3 held, 1 free
        self.release = anyio.Event()
        self.written: list[ti.Event] = []

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        if events[0].payload == "slow":
            await self.release.wait()
        self.written.extend(events)


@pytest.mark.anyio
async def test_a_held_partition_does_not_hold_back_the_others_commits(anyio_backend: str) -> None:
    source = TwoPartitions(reads=6)
    sink = HoldSlow()
    pipeline = ti.Pipeline(source, sink=sink, max_batch=10)
    async with anyio.create_task_group() as tg:
        handle = await tg.start(pipeline.serve)
        with anyio.fail_after(10):
            while sum(e.payload == "fast" for e in sink.written) < 30:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            while ("fast", 6) not in [o for c in source.commits for o in c]:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        committed = [o for c in source.commits for o in c]
        assert all(part == "fast" for part, _ in committed)  # slow reads still in flight
        assert handle.report().in_flight == 30
        sink.release.set()
        report = await handle.stop(5)
    committed = [o for c in source.commits for o in c]
    assert [o for o in committed if o[0] == "slow"] == [("slow", 1), ("slow", 3), ("slow", 5)]
    assert report.delivered == 60 and report.in_flight == 0
