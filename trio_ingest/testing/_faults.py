"""Fault-injecting parts: sinks that fail, hang, slow down or go down; a source that misbehaves."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from typing import Any

import anyio

from .._errors import PermanentError, TransientError
from .._event import Event
from ..runtime._report import RunReport
from ..sinks._base import Sink
from ..sinks._memory import Memory
from ..sources._base import Read, Source

__all__ = (
    "FaultySource",
    "FlakySink",
    "HangingSink",
    "OutageSink",
    "PoisonSink",
    "SlowSink",
    "assert_accounted",
)

#: The payload a :class:`FaultySource` puts in place of a malformed record's.
MALFORMED = b"\xff{not json"


class FlakySink(Sink):
    """Wraps ``inner``; fails some writes with ``error`` before they reach it.

    Args:
        inner: The sink that really writes (default: a new ``Memory``).
        fail_first: The first N calls fail.
        failure_rate: Then each call fails with this probability.
        flaky_until: ``failure_rate`` applies only while the loop clock is
            before this time (an intermittent stretch that ends).
        fail_until: Calls fail while the loop clock is before this time
            (an outage that recovers).
        latency: ``(low, high)`` seconds of simulated latency per call.
        seed: Seed of the failure and latency draws.
        error: The exception type raised (``TransientError``: retried).

    Attributes:
        attempts: Loop-clock time of every call, failed or not.
        calls: ``(loop time, failed)`` of every call, in order: the retry
            delays can be read off them.
        failures: How many calls failed.

    Raises:
        ConfigError: An option of :class:`~trio_ingest.Sink` in ``options`` is invalid.
    """

    def __init__(
        self,
        inner: Sink | None = None,
        *,
        fail_first: int = 0,
        failure_rate: float = 0.0,
        fail_until: float | None = None,
        flaky_until: float | None = None,
        latency: tuple[float, float] | None = None,
        seed: int | None = None,
        error: type[Exception] = TransientError,
        **options: object,
    ) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.inner = inner if inner is not None else Memory()
        self.name = self.name or f"flaky_{self.inner.name or 'sink'}"
        self.fail_first = fail_first
        self.failure_rate = failure_rate
        self.fail_until = fail_until
        self.flaky_until = flaky_until
        self.latency = latency
        self.error = error
        self._rng = random.Random(seed)
        self.attempts: list[float] = []
        self.calls: list[tuple[float, bool]] = []
        self.failures = 0

    async def open(self) -> None:
        await self.inner.open()

    async def write_batch(self, events: Sequence[Event]) -> None:
        """Fail this call as configured, else write ``events`` to ``inner``.

        Raises:
            Exception: An instance of ``error`` when the call is chosen to fail.
        """
        now = anyio.current_time()
        self.attempts.append(now)
        if self.latency is not None:
            await anyio.sleep(self._rng.uniform(*self.latency))
        calls = len(self.attempts)
        failing = (
            calls <= self.fail_first
            or (self.fail_until is not None and now < self.fail_until)
            or (
                (self.flaky_until is None or now < self.flaky_until)
                and self._rng.random() < self.failure_rate
            )
        )
        self.calls.append((now, failing))
        if failing:
            self.failures += 1
            raise self.error(f"injected failure #{self.failures} ({len(events)} events)")
        await self.inner.write_batch(events)

    async def flush(self) -> None:
        await self.inner.flush()

    async def aclose(self) -> None:
        await self.inner.aclose()


class SlowSink(Sink):
    """Wraps ``inner``; every write first sleeps ``delay`` seconds (loop clock).

    Under ``MockClock`` the sleep takes no real time: a slow sink for
    backpressure and memory-bound tests.

    Args:
        inner: The sink that really writes (default: a new ``Memory``).
        delay: Seconds per write, or ``(low, high)`` for a uniform draw.
        seed: Seed of the draws.

    Raises:
        ConfigError: An option of :class:`~trio_ingest.Sink` in ``options`` is invalid.
    """

    def __init__(
        self,
        inner: Sink | None = None,
        *,
        delay: float | tuple[float, float] = 0.01,
        seed: int | None = None,
        **options: object,
    ) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.inner = inner if inner is not None else Memory()
        self.name = self.name or f"slow_{self.inner.name or 'sink'}"
        self.delay = delay
        self._rng = random.Random(seed)
        self.writes = 0

    async def open(self) -> None:
        await self.inner.open()

    async def write_batch(self, events: Sequence[Event]) -> None:
        self.writes += 1
        delay = self.delay
        await anyio.sleep(self._rng.uniform(*delay) if isinstance(delay, tuple) else delay)
        await self.inner.write_batch(events)

    async def flush(self) -> None:
        await self.inner.flush()

    async def aclose(self) -> None:
        await self.inner.aclose()


class OutageSink(Sink):
    """Wraps ``inner``; down (every write raises ``TransientError``) for a stretch of time.

    The outage is driven by the loop clock, measured from the moment the sink
    opened: it starts ``start`` seconds after ``open()`` and lasts
    ``duration`` seconds. With ``MockClock`` a five-minute outage takes no
    real time; the retry policy decides whether the pipeline outlasts it.

    Attributes:
        opened_at: Loop time of ``open()``.
        failures: Writes refused during the outage.

    Raises:
        ConfigError: An option of :class:`~trio_ingest.Sink` in ``options`` is invalid.
    """

    def __init__(
        self,
        inner: Sink | None = None,
        *,
        start: float = 0.0,
        duration: float,
        **options: object,
    ) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.inner = inner if inner is not None else Memory()
        self.name = self.name or f"outage_{self.inner.name or 'sink'}"
        self.start = start
        self.duration = duration
        self.opened_at: float | None = None
        self.failures = 0

    async def open(self) -> None:
        self.opened_at = anyio.current_time()
        await self.inner.open()

    def down(self) -> bool:
        """Whether the outage is on now."""
        if self.opened_at is None:
            return False
        since = anyio.current_time() - self.opened_at
        return self.start <= since < self.start + self.duration

    async def write_batch(self, events: Sequence[Event]) -> None:
        """Refuse ``events`` while the outage is on, else write them to ``inner``.

        Raises:
            TransientError: The outage is on.
        """
        if self.down():
            self.failures += 1
            raise TransientError(f"injected outage ({len(events)} events refused)")
        await self.inner.write_batch(events)

    async def flush(self) -> None:
        await self.inner.flush()

    async def aclose(self) -> None:
        await self.inner.aclose()


class FaultySource(Source):
    """Serves ``items`` with faults a real feed has: duplicates, disorder, malformed records.

    The faulty sequence is drawn once from ``seed``, so a rerun (or a restart
    from a committed offset, ``start=``) sees the same stream. The offset of
    a read is the position just past it in that sequence.

    Args:
        items: Events, or payloads (ids ``"<node>:<i>"`` as ``from_iterable``).
        duplicates: Share of events sent a second time, a few positions later.
        out_of_order: Each event may move up to this many positions (0: in order).
        malformed: Share of events whose payload is replaced by :data:`MALFORMED`
            (bytes that are not JSON), id kept: a validating stage should
            dead-letter them.
        malformed_ids: Ids to make malformed, besides the drawn share.
        seed: Seed of the draws.
        max_read: Most events per read.
        start: Position to resume from (a committed offset).

    Attributes:
        sequence: The ids in the order they are served (duplicates included).
        duplicated: Ids served twice.
        malformed_served: Ids whose payload was made malformed.
        committed: The last committed offset.
    """

    def __init__(
        self,
        items: Sequence[Any],
        *,
        duplicates: float = 0.0,
        out_of_order: int = 0,
        malformed: float = 0.0,
        malformed_ids: Collection[str] = (),
        seed: int | None = 0,
        max_read: int = 50,
        start: int = 0,
        name: str | None = None,
    ) -> None:
        if name is not None:
            self.name = name
            self.name_given = True
        else:
            self.name = "faulty"
        self.items = list(items)
        self.duplicates = duplicates
        self.out_of_order = out_of_order
        self.malformed = malformed
        self.malformed_ids = set(malformed_ids)
        self.seed = seed
        self.max_read = max_read
        self.position = start
        self.committed = start
        self.read_may_wait = False
        self._events: list[Event] = []
        self.sequence: list[str] = []
        self.duplicated: list[str] = []
        self.malformed_served: list[str] = []

    async def open(self) -> None:
        rng = random.Random(self.seed)
        events = [
            x if isinstance(x, Event) else Event(f"{self.node}:{i}", x)
            for i, x in enumerate(self.items)
        ]
        bad = set(self.malformed_ids)
        bad.update(e.id for e in events if self.malformed and rng.random() < self.malformed)
        self.malformed_served = [e.id for e in events if e.id in bad]
        events = [e.evolve(payload=MALFORMED) if e.id in bad else e for e in events]
        # disorder: sort by position plus a bounded random shift
        if self.out_of_order:
            shift = self.out_of_order
            keyed = sorted((i + rng.uniform(0, shift + 1), e) for i, e in enumerate(events))
            events = [e for _k, e in keyed]
        if self.duplicates:
            out: list[Event] = []
            pending: list[tuple[int, Event]] = []
            for i, e in enumerate(events):
                out.append(e)
                out.extend(p for due, p in pending if due == i)
                pending = [(due, p) for due, p in pending if due != i]
                if rng.random() < self.duplicates:
                    pending.append((i + rng.randint(1, 5), e))
                    self.duplicated.append(e.id)
            out.extend(p for _due, p in pending)
            events = out
        self._events = events
        self.sequence = [e.id for e in events]

    async def read(self, max_events: int) -> Read | None:
        if self.position >= len(self._events):
            return None
        chunk = self._events[self.position : self.position + min(max_events, self.max_read)]
        self.position += len(chunk)
        return Read(list(chunk), self.position)

    async def commit(self, offsets: Sequence[Any]) -> None:
        self.committed = int(offsets[-1])


class HangingSink(Sink):
    """Never finishes a write (until cancelled): for shutdown-deadline tests.

    Raises:
        ConfigError: An option of :class:`~trio_ingest.Sink` in ``options`` is invalid.
    """

    name = "hanging"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.started = 0

    async def write_batch(self, events: Sequence[Event]) -> None:
        self.started += 1
        await anyio.sleep_forever()


class PoisonSink(Sink):
    """Wraps ``inner``; a batch holding a poison id fails with ``PermanentError``.

    The runtime splits a failing batch to isolate the poison events, so they
    are dead-lettered (never retried) and the rest is written: a sink that
    fails permanently for chosen ids.

    Raises:
        ConfigError: An option of :class:`~trio_ingest.Sink` in ``options`` is invalid.
    """

    def __init__(self, poison: Collection[str], inner: Sink | None = None, **options: object):
        super().__init__(**options)  # type: ignore[arg-type]
        self.poison = set(poison)
        self.inner = inner if inner is not None else Memory()
        self.name = self.name or "poison"

    async def open(self) -> None:
        await self.inner.open()

    async def write_batch(self, events: Sequence[Event]) -> None:
        """Fail a batch that holds a poison id, else write it to ``inner``.

        Raises:
            PermanentError: ``events`` holds a poison id.
        """
        bad = [e.id for e in events if e.id in self.poison]
        if bad:
            raise PermanentError(f"poison event(s) {bad[:3]}")
        await self.inner.write_batch(events)

    async def aclose(self) -> None:
        await self.inner.aclose()


def assert_accounted(report: RunReport) -> None:
    """Fail unless every event is accounted for (the invariant of the run report).

    Raises:
        AssertionError: With the figures.
    """
    if not report.balanced:
        raise AssertionError(
            f"accounting broken: received {report.received} + expanded {report.expanded} != "
            f"delivered {report.delivered} + dead_lettered {report.dead_lettered} + "
            f"filtered {report.filtered} + in_flight {report.in_flight}"
        )
