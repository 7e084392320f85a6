"""Instruments shared by the scenarios: a ledger of finished events, and the parts that feed it.

The ledger is the ground truth the runtime is checked against: a sink adds
an id to it only once the write is *durable* (for a buffered sink: once
``flush`` returned), the dead-letter sink when it stored the record, a filter
when it dropped the event. :class:`RecordingSource` looks at the ledger at the
moment of every ``commit`` and records a violation if the committed offset
passes an event that is not finished: the at-least-once promise, checked
where it can break.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import anyio

import trio_ingest as ti


class Ledger:
    """Which events are finished, and how many times each reached a sink."""

    def __init__(self) -> None:
        self.durable: Counter[str] = Counter()  # id -> durable writes
        self.dead: Counter[str] = Counter()  # id -> dead-letter records
        self.filtered: set[str] = set()
        self.attempts: dict[str, int] = {}  # id -> attempts of its dead letter

    def finished(self, event_id: str) -> bool:
        return event_id in self.durable or event_id in self.dead or event_id in self.filtered


class RecordingSource(ti.Source):
    """Serves ``events`` in reads of random sizes and checks every commit against the ledger.

    The offset of a read is the index just past its last event, so a restart
    resumes with ``RecordingSource(events, start=committed)``.

    Attributes:
        commits: Every committed offset, in order.
        violations: One line per commit that passed an unfinished event.
        reads: ``(offset, ids)`` of every read, in order.
    """

    def __init__(
        self,
        events: Sequence[ti.Event],
        ledger: Ledger,
        *,
        start: int = 0,
        seed: int = 0,
        max_read: int = 20,
        delay: tuple[float, float] | None = None,
        name: str = "recording",
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.name_given = True
        self.events = list(events)
        self.ledger = ledger
        self.position = start
        self.start = start
        self.committed = start
        self.commits: list[int] = []
        self.violations: list[str] = []
        self.reads: list[tuple[int, list[str]]] = []
        self._checked = start
        self._rng = random.Random(seed)
        self._max_read = max_read
        self._delay = delay
        self._on_read = on_read

    async def read(self, max_events: int) -> ti.Read | None:
        if self._delay is not None:
            await anyio.sleep(self._rng.uniform(*self._delay))
        if self.position >= len(self.events):
            return None
        k = self._rng.randint(1, max(1, min(max_events, self._max_read)))
        chunk = self.events[self.position : self.position + k]
        self.position += len(chunk)
        self.reads.append((self.position, [e.id for e in chunk]))
        if self._on_read is not None:
            self._on_read(len(self.reads))
        return ti.Read(chunk, self.position)

    async def commit(self, offsets: Sequence[Any]) -> None:
        offset = int(offsets[-1])
        if offset < self.committed:
            self.violations.append(f"commit went backwards: {self.committed} -> {offset}")
        # every event before the offset must be finished *now*
        for i in range(self._checked, offset):
            event_id = self.events[i].id
            if not self.ledger.finished(event_id):
                self.violations.append(
                    f"commit of offset {offset} passed unfinished event {event_id!r} (index {i})"
                )
                break
        self._checked = max(self._checked, offset)
        self.committed = offset
        self.commits.append(offset)

    def unfinished(self) -> list[str]:
        """Ids read so far that are not finished."""
        return [
            e.id
            for e in self.events[self.start : self.position]
            if not self.ledger.finished(e.id)
        ]


class LedgerSink(ti.Sink):
    """A sink that makes writes durable in the ledger, with latency, failures and cancels.

    Args:
        ledger: Where durable ids go.
        dead_letter: Store into ``ledger.dead`` (a dead-letter sink) instead.
        buffered: Hold writes until ``flush`` (then they become durable).
        latency: ``(low, high)`` seconds of sleep inside every write, before it
            becomes durable: a cancel there must not count as written.
        failure_rate: Each write raises ``TransientError`` with this probability.
        seed: Seed of the draws.
        on_write: Called with the write's number at the start of every write
            (a scenario cancels the run from here: "inside a sink write").
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        dead_letter: bool = False,
        buffered: bool = False,
        latency: tuple[float, float] | None = None,
        failure_rate: float = 0.0,
        seed: int = 0,
        on_write: Callable[[int], None] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.name = self.name or ("ledger_dead" if dead_letter else "ledger")
        self.ledger = ledger
        self.dead_letter = dead_letter
        self.buffered = buffered
        self.flush_every = 50
        self.flush_interval = 0.05
        self.latency = latency
        self.failure_rate = failure_rate
        self.on_write = on_write
        self._rng = random.Random(seed)
        self._buffer: list[ti.Event] = []
        self.writes = 0
        self.failures = 0

    async def write_batch(self, events: Sequence[ti.Event]) -> None:
        self.writes += 1
        if self.on_write is not None:
            self.on_write(self.writes)
        if self.latency is not None:
            await anyio.sleep(self._rng.uniform(*self.latency))
        if self.failure_rate and self._rng.random() < self.failure_rate:
            self.failures += 1
            raise ti.TransientError(f"injected failure of write #{self.writes}")
        if self.buffered:
            self._buffer.extend(events)
        else:
            self._store(events)

    async def flush(self) -> None:
        if self.latency is not None:
            await anyio.sleep(self._rng.uniform(*self.latency))
        buffered, self._buffer = self._buffer, []
        self._store(buffered)

    def _store(self, events: Sequence[ti.Event]) -> None:
        if self.dead_letter:
            for e in events:
                letter = e.payload
                assert isinstance(letter, ti.DeadLetter), e
                self.ledger.dead[e.id] += 1
                self.ledger.attempts[e.id] = letter.attempts
        else:
            self.ledger.durable.update(e.id for e in events)


def make_events(n: int, prefix: str = "e", payload_bytes: int = 0) -> list[ti.Event]:
    """``n`` events with ids ``f"{prefix}{i}"`` and a payload of about ``payload_bytes``."""
    pad = "x" * payload_bytes
    return [ti.Event(id=f"{prefix}{i}", payload={"i": i, "pad": pad}) for i in range(n)]
