"""The running event loop's clock and checkpoints, looked up once per run.

AnyIO finds the backend on every call; on the hot path (a few calls per
batch) that lookup is measurable, so the runtime resolves these once when a
run starts: Trio's own functions under Trio, AnyIO's elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
import anyio.lowlevel
import attrs

__all__ = ("ANYIO", "EventLike", "LoopFunctions", "current_loop")


class EventLike(Protocol):
    """What :class:`anyio.Event` and :class:`trio.Event` both offer."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self) -> None: ...


@attrs.frozen
class LoopFunctions:
    clock: Callable[[], float]
    checkpoint: Callable[[], Awaitable[None]]
    checkpoint_if_cancelled: Callable[[], Awaitable[None]]
    cancel_shielded_checkpoint: Callable[[], Awaitable[None]]
    #: A new event; under Trio a ``trio.Event`` (130 ns, where AnyIO's finds the backend
    #: first: 890 ns), made by an edge each time its receiver waits.
    event: Callable[[], EventLike]


ANYIO = LoopFunctions(
    anyio.current_time,
    anyio.lowlevel.checkpoint,
    anyio.lowlevel.checkpoint_if_cancelled,
    anyio.lowlevel.cancel_shielded_checkpoint,
    anyio.Event,
)


def current_loop() -> LoopFunctions:
    """The functions for the loop running now (call from inside a run)."""
    try:
        import trio
    except ImportError:  # pragma: no cover -- trio is a dependency
        return ANYIO
    if trio.lowlevel.in_trio_run():
        return LoopFunctions(
            # the run's clock itself: trio.current_time() reaches it through two more calls
            trio.lowlevel.current_clock().current_time,
            trio.lowlevel.checkpoint,
            trio.lowlevel.checkpoint_if_cancelled,
            trio.lowlevel.cancel_shielded_checkpoint,
            trio.Event,
        )
    return ANYIO
