"""Edges: capacity in events, opportunistic batching, end of stream, backpressure time."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_ingest as ti
from trio_ingest._acks import AckTracker
from trio_ingest._edge import Batch, Edge


def make_batch(n: int, start: int = 0) -> Batch:
    token = AckTracker("t").issue(0, n)
    return Batch.of([ti.Event(id=str(i), payload=i) for i in range(start, start + n)], token)


pytestmark = pytest.mark.anyio


async def wait_until(condition: Callable[[], bool]) -> None:
    while not condition():
        await anyio.lowlevel.checkpoint()


async def test_receive_drains_what_is_ready_up_to_max_batch() -> None:
    edge = Edge("e", 100)
    tx, rx = edge.sender(), edge.receiver()
    for i in range(5):
        edge.send_nowait(make_batch(3, 3 * i))
    got = await edge.receive(max_batch=7)
    assert got.payloads == list(range(7))  # 3 + 3 + 1 split from the third
    got = await edge.receive(max_batch=100)
    assert got.payloads == list(range(7, 15))
    tx.close()
    with pytest.raises(anyio.EndOfStream):
        await edge.receive(10)
    rx.close()


async def test_send_blocks_when_full_and_counts_blocked_time() -> None:
    edge = Edge("e", 4)
    _tx, _rx = edge.sender(), edge.receiver()
    await edge.send(make_batch(3))
    with pytest.raises(anyio.WouldBlock):
        edge.send_nowait(make_batch(2))
    done = anyio.Event()

    async def producer() -> None:
        await edge.send(make_batch(3, 100))  # no room for all 3: nothing goes in yet
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        await wait_until(lambda: edge.statistics().waiting_senders == 1)
        await anyio.sleep(0.05)
        assert edge.depth == 3 and not done.is_set()
        first = await edge.receive(4)
        assert first.payloads == [0, 1, 2]
        await done.wait()
    stats = edge.statistics()
    assert stats.peak_depth == 3 and stats.depth == 3
    assert stats.blocked_seconds >= 0.04


async def test_send_without_receivers_fails() -> None:
    edge = Edge("e", 4)
    edge.sender()
    edge.receiver().close()
    with pytest.raises(anyio.BrokenResourceError):
        await edge.send(make_batch(1))


async def test_cancelled_receive_loses_nothing() -> None:
    edge = Edge("e", 10)
    _tx, _rx = edge.sender(), edge.receiver()
    with anyio.move_on_after(0.01):
        await edge.receive(5)
    edge.send_nowait(make_batch(2))
    assert (await edge.receive(5)).payloads == [0, 1]


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 50),
    max_batch=st.integers(1, 60),
    bursts=st.lists(st.integers(1, 80), min_size=1, max_size=15),
    consumer_delay=st.sampled_from([0.0, 0.0005]),
    backend=st.sampled_from(["trio", "asyncio"]),
)
def test_depth_never_exceeds_capacity_and_nothing_is_lost(
    capacity: int, max_batch: int, bursts: list[int], consumer_delay: float, backend: str
) -> None:
    async def main() -> None:
        edge = Edge("e", capacity)
        tx = edge.sender()
        rx = edge.receiver()
        seen: list[int] = []
        peak = 0

        async def produce() -> None:
            with tx:
                start = 0
                for n in bursts:
                    await edge.send(make_batch(n, start))
                    start += n

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            with rx:
                while True:
                    peak = max(peak, edge.depth)
                    assert edge.depth <= capacity
                    try:
                        b = await edge.receive(max_batch)
                    except anyio.EndOfStream:
                        break
                    assert 1 <= len(b) <= max_batch
                    seen.extend(b.payloads)
                    if consumer_delay:
                        await anyio.sleep(consumer_delay)
        assert seen == list(range(sum(bursts)))
        assert edge.statistics().peak_depth <= capacity
        assert edge.statistics().events_through == sum(bursts)

    anyio.run(main, backend=backend)


async def test_blocked_senders_are_served_in_arrival_order() -> None:
    edge = Edge("e", 2)
    _tx, rx = edge.sender(), edge.receiver()
    edge.send_nowait(make_batch(2))
    order: list[int] = []

    async def producer(k: int) -> None:
        await edge.send(make_batch(1, 100 + k))
        order.append(k)

    async with anyio.create_task_group() as tg:
        for k in range(6):
            tg.start_soon(producer, k)
            await wait_until(lambda k=k: edge.statistics().waiting_senders == k + 1)
        got: list[int] = []
        while len(got) < 8:
            got += (await rx.receive(1)).payloads
    assert order == list(range(6))
    assert got[2:] == [100 + k for k in range(6)]


async def test_a_cancelled_send_has_no_effect() -> None:
    edge = Edge("e", 4)
    _tx, rx = edge.sender(), edge.receiver()
    edge.send_nowait(make_batch(3))
    with anyio.move_on_after(0.01):
        await edge.send(make_batch(2, 10))
    assert edge.depth == 3 and edge.statistics().waiting_senders == 0
    # the room it waited for goes to the next sender, not to a ghost
    await rx.receive(3)
    await edge.send(make_batch(4, 20))
    assert (await rx.receive(10)).payloads == [20, 21, 22, 23]


async def test_a_batch_larger_than_capacity_reports_exactly_what_went_in() -> None:
    from trio_ingest._edge import SendProgress

    edge = Edge("e", 4)
    _tx, rx = edge.sender(), edge.receiver()
    progress = SendProgress()
    with anyio.move_on_after(0.05):
        await edge.send(make_batch(10), progress)
    assert progress.sent == 4 and edge.depth == 4
    assert (await rx.receive(10)).payloads == [0, 1, 2, 3]


async def test_closed_endpoints_refuse_to_operate() -> None:
    edge = Edge("e", 4)
    tx, rx = edge.sender(), edge.receiver()
    tx.close()
    with pytest.raises(anyio.ClosedResourceError):
        await tx.send(make_batch(1))
    with pytest.raises(anyio.ClosedResourceError):
        tx.send_nowait(make_batch(1))
    rx.close()
    with pytest.raises(anyio.ClosedResourceError):
        await rx.receive(1)
