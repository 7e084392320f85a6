"""The sink protocol: open, write one batch, flush, close."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from .._event import Event
from .._retry import CircuitBreaker, RetryPolicy, check_policy
from .._validators import check, non_negative, optional, positive_int

__all__ = ("Columnar", "Columns", "Sink", "columns")

_ID = operator.attrgetter("id")
_PAYLOAD = operator.attrgetter("payload")
_KEY = operator.attrgetter("key")
_TIME = operator.attrgetter("event_time")
_HEADERS = operator.attrgetter("headers")


def _aligned(instance: Columns, _attribute: object, _value: object) -> None:
    n = len(instance.ids)
    lengths = (len(instance.payloads), len(instance.keys), len(instance.event_times),
               len(instance.headers))
    if any(length != n for length in lengths):
        raise ValueError(f"'columns' must be aligned lists: {n} ids, other lengths {lengths}")


@attrs.frozen(slots=True, eq=False, weakref_slot=False)
class Columns:
    """A batch of events as parallel lists: what sinks read instead of Event objects.

    ``ids[i]``, ``payloads[i]``, ``keys[i]``, ``event_times[i]`` and
    ``headers[i]`` belong to one event. The lists are shared with the batch:
    read them, never change them.

    Raises:
        ValueError: The five lists are not all of the same length.
    """

    ids: list[str]
    payloads: list[Any]
    keys: list[Any]
    event_times: list[float]
    headers: list[Mapping[str, str]] = attrs.field(validator=_aligned)


class Columnar(Protocol):
    """A batch that hands out its columns itself (the runtime's batches do).

    ``columns()`` returns :class:`Columns`, or the tuple ``(ids, payloads, keys,
    event_times, headers)`` of aligned lists.
    """

    def columns(self) -> Columns | tuple[list[Any], ...]: ...


def columns(events: Sequence[Event]) -> Columns:
    """The columns of ``events``: ``events.columns()`` when it has them, else built from it.

    The way for a sink to read a batch: the runtime's batches already hold parallel
    lists, so no Event object needs to be made or read per event.

    Raises:
        ValueError: The columns ``events.columns()`` hands out are not aligned lists.
    """
    own = getattr(events, "columns", None)
    if own is not None:
        got = own()
        # a batch may hand out Columns, or the same five lists as a tuple
        return got if isinstance(got, Columns) else Columns(*got)
    return Columns(
        list(map(_ID, events)),
        list(map(_PAYLOAD, events)),
        list(map(_KEY, events)),
        list(map(_TIME, events)),
        list(map(_HEADERS, events)),
    )


class Sink:
    """Base class of sinks: where events leave a pipeline.

    A sink only knows how to write one batch; batching, retries, splitting a
    failing batch to isolate bad events, dead letters, acknowledgements and
    metrics live in the runtime. Subclass it and implement ``write_batch``::

        class MySink(ti.Sink):
            async def write_batch(self, events):
                await db.upsert(events)   # idempotent on event.id

    Read a batch column-wise with :func:`columns` (``columns(events).ids``,
    ``.payloads``...): the runtime's batches already hold parallel lists, so no
    Event object needs to be made; the built-in sinks do.

    ``write_batch`` must be idempotent on ``event.id``: after a crash, events
    are delivered again. Raise :class:`~trio_ingest.TransientError` (or an
    error in the retry policy's ``retry_on``) for failures worth retrying, and
    anything else for a failure of the data: the runtime then splits the batch
    to find the bad events and dead-letters only them.

    Args:
        name: Node name (defaults to the class name, lowercased).
        retry: Retry policy for writes (defaults to the pipeline's ``retry``).
        workers: Concurrent ``write_batch`` calls.
        max_batch: Most events per ``write_batch`` (defaults to the pipeline's).
        max_wait: Seconds to wait for more events to fill a batch (0: write
            what is ready).
        breaker: Optional circuit breaker: after repeated failures, pause
            writes for a while instead of hammering a failing server.

    Raises:
        ConfigError: ``retry`` is not a RetryPolicy or None, ``workers`` is not
            an int >= 1, ``max_batch`` is neither None nor an int >= 1, or
            ``max_wait`` is not a number >= 0.
    """

    name: str = ""
    #: True when the user chose the name: then a clash is an error, not renamed.
    name_given: bool = False
    retry: RetryPolicy | None = None
    workers: int = 1
    max_batch: int | None = None
    max_wait: float = 0.0
    breaker: CircuitBreaker | None = None
    #: A buffering sink holds written events until ``flush``; the runtime then
    #: acknowledges them only after ``flush`` returns (every ``flush_every``
    #: events or ``flush_interval`` seconds, and at the end).
    buffered: bool = False
    flush_every: int = 10_000
    flush_interval: float = 1.0
    #: A buffered sink whose ``flush()`` takes what is buffered when it is called
    #: (before its first ``await``) and lets ``write_batch`` go on meanwhile: the
    #: runtime then fills the next buffer while one flushes (at most one flush at
    #: a time), so writing a file overlaps converting the next. It holds up to
    #: twice ``flush_every`` events.
    flush_overlaps: bool = False
    #: False promises that ``write_batch`` never waits (no I/O, no sleep, no lock; only
    #: a retry's backoff may): Null and Memory. Such a sink, fed by one task, is written
    #: by that task itself, saving two task switches per batch. The promise is about one
    #: ``write_batch``: a subclass that defines its own is taken to wait unless it says
    #: False again.
    write_may_wait: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "write_batch" in cls.__dict__ and "write_may_wait" not in cls.__dict__:
            cls.write_may_wait = True

    def __init__(
        self,
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        workers: int = 1,
        max_batch: int | None = None,
        max_wait: float = 0.0,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if name is not None:
            self.name = name
            self.name_given = True
        check_policy(retry)
        check(positive_int, "workers", workers)
        check(optional(positive_int), "max_batch", max_batch)
        check(non_negative, "max_wait", max_wait)
        self.retry = retry
        self.workers = workers
        self.max_batch = max_batch
        self.max_wait = float(max_wait)
        self.breaker = breaker

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    async def open(self) -> None:
        """Connect, create tables; raise here so a bad sink fails before data moves."""

    async def write_batch(self, events: Sequence[Event]) -> None:
        """Write ``events`` durably and idempotently (on ``event.id``).

        When it returns, the events count as delivered and their source
        offsets may be committed (for ``buffered`` sinks: after ``flush``).

        Raises:
            NotImplementedError: A subclass did not implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement write_batch()")

    async def flush(self) -> None:
        """Make everything written so far durable (buffered sinks)."""

    # Optional: ``open_resources(self) -> AbstractAsyncContextManager``. A connector
    # whose client owns tasks (an AnyIO task group per connection pool) defines it; the
    # runtime enters it in the node's own task before ``open()`` and leaves it after
    # ``aclose()``, so those tasks nest inside the run's task group.

    async def aclose(self) -> None:
        """Release connections and files; idempotent, and safe after a failed flush."""

    def in_hand(self, default_batch: int) -> int:
        """Most events one worker of this sink holds (a batch it gathers, unflushed writes)."""
        held = self.max_batch or default_batch
        if self.buffered:
            held += self.flush_every * (2 if self.flush_overlaps else 1)
        return held

    def write_events_needed(self) -> bool:
        """Whether ``write_batch`` needs :class:`Event` objects (``Null`` does not)."""
        return True
