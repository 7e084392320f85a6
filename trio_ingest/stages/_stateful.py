"""What every stateful stage (windows, dedupe, stateful_map) shares: one worker, its state."""

from __future__ import annotations

from typing import ClassVar

from ._context import StageContext

__all__ = ("StatefulStage",)


class StatefulStage:
    """A stage holding keyed state across batches: one worker task, never fused.

    Subclasses implement ``work(ctx)`` (the stage protocol).
    """

    kind: ClassVar[str] = "stateful"
    is_async = True
    fusable = False
    ordered = False
    retry = None
    workers = 1
    #: Output ports a Graph may wire besides the plain output (all optional).
    extra_ports: tuple[str, ...] = ()

    def __init__(self, name: str | None) -> None:
        self.name = name or self.kind
        self.name_given = name is not None

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name!r}>"

    def in_hand(self, default_batch: int) -> int:
        """Events it holds beyond its input edge: the batch in hand."""
        return default_batch

    async def work(self, ctx: StageContext) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement work()")
