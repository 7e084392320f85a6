"""An enrichment join against a keyed table stream: ``ti.join_latest(...)``.

The stage reads two inputs merged into one edge (a Graph node with two inputs):
events of the *table* update the last row per key and are finished as filtered
(absorbed into the table); every other event is a *stream* event, enriched with
the row of its key. Which input an event came from is told by its source: every
event carries the acknowledgement token of the source read it came from, and
``token.tracker.source`` names that source (the same provenance windows use for
their per-source watermarks). ``table`` names that source, or is a predicate on
the payload when both inputs come from one source.

Rows expire ``ttl`` seconds of event time after their last update (the largest
event time seen on either input is the clock), and at most ``max_rows`` are kept
(the least recently updated goes first), so memory is bounded and
``in_hand`` says by how much.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Any

from .._acks import AckToken
from .._batch import Batch
from .._errors import ConfigError, IngestError
from .._event import Event
from .._validators import check, positive, positive_int
from ._context import StageContext
from ._stateful import StatefulStage

__all__ = ("JoinLatest", "MissingRowError", "join_latest")

_MISSING = ("pass", "dead_letter", "wait")


class MissingRowError(IngestError):
    """A stream event's key had no row in the table (``missing="dead_letter"`` or ``"wait"``)."""


def _default_merge(payload: Any, row: Any) -> Any:
    """The row's fields, then the event's (the event's own fields win)."""
    return {**row, **payload}


class JoinLatest(StatefulStage):
    """Enriches stream events with the latest table row of their key (see :func:`join_latest`)."""

    kind = "join_latest"

    def __init__(
        self,
        table: str | Callable[[Any], bool],
        key: Callable[[Any], Hashable],
        table_key: Callable[[Any], Hashable],
        merge: Callable[[Any, Any], Any],
        missing: str,
        ttl: float | None,
        max_rows: int,
        max_waiting: int,
        wait_timeout: float | None,
        name: str | None,
    ) -> None:
        if not (isinstance(table, str) and table) and not callable(table):
            raise ConfigError(f"'table' must be a source name or a predicate: {table!r}")
        for field, fn in (("key", key), ("table_key", table_key), ("merge", merge)):
            if not callable(fn):
                raise ConfigError(f"'{field}' must be callable: {fn!r}")
        if missing not in _MISSING:
            raise ConfigError(f"'missing' must be one of {', '.join(_MISSING)}: {missing!r}")
        self.table = table
        self.key = key
        self.table_key = table_key
        self.merge = merge
        self.missing = missing
        self.ttl = None if ttl is None else float(check(positive, "ttl", ttl))
        self.max_rows = check(positive_int, "max_rows", max_rows)
        self.max_waiting = check(positive_int, "max_waiting", max_waiting)
        self.wait_timeout = (
            None if wait_timeout is None else float(check(positive, "wait_timeout", wait_timeout))
        )
        super().__init__(name)
        # key -> (row payload, event time of its last update), least recently updated first
        self.rows: OrderedDict[Hashable, tuple[Any, float]] = OrderedDict()
        # stream events waiting for their row (missing="wait"): key -> entries, and all
        # entries in arrival order; an entry is [event time, key, event, payload, token, alive]
        self.waiting: dict[Hashable, list[list[Any]]] = {}
        self._waiting_order: deque[list[Any]] = deque()
        self._waiting_count = 0
        self._top = -math.inf

    @property
    def live_rows(self) -> int:
        """Rows held now (the table's size)."""
        return len(self.rows)

    @property
    def waiting_events(self) -> int:
        """Stream events held for a row that has not arrived yet."""
        return self._waiting_count

    def in_hand(self, default_batch: int) -> int:
        """Events it holds beyond its input edge: a batch, the waiting events, the table rows.

        Rows are payloads of table events absorbed into the table: at most ``max_rows``.
        """
        waiting = self.max_waiting if self.missing == "wait" else 0
        return 2 * default_batch + waiting + self.max_rows

    def _is_table(self, batch: Batch) -> list[bool]:
        table = self.table
        if isinstance(table, str):
            return [t.tracker.source == table for t in batch.tokens]
        return [bool(table(p)) for p in batch.payloads]

    async def work(self, ctx: StageContext) -> None:
        """Absorb table rows (filtered), enrich stream events, hold or dead-letter the unmatched."""
        self._begin()  # each run starts afresh, or from restored state
        stats = ctx.stats
        while (batch := await ctx.receive()) is not None:
            started = ctx.clock()
            n_out = await self._handle(ctx, batch)
            stats.record_batch(len(batch), n_out, ctx.clock() - started)
        if ctx.durable and ctx.stop_requested():
            return  # a graceful stop: the waiting events go into the last checkpoint
        await self._give_up_oldest(ctx, self._waiting_count, "by the end of the input")

    async def _handle(self, ctx: StageContext, batch: Batch) -> int:
        stats = ctx.stats
        rows, keyfn, table_key, merge = self.rows, self.key, self.table_key, self.merge
        max_rows = self.max_rows
        absorbed: list[int] = []
        out_idx: list[int] = []
        outputs: list[Any] = []
        failed: list[int] = []
        errors: list[tuple[Exception, int]] = []
        released: list[tuple[list[Any], Any]] = []  # waiting entries whose row arrived
        try:
            is_table = self._is_table(batch)
        except Exception as exc:  # noqa: BLE001 -- the user's predicate fails the batch's events
            await self._fail_all(ctx, batch, exc)
            return 0
        for i, (event, payload) in enumerate(zip(batch.events, batch.payloads, strict=True)):
            t = event.event_time
            if t > self._top:
                self._top = t
            try:
                if is_table[i]:
                    k = table_key(payload)
                    rows[k] = (payload, t)  # may raise (unhashable): nothing changed
                    rows.move_to_end(k)
                    if len(rows) > max_rows:  # the least recently updated row goes first
                        rows.popitem(last=False)
                    absorbed.append(i)
                    for entry in self.waiting.pop(k, ()):
                        entry[5] = False
                        self._waiting_count -= 1
                        released.append((entry, payload))
                    continue
                k = keyfn(payload)
                row = rows.get(k)
                if row is not None and self._alive(row[1]):
                    outputs.append(merge(payload, row[0]))
                    out_idx.append(i)
                elif self.missing == "pass":
                    outputs.append(payload)
                    out_idx.append(i)
                elif self.missing == "dead_letter":
                    failed.append(i)
                    errors.append((self._no_row(k), 1))
                else:
                    entry = [t, k, event, payload, batch.tokens[i], True]
                    self.waiting.setdefault(k, []).append(entry)
                    self._waiting_order.append(entry)
                    self._waiting_count += 1
            except Exception as exc:  # noqa: BLE001 -- the user's function fails this event alone
                failed.append(i)
                errors.append((exc, 1))
        if failed:
            stats.errors += sum(1 for e, _a in errors if not isinstance(e, MissingRowError))
            await ctx.dead_letter(stats, batch, failed, errors)
        if absorbed:
            ctx.drop(stats, batch if len(absorbed) == len(batch) else batch.select(absorbed))
        n_out = 0
        if out_idx:
            part = batch if len(out_idx) == len(batch) else batch.select(out_idx)
            await ctx.forward(Batch(part.events, outputs, part.tokens, part.trace))
            n_out += len(out_idx)
        if released:
            n_out += await self._release(ctx, released)
        await self._expire(ctx)  # timed-out waiting events go before the cap pushes any out
        if self._waiting_count > self.max_waiting:
            await self._give_up_oldest(
                ctx, self._waiting_count - self.max_waiting,
                f"more than max_waiting={self.max_waiting} events waiting",
            )
        return n_out

    def _alive(self, updated: float) -> bool:
        return self.ttl is None or self._top < updated + self.ttl

    def _no_row(self, key: Any) -> MissingRowError:
        return MissingRowError(f"no row for key {key!r} in table {self._table_name()}")

    def _table_name(self) -> str:
        return repr(self.table) if isinstance(self.table, str) else "(predicate)"

    async def _release(self, ctx: StageContext, released: list[tuple[list[Any], Any]]) -> int:
        """Enrich and emit waiting events whose row just arrived (in their arrival order)."""
        events, payloads, tokens = [], [], []
        for entry, row in released:
            _t, _k, event, payload, token, _alive = entry
            if token is None:  # restored from a checkpoint, which finished its read
                token = entry[4] = ctx.from_state(1)
            try:
                merged = self.merge(payload, row)
            except Exception as exc:  # noqa: BLE001 -- the user's function fails this event alone
                ctx.stats.errors += 1
                one = Batch([event], [payload], [token])
                await ctx.dead_letter(ctx.stats, one, [0], [(exc, 1)])
                continue
            events.append(event)
            payloads.append(merged)
            tokens.append(token)
        if payloads:
            await ctx.forward(Batch(events, payloads, tokens))
        return len(payloads)

    async def _expire(self, ctx: StageContext) -> None:
        """Forget rows past their ``ttl``; give up on events waiting past ``wait_timeout``."""
        rows, ttl, top = self.rows, self.ttl, self._top
        if ttl is not None:
            # rows in update order: the front ones are the stalest (a stale row behind a
            # fresher one is never joined (``_alive``) and goes when it reaches the front)
            while rows:
                k, (_row, updated) = next(iter(rows.items()))
                if updated + ttl > top:
                    break
                del rows[k]
        limit = self.wait_timeout
        if limit is not None:
            while (head := self._head()) is not None and head[0] + limit <= top:
                await self._give_up_oldest(ctx, 1, f"none arrived within {limit:g} s")

    def _head(self) -> list[Any] | None:
        """The oldest entry still waiting (released ones are dropped on the way)."""
        order = self._waiting_order
        while order and not order[0][5]:
            order.popleft()
        return order[0] if order else None

    async def _give_up_oldest(self, ctx: StageContext, count: int, why: str) -> None:
        """Dead-letter the ``count`` oldest events still waiting, saying ``why``."""
        for _ in range(count):
            entry = self._head()
            if entry is None:
                return
            self._waiting_order.popleft()
            _t, k, event, payload, token, _alive = entry
            if token is None:  # restored from a checkpoint, which finished its read
                token = ctx.from_state(1)
            entry[5] = False
            held = self.waiting[k]
            held.remove(entry)
            if not held:
                del self.waiting[k]
            self._waiting_count -= 1
            error = MissingRowError(f"no row for key {k!r} in table {self._table_name()} ({why})")
            await ctx.dead_letter(
                ctx.stats, Batch([event], [payload], [token]), [0], [(error, 1)], passed=0
            )

    # -- checkpointing ------------------------------------------------------------
    checkpoints = True

    def _begin(self) -> None:
        self.rows, self.waiting, self._waiting_order = OrderedDict(), {}, deque()
        self._waiting_count, self._top = 0, -math.inf
        state = self._take_restored()
        if state is None:
            return
        for k, row, t in state["rows"]:
            self.rows[k] = (row, t)
        for t, k, ident, event_key, event_time, headers, payload in state["waiting"]:
            entry = [t, k, Event(ident, payload, event_key, event_time, headers), payload,
                     None, True]
            self.waiting.setdefault(k, []).append(entry)
            self._waiting_order.append(entry)
            self._waiting_count += 1
        self._top = -math.inf if state["top"] is None else state["top"]

    def state_signature(self) -> dict[str, Any]:
        """The kind and what decides which rows are kept and how unmatched events go."""
        return {"kind": self.kind, "ttl": self.ttl, "max_rows": self.max_rows,
                "missing": self.missing}

    def _snapshot(self) -> Any:
        """The rows ``[key, row, updated]`` (least recent first), the waiting events, the clock."""
        waiting = [
            [e[0], e[1], e[2].id, e[2].key, e[2].event_time, dict(e[2].headers), e[3]]
            for e in self._waiting_order
            if e[5]
        ]
        return {
            "rows": [[k, row, t] for k, (row, t) in self.rows.items()],
            "waiting": waiting,
            "top": None if self._top == -math.inf else self._top,
        }

    def release_tokens(self) -> list[AckToken]:
        """The tokens of the waiting events (their reads may commit: the state holds them)."""
        tokens: list[AckToken] = []
        for entry in self._waiting_order:
            if entry[5] and entry[4] is not None:
                tokens.append(entry[4])
                entry[4] = None
        return tokens

    async def _fail_all(self, ctx: StageContext, batch: Batch, exc: Exception) -> None:
        ctx.stats.errors += len(batch)
        await ctx.dead_letter(
            ctx.stats, batch, list(range(len(batch))), [(exc, 1)] * len(batch), passed=0
        )


def join_latest(
    *,
    table: str | Callable[[Any], bool],
    key: Callable[[Any], Hashable],
    table_key: Callable[[Any], Hashable],
    merge: Callable[[Any, Any], Any] = _default_merge,
    missing: str = "pass",
    ttl: float | None = None,
    max_rows: int = 100_000,
    max_waiting: int = 10_000,
    wait_timeout: float | None = None,
    name: str | None = None,
) -> JoinLatest:
    """Enrich a stream with the last row per key of a table stream (a Graph node, two inputs).

    Example::

        g.add_stage(ti.join_latest(table="customers", key=lambda p: p["customer"],
                                   table_key=lambda p: p["id"]),
                    inputs=["orders", "customers"], name="enrich")

    Args:
        table: The name of the source whose events are table rows (they may pass
            stages on the way), or ``table(payload) -> bool`` picking them.
        key: ``key(payload)`` of a stream event: the row it joins.
        table_key: ``table_key(payload)`` of a table event: the row it replaces.
        merge: ``merge(payload, row) -> payload`` of an enriched event; by default
            the row's fields, then the event's (the event's own fields win).
        missing: A stream event whose key has no row: ``"pass"`` emits it
            unchanged, ``"dead_letter"`` dead-letters it (reason ``no row for key``),
            ``"wait"`` holds it until its row arrives, then emits it enriched.
        ttl: Seconds of event time a row lives after its last update (the largest
            event time seen on either input is the clock); None: until evicted.
        max_rows: Most rows kept; beyond it the least recently updated is forgotten.
        max_waiting: Most events held by ``missing="wait"``; beyond it the oldest
            is dead-lettered.
        wait_timeout: With ``missing="wait"``: seconds of event time an event waits
            before it is dead-lettered; None: until the end of the input.
        name: The node name.

    Raises:
        ConfigError: A function is not callable, ``missing`` is unknown, or a bound
            is out of range.
    """
    return JoinLatest(
        table, key, table_key, merge, missing, ttl, max_rows, max_waiting, wait_timeout, name
    )
