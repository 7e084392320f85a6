"""Acknowledgement tokens and the per-source commit watermark.

Every read a source makes becomes one :class:`AckToken` counting the events
(and copies made by fan-out or ``flat_map``) still unfinished. An event is
finished when a sink wrote it, the dead-letter sink took it, or a filter
dropped it. A source may commit a read's offset only when that read *and every
earlier read* is finished: :class:`AckTracker` keeps that watermark, whatever
order completions arrive in. All bookkeeping is per batch, not per event.

A partitioned source (Kafka) tags each read with a partition: the tracker then
keeps one watermark per partition (a *lane*, :meth:`AckTracker.lane`), so a
slow partition holds back only its own commits.
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
    """The reads of one source in order, and the prefix of them that is finished.

    The reads of a partitioned source go to one lane per partition (trackers
    of their own, made by :meth:`lane`); the source's tracker gathers their
    committable offsets and wakes its committer for all of them.
    """

    __slots__ = (
        "_changed", "_committable", "_lanes", "_open", "_ready", "_root", "committed",
        "keeps_offsets", "name",
    )

    def __init__(
        self, name: str, *, keeps_offsets: bool = True, root: AckTracker | None = None
    ) -> None:
        self.name = name
        # an intake with nothing to commit (the embedding handle) keeps no offsets:
        # the finished prefix is forgotten as it forms, so memory stays flat
        self.keeps_offsets = keeps_offsets
        self._open: deque[AckToken] = deque()
        self._committable: list[Any] = []
        self._changed: anyio.Event | None = None
        self._root = root  # the source's tracker, when this is the lane of one partition
        self._lanes: dict[Any, AckTracker] = {}
        self._ready: dict[int, AckTracker] = {}  # lanes with committable offsets, by id
        self.committed: Any = None  # the last offset handed to the source's commit()

    def lane(self, partition: Any) -> AckTracker:
        """The tracker of the reads of ``partition`` (this one for ``None``)."""
        if partition is None:
            return self
        lane = self._lanes.get(partition)
        if lane is None:
            lane = self._lanes[partition] = AckTracker(
                f"{self.name}[{partition!r}]", keeps_offsets=self.keeps_offsets, root=self
            )
        return lane

    def issue(self, offset: Any, count: int) -> AckToken:
        """Register a read of ``count`` events ending at ``offset``."""
        token = AckToken(self, offset, count)
        self._open.append(token)
        if count == 0:
            self._advance()
        return token

    @property
    def source(self) -> str:
        """The name of the intake (source node, or handle) whose reads this tracks."""
        return self._root.name if self._root is not None else self.name

    @property
    def open_reads(self) -> int:
        """Reads not yet committable (some event of theirs, or of an earlier read, is open)."""
        return len(self._open) + sum(len(lane._open) for lane in self._lanes.values())

    def open_tokens(self) -> list[AckToken]:
        """The reads not yet committable, of every lane."""
        tokens = list(self._open)
        for lane in self._lanes.values():
            tokens.extend(lane._open)
        return tokens

    @property
    def pending_events(self) -> int:
        """Events (and copies) of this intake not yet finished, in every lane."""
        return sum(token.pending for token in self.open_tokens())

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
        if not moved or not self.keeps_offsets:
            return
        root = self
        if self._root is not None:
            root = self._root
            root._ready[id(self)] = self
        if root._changed is not None:
            root._changed.set()
            root._changed = None

    def take_committable(self) -> list[Any]:
        """Return, and forget, the offsets that became committable, in read order.

        With lanes: this tracker's own offsets, then each ready lane's, each in
        its own read order.
        """
        ready, self._committable = self._committable, []
        if self._ready:
            lanes, self._ready = self._ready, {}
            for lane in lanes.values():
                ready.extend(lane._committable)
                lane._committable = []
        return ready

    async def wait_changed(self) -> None:
        """Wait until more offsets become committable (in any lane)."""
        if self._committable or self._ready:
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
