"""The tutorial design this project started from, reproduced faithfully to measure it.

One ``asyncio.Queue(maxsize=1000)``; a producer puts events; a consumer takes each
event, spawns one task for it behind ``asyncio.Semaphore(4)`` and calls
``task_done()`` right after spawning, before the work has run; the main task
awaits ``queue.join()``. The queue bound therefore limits nothing: tasks pile up
behind the semaphore, and ``join()`` returns while most of the work is still
pending. This module keeps those flaws on purpose (they are what is measured) and
only adds counters, plus a final wait for the spawned tasks so the run can be timed
to the last event and the work pending at ``join()`` can be counted.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs

from ._workload import Payload

QUEUE_SIZE = 1_000
CONCURRENCY = 4
#: The tutorial retries a failed write 3 times (4 attempts), then logs and drops the event.
RETRIES = 3
#: Its backoff: 0.05 s, 0.1 s, 0.2 s (no jitter, no cap needed for 3 retries).
BACKOFF_INITIAL = 0.05
BACKOFF_MULTIPLIER = 2.0


@attrs.define
class TutorialStats:
    """What one run of the tutorial design did."""

    spawned: int = 0
    processed: int = 0
    peak_pending_tasks: int = 0
    #: Events fully processed when ``join()`` returned (None: it never returned).
    processed_at_join: int | None = None
    #: Seconds from start until ``join()`` returned.
    joined_after: float | None = None


async def run_tutorial(
    source: Iterable[Payload],
    work: Callable[[Payload], Awaitable[None]],
    *,
    loop_time: Callable[[], float],
    stats: TutorialStats | None = None,
    wait_for_tasks: bool = True,
) -> TutorialStats:
    """Run the tutorial's producer/consumer over ``source``, calling ``work`` per event.

    With ``wait_for_tasks`` (not in the tutorial) the spawned tasks are awaited
    after ``join()`` so the work is timed to the end; the count at ``join()`` is kept.
    Pass ``stats`` to keep the counters of a run that gets cancelled.
    """
    stats = TutorialStats() if stats is None else stats
    queue: asyncio.Queue[Payload] = asyncio.Queue(maxsize=QUEUE_SIZE)
    semaphore = asyncio.Semaphore(CONCURRENCY)
    tasks: set[asyncio.Task[None]] = set()
    started = loop_time()

    async def handle(payload: Payload) -> None:
        async with semaphore:
            await work(payload)
        stats.processed += 1

    async def consumer() -> None:
        while True:
            payload = await queue.get()
            task = asyncio.create_task(handle(payload))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            stats.spawned += 1
            stats.peak_pending_tasks = max(stats.peak_pending_tasks, len(tasks))
            queue.task_done()  # the tutorial's flaw: "done" before the work has run

    consumer_task = asyncio.create_task(consumer())
    try:
        for payload in source:
            await queue.put(payload)
        await queue.join()
        stats.processed_at_join = stats.processed
        stats.joined_after = loop_time() - started
        if wait_for_tasks:
            while tasks:
                await asyncio.gather(*tasks)
    finally:
        consumer_task.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(consumer_task, *tasks, return_exceptions=True)
    return stats


@attrs.define
class FlakySink:
    """A sink that takes ``min_delay..max_delay`` seconds per call and fails at ``failure_rate``.

    Failures raise :class:`ConnectionError` after the delay, before anything is written.
    Draws come from one seeded generator, so a run is reproducible up to scheduling order.
    """

    seed: int
    sleep: Callable[[float], Awaitable[Any]]
    min_delay: float = 0.05
    max_delay: float = 0.15
    failure_rate: float = 0.15
    calls: int = 0
    failures: int = 0
    written: set[int] = attrs.Factory(set)
    duplicates: int = 0
    _rng: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    async def write(self, values: list[int]) -> None:
        """Write ``values`` (event numbers) in one call, or raise ``ConnectionError``."""
        self.calls += 1
        delay = self._rng.uniform(self.min_delay, self.max_delay)
        fails = self._rng.random() < self.failure_rate
        await self.sleep(delay)
        if fails:
            self.failures += 1
            raise ConnectionError(f"transient failure on call {self.calls}")
        for value in values:
            if value in self.written:
                self.duplicates += 1
            self.written.add(value)


async def tutorial_flaky_writer(sink: FlakySink, dropped: list[int], payload: Payload) -> None:
    """The tutorial's per-event write: 1 try + 3 retries with exponential backoff, then drop."""
    delay = BACKOFF_INITIAL
    for attempt in range(RETRIES + 1):
        try:
            await sink.write([payload["value"]])
        except ConnectionError:
            if attempt == RETRIES:
                dropped.append(payload["value"])  # the tutorial logs and drops
                return
            await asyncio.sleep(delay)
            delay *= BACKOFF_MULTIPLIER
        else:
            return
