"""The tracing hook: where a tracer plugs into the runtime without the runtime importing it.

``observe.enable_tracing()`` installs an object with the :class:`Tracer` shape;
a run reads the hook once when it starts. With nothing installed the runtime's
only cost is one ``if tracer is not None`` per node and batch.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ("Tracer", "active_tracer", "install_tracer")


class Tracer(Protocol):
    """What the runtime calls: one finished span per node and batch."""

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
    ) -> Any: ...


_active: Tracer | None = None


def install_tracer(tracer: Tracer | None) -> None:
    """Use ``tracer`` in the runs that start from now on (None: tracing off)."""
    global _active
    _active = tracer


def active_tracer() -> Tracer | None:
    """The tracer a run starting now uses (None: tracing is off)."""
    return _active
