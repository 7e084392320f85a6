"""Keyed state beyond windows: ``ti.dedupe(key, ttl)`` and ``ti.stateful_map(fn, initial)``.

Both keep their state per key in memory, for one worker task; state expires
(``dedupe``: ``ttl`` seconds of event time behind the largest event time seen;
``stateful_map``: when ``fn`` returns ``None`` as the new state, or ``ttl`` seconds
after the key's last update), so memory is bounded by the live keys.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable
from typing import Any

from .._batch import Batch
from .._errors import ConfigError
from .._validators import check, positive
from ._context import StageContext
from ._stateful import StatefulStage

__all__ = ("Dedupe", "StatefulMap", "dedupe", "stateful_map")

_inf = math.inf


class Dedupe(StatefulStage):
    """Drops an event whose key was seen less than ``ttl`` seconds (event time) before it."""

    kind = "dedupe"

    def __init__(
        self, key: Callable[[Any], Hashable] | None, ttl: float, name: str | None
    ) -> None:
        if key is not None and not callable(key):
            raise ConfigError(f"'key' must be callable: {key!r}")
        self.key = key
        self.ttl = float(check(positive, "ttl", ttl))
        super().__init__(name)
        self._seen: dict[Hashable, float] = {}  # key -> event time it was first kept
        self._expiry: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._top = -math.inf

    @property
    def live_keys(self) -> int:
        """Keys remembered now (the state's size)."""
        return len(self._seen)

    async def work(self, ctx: StageContext) -> None:
        """Keep first sightings, drop repeats (filtered), dead-letter events whose key fails."""
        self._begin()  # each run starts afresh, or from restored state
        keyfn, ttl, seen, expiry = self.key, self.ttl, self._seen, self._expiry
        stats = ctx.stats
        while (batch := await ctx.receive()) is not None:
            started = ctx.clock()
            keep: list[int] = []
            drop: list[int] = []
            failed: list[int] = []
            errors: list[tuple[Exception, int]] = []
            for i, (event, payload) in enumerate(zip(batch.events, batch.payloads, strict=True)):
                t = event.event_time
                try:
                    k = keyfn(payload) if keyfn is not None else event.id
                    first = seen.get(k)
                except Exception as exc:  # noqa: BLE001 -- the user's function fails this event
                    failed.append(i)
                    errors.append((exc, 1))
                    continue
                if first is not None and abs(t - first) < ttl:
                    drop.append(i)
                    continue
                keep.append(i)
                if first is None or t > first:
                    seen[k] = t
                    heapq.heappush(expiry, (t + ttl, next(self._seq), k))
                if t > self._top:
                    self._top = t
            while expiry and expiry[0][0] <= self._top:  # nothing can repeat these any more
                until, _seq, k = heapq.heappop(expiry)
                if seen.get(k, math.nan) + ttl == until:
                    del seen[k]
            if failed:
                stats.errors += len(failed)
                await ctx.dead_letter(stats, batch, failed, errors)
            if drop:
                ctx.drop(stats, batch.select(drop))
            n = len(batch)
            if keep:
                await ctx.forward(batch if len(keep) == n else batch.select(keep))
            stats.record_batch(n, len(keep), ctx.clock() - started)


    # -- checkpointing --------------------------------------------------------------
    checkpoints = True

    def _begin(self) -> None:
        self._seen, self._expiry, self._top = {}, [], -math.inf
        state = self._take_restored()
        if state is None:
            return
        for k, t in state["seen"]:
            self._seen[k] = t
            heapq.heappush(self._expiry, (t + self.ttl, next(self._seq), k))
        self._top = -math.inf if state["top"] is None else state["top"]

    def state_signature(self) -> dict[str, Any]:
        """The kind and the ``ttl`` the remembered keys were kept for."""
        return {"kind": self.kind, "ttl": self.ttl}

    def _snapshot(self) -> Any:
        """The remembered keys ``[key, event time]`` and the largest event time seen."""
        top = None if self._top == -math.inf else self._top
        return {"seen": [[k, t] for k, t in self._seen.items()], "top": top}


class StatefulMap(StatefulStage):
    """``fn(state, payload) -> (state, output)`` per key; a ``None`` state forgets the key."""

    kind = "stateful_map"

    def __init__(
        self,
        fn: Callable[[Any, Any], tuple[Any, Any]],
        initial: Any,
        key: Callable[[Any], Hashable] | None,
        name: str | None,
        ttl: float | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"stateful_map() needs a callable: {fn!r}")
        if key is not None and not callable(key):
            raise ConfigError(f"'key' must be callable: {key!r}")
        self.fn = fn
        self.initial: Callable[[], Any] = initial if callable(initial) else (lambda: initial)
        self.key = key
        self.ttl = None if ttl is None else float(check(positive, "ttl", ttl))
        super().__init__(name)
        self.state: dict[Hashable, Any] = {}
        self._updated: dict[Hashable, float] = {}  # key -> event time of its last update (ttl)
        self._expiry: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._top = -math.inf

    @property
    def live_keys(self) -> int:
        """Keys with state now (the state's size)."""
        return len(self.state)

    async def work(self, ctx: StageContext) -> None:
        """Each event's payload becomes the output ``fn`` returns; its state is kept per key."""
        self._begin()  # each run starts afresh, or from restored state
        fn, state, keyfn, initial = self.fn, self.state, self.key, self.initial
        ttl, updated, expiry, seq = self.ttl, self._updated, self._expiry, self._seq
        stats = ctx.stats
        while (batch := await ctx.receive()) is not None:
            started = ctx.clock()
            outputs: list[Any] = []
            kept: list[int] = []
            failed: list[int] = []
            errors: list[tuple[Exception, int]] = []
            for i, (event, payload) in enumerate(zip(batch.events, batch.payloads, strict=True)):
                try:
                    k = keyfn(payload) if keyfn is not None else event.key
                    if ttl is not None:
                        t = event.event_time
                        if t > self._top:
                            self._top = t
                        if updated.get(k, _inf) + ttl <= self._top:  # stale: starts afresh
                            del updated[k]
                            state.pop(k, None)
                    before = state[k] if k in state else initial()
                    after, out = fn(before, payload)
                except Exception as exc:  # noqa: BLE001 -- the user's function fails this event
                    failed.append(i)
                    errors.append((exc, 1))
                    continue
                if after is None:
                    state.pop(k, None)
                else:
                    state[k] = after
                    if ttl is not None and t > updated.get(k, -_inf):
                        updated[k] = t
                        heapq.heappush(expiry, (t + ttl, next(seq), k))
                kept.append(i)
                outputs.append(out)
            while expiry and expiry[0][0] <= self._top:  # untouched for ttl: forgotten
                until, _seq, k = heapq.heappop(expiry)
                if updated.get(k, math.nan) + ttl == until:  # type: ignore[operator]
                    del updated[k]
                    state.pop(k, None)
            if failed:
                stats.errors += len(failed)
                await ctx.dead_letter(stats, batch, failed, errors)
            if kept:
                part = batch if len(kept) == len(batch) else batch.select(kept)
                await ctx.forward(Batch(part.events, outputs, part.tokens, part.trace))
            stats.record_batch(len(batch), len(kept), ctx.clock() - started)


    # -- checkpointing --------------------------------------------------------------
    checkpoints = True

    def _begin(self) -> None:
        self.state, self._updated, self._expiry = {}, {}, []
        self._top = -math.inf
        state = self._take_restored()
        if state is None:
            return
        for k, v, t in state["keys"]:
            self.state[k] = v
            if t is not None and self.ttl is not None:
                self._updated[k] = t
                heapq.heappush(self._expiry, (t + self.ttl, next(self._seq), k))
        self._top = -math.inf if state["top"] is None else state["top"]

    def state_signature(self) -> dict[str, Any]:
        """The kind and the ``ttl`` the keys' states were kept for."""
        return {"kind": self.kind, "ttl": self.ttl}

    def _snapshot(self) -> Any:
        """Each live key ``[key, state, event time of its last update]``, the largest time seen."""
        updated = self._updated
        top = None if self._top == -math.inf else self._top
        return {"keys": [[k, v, updated.get(k)] for k, v in self.state.items()], "top": top}


def dedupe(
    key: Callable[[Any], Hashable] | None = None, *, ttl: float, name: str | None = None
) -> Dedupe:
    """Drop repeats: an event whose ``key(payload)`` (default: its id) was kept less than
    ``ttl`` seconds of event time earlier is filtered out.

    A key is forgotten once the largest event time seen passes its ``ttl``, so memory
    holds only the keys seen in the last ``ttl`` seconds.

    Raises:
        ConfigError: ``ttl`` is not positive, or ``key`` is not callable.
    """
    return Dedupe(key, ttl, name)


def stateful_map(
    fn: Callable[[Any, Any], tuple[Any, Any]],
    initial: Any = None,
    *,
    key: Callable[[Any], Hashable] | None = None,
    ttl: float | None = None,
    name: str | None = None,
) -> StatefulMap:
    """Map with per-key state: ``fn(state, payload) -> (new_state, output)``.

    The state of a new key is ``initial`` (a callable makes a fresh one); returning
    ``None`` as the new state forgets the key. ``key(payload)`` picks the key (the
    event's key by default). With ``ttl``, a key not updated for ``ttl`` seconds of
    event time (behind the largest event time seen) is forgotten too, so memory
    holds only the keys updated in the last ``ttl`` seconds (plus one batch).

    Raises:
        ConfigError: ``fn`` or ``key`` is not callable, or ``ttl`` is not positive.
    """
    return StatefulMap(fn, initial, key, name, ttl)
