"""A custom sink: it only knows how to write one batch.

Batching, retries, splitting a failing batch to isolate bad events, dead
letters and acknowledgements live in the runtime. This sink writes each batch
as one file (``<first id>.json``, idempotent: a rewrite replaces it), fails
now and then like a network store (``TransientError``: retried), and refuses
events with no amount (``PermanentError``: the batch is bisected and only the
bad events are dead-lettered).

Run: ``python examples/custom_sink.py [DIR]``
"""

import json
import random
import sys
import tempfile
from pathlib import Path

import anyio
import trio

import trio_ingest as ti


class BatchFileSink(ti.Sink):
    name = "batch_files"

    def __init__(self, directory: Path, **options) -> None:
        super().__init__(**options)
        self.directory = directory
        self._rng = random.Random(1)
        self._limiter = anyio.CapacityLimiter(2)  # blocking I/O: at most two threads

    async def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)  # raise here: fails before data moves

    async def write_batch(self, events) -> None:
        if any("amount" not in e.payload for e in events):
            raise ti.PermanentError("an event has no amount")
        if self._rng.random() < 0.2:
            raise ti.TransientError("store busy, try again")
        body = json.dumps([{"id": e.id, **e.payload} for e in events])
        path = self.directory / f"{events[0].id}.json"
        await anyio.to_thread.run_sync(path.write_text, body, limiter=self._limiter)


def main() -> None:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    payloads = [{"amount": i} if i % 50 != 3 else {"oops": True} for i in range(500)]
    dead = ti.sinks.Memory()
    pipeline = ti.Pipeline(
        ti.sources.from_iterable(payloads),
        sink=BatchFileSink(directory / "out"),
        dead_letter=dead,
        retry=ti.RetryPolicy(max_attempts=10, backoff=ti.ConstantBackoff(0.001)),
        max_batch=50,
    )
    report = trio.run(pipeline.run)
    stored = sum(len(json.loads(p.read_text())) for p in (directory / "out").glob("*.json"))
    print(
        f"delivered={report.delivered} dead_lettered={report.dead_lettered} "
        f"retries={report.retries} stored={stored} balanced={report.balanced}"
    )


if __name__ == "__main__":
    main()
