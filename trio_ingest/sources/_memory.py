"""In-memory and synthetic sources."""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._errors import ConfigError, SourceError
from .._event import Event
from ._base import Read, Source

_builtin_map = map
_JUST_EVENTS = frozenset((Event,))

_all_of_type: Callable[[list[Any], type], bool] | None
try:  # the C speed-up of the per-read check (trio_ingest/_speedups.c), when it was built
    from .._speedups import all_of_type as _all_of_type
except ImportError:  # pragma: no cover -- built wherever the tests run
    _all_of_type = None

__all__ = ("FromIterable", "Synthetic", "from_iterable", "synthetic")


class FromIterable(Source):
    """Events from a sync or async iterable of :class:`Event` objects or payloads.

    Payloads get the id ``"<node>:<position>"`` (deterministic, so a replay
    deduplicates; namespaced by the node, so two sources never collide); the
    offset is the number of items consumed, so ``committed`` tells how far the
    pipeline has finished.

    Raises:
        ConfigError: ``items`` is not an iterable or an async iterable.
    """

    def __init__(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        name: str | None = None,
        buffer: int = 1024,
    ) -> None:
        if not isinstance(items, Iterable | AsyncIterable):
            raise ConfigError(f"from_iterable() needs an iterable: {items!r}")
        if name is not None:
            self.name = name
            self.name_given = True
        self._items = items
        # an empty list or tuple: the stand-in source of a pipeline fed through its handle
        self.placeholder = isinstance(items, list | tuple) and not items
        self._position = 0
        self.buffer = buffer
        self._inbox: MemoryObjectReceiveStream[Any] | None = None
        self._sync: Iterator[Any] | None = None
        self.committed = 0

    async def open(self) -> None:
        if isinstance(self._items, list | tuple):
            self._sync = None
            self.read_may_wait = False
        elif isinstance(self._items, Iterable):
            self._sync = iter(self._items)
            self.read_may_wait = False

    def _wrap(self, chunk: list[Any], start: int) -> list[Event]:
        # checked per read (a list may change after open); in C about 1 ns an event, as the
        # payloads are taken next from the same, now cached, events (the set below: 18 ns)
        if _all_of_type is not None:
            if _all_of_type(chunk, Event):
                return chunk
        elif set(_builtin_map(type, chunk)) <= _JUST_EVENTS:
            return chunk
        prefix = f"{self.node}:"
        return [
            x if isinstance(x, Event) else Event(f"{prefix}{i}", x)
            for i, x in enumerate(chunk, start)
        ]

    async def read(self, max_events: int) -> Read | None:
        """The next items (at most ``max_events``); None once the iterable is exhausted.

        Raises:
            RuntimeError: An async iterable is read without ``open_resources()``
                entered (the runtime enters it; by hand, ``async with``).
        """
        start = self._position
        items = self._items
        if isinstance(items, list):
            chunk = items[start : start + max_events]  # a slice of a list is a new list
        elif isinstance(items, tuple):
            chunk = list(items[start : start + max_events])
        elif self._sync is not None:
            chunk = list(itertools.islice(self._sync, max_events))
        else:
            return await self._read_async(max_events)
        if not chunk:
            return None
        self._position = start + len(chunk)
        return Read(self._wrap(chunk, start), self._position)

    async def _read_async(self, max_events: int) -> Read | None:
        # await the first item, then take whatever else the pump has ready
        inbox = self._inbox
        if inbox is None:
            raise RuntimeError("FromIterable: an async iterable is read inside open_resources()")
        try:
            chunk = [await inbox.receive()]
        except anyio.EndOfStream:
            return None
        while len(chunk) < max_events:
            try:
                chunk.append(inbox.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        start = self._position
        self._position += len(chunk)
        return Read(self._wrap(chunk, start), self._position)

    # -- a durable state store: a list or tuple can be read again from any position --
    @property
    def seekable(self) -> bool:  # type: ignore[override]  # only a list or tuple replays
        return isinstance(self._items, list | tuple)

    async def seek(self, state: Any) -> None:
        """Go on after the first ``state`` items (a list or tuple source).

        Raises:
            SourceError: ``state`` is not a position within the items.
        """
        items = self._items
        if not isinstance(items, list | tuple):
            raise SourceError(f"{self.name!r} reads an iterator: it cannot seek")
        if type(state) is not int or not 0 <= state <= len(items):
            raise SourceError(
                f"{self.name!r}: the state store's offset {state!r} is not a position in "
                f"its {len(items)} items"
            )
        self._position = self.committed = state

    @contextlib.asynccontextmanager
    async def open_resources(self) -> AsyncIterator[None]:
        """For an async iterable: a task that pulls items ahead into a bounded buffer.

        So a read can take every item that is ready, not one per read; the
        iterator is driven from that one task and closed there (PEP 789).
        """
        if not isinstance(self._items, AsyncIterable) or isinstance(self._items, Iterable):
            yield
            return
        send, receive = anyio.create_memory_object_stream[Any](self.buffer)
        self._inbox = receive
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump, send)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                receive.close()

    async def _pump(self, send: MemoryObjectSendStream[Any]) -> None:
        assert isinstance(self._items, AsyncIterable)
        iterator = aiter(self._items)
        pulled = 0
        try:
            with send:
                async for item in iterator:
                    # send_nowait first: a send that always yields would hand the
                    # reader one item at a time (DESIGN decision 1)
                    try:
                        send.send_nowait(item)
                    except anyio.WouldBlock:
                        await send.send(item)
                    pulled += 1
                    if pulled % 256 == 0:
                        await anyio.lowlevel.checkpoint()  # let other tasks run
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()

    async def commit(self, offsets: Any) -> None:
        self.committed = offsets[-1]


def from_iterable(
    items: Iterable[Any] | AsyncIterable[Any], *, name: str | None = None, buffer: int = 1024
) -> FromIterable:
    """A source over ``items``: :class:`Event` objects, or payloads (ids ``"<node>:<position>"``).

    An async iterable is pulled ahead by a task of the source's own into a
    buffer of ``buffer`` items, so each read takes every item that is ready.

    Raises:
        ConfigError: ``items`` is not an iterable or an async iterable.
    """
    return FromIterable(items, name=name, buffer=buffer)


def _default_payload(i: int, rng: random.Random) -> dict[str, Any]:
    return {"seq": i, "value": rng.random()}


class Synthetic(Source):
    """Generated events, for demos, load and soak tests.

    Args:
        count: How many events (``None``: until stopped).
        rate: Events per second (``None``: as fast as the pipeline takes them).
        payload: ``payload(seq, rng)`` builds each payload; default
            ``{"seq": seq, "value": <random float>}``.
        duplicates: Fraction of events that repeat an earlier id (0..1), to
            exercise idempotent sinks.
        seed: Seed of the generator, for reproducible runs.
        prefix: Id prefix; ids are ``f"{prefix}{seq}"``.
        key: ``key(payload)`` sets each event's key.

    Raises:
        ConfigError: ``count`` is neither None nor an int >= 0, ``rate`` is
            neither None nor > 0, or ``duplicates`` is not in [0, 1).
    """

    def __init__(
        self,
        count: int | None = None,
        *,
        rate: float | None = None,
        payload: Callable[[int, random.Random], Any] = _default_payload,
        duplicates: float = 0.0,
        seed: int | None = None,
        prefix: str = "",
        key: Callable[[Any], Any] | None = None,
        name: str | None = None,
    ) -> None:
        if count is not None and (not isinstance(count, int) or count < 0):
            raise ConfigError(f"'count' must be >= 0 or None: {count!r}")
        if rate is not None and not rate > 0:
            raise ConfigError(f"'rate' must be > 0 or None: {rate!r}")
        if not 0 <= duplicates < 1:
            raise ConfigError(f"'duplicates' must be in [0, 1): {duplicates!r}")
        self.name = name or "synthetic"
        self.name_given = name is not None
        self.read_may_wait = rate is not None
        self.count = count
        self.rate = rate
        self.duplicates = duplicates
        self._payload = payload
        self._key = key
        self._prefix = prefix
        self._rng = random.Random(seed)
        self._seq = 0
        self._next_due: float | None = None
        self.committed = 0

    async def read(self, max_events: int) -> Read | None:
        remaining = max_events if self.count is None else min(max_events, self.count - self._seq)
        if remaining <= 0:
            return None
        if self.rate is not None:
            now = anyio.current_time()
            if self._next_due is None:
                self._next_due = now
            # emit what is due now (at least one event), then sleep until the next one
            due = int((now - self._next_due) * self.rate) + 1
            remaining = min(remaining, due)
            self._next_due += remaining / self.rate
            if self._next_due > now:
                await anyio.sleep_until(self._next_due)
        rng = self._rng
        events = []
        now_wall = time.time()
        for _ in range(remaining):
            seq = self._seq
            self._seq += 1
            ident = seq
            if self.duplicates and seq and rng.random() < self.duplicates:
                ident = rng.randrange(seq)
            payload = self._payload(ident, rng)
            key = self._key(payload) if self._key is not None else None
            events.append(
                Event(id=f"{self._prefix}{ident}", payload=payload, key=key, event_time=now_wall)
            )
        return Read(events, self._seq)

    async def commit(self, offsets: Any) -> None:
        self.committed = offsets[-1]


def synthetic(count: int | None = None, **options: Any) -> Synthetic:
    """A :class:`Synthetic` source; see its arguments.

    Raises:
        ConfigError: An argument is invalid, as for :class:`Synthetic`.
    """
    return Synthetic(count, **options)
