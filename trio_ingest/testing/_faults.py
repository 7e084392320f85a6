"""Fault-injecting sinks."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

import anyio

from .._errors import PermanentError, TransientError
from .._event import Event
from ..runtime._report import RunReport
from ..sinks._base import Sink
from ..sinks._memory import Memory

__all__ = ("FlakySink", "HangingSink", "PoisonSink", "assert_accounted")


class FlakySink(Sink):
    """Wraps ``inner``; fails some writes with ``error`` before they reach it.

    Args:
        inner: The sink that really writes (default: a new ``Memory``).
        fail_first: The first N calls fail.
        failure_rate: Then each call fails with this probability.
        fail_until: Calls fail while the loop clock is before this time
            (an outage that recovers).
        latency: ``(low, high)`` seconds of simulated latency per call.
        seed: Seed of the failure and latency draws.
        error: The exception type raised (``TransientError``: retried).

    Attributes:
        attempts: Loop-clock time of every call, failed or not.
        failures: How many calls failed.
    """

    def __init__(
        self,
        inner: Sink | None = None,
        *,
        fail_first: int = 0,
        failure_rate: float = 0.0,
        fail_until: float | None = None,
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
        self.latency = latency
        self.error = error
        self._rng = random.Random(seed)
        self.attempts: list[float] = []
        self.failures = 0

    async def open(self) -> None:
        await self.inner.open()

    async def write_batch(self, events: Sequence[Event]) -> None:
        now = anyio.current_time()
        self.attempts.append(now)
        if self.latency is not None:
            await anyio.sleep(self._rng.uniform(*self.latency))
        calls = len(self.attempts)
        failing = (
            calls <= self.fail_first
            or (self.fail_until is not None and now < self.fail_until)
            or self._rng.random() < self.failure_rate
        )
        if failing:
            self.failures += 1
            raise self.error(f"injected failure #{self.failures} ({len(events)} events)")
        await self.inner.write_batch(events)

    async def flush(self) -> None:
        await self.inner.flush()

    async def aclose(self) -> None:
        await self.inner.aclose()


class HangingSink(Sink):
    """Never finishes a write (until cancelled): for shutdown-deadline tests."""

    name = "hanging"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.started = 0

    async def write_batch(self, events: Sequence[Event]) -> None:
        self.started += 1
        await anyio.sleep_forever()


class PoisonSink(Sink):
    """Wraps ``inner``; a batch holding a poison id fails with ``PermanentError``."""

    def __init__(self, poison: Collection[str], inner: Sink | None = None, **options: object):
        super().__init__(**options)  # type: ignore[arg-type]
        self.poison = set(poison)
        self.inner = inner if inner is not None else Memory()
        self.name = self.name or "poison"

    async def open(self) -> None:
        await self.inner.open()

    async def write_batch(self, events: Sequence[Event]) -> None:
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
