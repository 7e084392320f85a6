"""The stage protocol: what the runtime calls on a stage, and what a stage may call back.

The runtime knows one protocol. Each worker task of a stage node calls::

    await stage.work(ctx)

once, and ``work`` runs until its input ends. ``ctx`` (a :class:`StageContext`)
is the stage's whole view of the running graph: it receives batches, passes them
on (through the operators fused after the stage, then to the output edges), and
finishes events (filtered, dead-lettered) so their acknowledgements advance.
``map``, ``filter``, ``route``, fused chains, ``batch``, custom stages and the
stateful windows are all implementations of it; none is special to the runtime.

Per-event operators also implement :class:`Step`: ``apply(ctx, stats, batch)``
returns the batch that goes on. The runtime composes the steps of a task (the
head and the operators fused after it) into one pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .._retry import RetryPolicy

if TYPE_CHECKING:
    from .._acks import AckToken
    from .._batch import Batch
    from .._edge import SendProgress

__all__ = ("GiveUp", "StageContext", "StatsLike", "Step")


class GiveUp(Exception):
    """A retried call failed for good: ``attempts`` tries, last error ``error``."""

    def __init__(self, attempts: int, error: Exception) -> None:
        super().__init__(attempts, error)
        self.attempts = attempts
        self.error = error


class StatsLike(Protocol):
    """The per-node counters a stage updates (the runtime's ``NodeStats``)."""

    name: str
    kind: str
    errors: int
    retries: int
    dead_lettered: int
    filtered: int
    late: int
    batches: int
    events_in: int
    events_out: int

    def record_batch(self, n_in: int, n_out: int, seconds: float) -> None: ...


class StageContext(Protocol):
    """What a stage worker may do; one per worker task."""

    #: The node's own counters (the head of the task).
    stats: StatsLike
    #: Most events a stage should take or emit at once.
    max_batch: int
    #: The loop's clock (``anyio.current_time``), for time-driven stages.
    clock: Callable[[], float]
    #: The tracing hook, or None when tracing is off.
    tracer: Any
    #: True when a durable state store checkpoints this run: a stateful stage's state is
    #: then saved in checkpoint epochs, and it keeps its open state at a graceful stop.
    durable: bool

    def stop_requested(self) -> bool:
        """Whether the input ends because the run is being stopped (not exhausted)."""
        ...

    def from_state(self, n: int) -> AckToken:
        """A token for ``n`` results made from restored or checkpointed state (no source read)."""
        ...

    async def receive(self, deadline: float = ..., limit: int | None = None) -> Batch | None:
        """The next input batch (at most ``limit`` events); None at the end of the input.

        With a ``deadline`` (loop clock), returns an empty batch when it passes
        first. Cancellation loses nothing.
        """
        ...

    async def forward(self, batch: Batch) -> None:
        """Run ``batch`` through the steps of this task (the operators fused here) and emit it."""
        ...

    async def emit(
        self, batch: Batch, port: str | None = None, progress: SendProgress | None = None
    ) -> None:
        """Send ``batch`` to the outputs of ``port`` (None: the plain outputs).

        A cancelled emit has no effect on what it did not send (``progress.sent``).
        """
        ...

    def wired(self, port: str | None) -> bool:
        """Whether anything reads the output ``port`` (a stage's optional ports, e.g. ``late``)."""
        ...

    def drop(self, stats: StatsLike, batch: Batch) -> None:
        """Finish ``batch`` as filtered out on purpose."""
        ...

    def expand(self, token: AckToken, children: int) -> None:
        """One event of ``token`` became ``children`` events, each finished on its own."""
        ...

    async def dead_letter(
        self,
        stats: StatsLike,
        batch: Batch,
        indices: Sequence[int],
        errors: Sequence[tuple[Exception, int]],
        *,
        passed: int | None = None,
    ) -> None:
        """Dead-letter the events at ``indices`` with their (last error, attempts).

        ``passed``: how many events of the batch went on (default: the rest of it),
        for the dead-letter budget.
        """
        ...

    async def retry(
        self,
        policy: RetryPolicy | None,
        call: Callable[[], Awaitable[Any]],
        stats: StatsLike,
        first_error: Exception | None = None,
    ) -> Any:
        """Call ``call()`` until it succeeds or ``policy`` gives up (raises :class:`GiveUp`)."""
        ...


class Step(Protocol):
    """A per-event operator as one step of a task's pass."""

    name: str

    async def apply(self, ctx: StageContext, stats: StatsLike, batch: Batch) -> Batch | None:
        """What ``batch`` becomes; None when nothing goes on (routed, or all dropped)."""
        ...
