"""The baselines and peers, each a function ``run_x(n, **kw) -> Measurement``.

Every contender applies :data:`benchmarks._workload.STAGES` to the same payloads
and counts the results (a null sink). Input is built before the clock starts;
only the processing is timed, including the event loop's start-up (about a
millisecond, the same for every async contender). The trio_ingest contenders
live in :mod:`benchmarks._ingest`; :data:`CONTENDERS` names them all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from . import _ingest
from ._measure import Measurement, Skip
from ._tutorial import FlakySink, TutorialStats, run_tutorial, tutorial_flaky_writer
from ._workload import BATCH, CAPACITY, STAGES, Payload, payload_stream, payloads
from .bench_state import run_checkpoint

F1, F2, F3 = STAGES


def run_ceiling(n: int) -> Measurement:
    """The ceiling: the three functions applied in a plain Python loop, results counted."""
    data = payloads(n)
    start = time.perf_counter()
    count = 0
    for payload in data:
        F3(F2(F1(payload)))
        count += 1
    return {"elapsed": time.perf_counter() - start, "count": count}


def run_ceiling_reading(n: int) -> Measurement:
    """The ceiling with a sink's work: the three functions, then ``id`` and ``payload`` of each
    result read in batches of 256, as a sink reads them, in a plain loop."""
    data = [(str(i), payload) for i, payload in enumerate(payloads(n))]
    start = time.perf_counter()
    seen = 0
    for lo in range(0, n, BATCH):
        out = [(ident, F3(F2(F1(payload)))) for ident, payload in data[lo : lo + BATCH]]
        for ident, payload in out:
            if ident and payload:
                seen += 1
    assert seen == n
    return {"elapsed": time.perf_counter() - start, "count": seen}


def run_trio_per_event(n: int) -> Measurement:
    """Raw Trio: producer -> 3 stages -> counter over memory channels, one event per send."""
    import trio

    data = payloads(n)
    count = 0

    async def produce(send_channel: trio.MemorySendChannel[Payload]) -> None:
        with send_channel:
            for payload in data:
                await send_channel.send(payload)

    async def stage(
        fn: Callable[[Payload], Payload],
        receive_channel: trio.MemoryReceiveChannel[Payload],
        send_channel: trio.MemorySendChannel[Payload],
    ) -> None:
        with receive_channel, send_channel:
            async for payload in receive_channel:
                await send_channel.send(fn(payload))

    async def consume(receive_channel: trio.MemoryReceiveChannel[Payload]) -> None:
        nonlocal count
        with receive_channel:
            async for _ in receive_channel:
                count += 1

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            send_channel, receive_channel = trio.open_memory_channel[Payload](CAPACITY)
            nursery.start_soon(produce, send_channel)
            for fn in STAGES:
                next_send, next_receive = trio.open_memory_channel[Payload](CAPACITY)
                nursery.start_soon(stage, fn, receive_channel, next_send)
                receive_channel = next_receive
            nursery.start_soon(consume, receive_channel)

    start = time.perf_counter()
    trio.run(main)
    return {"elapsed": time.perf_counter() - start, "count": count}


def run_trio_batched(n: int, batch: int = BATCH) -> Measurement:
    """Raw Trio: the same chain carrying lists of ``batch`` events per send."""
    import trio

    data = payloads(n)
    count = 0
    # Hold about CAPACITY events per channel, like the per-event chain.
    buffer = max(1, CAPACITY // batch)

    async def produce(send_channel: trio.MemorySendChannel[list[Payload]]) -> None:
        with send_channel:
            for i in range(0, len(data), batch):
                await send_channel.send(data[i : i + batch])

    async def stage(
        fn: Callable[[Payload], Payload],
        receive_channel: trio.MemoryReceiveChannel[list[Payload]],
        send_channel: trio.MemorySendChannel[list[Payload]],
    ) -> None:
        with receive_channel, send_channel:
            async for items in receive_channel:
                await send_channel.send([fn(payload) for payload in items])

    async def consume(receive_channel: trio.MemoryReceiveChannel[list[Payload]]) -> None:
        nonlocal count
        with receive_channel:
            async for items in receive_channel:
                count += len(items)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            send_channel, receive_channel = trio.open_memory_channel[list[Payload]](buffer)
            nursery.start_soon(produce, send_channel)
            for fn in STAGES:
                next_send, next_receive = trio.open_memory_channel[list[Payload]](buffer)
                nursery.start_soon(stage, fn, receive_channel, next_send)
                receive_channel = next_receive
            nursery.start_soon(consume, receive_channel)

    start = time.perf_counter()
    trio.run(main)
    return {"elapsed": time.perf_counter() - start, "count": count}


_END: Any = object()


def run_asyncio_queue(n: int) -> Measurement:
    """asyncio: producer -> 3 stages -> counter over ``asyncio.Queue``s, one event per put."""
    data = payloads(n)
    count = 0

    async def stage(
        fn: Callable[[Payload], Payload], inbox: asyncio.Queue[Any], outbox: asyncio.Queue[Any]
    ) -> None:
        while (payload := await inbox.get()) is not _END:
            await outbox.put(fn(payload))
        await outbox.put(_END)

    async def produce(outbox: asyncio.Queue[Any]) -> None:
        for payload in data:
            await outbox.put(payload)
        await outbox.put(_END)

    async def main() -> None:
        nonlocal count
        queues: list[asyncio.Queue[Any]] = [asyncio.Queue(CAPACITY) for _ in range(4)]
        async with asyncio.TaskGroup() as group:
            group.create_task(produce(queues[0]))
            for fn, inbox, outbox in zip(STAGES, queues, queues[1:], strict=False):
                group.create_task(stage(fn, inbox, outbox))
            while await queues[-1].get() is not _END:
                count += 1

    start = time.perf_counter()
    asyncio.run(main())
    return {"elapsed": time.perf_counter() - start, "count": count}


def run_tutorial_design(n: int) -> Measurement:
    """The tutorial design (queue + one task per event + Semaphore(4)) running the 3 maps."""
    data = payloads(n)
    results = 0

    async def work(payload: Payload) -> None:
        nonlocal results
        F3(F2(F1(payload)))
        results += 1

    async def main() -> Measurement:
        loop = asyncio.get_running_loop()
        stats = await run_tutorial(data, work, loop_time=loop.time)
        return {
            "join_fraction": (stats.processed_at_join or 0) / n if n else 1.0,
            "peak_pending_tasks": stats.peak_pending_tasks,
        }

    start = time.perf_counter()
    extra = asyncio.run(main())
    return {"elapsed": time.perf_counter() - start, "count": results, **extra}


def run_slurry(n: int) -> Measurement:
    """slurry (Trio): Map sections with the 3 functions, results read from a tap."""
    try:
        import trio
        from slurry import Pipeline  # type: ignore[import-untyped]
        from slurry.sections import Map  # type: ignore[import-untyped]
    except ImportError as error:
        raise Skip(f"slurry not importable: {error}") from error

    data = payloads(n)
    count = 0

    async def source() -> Any:
        for payload in data:
            yield payload

    async def main() -> None:
        nonlocal count
        async with Pipeline.create(Map(F1, source()), Map(F2), Map(F3)) as pipeline:
            with pipeline.tap() as tap:
                async for _ in tap:
                    count += 1

    start = time.perf_counter()
    trio.run(main)
    return {"elapsed": time.perf_counter() - start, "count": count}


def run_aiostream(n: int) -> Measurement:
    """aiostream (asyncio): ``iterate | map | map | map``, results counted."""
    try:
        from aiostream import pipe, stream
    except ImportError as error:
        raise Skip(f"aiostream not importable: {error}") from error

    data = payloads(n)
    count = 0

    async def main() -> None:
        nonlocal count
        # aiostream types map() for async-or-sync callables taking *args; ours take one payload.
        maps = [pipe.map(fn) for fn in STAGES]  # type: ignore[arg-type]
        chain = stream.iterate(data) | maps[0] | maps[1] | maps[2]
        async with chain.stream() as results:
            async for _ in results:
                count += 1

    start = time.perf_counter()
    asyncio.run(main())
    return {"elapsed": time.perf_counter() - start, "count": count}


def run_bytewax(n: int, batch: int = BATCH) -> Measurement:
    """bytewax (Rust dataflow, one worker): source batches of ``batch``, 3 maps, counting sink."""
    try:
        import bytewax.operators as op
        from bytewax.dataflow import Dataflow
        from bytewax.outputs import DynamicSink, StatelessSinkPartition
        from bytewax.testing import TestingSource, run_main
    except ImportError as error:
        raise Skip(f"bytewax not importable: {error}") from error

    counter = [0]

    class _Partition(StatelessSinkPartition[Payload]):
        def write_batch(self, items: list[Payload]) -> None:
            counter[0] += len(items)

    class _Counter(DynamicSink[Payload]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
            return _Partition()

    flow = Dataflow("bench")
    stream = op.input("source", flow, TestingSource(payloads(n), batch_size=batch))
    for fn in STAGES:
        stream = op.map(fn.__name__, stream, fn)
    op.output("count", stream, _Counter())
    start = time.perf_counter()
    run_main(flow)  # type: ignore[no-untyped-call]
    return {"elapsed": time.perf_counter() - start, "count": counter[0]}


def run_tutorial_slow_sink(n: int) -> Measurement:
    """The tutorial design fed by a generator, each per-event task yielding once (a slow sink).

    Measures its peak RSS: ``task_done()`` runs before the work, so tasks accumulate.
    """
    written = 0

    async def work(payload: Payload) -> None:
        nonlocal written
        F3(F2(F1(payload)))
        await asyncio.sleep(0)
        written += 1

    async def main() -> Measurement:
        loop = asyncio.get_running_loop()
        stats = await run_tutorial(payload_stream(n), work, loop_time=loop.time)
        return {
            "join_fraction": (stats.processed_at_join or 0) / n if n else 1.0,
            "peak_pending_tasks": stats.peak_pending_tasks,
        }

    start = time.perf_counter()
    extra = asyncio.run(main())
    return {"elapsed": time.perf_counter() - start, "count": written, **extra}


def run_tutorial_flaky(n: int, seed: int = 1, time_box: float = 30.0) -> Measurement:
    """The tutorial design writing one event per call to a flaky sink, 4 at a time, for at most
    ``time_box`` seconds: goodput and losses (dropped after 3 retries, pending at join)."""
    dropped: list[int] = []
    sink = FlakySink(seed=seed, sleep=asyncio.sleep)

    async def work(payload: Payload) -> None:
        await tutorial_flaky_writer(sink, dropped, payload)

    stats = TutorialStats()

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(time_box):
                await run_tutorial(payload_stream(n), work, loop_time=loop.time, stats=stats)
        except TimeoutError:
            return False
        return True

    start = time.perf_counter()
    finished = asyncio.run(main())
    wall = time.perf_counter() - start
    delivered = len(sink.written)
    at_join = stats.processed_at_join
    return {
        # A stopped run's goodput is over the time box, not the time spent cancelling after it.
        "elapsed": wall if finished else min(wall, time_box),
        "wall": wall,
        "count": delivered,
        "events": n,
        "finished": finished,
        "delivered": delivered,
        "dropped": len(dropped),
        "duplicates": sink.duplicates,
        "sink_calls": sink.calls,
        "sink_failures": sink.failures,
        "spawned": stats.spawned,
        "peak_pending_tasks": stats.peak_pending_tasks,
        "processed_at_join": at_join,
        "join_fraction": at_join / n if at_join is not None and n else None,
        "joined_after": stats.joined_after,
    }


def run_sqlite_plain(n: int, commit_every: int = BATCH, synchronous: str = "FULL") -> Measurement:
    """Plain ``sqlite3`` into a fresh WAL file: encode and INSERT OR IGNORE with ``executemany``.

    The same columns and pragmas as trio_ingest's SQLite sink (id, key, event_time,
    payload JSON, ingested_at; WAL, ``synchronous``); one transaction per
    ``commit_every`` rows (0: one for all). JSON encoding is timed, as in the sink.
    """
    import json
    import sqlite3
    import tempfile
    from pathlib import Path

    data = payloads(n)
    ids = [str(i) for i in range(n)]
    created = time.time()
    insert = (
        "INSERT OR IGNORE INTO events (id, key, event_time, payload, ingested_at) "
        "VALUES (?, ?, ?, ?, ?)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as directory:
        connection = sqlite3.connect(Path(directory) / "plain.sqlite", isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL").fetchone()
            connection.execute(f"PRAGMA synchronous={synchronous}")
            connection.execute(
                "CREATE TABLE events (id TEXT PRIMARY KEY NOT NULL, key, event_time REAL, "
                "payload TEXT, ingested_at REAL)"
            )
            step = commit_every or n or 1
            dumps = json.dumps
            start = time.perf_counter()
            for i in range(0, n, step):
                now = time.time()
                rows = [
                    (ids[j], None, created, dumps(data[j]), now) for j in range(i, min(n, i + step))
                ]
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(insert, rows)
                connection.execute("COMMIT")
            elapsed = time.perf_counter() - start
            (count,) = connection.execute("SELECT count(*) FROM events").fetchone()
            journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            connection.close()
    return {"elapsed": elapsed, "count": count, "journal_mode": journal}


CONTENDERS: dict[str, Callable[..., Measurement]] = {
    "ceiling": run_ceiling,
    "ceiling_reading": run_ceiling_reading,
    "trio_per_event": run_trio_per_event,
    "trio_batched": run_trio_batched,
    "asyncio_queue": run_asyncio_queue,
    "tutorial": run_tutorial_design,
    "slurry": run_slurry,
    "aiostream": run_aiostream,
    "bytewax": run_bytewax,
    "tutorial_slow_sink": run_tutorial_slow_sink,
    "tutorial_flaky": run_tutorial_flaky,
    "sqlite_plain": run_sqlite_plain,
    **_ingest.CONTENDERS,
    "trio_ingest_checkpoint": run_checkpoint,
}
