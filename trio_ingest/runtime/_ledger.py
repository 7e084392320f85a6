"""The ledger: the run's counters and the accounting identity, kept in one place.

Every event that enters is counted once as received (copies made by broadcast or
``flat_map`` as expanded) and leaves exactly once as delivered, dead-lettered or
filtered; until then it is in flight::

    received + expanded == delivered + dead_lettered + filtered + in_flight

Every change of an acknowledgement token goes through :mod:`trio_ingest._acks`,
and every counter change through these methods, once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._acks import (
    DEAD_LETTERED,
    DELIVERED,
    FILTERED,
    AckToken,
    AckTracker,
    Completion,
    finish,
    retain,
)
from .._budget import BudgetCounter, DeadLetterBudget, reason_of
from .._event import DeadLetter

__all__ = ("Ledger",)


class Ledger:
    """Counters of one run, and the trackers whose open tokens are the events in flight."""

    __slots__ = (
        "budget", "dead_lettered", "delivered", "expanded", "filtered", "received", "trackers"
    )

    def __init__(self, budget: DeadLetterBudget | None = None) -> None:
        # the dead-letter budget's count (None: no budget), fed as events are counted
        self.budget = BudgetCounter(budget) if budget is not None else None
        self.received = 0
        self.delivered = 0
        self.dead_lettered = 0
        self.filtered = 0
        self.expanded = 0
        self.trackers: dict[str, AckTracker] = {}

    def tracker(self, name: str, *, keeps_offsets: bool = True) -> AckTracker:
        """The commit watermark of the intake ``name`` (one per source, one for the handle)."""
        tracker = self.trackers[name] = AckTracker(name, keeps_offsets=keeps_offsets)
        return tracker

    def admit(
        self,
        tracker: AckTracker,
        offset: object,
        n: int,
        copies: int = 1,
        completion: Completion | None = None,
    ) -> AckToken:
        """``n`` events entered through ``tracker`` (each going to ``copies`` outputs).

        Their token joins ``completion``, when given: it learns how each one finishes.
        """
        token = tracker.issue(offset, n * copies, completion)
        self.received += n
        self.expanded += n * (copies - 1)
        if self.budget is not None:
            self.budget.admitted(n)
        return token

    def from_state(self, tracker: AckTracker, n: int) -> AckToken:
        """``n`` results made from checkpointed state: extra events, like ``flat_map``'s.

        The events folded into that state were finished (filtered) at the checkpoint
        that saved it, so these count as expanded: the identity keeps holding.
        """
        self.expanded += n
        return tracker.issue(None, n)

    def copied(self, tokens: Sequence[AckToken], copies: int) -> None:
        """The events of ``tokens`` now travel as ``copies`` more events each (fan-out)."""
        if copies:
            retain(tokens, copies)
            self.expanded += len(tokens) * copies

    def not_copied(self, tokens: Sequence[AckToken], copies: int) -> None:
        """Undo :meth:`copied` for events whose copies were never sent (a cancelled send)."""
        if copies and tokens:
            finish(list(tokens) * copies)
            self.expanded -= len(tokens) * copies

    def expanded_into(self, token: AckToken, children: int) -> None:
        """One event of ``token`` became ``children`` events (``flat_map``, a custom stage)."""
        if children > 1:
            retain([token], children - 1)
            self.expanded += children - 1

    def expanded_into_undo(self, token: AckToken, children: int) -> None:
        """Undo :meth:`expanded_into` for children that were never sent."""
        if children > 1:
            finish([token] * (children - 1))
            self.expanded -= children - 1

    def filtered_out(self, tokens: Sequence[AckToken]) -> None:
        """These events were dropped on purpose: finished."""
        self.filtered += len(tokens)
        finish(tokens, FILTERED)

    def delivered_by_sink(self, tokens: Sequence[AckToken]) -> None:
        """A sink durably wrote these events: finished."""
        self.delivered += len(tokens)
        if self.budget is not None:
            self.budget.delivered(len(tokens))
        finish(tokens, DELIVERED)

    def dead_lettering(
        self, letters: list[DeadLetter], passed: int, tokens: Sequence[AckToken] = ()
    ) -> None:
        """These letters are about to be sent (``passed``: events of their batch that went on).

        Each letter's reason is noted in the completion of its token (``tokens[i]``
        is the token of ``letters[i]``), for whoever awaits those events.

        Raises:
            DeadLetterBudgetError: They cross the dead-letter budget; they must not be
                sent, so their acks never finish and nothing past them commits.
        """
        if self.budget is not None:
            self.budget.dead_lettered(
                (reason_of(lt.error_type, lt.error) for lt in letters), passed=passed
            )
        for letter, token in zip(letters, tokens, strict=False):
            if token.completion is not None:
                token.completion.note_letter(letter.event.id, letter.error)

    def dead_lettered_by_sink(self, tokens: Sequence[AckToken]) -> None:
        """The dead-letter sink durably wrote these events: finished."""
        self.dead_lettered += len(tokens)
        finish(tokens, DEAD_LETTERED)

    @property
    def in_flight(self) -> int:
        """Events entered and not yet finished."""
        return sum(tracker.pending_events for tracker in self.trackers.values())

    def balanced(self) -> bool:
        """Whether the accounting identity holds (it always should)."""
        left = self.received + self.expanded
        return left == self.delivered + self.dead_lettered + self.filtered + self.in_flight
