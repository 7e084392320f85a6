"""The custom stage protocol: an object with a ``name`` and ``async run(inbox, outbox)``."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from .._event import Event

__all__ = ("CustomStage", "Inbox", "Outbox", "is_custom_stage")


class Inbox(Protocol):
    """What a custom stage reads: ``async for events in inbox`` yields lists of events.

    Iteration ends when every upstream node has finished.
    """

    def __aiter__(self) -> AsyncIterator[list[Event]]: ...


class Outbox(Protocol):
    """Where a custom stage puts what it made of its input.

    Every event the stage receives must leave through exactly one of these
    calls, so that its acknowledgement (and the source offset) can advance:

    - ``await send(events)``: pass events on; each must carry the id of a
      received event (the same event, changed with ``attrs.evolve``);
    - ``await send(children, parent=event)``: events derived from one received
      event (split, explode); an empty list drops it;
    - ``drop(events)``: drop on purpose, counted as filtered;
    - ``await dead_letter(event, error)``: give up on it, with its reason.

    A stage that ends while still holding received events fails the run: the
    runtime never lets an event vanish.
    """

    async def send(self, events: Sequence[Event], *, parent: Event | None = None) -> None: ...

    def drop(self, events: Sequence[Event]) -> None: ...

    async def dead_letter(self, event: Event, error: BaseException) -> None: ...


@runtime_checkable
class CustomStage(Protocol):
    """A user-written stage. The runtime runs ``run`` once per worker task::

    class Deduplicate:
        name = "dedupe"

        def __init__(self):
            self.seen = set()

        async def run(self, inbox, outbox):
            async for events in inbox:
                fresh, repeats = [], []
                for e in events:
                    (repeats if e.id in self.seen else fresh).append(e)
                    self.seen.add(e.id)
                outbox.drop(repeats)
                await outbox.send(fresh)
    """

    name: str

    async def run(self, inbox: Inbox, outbox: Outbox) -> None: ...


def is_custom_stage(obj: object) -> bool:
    """Whether ``obj`` follows the custom stage protocol."""
    run = getattr(obj, "run", None)
    return (
        isinstance(getattr(obj, "name", None), str)
        and run is not None
        and inspect.iscoroutinefunction(run)
        and not isinstance(obj, type)
    )
