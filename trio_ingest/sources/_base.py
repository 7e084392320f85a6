"""The source protocol: open, read batches, commit offsets, close."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from .._acks import Completion
from .._event import DeadLetter, Event

__all__ = ("Read", "Source")


@attrs.define(slots=True)
class Read:
    """What one ``Source.read`` returns.

    Attributes:
        events: The events read, in order.
        offset: Where the source stands after this read; handed back to
            ``commit`` once this read and every earlier one is finished.
        rejected: Records that could not become events (bad JSON, missing id...);
            the runtime dead-letters them with their reason. They belong to this
            read, so its offset commits only after they are dead-lettered.
        partition: For a partitioned source (Kafka), the partition this read
            came from (any hashable). The runtime then keeps one commit
            watermark per partition: an offset is handed to ``commit`` once this
            read and every earlier read *of the same partition* is finished.
            ``None`` (the default): one watermark for all reads.
        completion: Told how each event (and rejected record) of this read
            finishes, and done when all are (a source that answers a caller per
            read, as the HTTP source answers a request).
        parts: For a read that gathers several callers' events (the HTTP source:
            the requests waiting, one part each), ``(count, completion)`` of each
            consecutive run of ``events``: each part gets its own acknowledgement
            token and completion. Such a read has no ``rejected`` records.
    """

    events: list[Event]
    offset: Any = None
    rejected: list[DeadLetter] = attrs.field(factory=list)
    partition: Any = None
    completion: Completion | None = None
    parts: list[tuple[int, Completion | None]] | None = None


class Source:
    """Base class of sources: where events enter a pipeline.

    Override ``read`` (and ``open``, ``commit``, ``aclose`` where the source has
    something to do there). The runtime calls them from one task, never
    concurrently, in the order ``open``, ``read``... , ``aclose``, with
    ``commit`` from a second task. It does the batching, acknowledgement
    tracking, backpressure and metrics.

    Attributes:
        name: Node name (defaults to the class's).
        commit_interval: Least seconds between two commits, to amortise
            expensive commits (an fsync'd checkpoint file).
        read_may_wait: Whether ``read`` may wait for data (see below).
    """

    name: str = "source"
    #: True when the user chose the name: then a clash is an error, not renamed.
    name_given: bool = False
    commit_interval: float = 0.05
    #: Whether ``read`` may wait for data (a socket, a tailed file, a rate). The
    #: runtime then wraps each read in a cancel scope that ``stop()`` cancels; a
    #: source whose reads return at once sets False and saves that per batch.
    read_may_wait: bool = True
    #: True for a source that never produces anything (``from_iterable([])``): the
    #: stand-in of a pipeline fed only through its serving handle. The handle's
    #: edges are then named after the handle, and observers do not show it.
    placeholder: bool = False
    #: The node's name in the running graph, set by the runtime before ``open()``:
    #: ids a source derives from positions are namespaced by it (``f"{node}:{i}"``),
    #: so two sources of one graph never make the same id.
    node: str = "source"

    async def open(self) -> None:
        """Connect, open files, seek to the last committed offset.

        Raises:
            SourceError: The source cannot start; no data has moved.
        """

    async def read(self, max_events: int) -> Read | None:
        """Return the next events (at most ``max_events``), waiting for them if needed.

        Returns ``None`` when the source is exhausted. Reads may be cancelled
        (graceful stop): a cancelled read must not lose a committed position.

        Raises:
            NotImplementedError: A subclass did not implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement read()")

    async def commit(self, offsets: Sequence[Any]) -> None:
        """Persist progress: ``offsets`` are of reads now finished, oldest first.

        Every read before them is finished too, so a source with a single
        position needs only ``offsets[-1]``. For a source whose reads name a
        ``partition``, ``offsets`` gathers the finished reads of every
        partition (each partition's in read order, every earlier read of that
        partition finished): the offsets themselves must say their partition.
        Called shielded from cancellation with a time bound.
        """

    # Optional: ``open_resources(self) -> AbstractAsyncContextManager``. A connector
    # whose client owns tasks (an AnyIO task group per connection pool) defines it; the
    # runtime enters it in the node's own task before ``open()`` and leaves it after
    # ``aclose()``, so those tasks nest inside the run's task group.

    # -- a durable state store (checkpoint epochs) ---------------------------------
    #: Whether the source can resume at an offset a state store kept (:meth:`seek`);
    #: a durable ``state=`` needs it, since the store, not the source, is the authority.
    seekable: bool = False

    def offset_state(self, offset: Any) -> Any:
        """``offset`` (of a finished read) as JSON values, for the state store."""
        return offset

    async def seek(self, state: Any) -> None:
        """Resume after the read whose :meth:`offset_state` is ``state``; called after ``open``.

        Raises:
            SourceError: The source cannot resume there (the input changed).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot seek")

    def stopping(self) -> None:
        """``stop()`` began: ``read`` will not be called again (the one under way is cancelled).

        Synchronous, called once from the runtime's task; a source that others
        push into (an HTTP server) stops taking new input here, before the drain.
        """

    async def aclose(self) -> None:
        """Release connections and files; idempotent."""

    def lag(self) -> float | None:
        """How far behind the input this source is (events or bytes not yet read), if known.

        Exported as ``trio_ingest_source_lag``; None (the default) when the source
        cannot tell.
        """
        return None
