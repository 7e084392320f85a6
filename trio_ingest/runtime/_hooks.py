"""The tracing hook: where a tracer plugs into the runtime without the runtime importing it.

``observe.enable_tracing()`` installs an object with the :class:`Tracer` shape;
a run reads the hook once when it starts. With nothing installed the runtime's
only cost is one ``if tracer is not None`` per node and batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ("RetryRecord", "Tracer", "active_tracer", "install_tracer")

#: One retry of a call: (the attempt that failed, the delay before the next, its error).
RetryRecord = tuple[int, float, BaseException]


class Tracer(Protocol):
    """What the runtime calls: one finished span per node and batch.

    ``batch`` (keyword) is the batch the node handled: the tracer reads its span
    links (``Batch.links``) and its first and last event ids. ``retries`` are
    the retries made while handling it; ``attributes`` extra span attributes
    (a sink's ``span_attributes``: semantic conventions).
    """

    def span(
        self,
        node: str,
        kind: str,
        parent: Any,
        events: int,
        events_out: int,
        seconds: float,
        outcome: str = "ok",
        error: BaseException | None = None,
        *,
        batch: Any = None,
        retries: Sequence[RetryRecord] = (),
        attributes: Mapping[str, Any] | None = None,
    ) -> Any: ...


_active: Tracer | None = None


def install_tracer(tracer: Tracer | None) -> None:
    """Use ``tracer`` in the runs that start from now on (None: tracing off)."""
    global _active
    _active = tracer


def active_tracer() -> Tracer | None:
    """The tracer a run starting now uses (None: tracing is off)."""
    return _active
