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

A caller that wants to know when *its own* events are finished (an HTTP request
answered only once its events are written) passes a :class:`Completion` when
they are admitted: every token issued for them counts into it, and it is done
when they are all finished, whatever earlier reads still hold the watermark.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Collection, Sequence
from typing import Any

import anyio

__all__ = ("AckToken", "AckTracker", "Completion", "finish", "retain")


#: How an event can finish, as :func:`finish` is told (``None``: an undone copy).
DELIVERED, DEAD_LETTERED, FILTERED = 0, 1, 2


class Completion:
    """What became of the events of one admission (a request): awaitable, counted by kind.

    Give it to ``PipelineHandle.send_batch(..., completion=c)`` (or a source's
    ``Read.completion``); every token issued for those events joins it. ``wait()``
    returns once all of them are finished: delivered by a sink, dead-lettered or
    filtered (copies made by fan-out or ``flat_map`` count one each). It does not
    wait for anybody else's events. Nothing keeps it alive but its tokens and its
    waiter: a waiter that goes away (a cancelled request) changes no accounting.

    Attributes:
        delivered: Units written by a sink.
        dead_lettered: Units taken by the dead-letter sink.
        filtered: Units dropped on purpose by a filter.
        letters: ``(event id, reason)`` of the first ``max_letters`` dead letters.
    """

    __slots__ = (
        "_done", "_event", "_open", "_sealed", "dead_lettered", "delivered", "filtered",
        "letters", "max_letters",
    )

    def __init__(self, *, max_letters: int = 100) -> None:
        self.delivered = 0
        self.dead_lettered = 0
        self.filtered = 0
        self.letters: list[tuple[str, str]] = []
        self.max_letters = max_letters
        self._open = 0  # tokens joined and not finished
        self._sealed = False  # no more tokens will join
        self._done = False
        self._event: anyio.Event | None = None

    def __repr__(self) -> str:
        return (
            f"<Completion delivered={self.delivered} dead_lettered={self.dead_lettered} "
            f"filtered={self.filtered} open_reads={self._open} done={self._done}>"
        )

    @property
    def done(self) -> bool:
        """Sealed, and every event of it finished."""
        return self._done

    @property
    def finished(self) -> int:
        """Units finished so far, of every kind."""
        return self.delivered + self.dead_lettered + self.filtered

    def note_letter(self, event_id: str, reason: str) -> None:
        """Remember why one of these events is being dead-lettered (the first few)."""
        if len(self.letters) < self.max_letters:
            self.letters.append((event_id, reason))

    def seal(self) -> None:
        """No more events will join: done as soon as those that did are finished."""
        self._sealed = True
        self._check()

    async def wait(self) -> Completion:
        """Seal, then wait until every event that joined is finished; return ``self``."""
        self.seal()
        if not self._done:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
        return self

    def _joined(self) -> None:
        self._open += 1

    def _finished(self) -> None:
        self._open -= 1
        self._check()

    def _check(self) -> None:
        if self._sealed and self._open <= 0 and not self._done:
            self._done = True
            if self._event is not None:
                self._event.set()


class AckToken:
    """One source read: its offset and how many units of work are still open."""

    __slots__ = ("completion", "offset", "pending", "tracker")

    def __init__(
        self, tracker: AckTracker, offset: Any, pending: int, completion: Completion | None = None
    ) -> None:
        self.tracker = tracker
        self.offset = offset
        self.pending = pending
        self.completion = completion

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

    def issue(self, offset: Any, count: int, completion: Completion | None = None) -> AckToken:
        """Register a read of ``count`` events ending at ``offset`` (joining ``completion``)."""
        token = AckToken(self, offset, count, completion)
        self._open.append(token)
        if count == 0:
            self._advance()
        elif completion is not None:
            completion._joined()
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


def finish(tokens: Sequence[AckToken], kind: int | None = None) -> None:
    """Mark one unit of work finished for every entry of ``tokens`` (one per event).

    ``kind`` (:data:`DELIVERED`, :data:`DEAD_LETTERED`, :data:`FILTERED`) is counted
    into the tokens' completions; ``None`` undoes a copy that was never sent.
    """
    n = len(tokens)
    if n == 0:
        return
    first = tokens[0]
    if tokens.count(first) == n:  # the common case: the whole batch came from one read
        _finish(first, n, kind)
        return
    for token, k in Counter(tokens).items():
        _finish(token, k, kind)


def _finish(token: AckToken, k: int, kind: int | None) -> None:
    token.pending -= k
    completion = token.completion
    if completion is not None and kind is not None:
        if kind == DELIVERED:
            completion.delivered += k
        elif kind == DEAD_LETTERED:
            completion.dead_lettered += k
        else:
            completion.filtered += k
    if token.pending <= 0:
        _check(token)
        token.tracker._advance()
        if completion is not None:
            token.completion = None  # a token finishes once: leave it no way to count twice
            completion._finished()


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
