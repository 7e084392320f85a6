"""Keyed event-time windows: ``ti.windows.tumbling``, ``sliding`` and ``session``.

A window is a stage like any other (``work(ctx)``). It keeps, per key and
window, an accumulator, a count and the acknowledgement tokens of the events it
folded in; the tokens stay open until the window's result is emitted, so a
source never commits past an event whose window is still open.

The watermark is the largest event time seen minus ``max_delay``, per partition
(the source an event came from, or ``partition(payload)``), the minimum across
partitions; it never goes back. A partition silent for ``idle_timeout`` seconds
of processing time stops holding it back (when every partition is silent, the
watermark moves to the largest event time seen). The end of the input moves it
to +infinity: every window closes before ``run()`` returns.

A window ``[start, end)`` closes when the watermark reaches ``end +
allowed_lateness``; its result is one event, payload ``{"key", "start", "end",
"value", "count"}``, id ``f"{name}:{key}:{start}"``, event time ``end``. An event
is late when every window it belongs to has closed: it is counted in the
stage's ``late`` counter and sent to the ``late`` port when a Graph wires one,
else dead-lettered with a reason saying how late. Lateness is decided against
the watermark as it stands before each event, so results do not depend on how
the input was batched.
"""

from __future__ import annotations

import heapq
import itertools
import math
import operator
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from .._acks import AckToken
from .._batch import Batch
from .._errors import ConfigError, IngestError
from .._event import _NO_HEADERS, Event
from .._event import trusted as _trusted
from .._validators import check, non_negative, positive
from ._agg import Agg, _identity
from ._agg import reduce as _reduce_agg
from ._context import StageContext
from ._stateful import StatefulStage

__all__ = (
    "LateEventError",
    "Reorder",
    "Watermark",
    "WindowStage",
    "reorder",
    "session",
    "sliding",
    "tumbling",
)

_inf = math.inf
_time_of = operator.itemgetter(3)  # Event.event_time, read in a C loop
#: The event of the placeholder batch that finishes units folded into emitted results.
_FOLDED = Event("folded", None, None, 0.0)
_carrier_of = operator.itemgetter(2)  # the read a fixed window's result carries
_key_of = operator.itemgetter(2)  # Event.key
_NONE: dict[Any, list[Any]] = {}  # no windows at this start (never written to)


class LateEventError(IngestError):
    """An event arrived after every window it belongs to had closed."""


def _num(x: float) -> str:
    """A window bound as people write it: ``100`` for 100.0, ``12.5`` otherwise."""
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


class Watermark:
    """Event-time progress: per partition max event time - ``max_delay``, the minimum across."""

    __slots__ = ("_max", "_seen", "idle_timeout", "max_delay", "value")

    def __init__(self, max_delay: float, idle_timeout: float | None) -> None:
        self.max_delay = max_delay
        self.idle_timeout = idle_timeout
        self._max: dict[Hashable, float] = {}
        self._seen: dict[Hashable, float] = {}  # processing time of the last arrival
        self.value = -_inf

    def observe(self, partition: Hashable, t: float, now: float) -> None:
        """An event of ``partition`` with event time ``t`` arrived at processing time ``now``."""
        m = self._max
        old = m.get(partition)
        self._seen[partition] = now
        if old is not None and t <= old:
            return
        m[partition] = t
        if len(m) == 1:
            candidate = t - self.max_delay
            if candidate > self.value:
                self.value = candidate
        else:
            self.refresh(now)

    def refresh(self, now: float) -> None:
        """Recompute across partitions, leaving out the idle ones (processing time ``now``)."""
        if not self._max:
            return
        idle = self.idle_timeout
        if idle is None:
            candidate = min(self._max.values()) - self.max_delay
        else:
            seen = self._seen
            active = [t for p, t in self._max.items() if seen[p] + idle > now]
            if active:
                candidate = min(active) - self.max_delay
            else:  # every input is silent: nothing more is coming soon
                candidate = max(self._max.values())
        if candidate > self.value:
            self.value = candidate

    def next_idle(self, now: float) -> float:
        """When the next active partition turns idle (``inf``: never, or no timeout)."""
        idle = self.idle_timeout
        if idle is None:
            return _inf
        times = [s + idle for s in self._seen.values() if s + idle > now]
        return min(times) if times else _inf

    def end(self) -> None:
        """The input ended: every window closes."""
        self.value = _inf

    def to_state(self) -> dict[str, Any]:
        """The watermark and its partitions as JSON values.

        An ended input stays ended: a later run over the same state finds every
        window closed, and its events are late (never folded into a window
        already emitted, whose result an idempotent sink would keep).
        """
        value = self.value
        return {
            "watermark": value if math.isfinite(value) else None,
            "ended": value == _inf,
            "partitions": [[p, t] for p, t in self._max.items()],
        }

    def restore(self, state: dict[str, Any], now: float) -> None:
        """Take the watermark of ``state``; its partitions count as active from ``now``."""
        if state.get("ended"):
            self.value = _inf
        else:
            self.value = -_inf if state["watermark"] is None else state["watermark"]
        for p, t in state["partitions"]:
            self._max[p] = t
            self._seen[p] = now


class _Window:
    """One open window of one key: accumulator, event count, tokens of the events in it."""

    __slots__ = ("acc", "alive", "count", "end", "key", "start", "tokens")

    def __init__(self, key: Any, start: float, end: float, acc: Any) -> None:
        self.key = key
        self.start = start
        self.end = end
        self.acc = acc
        self.count = 0
        self.tokens: dict[AckToken, int] = {}
        self.alive = True

    def hold(self, token: AckToken) -> None:
        tokens = self.tokens
        tokens[token] = tokens.get(token, 0) + 1


class WindowStage(StatefulStage):
    """Keyed event-time windows (made by :func:`tumbling`, :func:`sliding`, :func:`session`)."""

    kind = "window"
    #: Output ports a Graph may wire besides the plain output; unwired, late events
    #: are dead-lettered.
    extra_ports: tuple[str, ...] = ("late",)

    def __init__(
        self,
        shape: str,
        size: float,
        every: float | None,
        *,
        key: Callable[[Any], Hashable] | None,
        reduce: Callable[[Any, Any], Any] | None,
        initial: Any,
        merge: Callable[[Any, Any], Any] | None,
        agg: Agg | None,
        max_delay: float,
        allowed_lateness: float,
        idle_timeout: float | None,
        partition: Callable[[Any], Hashable] | None,
        name: str | None,
    ) -> None:
        if agg is not None and reduce is not None:
            raise ConfigError("a window takes 'reduce' or 'agg', not both")
        if agg is None and reduce is None:
            raise ConfigError("a window needs 'reduce' (with 'initial') or 'agg' (ti.agg.*)")
        if agg is None:
            assert reduce is not None
            agg = _reduce_agg(reduce, initial, merge)
        elif not isinstance(agg, Agg):
            raise ConfigError(f"'agg' must be an aggregation (ti.agg.*): {agg!r}")
        if shape == "session" and agg.merge is None:
            raise ConfigError("session windows merge: give 'merge' with 'reduce'")
        if key is not None and not callable(key):
            raise ConfigError(f"'key' must be callable: {key!r}")
        if partition is not None and not callable(partition):
            raise ConfigError(f"'partition' must be callable: {partition!r}")
        self.shape = shape
        self.size = size
        self.every = every
        self.key = key
        self.agg = agg
        self.max_delay = float(check(non_negative, "max_delay", max_delay))
        self.allowed_lateness = float(check(non_negative, "allowed_lateness", allowed_lateness))
        self.idle_timeout = (
            None if idle_timeout is None else float(check(positive, "idle_timeout", idle_timeout))
        )
        self.partition = partition
        super().__init__(name)
        self.name = name or shape
        self._run: _Run | None = None  # the running (or last) run: what a checkpoint saves

    def __repr__(self) -> str:
        return f"<window {self.name!r} {self.shape} size={self.size}>"

    def in_hand(self, default_batch: int) -> int:
        """Events it holds beyond its input edge: a batch in hand and a batch of results.

        Open windows hold accumulators and acknowledgement tokens, not events.
        """
        return 2 * default_batch

    # -- window assignment ------------------------------------------------------
    def _starts(self, t: float) -> Iterable[float]:
        """The starts of the fixed windows holding event time ``t`` (newest first)."""
        size = self.size
        if self.every is None:
            return (math.floor(t / size) * size,)
        every = self.every
        starts = []
        k = math.floor(t / every)
        while True:
            start = k * every
            if start + size <= t:
                break
            if start <= t:
                starts.append(start)
            k -= 1
        return starts

    # -- the stage protocol -----------------------------------------------------
    async def work(self, ctx: StageContext) -> None:
        """Fold each batch into its windows; emit the windows the watermark closed."""
        run = self._begin(ctx)
        clock = ctx.clock
        ended = False
        while not ended:
            now = clock()
            got = await ctx.receive(run.wm.next_idle(now))
            now = clock()
            started = now
            if got is None:
                if ctx.durable and ctx.stop_requested():
                    return  # a graceful stop: the open windows go into the last checkpoint
                ended = True
                run.wm.end()
            elif got.payloads:
                await run.fold(got, now)
            n_in = len(got) if got is not None else 0
            run.wm.refresh(now)
            n_out = await run.close()
            if n_in or n_out:
                ctx.stats.record_batch(n_in, n_out, clock() - started)

    # -- checkpointing (separate from the fold loops) -----------------------------
    checkpoints = True

    def _begin(self, ctx: StageContext) -> _Run:
        run = self._run = _Run(self, ctx)
        state = self._take_restored()
        if state is not None:
            run.restore(state, ctx.clock())
        return run

    def state_signature(self) -> dict[str, Any]:
        """Shape, size, slide and lateness: stored windows of another shape cannot be reused."""
        return {
            "kind": self.kind,
            "shape": self.shape,
            "size": self.size,
            "every": self.every,
            "allowed_lateness": self.allowed_lateness,
        }

    def _snapshot(self) -> Any:
        """Open windows ``[key, start, end, acc, count]`` and the watermark's partitions."""
        return _Run.empty_state() if self._run is None else self._run.snapshot()

    def restore_state(self, state: Any) -> None:
        """Start the next run with these open windows and this watermark."""
        super().restore_state(state)
        self._run = None  # a finished run's tokens are not this state's

    def release_tokens(self) -> list[AckToken]:
        """The tokens of the events folded into open windows since the last checkpoint."""
        return self._run.release() if self._run is not None else []


class _Run:
    """The state of one running window stage.

    Fixed windows (tumbling, sliding) live in ``open``: ``start -> key -> [acc, count,
    carrier]`` where ``carrier`` is the read of the event that opened the window (its
    acknowledgement unit travels with the result). All windows of one start end
    together: ``closing`` is a heap of the starts, so closing costs nothing until the
    watermark passes the smallest end. The other units of the events folded in are
    held per run of one read in ``held`` (``[release_end, token, units]``, release ends
    never decreasing) and finished as filtered once every window they touched has been
    emitted: the bookkeeping costs a few operations per batch, not per event.
    """

    def __init__(self, stage: WindowStage, ctx: StageContext) -> None:
        self.stage = stage
        self.ctx = ctx
        self.agg = stage.agg
        self.wm = Watermark(stage.max_delay, stage.idle_timeout)
        self.lateness = stage.allowed_lateness
        # fixed windows: start -> key -> [acc, count, carrier], keys in the order they opened
        self.open: dict[float, dict[Any, list[Any]]] = {}
        self.closing: list[float] = []  # heap of the starts in ``open``
        self.held: deque[list[Any]] = deque()  # [release_end, token, units], ends ascending
        self.sessions: dict[Any, list[_Window]] = {}  # session windows by key
        # (end, seq, window): sessions by closing time; stale entries skipped
        self.heap: list[tuple[float, int, _Window]] = []
        self.seq = itertools.count()

    # -- checkpoints -------------------------------------------------------------
    @staticmethod
    def empty_state() -> dict[str, Any]:
        return {"windows": [], "watermark": None, "partitions": []}

    def _sessions(self) -> list[_Window]:
        return [w for ws in self.sessions.values() for w in ws]

    def snapshot(self) -> dict[str, Any]:
        """The open windows and the watermark as plain values (tokens are not state)."""
        if self.stage.shape == "session":
            windows = [[w.key, w.start, w.end, w.acc, w.count] for w in self._sessions()]
        else:
            size = self.stage.size
            windows = [
                [key, start, start + size, w[0], w[1]]
                for start, here in self.open.items()
                for key, w in here.items()
            ]
        return {"windows": windows, **self.wm.to_state()}

    def restore(self, state: dict[str, Any], now: float) -> None:
        """Reopen the windows of ``state``; its partitions count as active from ``now``.

        Their events' reads were finished by the checkpoint that saved them: a
        restored window carries no read (``None``); its result gets a token made
        for it when it is emitted.
        """
        session = self.stage.shape == "session"
        for key, start, end, acc, count in state["windows"]:
            if session:
                w = _Window(key, start, end, acc)
                w.count = count
                self.sessions.setdefault(key, []).append(w)
                heapq.heappush(self.heap, (end, next(self.seq), w))
                continue
            here = self.open.get(start)
            if here is None:
                here = self.open[start] = {}
                heapq.heappush(self.closing, start)
            here[key] = [acc, count, None]
        self.wm.restore(state, now)

    def release(self) -> list[AckToken]:
        """Every unit of a read the open windows hold (the state holds those events now)."""
        tokens: list[AckToken] = []
        for w in self._sessions():
            if w.tokens:
                for tok, units in w.tokens.items():
                    tokens.extend([tok] * units)
                w.tokens.clear()
        for here in self.open.values():
            for fixed in here.values():
                if fixed[2] is not None:
                    tokens.append(fixed[2])  # the unit its result would have carried
                    fixed[2] = None
        for _end, tok, units in self.held:
            tokens.extend([tok] * units)
        self.held.clear()
        return tokens

    # -- folding -----------------------------------------------------------------
    async def fold(self, batch: Batch, now: float) -> None:
        stage, ctx, wm = self.stage, self.ctx, self.wm
        keyfn, partfn = stage.key, stage.partition
        add = self.agg.add
        late: list[int] = []
        reasons: list[str] = []
        failed: list[int] = []
        errors: list[tuple[Exception, int]] = []
        events, payloads, tokens = batch.events, batch.payloads, batch.tokens
        session = stage.shape == "session"
        fast = stage.shape == "tumbling" and partfn is None
        if fast:
            self._fold_tumbling(batch, now, late, reasons, failed, errors)
        for i in range(0 if fast else len(payloads)):
            event, payload, token = events[i], payloads[i], tokens[i]
            t = event.event_time
            try:
                key = keyfn(payload) if keyfn is not None else event.key
                hash(key)
                part = partfn(payload) if partfn is not None else token.tracker.name
                hash(part)
                if session:
                    reason = self._fold_session(key, t, payload, token)
                else:
                    reason = self._fold_fixed(key, t, payload, token, add)
            except Exception as exc:  # noqa: BLE001 -- the user's function fails this event alone
                failed.append(i)
                errors.append((exc, 1))
                continue
            if reason is not None:
                late.append(i)
                reasons.append(reason)
            wm.observe(part, t, now)
        if failed:
            ctx.stats.errors += len(failed)
            await ctx.dead_letter(ctx.stats, batch, failed, errors)
        if late:
            ctx.stats.late += len(late)
            if ctx.wired("late"):
                await ctx.emit(batch.select(late), "late")
            else:
                await ctx.dead_letter(
                    ctx.stats, batch, late, [(LateEventError(r), 1) for r in reasons]
                )

    def _fold_tumbling(
        self,
        batch: Batch,
        now: float,
        late: list[int],
        reasons: list[str],
        failed: list[int],
        errors: list[tuple[Exception, int]],
    ) -> None:
        """:meth:`fold` for tumbling windows partitioned by source: the hot loop inlined.

        One pass per run of events from one read (:meth:`_run`); the watermark of
        the run's source moves as it goes, exactly as :meth:`Watermark.observe` would.
        """
        wm, tops = self.wm, self.wm._max
        events, tokens = batch.events, batch.tokens
        times = list(map(_time_of, events))
        keyfn = self.stage.key
        keys_from = batch.payloads if keyfn is not None else events
        size, lateness, floor = self.stage.size, self.lateness, math.floor
        n = len(times)
        lo = 0
        while lo < n:
            token = tokens[lo]
            hi = _run_end(tokens, lo)
            part: Hashable = token.tracker.name
            top = tops.get(part, -_inf)
            single = not tops or (len(tops) == 1 and part in tops)
            skipped = len(late) + len(failed)
            span = times[lo:hi]
            newest = max(span)
            k = floor(min(span) / size)
            start = k * size
            fresh = 0
            if k == floor(newest / size) and start + size + lateness > wm.value:
                # the whole run lies in one start, whose windows are open: none of its
                # events can be late (the watermark stays behind ``newest - max_delay``)
                done, fresh = self._run_one_start(batch, keys_from, lo, hi, start, token)
                if done < hi:  # event ``done`` failed: the careful loop takes over from it
                    if done > lo:
                        top = max(top, max(times[lo:done]))
                        wm.observe(part, top, now)
                    top, more = self._run(
                        batch, times, keys_from, done, hi, token, part, top, single, now,
                        late, reasons, failed, errors,
                    )
                    fresh += more
                elif newest > top:  # every event folded: the newest moves the watermark
                    top = newest
            else:
                top, fresh = self._run(
                    batch, times, keys_from, lo, hi, token, part, top, single, now,
                    late, reasons, failed, errors,
                )
            wm.observe(part, top, now)  # (after ``_run`` left its watermark in ``wm.value``)
            folded = hi - lo - (len(late) + len(failed) - skipped)
            # no window of this run ends after the one holding its newest event
            self._hold(token, folded - fresh, floor(newest / size) * size + size)
            lo = hi

    def _run_one_start(
        self, batch: Batch, keys_from: list[Any], lo: int, hi: int, start: float, token: AckToken
    ) -> tuple[int, int]:
        """Fold the events ``lo:hi`` of one read into the windows of ``start`` (none late).

        Returns (the index of the first event not folded, ``hi`` when all were; windows
        opened). Keys and ``sum``'s values are read in C loops; an event whose key or
        value fails stops the pass before it changes anything.
        """
        here = self.open.get(start)
        if here is None:
            here = self.open[start] = {}
            heapq.heappush(self.closing, start)
        get = here.get
        keyfn = self.stage.key or _key_of
        keys = map(keyfn, keys_from[lo:hi])
        inline, field = self.agg.inline or ("", None)
        fresh = 0
        done = lo - 1  # the last event folded
        try:
            if inline == "sum" and field is not None:
                values = map(operator.itemgetter(field), batch.payloads[lo:hi])
                for i, key, v in zip(range(lo, hi), keys, values, strict=True):
                    w = get(key)
                    if w is None:
                        here[key] = [0 + v, 1, token]  # sum's initial() is 0
                        fresh += 1
                    else:
                        w[0] += v
                        w[1] += 1
                    done = i
            elif inline == "count":
                for i, key in zip(range(lo, hi), keys, strict=True):
                    w = get(key)
                    if w is None:
                        here[key] = [1, 1, token]
                        fresh += 1
                    else:
                        w[0] += 1
                        w[1] += 1
                    done = i
            else:
                add, initial = self.agg.add, self.agg.initial
                for i, key, payload in zip(range(lo, hi), keys, batch.payloads[lo:hi], strict=True):
                    w = get(key)
                    if w is None:
                        here[key] = [add(initial(), payload), 1, token]
                        fresh += 1
                    else:
                        w[0] = add(w[0], payload)
                        w[1] += 1
                    done = i
        except Exception:  # noqa: BLE001 -- the careful loop redoes this event and reports it
            pass
        return done + 1, fresh

    def _run(
        self,
        batch: Batch,
        times: list[float],
        keys_from: list[Any],
        lo: int,
        hi: int,
        token: AckToken,
        part: Hashable,
        top: float,
        single: bool,
        now: float,
        late: list[int],
        reasons: list[str],
        failed: list[int],
        errors: list[tuple[Exception, int]],
    ) -> tuple[float, int]:
        """Fold the events ``lo:hi`` of one read; returns (the newest event time, windows opened).

        The windows at hand are those of one ``start``: an event with
        ``low <= t / size < high`` belongs there (the same test as ``floor(t / size)
        == low``, without the call). ``sum(field)`` and ``count()`` fold inline.
        """
        stage, wm = self.stage, self.wm
        keyfn = stage.key or _key_of
        add, initial = self.agg.add, self.agg.initial
        inline, field = self.agg.inline or ("", None)
        summing = inline == "sum" and field is not None
        counting = inline == "count"
        size, lateness, delay = stage.size, self.lateness, wm.max_delay
        floor, closing, push, opened = math.floor, self.closing, heapq.heappush, self.open
        payloads = batch.payloads
        mark = wm.value
        low = high = start = closes_at = _inf
        here: dict[Any, list[Any]] = _NONE
        fresh = 0
        for i in range(lo, hi):
            t = times[i]
            q = t / size
            if not low <= q < high:
                k = floor(q)
                start = k * size  # as ``_starts`` computes it (an int size keeps int starts)
                low = float(k)
                high = low + 1.0
                closes_at = start + size + lateness
                got = opened.get(start)
                if got is None:
                    if closes_at > mark:  # (once late, a start stays late)
                        got = opened[start] = {}
                        push(closing, start)
                    else:
                        got = _NONE
                here = got
            if closes_at <= mark:
                late.append(i)
                reasons.append(self._late_at(mark, t, start, start + size))
            elif summing:
                try:
                    key = keyfn(keys_from[i])
                    w = here.get(key)
                    if w is None:
                        here[key] = [0 + payloads[i][field], 1, token]  # sum's initial() is 0
                        fresh += 1
                    else:
                        w[0] += payloads[i][field]
                        w[1] += 1
                except Exception as exc:  # noqa: BLE001 -- the user's function fails this event alone
                    failed.append(i)
                    errors.append((exc, 1))
                    continue
            else:
                try:
                    key = keyfn(keys_from[i])
                    w = here.get(key)
                    if w is None:
                        acc = 1 if counting else add(initial(), payloads[i])
                        here[key] = [acc, 1, token]
                        fresh += 1
                    else:
                        w[0] = w[0] + 1 if counting else add(w[0], payloads[i])
                        w[1] += 1
                except Exception as exc:  # noqa: BLE001 -- the user's function fails this event alone
                    failed.append(i)
                    errors.append((exc, 1))
                    continue
            if t > top:
                top = t
                if single:  # one partition: no minimum to take
                    if t - delay > mark:
                        mark = t - delay
                else:
                    wm.value = mark
                    wm.observe(part, t, now)
                    mark = wm.value
        wm.value = mark
        return top, fresh

    def _hold(self, token: AckToken, units: int, reach: float) -> None:
        """Hold ``units`` of ``token`` until every window ending by ``reach`` was emitted."""
        if units <= 0:
            return
        held = self.held
        if held:
            last = held[-1]
            if reach < last[0]:
                reach = last[0]
            if last[1] is token:
                last[0] = reach
                last[2] += units
                return
        held.append([reach, token, units])

    def _late(self, t: float, start: float, end: float) -> str:
        return self._late_at(self.wm.value, t, start, end)

    @staticmethod
    def _late_at(wm: float, t: float, start: float, end: float) -> str:
        window = f"[{_num(start)}, {_num(end)})"
        if wm == _inf:
            return (
                f"late: window {window} closed when the input ended (a run over this state "
                "reached the end of its input; follow the input, or start a new state store, "
                "to fold in more)"
            )
        return f"late by {wm - t:.1f} s (window {window} closed at watermark {wm!r})"

    def _fold_fixed(
        self, key: Any, t: float, payload: Any, token: AckToken, add: Callable[[Any, Any], Any]
    ) -> str | None:
        """Fold one event into its open fixed windows; the late reason when none is open."""
        size, edge = self.stage.size, self.wm.value - self.lateness
        starts = [s for s in self.stage._starts(t) if s + size > edge]
        if not starts:
            last = max(self.stage._starts(t))
            return self._late(t, last, last + size)
        opened, initial = self.open, self.agg.initial
        found = [opened.get(start, _NONE).get(key) for start in starts]
        # may raise: this event fails, every window stays as it was
        accs = [add(initial() if w is None else w[0], payload) for w in found]
        if len(starts) > 1:  # one unit of the token per window holding the event
            self.ctx.expand(token, len(starts))
        fresh = 0
        for start, w, acc in zip(starts, found, accs, strict=True):
            if w is None:
                here = opened.get(start)
                if here is None:
                    here = opened[start] = {}
                    heapq.heappush(self.closing, start)
                here[key] = [acc, 1, token]
                fresh += 1
            else:
                w[0] = acc
                w[1] += 1
        self._hold(token, len(starts) - fresh, max(starts) + size)
        return None

    def _fold_session(self, key: Any, t: float, payload: Any, token: AckToken) -> str | None:
        gap = self.stage.size
        end = t + gap
        if end + self.lateness <= self.wm.value:
            return self._late(t, t, end)
        agg = self.agg
        merge = agg.merge
        assert merge is not None
        acc = agg.add(agg.initial(), payload)  # may raise before anything changes
        sessions = self.sessions.setdefault(key, [])
        # a session the watermark already closed takes no more events, emitted or not yet
        # (it is emitted after this batch): merging depends on the watermark, not on batching
        edge = self.wm.value - self.lateness
        touching = [s for s in sessions if s.start < end and t < s.end and s.end > edge]
        if not touching:
            w = _Window(key, t, end, acc)
        else:
            touching.sort(key=lambda s: s.start)
            w = touching[0]
            for other in touching[1:]:
                w.acc = merge(w.acc, other.acc)
                w.count += other.count
                for tok, units in other.tokens.items():
                    w.tokens[tok] = w.tokens.get(tok, 0) + units
                w.end = max(w.end, other.end)
                other.alive = False
                sessions.remove(other)
            w.acc = merge(w.acc, acc)
            w.start = min(w.start, t)
            w.end = max(w.end, end)
        if w not in sessions:
            sessions.append(w)
        w.count += 1
        w.hold(token)
        heapq.heappush(self.heap, (w.end, next(self.seq), w))
        return None

    # -- closing -----------------------------------------------------------------
    async def close(self) -> int:
        """Emit every window the watermark closed, oldest end first; returns how many."""
        edge = self.wm.value - self.lateness
        if self.stage.shape == "session":
            return await self._close_sessions(edge)
        closing, size = self.closing, self.stage.size
        if not closing or closing[0] + size > edge:
            self._release(edge)  # units of events whose windows were emitted before
            return 0
        name, result, ctx = self.stage.name, self.agg.result, self.ctx
        plain = result is _identity
        opened, pop, step = self.open, heapq.heappop, ctx.max_batch
        total = 0
        while closing and closing[0] + size <= edge:
            start = pop(closing)
            end = start + size
            tail = f":{start}"
            windows = opened.pop(start)
            keys = list(windows)
            states = list(windows.values())
            payloads = [
                {
                    "key": k,
                    "start": start,
                    "end": end,
                    "value": w[0] if plain else result(w[0]),
                    "count": w[1],
                }
                for k, w in zip(keys, states, strict=True)
            ]
            ids = [f"{name}:{k}{tail}" for k in keys]
            n = len(keys)
            events = list(
                map(_trusted, zip(ids, payloads, keys, [end] * n, [_NO_HEADERS] * n, strict=True))
            )
            carried = list(map(_carrier_of, states))
            if None in carried:  # restored, or released by a checkpoint: tokens made for
                # them now, before the first await (a checkpoint meanwhile sees them in flight)
                made = ctx.from_state(carried.count(None))
                carried = [made if c is None else c for c in carried]
            total += n
            for i in range(0, n, step):
                j = i + step
                await ctx.forward(Batch(events[i:j], payloads[i:j], carried[i:j]))
        self._release(edge)
        return total

    def _release(self, edge: float) -> None:
        """Finish, as filtered, the held units whose windows have all been emitted."""
        held, ctx = self.held, self.ctx
        while held and held[0][0] <= edge:
            _end, token, units = held.popleft()
            # folded into results now on their way: each result's carrier (the read
            # that opened its window) keeps the source's commit behind it
            ctx.drop(ctx.stats, Batch([_FOLDED] * units, [None] * units, [token] * units))

    async def _close_sessions(self, edge: float) -> int:
        heap = self.heap
        ctx = self.ctx
        closed: list[_Window] = []
        while heap and heap[0][0] <= edge:
            end, _seq, w = heapq.heappop(heap)
            if not w.alive or w.end != end:
                continue  # a session that grew or merged: a newer entry stands for it
            w.alive = False
            sessions = self.sessions[w.key]
            sessions.remove(w)
            if not sessions:
                del self.sessions[w.key]
            closed.append(w)
        # every result's token is in hand before the first await: a checkpoint taken
        # meanwhile sees it in flight, never a window that is in neither state nor flight
        carriers = self._carriers(closed) if closed else []
        for i in range(0, len(closed), ctx.max_batch):
            await self._emit(closed[i : i + ctx.max_batch], carriers[i : i + ctx.max_batch])
        return len(closed)

    def _carriers(self, windows: list[_Window]) -> list[AckToken]:
        """The token each result carries; a window whose events a checkpoint released
        (restored, or folded before it) carries a token made for it."""
        carriers: list[AckToken | None] = [_carrier(w.tokens) if w.tokens else None
                                           for w in windows]
        missing = carriers.count(None)
        if missing:
            made = self.ctx.from_state(missing)
            return [made if c is None else c for c in carriers]
        return carriers  # type: ignore[return-value]  # no None left

    async def _emit(self, windows: list[_Window], carried: list[AckToken]) -> None:
        name, result = self.stage.name, self.agg.result
        events: list[Event] = []
        payloads: list[Any] = []
        rest: list[AckToken] = []
        for w, carry in zip(windows, carried, strict=True):
            payload = {
                "key": w.key,
                "start": w.start,
                "end": w.end,
                "value": result(w.acc),
                "count": w.count,
            }
            events.append(Event(f"{name}:{w.key}:{w.start}", payload, w.key, w.end))
            payloads.append(payload)
            for tok, units in w.tokens.items():
                rest.extend([tok] * (units - 1 if tok is carry else units))
        out = Batch(events, payloads, carried)
        await self.ctx.forward(out)
        if rest:
            # folded into a result that is now on its way: finished as filtered; the carried
            # token (the earliest read) keeps the source's commit behind the result
            self.ctx.drop(self.ctx.stats, Batch([events[0]] * len(rest), [None] * len(rest), rest))


def _run_end(tokens: list[AckToken], lo: int) -> int:
    """The end of the run of events from the read ``tokens[lo]`` (C loops in the common case)."""
    token = tokens[lo]
    rest = tokens[lo:] if lo else tokens
    c = rest.count(token)
    if c == len(rest) or rest[:c].count(token) == c:
        return lo + c
    hi = lo + 1
    while tokens[hi] is token:
        hi += 1
    return hi

def _carrier(tokens: dict[AckToken, int]) -> AckToken:
    """The token a window's result carries: the earliest read of the first source in it."""
    first = next(iter(tokens))
    if len(tokens) == 1:
        return first
    earliest = first.tracker.earliest(tokens)
    return earliest if earliest is not None else first


# -- the public constructors ------------------------------------------------------


def _common(
    name: str | None,
    key: Callable[[Any], Hashable] | None,
    reduce: Callable[[Any, Any], Any] | None,
    initial: Any,
    merge: Callable[[Any, Any], Any] | None,
    agg: Agg | None,
    max_delay: float,
    allowed_lateness: float,
    idle_timeout: float | None,
    partition: Callable[[Any], Hashable] | None,
) -> dict[str, Any]:
    return {
        "key": key,
        "reduce": reduce,
        "initial": initial,
        "merge": merge,
        "agg": agg,
        "max_delay": max_delay,
        "allowed_lateness": allowed_lateness,
        "idle_timeout": idle_timeout,
        "partition": partition,
        "name": name,
    }


def tumbling(
    size: float,
    *,
    key: Callable[[Any], Hashable] | None = None,
    reduce: Callable[[Any, Any], Any] | None = None,
    initial: Any = None,
    merge: Callable[[Any, Any], Any] | None = None,
    agg: Agg | None = None,
    max_delay: float = 0.0,
    allowed_lateness: float = 0.0,
    idle_timeout: float | None = None,
    partition: Callable[[Any], Hashable] | None = None,
    name: str | None = None,
) -> WindowStage:
    """Fixed, non-overlapping windows ``[k * size, (k + 1) * size)`` per key.

    Args:
        size: Window length in seconds of event time.
        key: ``key(payload)``; the event's key (``key_by``) when not given.
        reduce: ``reduce(acc, payload) -> acc``, from ``initial`` (a callable makes a
            fresh one per window); or ``agg``, a ready aggregation (``ti.agg.*``).
        merge: Joins two accumulators (session windows need it with ``reduce``).
        max_delay: How far behind the largest event time events may arrive.
        allowed_lateness: How long after the watermark passed its end a window stays open.
        idle_timeout: Seconds of processing time after which a silent partition stops
            holding the watermark back.
        partition: ``partition(payload)``; the source an event came from when not given.
        name: The node name; result ids start with it.

    Raises:
        ConfigError: A value is out of range or the aggregation is missing.
    """
    check(positive, "size", size)
    return WindowStage(
        "tumbling",
        size,
        None,
        **_common(
            name, key, reduce, initial, merge, agg, max_delay, allowed_lateness, idle_timeout,
            partition,
        ),
    )


def sliding(
    size: float,
    every: float,
    *,
    key: Callable[[Any], Hashable] | None = None,
    reduce: Callable[[Any, Any], Any] | None = None,
    initial: Any = None,
    merge: Callable[[Any, Any], Any] | None = None,
    agg: Agg | None = None,
    max_delay: float = 0.0,
    allowed_lateness: float = 0.0,
    idle_timeout: float | None = None,
    partition: Callable[[Any], Hashable] | None = None,
    name: str | None = None,
) -> WindowStage:
    """Overlapping windows ``[k * every, k * every + size)``; an event counts in each.

    Arguments as for :func:`tumbling`. An event is late only when every window
    holding it has closed.

    Raises:
        ConfigError: A value is out of range or the aggregation is missing.
    """
    check(positive, "size", size)
    check(positive, "every", every)
    return WindowStage(
        "sliding",
        size,
        every,
        **_common(
            name, key, reduce, initial, merge, agg, max_delay, allowed_lateness, idle_timeout,
            partition,
        ),
    )


def session(
    gap: float,
    *,
    key: Callable[[Any], Hashable] | None = None,
    reduce: Callable[[Any, Any], Any] | None = None,
    initial: Any = None,
    merge: Callable[[Any, Any], Any] | None = None,
    agg: Agg | None = None,
    max_delay: float = 0.0,
    allowed_lateness: float = 0.0,
    idle_timeout: float | None = None,
    partition: Callable[[Any], Hashable] | None = None,
    name: str | None = None,
) -> WindowStage:
    """Per key, events less than ``gap`` apart form one session ``[first, last + gap)``.

    An event bridging two sessions merges them (accumulators joined with ``merge``,
    built into ``ti.agg.*``). Other arguments as for :func:`tumbling`; an event
    is late when ``t + gap + allowed_lateness`` is behind the watermark.

    Raises:
        ConfigError: A value is out of range, the aggregation is missing, or a
            ``reduce`` comes without ``merge``.
    """
    check(positive, "gap", gap)
    return WindowStage(
        "session",
        gap,
        None,
        **_common(
            name, key, reduce, initial, merge, agg, max_delay, allowed_lateness, idle_timeout,
            partition,
        ),
    )


class Reorder(StatefulStage):
    """Emits events in event-time order within ``max_delay`` (late ones routed as windows do)."""

    kind = "reorder"
    extra_ports: tuple[str, ...] = ("late",)

    def __init__(
        self,
        max_delay: float,
        idle_timeout: float | None,
        partition: Callable[[Any], Hashable] | None,
        name: str | None,
    ) -> None:
        self.max_delay = float(check(non_negative, "max_delay", max_delay))
        self.idle_timeout = (
            None if idle_timeout is None else float(check(positive, "idle_timeout", idle_timeout))
        )
        if partition is not None and not callable(partition):
            raise ConfigError(f"'partition' must be callable: {partition!r}")
        self.partition = partition
        super().__init__(name)
        self._wm: Watermark | None = None
        self._held: list[tuple[float, int, Event, Any, AckToken | None]] = []
        self._seq: Iterator[int] = itertools.count()

    async def work(self, ctx: StageContext) -> None:
        """Hold events until the watermark passes them, then emit them oldest first."""
        wm, held, seq = self._begin(ctx)
        partfn = self.partition
        stats = ctx.stats
        ended = False
        while not ended:
            got = await ctx.receive(wm.next_idle(ctx.clock()))
            now = started = ctx.clock()
            n_in = 0
            if got is None:
                if ctx.durable and ctx.stop_requested():
                    return  # a graceful stop: the held events go into the last checkpoint
                ended = True
                wm.end()
            elif got.payloads:
                n_in = len(got)
                late: list[int] = []
                reasons: list[str] = []
                for i, (event, payload, token) in enumerate(
                    zip(got.events, got.payloads, got.tokens, strict=True)
                ):
                    t = event.event_time
                    mark = wm.value
                    if t < mark:
                        late.append(i)
                        reasons.append(
                            f"late by {mark - t:.1f} s (behind watermark {mark!r})"
                            if mark != _inf
                            else "late: the input of a run over this state had ended"
                        )
                    else:
                        heapq.heappush(held, (t, next(seq), event, payload, token))
                    part = partfn(payload) if partfn is not None else token.tracker.name
                    wm.observe(part, t, now)
                if late:
                    stats.late += len(late)
                    if ctx.wired("late"):
                        await ctx.emit(got.select(late), "late")
                    else:
                        errors = [(LateEventError(r), 1) for r in reasons]
                        await ctx.dead_letter(stats, got, late, errors)
            wm.refresh(now)
            out: list[tuple[float, int, Event, Any, AckToken | None]] = []
            while held and held[0][0] <= wm.value:
                out.append(heapq.heappop(held))
            tokens = self._tokens_of(ctx, out)  # in hand before the first await
            for i in range(0, len(out), ctx.max_batch):
                part_out = out[i : i + ctx.max_batch]
                await ctx.forward(
                    Batch([o[2] for o in part_out], [o[3] for o in part_out],
                          tokens[i : i + ctx.max_batch])
                )
            if n_in or out:
                stats.record_batch(n_in, len(out), ctx.clock() - started)

    # -- checkpointing --------------------------------------------------------------
    checkpoints = True

    def _begin(
        self, ctx: StageContext
    ) -> tuple[Watermark, list[tuple[float, int, Event, Any, AckToken | None]], Iterator[int]]:
        self._wm = wm = Watermark(self.max_delay, self.idle_timeout)
        held: list[tuple[float, int, Event, Any, AckToken | None]] = []
        self._held = held
        self._seq = seq = itertools.count()
        state = self._take_restored()
        if state is not None:
            # restored events carry no token: the checkpoint finished their reads
            for t, ident, key, payload, headers in state["held"]:
                event = Event(ident, payload, key, t, headers)
                heapq.heappush(held, (t, next(seq), event, payload, None))
            wm.restore(state, ctx.clock())
        return wm, held, seq

    @staticmethod
    def _tokens_of(
        ctx: StageContext, out: list[tuple[float, int, Event, Any, AckToken | None]]
    ) -> list[AckToken]:
        missing = sum(1 for o in out if o[4] is None)
        made = ctx.from_state(missing) if missing else None
        return [o[4] if o[4] is not None else made for o in out]  # type: ignore[misc]

    def _snapshot(self) -> Any:
        """The held events ``[time, id, key, payload, headers]`` and the watermark."""
        if self._wm is None:
            return {"held": [], "watermark": None, "partitions": []}
        return {
            "held": [[e.event_time, e.id, e.key, p, dict(e.headers)]
                     for _t, _s, e, p, _tok in sorted(self._held, key=lambda h: h[:2])],
            **self._wm.to_state(),
        }

    def restore_state(self, state: Any) -> None:
        """Start the next run holding these events, with this watermark."""
        super().restore_state(state)
        self._wm = None  # a finished run's tokens are not this state's

    def release_tokens(self) -> list[AckToken]:
        """The tokens of the held events (their reads may commit: the state holds them)."""
        tokens: list[AckToken] = []
        held = self._held
        for i, entry in enumerate(held):
            if entry[4] is not None:
                tokens.append(entry[4])
                held[i] = (*entry[:4], None)  # the same order key: the heap stays a heap
        return tokens


def reorder(
    max_delay: float,
    *,
    idle_timeout: float | None = None,
    partition: Callable[[Any], Hashable] | None = None,
    name: str | None = None,
) -> Reorder:
    """Emit events in event-time order, holding each until the watermark passes it.

    The watermark is as for windows (largest event time - ``max_delay``, per
    partition, the minimum; ``idle_timeout``; +infinity at the end). An event behind
    the watermark cannot be put in order: it is late (counted, sent to the ``late``
    port when wired, else dead-lettered with how late it is). Holds at most the
    events within ``max_delay`` of the newest.

    Raises:
        ConfigError: A value is out of range.
    """
    return Reorder(max_delay, idle_timeout, partition, name)
