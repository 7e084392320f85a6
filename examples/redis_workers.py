"""Scale out: two workers share a Redis Streams consumer group; each entry is handled once.

A producer pipeline appends events to a stream; two worker pipelines (they
would be two processes or machines; here two tasks of one Trio run) read it
through one consumer group. Redis hands each entry to one worker and keeps it
pending until that worker acknowledges it, which happens only once the sink
wrote it (at-least-once).

Run: ``python examples/redis_workers.py [REDIS_URL] [STREAM]``; needs
``pip install 'trio-ingest[redis]'`` and a Redis server (default
``redis://127.0.0.1:6379``). The stream name defaults to a new unique one.
"""

import sys
import uuid

import trio

import trio_ingest as ti

EVENTS = 2_000


class Store(ti.sinks.Memory):
    """A memory sink that sets ``all_in`` once the stores together hold every event."""

    def __init__(self, stores: list["Store"], all_in: trio.Event, **options) -> None:
        super().__init__(idempotent=True, **options)
        self.stores, self.all_in = stores, all_in
        stores.append(self)

    async def write_batch(self, events) -> None:
        await super().write_batch(events)
        if sum(len(s.events) for s in self.stores) >= EVENTS:
            self.all_in.set()


async def main(url: str, stream: str) -> None:
    producer = ti.Pipeline(
        ti.sources.from_iterable([ti.Event(f"job-{i}", {"n": i}) for i in range(EVENTS)]),
        sink=ti.sinks.RedisStreams(stream, url=url),
    )
    await producer.run()

    stores: list[Store] = []
    all_in = trio.Event()
    for w in range(2):
        Store(stores, all_in, name=f"store{w}")
    workers = [
        ti.Pipeline(
            ti.sources.RedisStreams(stream, "loaders", f"w{w}", url=url, block=0.1),
            ti.map(lambda p: {**p, "done": True}),
            sink=stores[w],
        )
        for w in range(2)
    ]
    async with trio.open_nursery() as nursery:
        for worker in workers:
            nursery.start_soon(worker.run)
        # the stream never ends: stop the workers once everything is delivered
        await all_in.wait()
        for worker in workers:
            worker.request_stop()
    ids = [e.id for s in stores for e in s.events]
    print(
        f"stream={stream} w0={len(stores[0].events)} w1={len(stores[1].events)} "
        f"distinct={len(set(ids))} total={len(ids)}"
    )


if __name__ == "__main__":
    redis_url = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379"
    name = sys.argv[2] if len(sys.argv) > 2 else f"example-{uuid.uuid4().hex[:10]}"
    trio.run(main, redis_url, name)
