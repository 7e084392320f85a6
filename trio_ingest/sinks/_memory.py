"""In-memory sinks: for tests, demos and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._event import DeadLetter, Event
from ._base import Sink, columns

__all__ = ("Memory", "Null")


class Memory(Sink):
    """Keeps what arrives in ``events``, in arrival order.

    With ``idempotent=True`` an id already stored is skipped, as a database
    sink with a unique id would; otherwise every delivery is kept, so tests can
    see redeliveries. As the dead-letter sink it keeps the dead-lettered events
    whose payload is the :class:`~trio_ingest.DeadLetter` record itself (its
    ``to_dict()`` is the dict form the other sinks store); ``dead_letters``
    lists those dicts.

    Raises:
        ConfigError: An option of :class:`~trio_ingest.Sink` in ``options`` is invalid.
    """

    name = "memory"
    write_may_wait = False

    def __init__(self, *, idempotent: bool = False, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.idempotent = idempotent
        self.events: list[Event] = []
        self.ids: set[str] = set()
        self.writes = 0

    async def write_batch(self, events: Sequence[Event]) -> None:
        self.writes += 1
        ids = columns(events).ids
        if self.idempotent:
            stored = self.ids
            for i, ident in enumerate(ids):
                if ident not in stored:
                    stored.add(ident)
                    self.events.append(events[i])
        else:
            self.events.extend(events)
            self.ids.update(ids)

    @property
    def payloads(self) -> list[object]:
        return [e.payload for e in self.events]

    @property
    def dead_letters(self) -> list[dict[str, Any]]:
        """The dict form of every :class:`~trio_ingest.DeadLetter` stored, in arrival order."""
        return [e.payload.to_dict() for e in self.events if isinstance(e.payload, DeadLetter)]


class Null(Sink):
    """Discards events (counting them): the fastest sink, for benchmarks.

    Raises:
        ConfigError: An option of :class:`~trio_ingest.Sink` in ``options`` is invalid.
    """

    name = "null"
    write_may_wait = False

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.count = 0

    async def write_batch(self, events: Sequence[object]) -> None:
        self.count += len(events)

    def write_events_needed(self) -> bool:
        return False
