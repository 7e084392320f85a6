"""Built-in stages: per-event functions applied to whole batches.

Users write per-event functions; each operator applies its function across a
batch's parallel lists in one pass (``list.extend(map(fn, ...))``), so a ``map``
creates no per-event objects. A function that raises fails only its own event:
the pass resumes after it, the failure is retried under the stage's policy and
then dead-lettered, and the function is never called twice for one success.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import Any, ClassVar

import attrs

from .._acks import AckToken
from .._batch import Batch
from .._errors import ConfigError
from .._event import Event, rebuild
from .._retry import RetryPolicy, check_policy
from .._validators import check, non_negative, positive_int
from ._context import GiveUp, StageContext, StatsLike

__all__ = (
    "BatchStage",
    "Operator",
    "Route",
    "batch",
    "filter",
    "flat_map",
    "inspect_",
    "key_by",
    "map",
    "map_batch",
    "map_event",
    "route",
    "route_by_key",
)

_builtin_map = map
_builtin_filter = filter
FAILED: Any = object()  # placeholder for a result whose call raised


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns an awaitable (async def, or async ``__call__``)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 -- we want the bound __call__ itself
    )


def _resuming(
    run: Callable[[Iterable[Any], list[Any]], None],
    items: Sequence[Any],
    errors: type[Exception],
) -> tuple[list[Any], list[tuple[int, Exception]]]:
    """``run(items, out)`` appends one result per item; a failure leaves ``FAILED``.

    ``out`` keeps what was appended before ``run`` raised, so ``len(out)`` is the
    failing index: resume after it without calling anyone twice. A function that
    raises ``StopIteration`` ends ``map()`` early without an error: that is caught
    by the count, and is a failure of that one event like any other.
    """
    out: list[Any] = []
    failures: list[tuple[int, Exception]] = []
    total = len(items)
    part: Iterable[Any] = items
    while True:
        try:
            run(part, out)
        except errors as exc:
            failures.append((len(out), exc))
            out.append(FAILED)
        else:
            if len(out) >= total:
                break
            failures.append((len(out), _stopped_early()))
            out.append(FAILED)
        if len(out) >= total:
            break
        part = itertools.islice(items, len(out), None)
    return out, failures


def _stopped_early() -> RuntimeError:
    return RuntimeError("the function raised StopIteration (not a way to end a stream here)")


def apply_each(
    fn: Callable[[Any], Any], items: Sequence[Any]
) -> tuple[list[Any], list[tuple[int, Exception]]]:
    """Call ``fn`` on every item; a failing call leaves ``FAILED`` and its error."""
    # list.extend(map(...)): no Python-level loop, and it keeps what came before a failure
    return _resuming(lambda part, out: out.extend(_builtin_map(fn, part)), items, Exception)


async def apply_each_async(
    fn: Callable[[Any], Awaitable[Any]], items: Sequence[Any]
) -> tuple[list[Any], list[tuple[int, Exception]]]:
    """Await ``fn`` on every item in turn; a failing call leaves ``FAILED``."""
    out: list[Any] = []
    failures: list[tuple[int, Exception]] = []
    for i, item in enumerate(items):
        try:
            out.append(await fn(item))
        except Exception as exc:
            failures.append((i, exc))
            out.append(FAILED)
    return out, failures


def _default_name(kind: str, fn: Callable[..., Any] | None) -> str:
    name = getattr(fn, "__name__", None)
    if not name or name == "<lambda>":
        return kind
    return str(name)


def _check_workers(workers: int) -> int:
    return check(positive_int, "workers", workers)


class Operator:
    """A built-in stage: one per-event function applied across each batch.

    Subclasses say what the function receives (``inputs``) and how its results
    become the outgoing batch (``assemble``); the runtime does the rest
    (workers, ordering, retries, dead letters, metrics).
    """

    kind: ClassVar[str] = "stage"
    fn: Callable[[Any], Any]

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        name: str | None = None,
        workers: int = 1,
        ordered: bool = False,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"{self.kind}() needs a callable: {fn!r}")
        self.fn = fn
        self.is_async = is_async_callable(fn)
        # what the runtime calls per event: the user's function itself when no
        # wrapper is needed (one Python frame less per event)
        self.call: Callable[[Any], Any] = (
            fn if type(self).call_one is Operator.call_one else self.call_one
        )
        self.name = name if name is not None else _default_name(self.kind, fn)
        self.name_given = name is not None
        self.workers = _check_workers(workers)
        self.ordered = bool(ordered)
        self.retry = check_policy(retry)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name!r} workers={self.workers}>"

    @property
    def fusable(self) -> bool:
        """Runs inline in its neighbours' task: sync, one worker, stateless."""
        return not self.is_async and self.workers == 1

    def inputs(self, batch: Batch) -> Sequence[Any]:
        return batch.payloads

    def call_one(self, item: Any) -> Any:
        """Call the user's function once (sync operators)."""
        return self.fn(item)

    async def call_async(self, item: Any) -> Any:
        """Call the user's function once (async operators)."""
        return await self.fn(item)

    def assemble(self, batch: Batch, results: list[Any], dead: set[int]) -> StepResult:
        """Build the outgoing batch from the results (``dead``: indices given up on)."""
        raise NotImplementedError(f"{type(self).__name__} must implement assemble()")

    #: Consecutive composable operators run as one generated loop (sync ``map``).
    composable: ClassVar[bool] = False

    # -- the stage protocol ---------------------------------------------------
    async def work(self, ctx: StageContext) -> None:
        """One worker: every input batch through this task's steps (this one first)."""
        receive, forward = ctx.receive, ctx.forward
        while (batch := await receive()) is not None:
            await forward(batch)

    async def results(
        self, ctx: StageContext, stats: StatsLike, batch: Batch
    ) -> tuple[list[Any], set[int]]:
        """Call the function on every event; retry failures, dead-letter what still fails.

        Returns the results (``FAILED`` where given up) and the indices given up on.
        """
        if self.is_async:
            results, failures = await apply_each_async(self.call_async, self.inputs(batch))
        else:
            results, failures = apply_each(self.call, self.inputs(batch))
        if not failures:
            return results, set()
        inputs = self.inputs(batch)
        dead: list[int] = []
        errors: list[tuple[Exception, int]] = []
        for i, exc in failures:
            try:
                results[i] = await self.retry_one(ctx, stats, inputs[i], exc)
            except GiveUp as gave_up:
                dead.append(i)
                errors.append((gave_up.error, gave_up.attempts))
        await ctx.dead_letter(stats, batch, dead, errors)
        return results, set(dead)

    async def retry_one(
        self, ctx: StageContext, stats: StatsLike, item: Any, error: Exception | None
    ) -> Any:
        """Call the function on ``item`` (again, after ``error``) under the retry policy.

        Raises:
            GiveUp: The policy gave up.
        """
        if self.is_async:

            async def again() -> Any:
                return await self.call_async(item)
        else:

            async def again() -> Any:
                return self.call(item)

        if error is not None:
            stats.errors += 1
        return await ctx.retry(self.retry, again, stats, error)

    async def apply(self, ctx: StageContext, stats: StatsLike, batch: Batch) -> Batch | None:
        """This operator as one step: the batch that goes on."""
        started = ctx.clock()
        results, dead = await self.results(ctx, stats, batch)
        step = self.assemble(batch, results, dead)
        if step.dropped is not None:
            ctx.drop(stats, step.dropped)
        for token, children in step.expansions:
            ctx.expand(token, children)
        out = step.batch
        took = ctx.clock() - started
        stats.record_batch(len(batch), len(out), took)
        return out.traced(_span(ctx, stats, batch, len(out), took, dead))


@attrs.define(slots=True)
class StepResult:
    """What one operator made of a batch: the output, plus accounting deltas."""

    batch: Batch
    dropped: Batch | None = None  # filtered out: finished now
    # (token, number of children) of each event that became several (flat_map)
    expansions: list[tuple[AckToken, int]] = attrs.field(factory=list)


def _span(
    ctx: StageContext, stats: StatsLike, batch: Batch, n_out: int, took: float, dead: Any
) -> Any:
    """The span of this step (the input's trace when tracing is off)."""
    if ctx.tracer is None:
        return batch.trace
    outcome = "dead_letter" if dead else "ok"
    return ctx.tracer.span(
        stats.name, stats.kind, batch.trace, len(batch), n_out, took, outcome,
        batch=batch, retries=_take_retries(ctx),
    )


def _take_retries(ctx: StageContext) -> list[Any]:
    """The retries this worker made since its last span (recorded by the runtime's context)."""
    log: list[Any] | None = getattr(ctx, "retry_log", None)
    if not log:
        return []
    taken = log[:]
    log.clear()
    return taken


def _without(batch: Batch, dead: set[int]) -> Batch:
    if not dead:
        return batch
    return batch.select([i for i in range(len(batch)) if i not in dead])


class Map(Operator):
    kind = "map"

    @property
    def composable(self) -> bool:  # type: ignore[override]
        return not self.is_async

    def assemble(self, batch: Batch, results: list[Any], dead: set[int]) -> StepResult:
        out = Batch(batch.events, results, batch.tokens)
        return StepResult(_without(out, dead))


class MapEvent(Operator):
    kind = "map_event"

    def inputs(self, batch: Batch) -> Sequence[Any]:
        return batch.materialize()

    def call_one(self, item: Any) -> Any:
        return _must_be_event(self.name, self.fn(item))

    async def call_async(self, item: Any) -> Any:
        return _must_be_event(self.name, await self.fn(item))

    def assemble(self, batch: Batch, results: list[Any], dead: set[int]) -> StepResult:
        if dead:
            keep = [i for i in range(len(batch)) if i not in dead]
            results = [results[i] for i in keep]
            tokens = [batch.tokens[i] for i in keep]
        else:
            tokens = batch.tokens
        return StepResult(Batch(results, [e.payload for e in results], tokens))


def _must_be_event(node: str, value: Any) -> Event:
    if not isinstance(value, Event):
        raise TypeError(f"map_event function of {node!r} must return an Event, got {value!r}")
    return value


class Filter(Operator):
    kind = "filter"

    def assemble(self, batch: Batch, results: list[Any], dead: set[int]) -> StepResult:
        keep: list[int] = []
        drop: list[int] = []
        for i, ok in enumerate(results):
            if i in dead:
                continue
            (keep if ok else drop).append(i)
        if not drop and not dead:
            return StepResult(batch)
        return StepResult(batch.select(keep), dropped=batch.select(drop) if drop else None)


class FlatMap(Operator):
    kind = "flat_map"

    def call_one(self, item: Any) -> Any:
        return list(self.fn(item))

    async def call_async(self, item: Any) -> Any:
        result = await self.fn(item)
        if hasattr(result, "__aiter__"):
            return [child async for child in result]
        return list(result)

    def assemble(self, batch: Batch, results: list[Any], dead: set[int]) -> StepResult:
        events: list[Event] = []
        payloads: list[Any] = []
        tokens = []
        drop: list[int] = []
        expansions: list[tuple[AckToken, int]] = []
        for i, children in enumerate(results):
            if i in dead:
                continue
            if not children:
                drop.append(i)
                continue
            parent = batch.events[i]
            token = batch.tokens[i]
            for j, child in enumerate(children):
                if isinstance(child, Event):
                    events.append(child)
                    payloads.append(child.payload)
                else:
                    events.append(
                        Event(
                            id=f"{parent.id}:{j}",
                            payload=child,
                            key=parent.key,
                            event_time=parent.event_time,
                            headers=parent.headers,
                        )
                    )
                    payloads.append(child)
                tokens.append(token)
            if len(children) > 1:  # each child finishes on its own
                expansions.append((token, len(children)))
        dropped = batch.select(drop) if drop else None
        return StepResult(Batch(events, payloads, tokens), dropped=dropped, expansions=expansions)


class KeyBy(Operator):
    kind = "key_by"
    sets_key = True

    def call_one(self, item: Any) -> Any:
        key = self.fn(item)
        hash(key)  # an unhashable key fails this one event (dead-lettered), not the run
        return key

    async def call_async(self, item: Any) -> Any:
        key = await self.fn(item)
        hash(key)
        return key

    def assemble(self, batch: Batch, results: list[Any], dead: set[int]) -> StepResult:
        events = [
            rebuild(e, p, k)
            for e, k, p in zip(batch.events, results, batch.payloads, strict=True)
            if k is not FAILED
        ]
        if dead:
            keep = [i for i in range(len(batch)) if i not in dead]
            out = Batch(events, [batch.payloads[i] for i in keep], [batch.tokens[i] for i in keep])
        else:
            out = Batch(events, batch.payloads, batch.tokens)
        return StepResult(out)


class Inspect(Operator):
    kind = "inspect"

    def assemble(self, batch: Batch, results: list[Any], dead: set[int]) -> StepResult:
        return StepResult(_without(batch, dead))


class MapBatch(Operator):
    """``fn(payloads) -> payloads`` over the whole batch, for vectorised code."""

    kind = "map_batch"

    def assemble(self, batch: Batch, results: list[Any], dead: set[int]) -> StepResult:
        return StepResult(_without(Batch(batch.events, results, batch.tokens), dead))

    async def results(
        self, ctx: StageContext, stats: StatsLike, batch: Batch
    ) -> tuple[list[Any], set[int]]:
        """The whole batch at once: retried as a whole, then dead-lettered as a whole."""

        def call() -> list[Any]:
            out = list(self.fn(batch.payloads))
            if len(out) != len(batch):
                raise ValueError(
                    f"map_batch {self.name!r} returned {len(out)} payloads for {len(batch)} events"
                )
            return out

        async def again() -> list[Any]:
            return call()

        try:
            return call(), set()
        except Exception as exc:
            stats.errors += 1
            try:
                return await ctx.retry(self.retry, again, stats, exc), set()
            except GiveUp as gave_up:
                n = len(batch)
                errors = [(gave_up.error, gave_up.attempts)] * n
                await ctx.dead_letter(stats, batch, range(n), errors)
                return [FAILED] * n, set(range(n))


class Route(Operator):
    """Sends each event to one named output port chosen by ``fn``."""

    kind = "route"

    def __init__(
        self,
        fn: Callable[[Any], Any],
        ports: Sequence[str],
        *,
        default: str | None = None,
        by_key: bool = False,
        name: str | None = None,
        workers: int = 1,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(fn, name=name, workers=workers, retry=retry)
        self.ports = tuple(ports)
        if not self.ports or len(set(self.ports)) != len(self.ports):
            raise ConfigError(f"route {self.name!r}: 'ports' must be distinct names: {ports!r}")
        if default is not None and default not in self.ports:
            raise ConfigError(f"route {self.name!r}: 'default' must be one of {self.ports}")
        self.default = default
        self.by_key = by_key

    def inputs(self, batch: Batch) -> Sequence[Any]:
        if self.by_key:
            return [e.key for e in batch.events]
        return batch.payloads

    def assemble(self, batch: Batch, results: list[Any], dead: set[int]) -> StepResult:
        raise AssertionError("a route emits to its ports in apply()")  # pragma: no cover

    async def apply(self, ctx: StageContext, stats: StatsLike, batch: Batch) -> Batch | None:
        """Send each event to its port; nothing goes on past a route."""
        started = ctx.clock()
        results, dead = await self.results(ctx, stats, batch)
        by_port: dict[str, list[int]] = {port: [] for port in self.ports}
        dropped: list[int] = []
        unknown: list[int] = []
        for i, port in enumerate(results):
            if i in dead:
                continue
            if port is None:
                dropped.append(i)
            elif port in by_port:
                by_port[port].append(i)
            elif self.default is not None:
                by_port[self.default].append(i)
            else:
                unknown.append(i)
        if dropped:
            ctx.drop(stats, batch.select(dropped))
        if unknown:
            errors = [
                (LookupError(f"route {self.name!r} has no port {results[i]!r}"), 1)
                for i in unknown
            ]
            await ctx.dead_letter(stats, batch, unknown, errors)
        n_out = sum(len(indices) for indices in by_port.values())
        batch = batch.traced(
            _span(ctx, stats, batch, n_out, ctx.clock() - started, dead or unknown)
        )
        for port, indices in by_port.items():
            if indices:
                await ctx.emit(batch if len(indices) == len(batch) else batch.select(indices), port)
        stats.record_batch(len(batch), n_out, ctx.clock() - started)
        return None


def _route_by_key_fn(ports: tuple[str, ...]) -> Callable[[Hashable], str]:
    import zlib

    def pick(key: Hashable) -> str:
        # crc32, not hash(): the choice must survive a restart (PYTHONHASHSEED)
        return ports[zlib.crc32(str(key).encode()) % len(ports)]

    return pick


class BatchStage:
    """Regroups the stream into batches of ``max_size`` events, or fewer after ``max_wait``."""

    kind = "batch"
    is_async = True
    fusable = False
    ordered = False
    retry = None
    workers = 1

    def __init__(self, max_size: int, max_wait: float, *, name: str | None = None) -> None:
        check(positive_int, "max_size", max_size)
        check(non_negative, "max_wait", max_wait)
        self.max_size = max_size
        self.max_wait = float(max_wait)
        self.name = name or "batch"
        self.name_given = name is not None

    def __repr__(self) -> str:
        return f"<batch {self.name!r} max_size={self.max_size} max_wait={self.max_wait}>"

    def in_hand(self, default_batch: int) -> int:
        """Most events it holds: the batch it gathers."""
        return self.max_size

    async def work(self, ctx: StageContext) -> None:
        """Gather ``max_size`` events, or what came within ``max_wait`` of the first."""
        clock = ctx.clock
        parts: list[Batch] = []
        held = 0
        # an absolute deadline: "now + (deadline - now)" can round below it, and under a
        # mock clock that never advances the loop would spin forever
        deadline = math.inf
        ended = False
        while not ended:
            got = await ctx.receive(deadline, self.max_size - held)
            if got is None:
                ended = True
            elif got.payloads:
                if not parts:
                    deadline = clock() + self.max_wait
                parts.append(got)
                held += len(got)
            if parts and (held >= self.max_size or ended or clock() >= deadline):
                batch = parts[0] if len(parts) == 1 else Batch.concat(parts)
                parts, held, deadline = [], 0, math.inf
                started = clock()
                batch = batch.traced(_span(ctx, ctx.stats, batch, len(batch), 0.0, False))
                await ctx.forward(batch)
                ctx.stats.record_batch(len(batch), len(batch), clock() - started)


# -- the public constructors ----------------------------------------------------


def map(
    fn: Callable[[Any], Any],
    *,
    name: str | None = None,
    workers: int = 1,
    ordered: bool = False,
    retry: RetryPolicy | None = None,
) -> Operator:
    """Replace each event's payload with ``fn(payload)`` (sync or async).

    The event keeps its id, key, event time and acknowledgement.

    Raises:
        ConfigError: ``fn`` is not callable, ``workers`` is not an int >= 1, or
            ``retry`` is not a RetryPolicy or None.
    """
    return Map(fn, name=name, workers=workers, ordered=ordered, retry=retry)


def map_event(
    fn: Callable[[Event], Event | Awaitable[Event]],
    *,
    name: str | None = None,
    workers: int = 1,
    ordered: bool = False,
    retry: RetryPolicy | None = None,
) -> Operator:
    """Replace each event with ``fn(event)``, for code that needs the id, key or headers.

    The result must be an :class:`Event`; it inherits the acknowledgement.

    Raises:
        ConfigError: ``fn`` is not callable, ``workers`` is not an int >= 1, or
            ``retry`` is not a RetryPolicy or None.
    """
    return MapEvent(fn, name=name, workers=workers, ordered=ordered, retry=retry)


def filter(
    pred: Callable[[Any], Any],
    *,
    name: str | None = None,
    workers: int = 1,
    ordered: bool = False,
    retry: RetryPolicy | None = None,
) -> Operator:
    """Keep the events whose payload ``pred`` holds for; the rest count as filtered.

    Raises:
        ConfigError: ``pred`` is not callable, ``workers`` is not an int >= 1, or
            ``retry`` is not a RetryPolicy or None.
    """
    return Filter(pred, name=name, workers=workers, ordered=ordered, retry=retry)


def flat_map(
    fn: Callable[[Any], Iterable[Any]],
    *,
    name: str | None = None,
    workers: int = 1,
    ordered: bool = False,
    retry: RetryPolicy | None = None,
) -> Operator:
    """Replace each event with the children ``fn(payload)`` returns.

    Children that are not :class:`Event` get the id ``"<parent id>:<index>"``
    (deterministic, so a replay deduplicates) and the parent's key and time.
    No children counts the parent as filtered.

    Raises:
        ConfigError: ``fn`` is not callable, ``workers`` is not an int >= 1, or
            ``retry`` is not a RetryPolicy or None.
    """
    return FlatMap(fn, name=name, workers=workers, ordered=ordered, retry=retry)


def map_batch(
    fn: Callable[[list[Any]], Sequence[Any]],
    *,
    name: str | None = None,
    workers: int = 1,
    ordered: bool = False,
    retry: RetryPolicy | None = None,
) -> Operator:
    """Replace a whole batch's payloads with ``fn(payloads)`` (same length), for vectorised code.

    If ``fn`` raises, the whole batch is retried, then dead-lettered.

    Raises:
        ConfigError: ``fn`` is not callable, ``workers`` is not an int >= 1, or
            ``retry`` is not a RetryPolicy or None.
    """
    return MapBatch(fn, name=name, workers=workers, ordered=ordered, retry=retry)


def key_by(
    fn: Callable[[Any], Hashable],
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
) -> Operator:
    """Set each event's key to ``fn(payload)``.

    Downstream stages with ``workers > 1`` then keep per-key order: events of
    one key always go to the same worker.

    Raises:
        ConfigError: ``fn`` is not callable, or ``retry`` is not a RetryPolicy or None.
    """
    return KeyBy(fn, name=name, retry=retry)


def inspect_(
    fn: Callable[[Any], Any],
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
) -> Operator:
    """Call ``fn(payload)`` for its side effect and pass the event on unchanged.

    Raises:
        ConfigError: ``fn`` is not callable, or ``retry`` is not a RetryPolicy or None.
    """
    return Inspect(fn, name=name, retry=retry)


def batch(max_size: int, max_wait: float, *, name: str | None = None) -> BatchStage:
    """Regroup events into batches of ``max_size``, or what arrived within ``max_wait`` seconds.

    Put it before a sink to make its writes large (one transaction per batch).

    Raises:
        ConfigError: ``max_size`` is not an int >= 1, or ``max_wait`` is not a number >= 0.
    """
    return BatchStage(max_size, max_wait, name=name)


def route(
    fn: Callable[[Any], str | None],
    ports: Sequence[str],
    *,
    default: str | None = None,
    name: str | None = None,
    workers: int = 1,
    retry: RetryPolicy | None = None,
) -> Route:
    """Send each event to the output port ``fn(payload)`` names.

    ``None`` drops the event (counted as filtered); a name not in ``ports``
    goes to ``default``, or is dead-lettered when there is none.

    Raises:
        ConfigError: ``fn`` is not callable, ``ports`` are not distinct names,
            ``default`` is not one of ``ports``, ``workers`` is not an int >= 1,
            or ``retry`` is not a RetryPolicy or None.
    """
    return Route(fn, ports, default=default, name=name, workers=workers, retry=retry)


def route_by_key(ports: Sequence[str], *, name: str | None = None) -> Route:
    """Spread events over ``ports`` by a stable hash of their key (per-key order per port).

    Raises:
        ConfigError: ``ports`` is empty or not distinct names.
    """
    ports = tuple(ports)
    return Route(_route_by_key_fn(ports), ports, by_key=True, name=name or "route_by_key")


class ChainFailure(Exception):
    """Raised by a composed map chain: stage ``index`` failed on ``item`` with ``error``."""

    def __init__(self, index: int, item: Any, error: Exception) -> None:
        super().__init__(index, item, error)
        self.index = index
        self.item = item
        self.error = error


class MapChain:
    """Consecutive sync ``map`` stages composed into one per-event function.

    ``h(g(f(p)))`` in one pass instead of three passes and two intermediate
    lists: the plain loop's own shape. A ``try`` per step costs nothing when
    nothing raises (zero-cost exceptions, Python 3.11), and tells which stage
    failed and on what input when something does.
    """

    def __init__(self, maps: list[Operator]) -> None:
        self.maps = maps
        # The generated loop is the plain loop itself: no wrapper frame per event.
        # out.append(p), not a bound append in a local: CPython 3.11 specialises the method
        # call on a list to an inline append (alone 10.7 vs 21.3 ns; within this loop the
        # three calls hide the difference)
        source = ["def run(items, out):", "    for p in items:"]
        for i in range(len(maps)):
            source += [
                "        try:",
                f"            p = f{i}(p)",
                "        except Exception as e:",
                f"            raise ChainFailure({i}, p, e) from e",
            ]
        source.append("        out.append(p)")
        namespace: dict[str, Any] = {f"f{i}": op.fn for i, op in enumerate(maps)}
        namespace["ChainFailure"] = ChainFailure
        exec("\n".join(source), namespace)
        self._run: Callable[[Iterable[Any], list[Any]], None] = namespace["run"]

    def apply_all(self, items: Sequence[Any]) -> tuple[list[Any], list[tuple[int, Exception]]]:
        """Run the chain over ``items``; a failing event leaves ``FAILED`` and its ChainFailure."""
        return _resuming(self._run, items, ChainFailure)


class OperatorStep:
    """One operator bound to its node's counters: a step of a task's pass."""

    __slots__ = ("op", "stats")

    def __init__(self, op: Operator, stats: StatsLike) -> None:
        self.op = op
        self.stats = stats

    async def run(self, ctx: StageContext, batch: Batch) -> Batch | None:
        return await self.op.apply(ctx, self.stats, batch)


class ChainStep:
    """Consecutive sync ``map`` stages as one pass, each stage keeping its own counters."""

    __slots__ = ("chain", "steps")

    def __init__(self, steps: list[tuple[Operator, StatsLike]]) -> None:
        self.steps = steps
        self.chain = MapChain([op for op, _ in steps])

    async def run(self, ctx: StageContext, batch: Batch) -> Batch | None:
        clock = ctx.clock
        started = clock()
        results, failures = self.chain.apply_all(batch.payloads)
        out = Batch(batch.events, results, batch.tokens, batch.trace, batch.links)
        n_in = n_out = len(results)
        dead: set[int] = set()
        if failures:
            dead = await self._recover(ctx, batch, results, failures)
            if dead:
                out = out.select([i for i in range(n_in) if i not in dead])
                n_out = len(out)
        took = (clock() - started) / len(self.steps)
        tracer = ctx.tracer
        span = batch.trace
        for _op, stats in self.steps:
            stats.record_batch(n_in, n_out, took)
            if tracer is not None:
                outcome = "dead_letter" if dead else "ok"
                span = tracer.span(stats.name, stats.kind, span, n_in, n_out, took, outcome,
                                   batch=batch, retries=_take_retries(ctx))
        return out.traced(span)

    async def _recover(
        self,
        ctx: StageContext,
        batch: Batch,
        results: list[Any],
        failures: list[tuple[int, Exception]],
    ) -> set[int]:
        """Finish the events the chain failed on, one stage at a time from the failing one."""
        dead: set[int] = set()
        for i, failure in failures:
            assert isinstance(failure, ChainFailure)
            k, item = failure.index, failure.item
            error: Exception | None = failure.error
            while k < len(self.steps):
                op, stats = self.steps[k]
                try:
                    item = await op.retry_one(ctx, stats, item, error)
                except GiveUp as gave_up:
                    dead.add(i)
                    failed = Batch([batch.events[i]], [item], [batch.tokens[i]])
                    await ctx.dead_letter(
                        stats, failed, [0], [(gave_up.error, gave_up.attempts)],
                        passed=len(batch) - len(failures),
                    )
                    break
                error = None
                k += 1
            else:
                results[i] = item
        return dead


def compose(nodes: Sequence[tuple[Any, StatsLike]]) -> list[OperatorStep | ChainStep]:
    """The steps of one task's pass: its per-event operators, in order, with runs of
    composable ones (sync ``map``) fused into one generated loop.

    Nodes that are not per-event operators (a ``batch()`` head, a custom stage) take
    no step: they call ``ctx.forward`` themselves.
    """
    steps: list[OperatorStep | ChainStep] = []
    run: list[tuple[Operator, StatsLike]] = []

    def close_run() -> None:
        if len(run) > 1:
            steps.append(ChainStep(list(run)))
        elif run:
            steps.append(OperatorStep(*run[0]))
        run.clear()

    for obj, stats in nodes:
        if not isinstance(obj, Operator):
            continue
        if obj.composable:
            run.append((obj, stats))
            continue
        close_run()
        steps.append(OperatorStep(obj, stats))
    close_run()
    return steps
