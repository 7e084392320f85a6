"""Inbox and outbox handed to custom stages: acknowledgements follow event ids."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import anyio

from .._acks import AckToken
from .._batch import Batch
from .._edge import SendProgress
from .._errors import IngestError
from .._event import Event

if TYPE_CHECKING:
    from ._runtime import CustomRunner, _Worker

__all__ = ("RuntimeInbox", "RuntimeOutbox")


class RuntimeInbox:
    """``async for events in inbox``: one list per batch received."""

    def __init__(
        self, runner: CustomRunner, worker: _Worker, held: dict[str, deque[AckToken]]
    ) -> None:
        self._runner = runner
        self._worker = worker
        self._held = held

    def __aiter__(self) -> AsyncIterator[list[Event]]:
        return self

    async def __anext__(self) -> list[Event]:
        # A plain iterator, not an async generator: nothing to finalise if the
        # stage stops iterating early (PEP 789).
        inbox = self._worker.inbox
        assert inbox is not None
        try:
            batch = await inbox.edge.receive(self._runner.rt.max_batch)
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        events = batch.materialize()
        self._worker.trace = batch.trace  # the outbox continues this batch's trace
        held = self._held
        for event, token in zip(events, batch.tokens, strict=True):
            queue = held.get(event.id)
            if queue is None:
                queue = held[event.id] = deque()
            queue.append(token)
        stats = self._runner.stats
        stats.events_in += len(events)
        stats.batches += 1
        return events


class RuntimeOutbox:
    """Where a custom stage's events go; see :class:`trio_ingest.stages.Outbox`."""

    def __init__(
        self, runner: CustomRunner, worker: _Worker, held: dict[str, deque[AckToken]]
    ) -> None:
        self._runner = runner
        self._worker = worker
        self._held = held

    def _take(self, event_id: str) -> AckToken:
        queue = self._held.get(event_id)
        if not queue:
            raise IngestError(
                f"custom stage {self._runner.name!r} emitted event {event_id!r} that it does not "
                "hold; derived events need send(children, parent=event)"
            )
        token = queue.popleft()
        if not queue:
            del self._held[event_id]
        return token

    async def send(self, events: Sequence[Event], *, parent: Event | None = None) -> None:
        """Pass ``events`` on (see the ``Outbox`` protocol).

        A cancelled send has no effect on what it did not send: those events stay
        held by the stage (to send, drop or dead-letter later).
        """
        events = list(events)
        for e in events:
            if not isinstance(e, Event):
                raise TypeError(f"custom stage {self._runner.name!r} sent a non-Event: {e!r}")
        runner = self._runner
        rt = runner.rt
        if parent is not None:
            token = self._take(parent.id)
            if not events:
                rt.dropped(runner.stats, Batch([parent], [parent.payload], [token]))
                return
            tokens = [token] * len(events)
        else:
            tokens = [self._take(e.id) for e in events]
        if not events:
            return
        batch = Batch(events, [e.payload for e in events], tokens, self._worker.trace)
        if parent is not None:
            rt.ledger.expanded_into(token, len(events))
        progress = SendProgress()
        try:
            await runner.emit(self._worker.outputs.get(None, []), batch, progress)
        except BaseException:
            self._keep_unsent(events, tokens, parent, progress.sent)
            raise
        finally:
            runner.stats.events_out += progress.sent

    def _keep_unsent(
        self, events: list[Event], tokens: list[AckToken], parent: Event | None, sent: int
    ) -> None:
        """Give the events a cancelled send did not send back to the stage's holdings."""
        if parent is not None:
            if sent == 0:  # the children never went: the parent is held again, unexpanded
                self._runner.rt.ledger.expanded_into_undo(tokens[0], len(events))
                self._held.setdefault(parent.id, deque()).appendleft(tokens[0])
            else:  # some children went: the rest stand as the parent's, finished as dropped
                self._runner.rt.dropped(
                    self._runner.stats,
                    Batch(events[sent:], [e.payload for e in events[sent:]], tokens[sent:]),
                )
            return
        for event, token in zip(reversed(events[sent:]), reversed(tokens[sent:]), strict=True):
            self._held.setdefault(event.id, deque()).appendleft(token)

    def drop(self, events: Sequence[Event]) -> None:
        """Drop ``events`` on purpose (counted as filtered)."""
        events = list(events)
        if events:
            tokens = [self._take(e.id) for e in events]
            self._runner.rt.dropped(
                self._runner.stats, Batch(events, [e.payload for e in events], tokens)
            )

    async def dead_letter(self, event: Event, error: BaseException) -> None:
        """Give up on ``event``: the dead-letter sink gets it with ``error`` as reason."""
        token = self._take(event.id)
        batch = Batch([event], [event.payload], [token])
        if not isinstance(error, Exception):
            error = IngestError(str(error))
        await self._runner.rt.dead_letter(
            self._worker, self._runner.stats, batch, [0], [(error, 1)]
        )
