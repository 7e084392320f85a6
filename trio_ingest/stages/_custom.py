"""The custom stage protocol: an object with a ``name`` and ``async run(inbox, outbox)``."""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, runtime_checkable

from .._acks import AckToken
from .._batch import Batch
from .._edge import SendProgress
from .._errors import IngestError
from .._event import Event
from ._context import StageContext

__all__ = ("CustomStage", "CustomStageAdapter", "Inbox", "Outbox", "as_stage", "is_custom_stage")


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


class CustomStageAdapter:
    """A user's custom stage as an implementation of the stage protocol.

    Its ``work(ctx)`` runs the user's ``run(inbox, outbox)`` on this worker's
    context; acknowledgements follow event ids (see :class:`Outbox`).
    """

    def __init__(self, stage: CustomStage) -> None:
        self.stage = stage
        self.name = stage.name

    async def work(self, ctx: StageContext) -> None:
        held: dict[str, deque[AckToken]] = {}
        box = _Box(ctx, held)
        await self.stage.run(_Inbox(box), _Outbox(box))
        left = sum(len(q) for q in held.values())
        if left:
            raise IngestError(
                f"custom stage {self.name!r} returned holding {left} event(s) it never "
                "sent, dropped or dead-lettered"
            )


def as_stage(obj: Any) -> Any:
    """``obj`` as an implementation of the stage protocol (``work(ctx)``)."""
    return obj if callable(getattr(obj, "work", None)) else CustomStageAdapter(obj)


class _Box:
    """The state one worker's inbox and outbox share: tokens of the events held."""

    __slots__ = ("ctx", "held", "links", "name", "trace")

    def __init__(self, ctx: StageContext, held: dict[str, deque[AckToken]]) -> None:
        self.ctx = ctx
        self.held = held
        self.name = ctx.stats.name
        self.trace: Any = None  # the span of the batch being handled (tracing)
        self.links: tuple[Any, ...] = ()  # its links to the traces merged into it

    def take(self, event_id: str) -> AckToken:
        queue = self.held.get(event_id)
        if not queue:
            raise IngestError(
                f"custom stage {self.name!r} emitted event {event_id!r} that it does not "
                "hold; derived events need send(children, parent=event)"
            )
        token = queue.popleft()
        if not queue:
            del self.held[event_id]
        return token

    def hold(self, event_id: str, token: AckToken) -> None:
        self.held.setdefault(event_id, deque()).appendleft(token)


class _Inbox:
    """``async for events in inbox``: one list per batch received."""

    def __init__(self, box: _Box) -> None:
        self._box = box

    def __aiter__(self) -> AsyncIterator[list[Event]]:
        return self

    async def __anext__(self) -> list[Event]:
        # A plain iterator, not an async generator: nothing to finalise if the
        # stage stops iterating early (PEP 789).
        box = self._box
        batch = await box.ctx.receive()
        if batch is None:
            raise StopAsyncIteration
        events = batch.materialize()
        box.trace = batch.trace  # the outbox continues this batch's trace
        box.links = batch.links
        held = box.held
        for event, token in zip(events, batch.tokens, strict=True):
            queue = held.get(event.id)
            if queue is None:
                queue = held[event.id] = deque()
            queue.append(token)
        stats = box.ctx.stats
        stats.events_in += len(events)
        stats.batches += 1
        return events


class _Outbox:
    """Where a custom stage's events go; see :class:`Outbox`."""

    def __init__(self, box: _Box) -> None:
        self._box = box

    async def send(self, events: Sequence[Event], *, parent: Event | None = None) -> None:
        """Pass ``events`` on (see the ``Outbox`` protocol).

        A cancelled send has no effect on what it did not send: those events stay
        held by the stage (to send, drop or dead-letter later).
        """
        box = self._box
        ctx = box.ctx
        events = list(events)
        for e in events:
            if not isinstance(e, Event):
                raise TypeError(f"custom stage {box.name!r} sent a non-Event: {e!r}")
        if parent is not None:
            token = box.take(parent.id)
            if not events:
                ctx.drop(ctx.stats, Batch([parent], [parent.payload], [token]))
                return
            tokens = [token] * len(events)
            ctx.expand(token, len(events))
        else:
            tokens = [box.take(e.id) for e in events]
            if not events:
                return
        batch = Batch(events, [e.payload for e in events], tokens, box.trace, box.links)
        progress = SendProgress()
        try:
            await ctx.emit(batch, None, progress)
        except BaseException:
            self._keep_unsent(events, tokens, parent, progress.sent)
            raise
        finally:
            ctx.stats.events_out += progress.sent

    def _keep_unsent(
        self, events: list[Event], tokens: list[AckToken], parent: Event | None, sent: int
    ) -> None:
        """Give the events a cancelled send did not send back to the stage's holdings."""
        box = self._box
        if parent is not None:
            if sent == 0:  # the children never went: the parent is held again, unexpanded
                box.ctx.expand(tokens[0], -len(events))
                box.hold(parent.id, tokens[0])
            else:  # some children went: the rest stand as the parent's, finished as dropped
                rest = events[sent:]
                box.ctx.drop(box.ctx.stats, Batch(rest, [e.payload for e in rest], tokens[sent:]))
            return
        for event, token in zip(reversed(events[sent:]), reversed(tokens[sent:]), strict=True):
            box.hold(event.id, token)

    def drop(self, events: Sequence[Event]) -> None:
        """Drop ``events`` on purpose (counted as filtered)."""
        events = list(events)
        if events:
            box = self._box
            tokens = [box.take(e.id) for e in events]
            box.ctx.drop(box.ctx.stats, Batch(events, [e.payload for e in events], tokens))

    async def dead_letter(self, event: Event, error: BaseException) -> None:
        """Give up on ``event``: the dead-letter sink gets it with ``error`` as reason."""
        box = self._box
        token = box.take(event.id)
        batch = Batch([event], [event.payload], [token])
        if not isinstance(error, Exception):
            error = IngestError(str(error))
        await box.ctx.dead_letter(box.ctx.stats, batch, [0], [(error, 1)])
