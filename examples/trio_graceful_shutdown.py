"""A Trio application with a pipeline inside, stopped gracefully on SIGINT or SIGTERM.

A producer task feeds the pipeline through its handle forever; on the first
signal the app cancels the producer (a cancelled send has no effect), stops
intake, lets what is in flight drain (bounded by a deadline), flushes the sink
and commits, then exits 0. Nothing read is lost:
``received == delivered`` at the end.

Run: ``python examples/trio_graceful_shutdown.py [DB]``, then press Ctrl-C.
"""

import signal
import sys
import tempfile
from pathlib import Path

import trio

import trio_ingest as ti


async def produce(handle: ti.PipelineHandle) -> None:
    n = 0
    while True:
        await handle.send(ti.Event(id=f"tick-{n}", payload={"n": n}))
        n += 1
        if n == 1_000:
            print("ready", flush=True)  # a thousand in: a test may signal us now
        await trio.sleep(0.0005)


async def main(db: Path) -> None:
    pipeline = ti.Pipeline(
        ti.sources.from_iterable([]),
        ti.map(lambda p: {**p, "square": p["n"] ** 2}, workers=2),
        sink=ti.sinks.SQLite(db, "ticks"),
        shutdown_timeout=10.0,
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(pipeline.serve)
            async with trio.open_nursery() as producers:
                producers.start_soon(produce, handle)
                async for signum in signals:
                    print(f"got {signal.Signals(signum).name}: stopping", flush=True)
                    break
                producers.cancel_scope.cancel()  # a cancelled send has no effect
            report = await handle.stop()  # stop intake, drain, flush, commit
    print(
        f"stopped: received={report.received} delivered={report.delivered} "
        f"in_flight={report.in_flight} completed={report.completed}",
        flush=True,
    )


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "t.db")
