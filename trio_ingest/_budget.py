"""The dead-letter budget: how many dead letters a run may produce before it stops.

A dead letter is the right answer for one bad record; a run where most records
are dead-lettered is a wrong flag, a wrong format or a broken function, and
carrying on hides it behind exit code 0. Like Arroyo's ``DlqLimit``, the budget
has two rules: a maximum *ratio* of dead letters among the last ``window``
events that entered the run, and a maximum *run* of consecutive dead letters
with no delivery between them. Crossing either raises
:class:`DeadLetterBudgetError` *before* the breaching dead letters are sent, so
their acknowledgements never complete and no offset at or past them commits.

This module is a value and its counter: it imports nothing of the graph or the
runtime. The runtime calls :meth:`BudgetCounter.admitted` where it counts
events in, :meth:`BudgetCounter.dead_lettered` before it sends dead letters, and
:meth:`BudgetCounter.delivered` where a sink's write is acknowledged.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Iterable

import attrs

from ._errors import ConfigError, IngestError

__all__ = ("BudgetCounter", "DeadLetterBudget", "DeadLetterBudgetError", "reason_of")

#: The option that sets the budget, in Python and on the command line.
OPTION = "dead_letter_budget / --dead-letter-budget"
_BUCKETS = 10  # the window slides in tenths
_MAX_REASONS = 64  # distinct reasons remembered; the rest are counted as "other"
_LINE_PREFIX = re.compile(r"^line \d+: ")


def _ratio(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"'{attribute.name}' must be a number in (0, 1]: {value!r}")


def _count(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"'{attribute.name}' must be an int >= 1: {value!r}")


@attrs.frozen
class DeadLetterBudget:
    """How many dead letters a run may produce; crossing it fails the run.

    The defaults stop a run whose input is plainly wrong (a wrong format, a
    wrong id field, a function that fails on everything) and let an ordinary
    file with a few bad lines through.

    Attributes:
        max_ratio: Most dead letters per event among the last ``window``
            events that entered the run (0.5: half of them).
        window: Events the ratio is measured over (a sliding window).
        min_events: Events the window must hold before the ratio is judged,
            so that the first few events of a run do not decide it alone.
        max_consecutive: Most dead letters in a row with no event delivered
            (or passed on by the stage that failed the others) between them.

    Raises:
        ConfigError: ``max_ratio`` is not a number in (0, 1], ``window``,
            ``min_events`` or ``max_consecutive`` is not an int >= 1, or
            ``min_events`` is greater than ``window``.
    """

    max_ratio: float = attrs.field(default=0.5, validator=_ratio)
    window: int = attrs.field(default=1_000, validator=_count)
    min_events: int = attrs.field(default=10, validator=_count)
    max_consecutive: int = attrs.field(default=100, validator=_count)

    @min_events.validator
    def _check_min_events(self, _attribute: object, value: int) -> None:
        if value > self.window:
            raise ConfigError(f"'min_events' must be <= 'window' ({self.window}): {value!r}")

    @classmethod
    def parse(cls, text: str) -> DeadLetterBudget | None:
        """Read the command line's form: ``off``, or ``ratio=0.5,window=1000,consecutive=100``.

        Any subset of ``ratio``, ``window``, ``min``, ``consecutive`` may be
        given; the rest keep their defaults. ``off`` (or ``none``) disables it.

        Raises:
            ConfigError: The text is not of that form or a value is out of range.
        """
        text = text.strip()
        if text.lower() in ("off", "none"):
            return None
        names = {"ratio": "max_ratio", "window": "window", "min": "min_events",
                 "consecutive": "max_consecutive"}
        values: dict[str, float | int] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in names:
                raise ConfigError(
                    f"'dead_letter_budget' must be 'off' or KEY=VALUE pairs with KEY in "
                    f"{', '.join(names)}: {part!r}"
                )
            try:
                values[names[key]] = float(raw) if key == "ratio" else int(raw)
            except ValueError:
                raise ConfigError(
                    f"'dead_letter_budget' {key} must be a number: {raw.strip()!r}"
                ) from None
        return cls(**values)  # type: ignore[arg-type]

    def describe(self) -> str:
        """The budget in the command line's form."""
        return (f"ratio={self.max_ratio:g},window={self.window},min={self.min_events},"
                f"consecutive={self.max_consecutive}")


class DeadLetterBudgetError(IngestError):
    """The run produced more dead letters than its :class:`DeadLetterBudget` allows.

    Attributes:
        budget: The budget that was crossed.
        rule: ``"ratio"`` or ``"consecutive"``.
        reasons: Dead letters per reason so far, most common first.
    """

    def __init__(self, budget: DeadLetterBudget, rule: str, detail: str,
                 reasons: list[tuple[str, int]]) -> None:
        top = f"; most common reason: {reasons[0][0]} ({reasons[0][1]:,}x)" if reasons else ""
        super().__init__(f"dead-letter budget exceeded: {detail}{top}; the input or the "
                         f"options are likely wrong (set {OPTION}, now {budget.describe()})")
        self.budget = budget
        self.rule = rule
        self.reasons = reasons


def reason_of(error_type: str, error: str) -> str:
    """The reason a dead letter is counted under: its kind and the head of its message.

    ``"line 12: bad JSON: Expecting value..."`` of a ``MalformedLine`` counts as
    ``"MalformedLine: bad JSON"``: line numbers and details would make every
    letter a reason of its own.
    """
    kind = error_type.rpartition(".")[2]
    head = _LINE_PREFIX.sub("", " ".join(error.split()))
    head = head.split(": ", 1)[0][:80]
    return f"{kind}: {head}" if head else kind


@attrs.define(eq=False)
class BudgetCounter:
    """The running count of one run against its budget; the runtime feeds it.

    Every dead letter is counted against an event that entered the run
    (``admitted``): the ratio is of what came in, so it does not depend on how
    far the sinks lag behind the stages.
    """

    budget: DeadLetterBudget
    admitted_total: int = 0
    dead_total: int = 0
    consecutive: int = 0
    reasons: Counter[str] = attrs.field(factory=Counter)
    # the sliding window, in buckets of window/10 admitted events: [admitted, dead]
    _buckets: deque[list[int]] = attrs.field(factory=deque)
    _in_window: int = 0  # sums over the buckets, kept as they change
    _dead_in_window: int = 0

    def admitted(self, n: int) -> None:
        """``n`` events entered the run (read by a source, sent to the handle)."""
        if n <= 0:
            return
        self.admitted_total += n
        self._in_window += n
        size = max(1, self.budget.window // _BUCKETS)
        buckets = self._buckets
        while n:
            if not buckets or buckets[-1][0] >= size:
                buckets.append([0, 0])
            take = min(n, size - buckets[-1][0])
            buckets[-1][0] += take
            n -= take
        # keep the newest buckets that cover the window (and no more)
        window = self.budget.window
        while len(buckets) > 1 and self._in_window - buckets[0][0] >= window:
            old = buckets.popleft()
            self._in_window -= old[0]
            self._dead_in_window -= old[1]

    def delivered(self, n: int) -> None:
        """``n`` events were written by a sink: the run of dead letters is broken."""
        if n > 0:
            self.consecutive = 0

    def dead_lettered(self, reasons: Iterable[str], *, passed: int = 0) -> None:
        """Count dead letters with these ``reasons``; ``passed`` events of their batch went on.

        A batch that dead-letters some events and passes others breaks the run
        of consecutive dead letters (the order inside a batch is not known).

        Raises:
            DeadLetterBudgetError: The budget is crossed; the caller must not
                send these dead letters (nothing past the breach commits).
        """
        counted = list(reasons)
        k = len(counted)
        if not k:
            return
        for reason in counted:
            if reason in self.reasons or len(self.reasons) < _MAX_REASONS:
                self.reasons[reason] += 1
            else:
                self.reasons["other"] += 1
        self.dead_total += k
        self._place(k)
        budget = self.budget
        self.consecutive = 0 if passed > 0 else self.consecutive + k
        if self.consecutive > budget.max_consecutive:
            self._breach("consecutive", f"{self.consecutive:,} dead letters in a row with "
                         f"nothing delivered (limit {budget.max_consecutive:,})")
        admitted, dead = self._in_window, self._dead_in_window
        if admitted >= budget.min_events and dead > budget.max_ratio * admitted:
            self._breach("ratio", f"{min(dead, admitted):,} of the last {admitted:,} events "
                         f"were dead-lettered (limit {budget.max_ratio:.0%})")

    def _place(self, k: int) -> None:
        self._dead_in_window += k
        # a dead letter belongs to an event admitted earlier: fill the newest buckets with
        # room first, so that no bucket holds more dead letters than events
        buckets = self._buckets
        if not buckets:
            buckets.append([0, 0])
        for bucket in reversed(buckets):
            room = min(k, bucket[0] - bucket[1])
            if room > 0:
                bucket[1] += room
                k -= room
            if not k:
                return
        buckets[-1][1] += k  # more dead letters than events (a flat_map expanded them)

    def _breach(self, rule: str, detail: str) -> None:
        raise DeadLetterBudgetError(self.budget, rule, detail, self.reasons.most_common())
