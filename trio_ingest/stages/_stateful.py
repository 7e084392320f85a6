"""What every stateful stage (windows, dedupe, stateful_map) shares: one worker, its state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ._context import StageContext

if TYPE_CHECKING:
    from .._acks import AckToken

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
        self._restore: Any = None  # state the next run starts from (restore_state)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name!r}>"

    def in_hand(self, default_batch: int) -> int:
        """Events it holds beyond its input edge: the batch in hand."""
        return default_batch

    async def work(self, ctx: StageContext) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement work()")

    # -- checkpointing (a durable state store) ------------------------------------
    #: Whether this stage can save and restore its state (checkpoint epochs).
    checkpoints: ClassVar[bool] = False

    def state_signature(self) -> dict[str, Any]:
        """What stored state must match to be restored into this stage (kind, shape, sizes)."""
        return {"kind": self.kind}

    def snapshot_state(self) -> Any:
        """The state as plain values, taken at a consistent cut (nothing in flight).

        The state restored and not yet taken up by a run, else the running state
        (:meth:`_snapshot`, which a stage that ``checkpoints`` implements).
        """
        if self._restore is not None:
            return self._restore
        return self._snapshot()

    def _snapshot(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} cannot checkpoint its state")

    def restore_state(self, state: Any) -> None:
        """Start the next ``work()`` from ``state`` (as :meth:`snapshot_state` made it).

        Raises:
            NotImplementedError: The stage does not checkpoint (``checkpoints`` is False).
        """
        if not self.checkpoints:
            raise NotImplementedError(f"{type(self).__name__} cannot restore state")
        self._restore = state

    def _take_restored(self) -> Any:
        """The state restored for this run (None: start afresh), handed over once."""
        state, self._restore = self._restore, None
        return state

    def release_tokens(self) -> list[AckToken]:
        """Hand over the ack tokens the state holds (one entry per unit), forgetting them.

        At a checkpoint the stored state stands for the events folded into it, so
        their reads may commit: the runtime finishes these as filtered.
        """
        return []
