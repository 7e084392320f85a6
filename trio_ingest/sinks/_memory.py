"""In-memory sinks: for tests, demos and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

from .._event import Event
from ._base import Sink

__all__ = ("Memory", "Null")


class Memory(Sink):
    """Keeps what arrives in ``events``, in arrival order.

    With ``idempotent=True`` an id already stored is skipped, as a database
    sink with a unique id would; otherwise every delivery is kept, so tests can
    see redeliveries.
    """

    name = "memory"

    def __init__(self, *, idempotent: bool = False, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.idempotent = idempotent
        self.events: list[Event] = []
        self.ids: set[str] = set()
        self.writes = 0

    async def write_batch(self, events: Sequence[Event]) -> None:
        self.writes += 1
        if self.idempotent:
            ids = self.ids
            for e in events:
                if e.id not in ids:
                    ids.add(e.id)
                    self.events.append(e)
        else:
            self.events.extend(events)
            self.ids.update(e.id for e in events)

    @property
    def payloads(self) -> list[object]:
        return [e.payload for e in self.events]


class Null(Sink):
    """Discards events (counting them): the fastest sink, for benchmarks."""

    name = "null"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.count = 0

    async def write_batch(self, events: Sequence[object]) -> None:
        self.count += len(events)

    def write_events_needed(self) -> bool:
        return False
