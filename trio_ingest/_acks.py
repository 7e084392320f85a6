"""Acknowledgement tokens and the per-source commit watermark.

Every read a source makes becomes one :class:`AckToken` counting the events
(and copies made by fan-out or ``flat_map``) still unfinished. An event is
finished when a sink wrote it, the dead-letter sink took it, or a filter
dropped it. A source may commit a read's offset only when that read *and every
earlier read* is finished: :class:`AckTracker` keeps that watermark, whatever
order completions arrive in. All bookkeeping is per batch, not per event.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Collection, Sequence
from typing import Any

import anyio

__all__ = ("AckToken", "AckTracker", "finish", "retain")


class AckToken:
    """One source read: its offset and how many units of work are still open."""

    __slots__ = ("offset", "pending", "tracker")

    def __init__(self, tracker: AckTracker, offset: Any, pending: int) -> None:
        self.tracker = tracker
        self.offset = offset
        self.pending = pending

    def __repr__(self) -> str:
        return f"<AckToken {self.tracker.name}@{self.offset!r} pending={self.pending}>"


class AckTracker:
    """The reads of one source in order, and the prefix of them that is finished."""

    __slots__ = ("_changed", "_committable", "_open", "committed", "keeps_offsets", "name")

    def __init__(self, name: str, *, keeps_offsets: bool = True) -> None:
        self.name = name
        # an intake with nothing to commit (the embedding handle) keeps no offsets:
        # the finished prefix is forgotten as it forms, so memory stays flat
        self.keeps_offsets = keeps_offsets
        self._open: deque[AckToken] = deque()
        self._committable: list[Any] = []
        self._changed: anyio.Event | None = None
        self.committed: Any = None  # the last offset handed to the source's commit()

    def issue(self, offset: Any, count: int) -> AckToken:
        """Register a read of ``count`` events ending at ``offset``."""
        token = AckToken(self, offset, count)
        self._open.append(token)
        if count == 0:
            self._advance()
        return token

    @property
    def open_reads(self) -> int:
        """Reads not yet committable (some event of theirs, or of an earlier read, is open)."""
        return len(self._open)

    @property
    def pending_events(self) -> int:
        """Events (and copies) of this intake not yet finished."""
        return sum(token.pending for token in self._open)

    def lowest_open_offset(self) -> Any:
        """Offset of the oldest read still open, or ``None`` when all are finished."""
        return self._open[0].offset if self._open else None

    def earliest(self, tokens: Collection[AckToken]) -> AckToken | None:
        """The first of ``tokens`` in read order: the one holding this intake's commit back."""
        for token in self._open:
            if token in tokens:
                return token
        return None

    def _advance(self) -> None:
        opened = self._open
        moved = False
        while opened and opened[0].pending <= 0:
            offset = opened.popleft().offset
            if self.keeps_offsets:
                self._committable.append(offset)
            else:
                self.committed = offset
            moved = True
        if moved and self.keeps_offsets and self._changed is not None:
            self._changed.set()
            self._changed = None

    def take_committable(self) -> list[Any]:
        """Return, and forget, the offsets that became committable, in read order."""
        ready, self._committable = self._committable, []
        return ready

    async def wait_changed(self) -> None:
        """Wait until more offsets become committable."""
        if self._committable:
            return
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()


def finish(tokens: Sequence[AckToken]) -> None:
    """Mark one unit of work finished for every entry of ``tokens`` (one per event)."""
    n = len(tokens)
    if n == 0:
        return
    first = tokens[0]
    if tokens.count(first) == n:  # the common case: the whole batch came from one read
        first.pending -= n
        if first.pending <= 0:
            _check(first)
            first.tracker._advance()
        return
    for token, k in Counter(tokens).items():
        token.pending -= k
        if token.pending <= 0:
            _check(token)
            token.tracker._advance()


def retain(tokens: Sequence[AckToken], copies: int = 1) -> None:
    """Add ``copies`` more units of work to every entry of ``tokens`` (fan-out, flat_map)."""
    n = len(tokens)
    if n == 0 or copies == 0:
        return
    first = tokens[0]
    if tokens.count(first) == n:
        first.pending += n * copies
        return
    for token, k in Counter(tokens).items():
        token.pending += k * copies


def _check(token: AckToken) -> None:
    if token.pending < 0:
        raise AssertionError(f"{token!r} finished more events than it holds (trio_ingest bug)")
