"""What every task of the runtime shares: retrying a call, naming errors, edge ends."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .._edge import EdgeReceiver, EdgeSender
from .._ratelimit import RUNTIME_RATE_LIMIT
from .._retry import BreakerState, RetryPolicy
from ..stages._context import GiveUp, StatsLike

__all__ = ("Worker", "call_with_retry", "hosted", "log", "note")

log = logging.getLogger("trio_ingest.runtime")
log.addFilter(RUNTIME_RATE_LIMIT)  # a failure storm logs a few lines per node and a count


async def call_with_retry(
    policy: RetryPolicy | None,
    call: Callable[[], Awaitable[Any]],
    stats: StatsLike,
    *,
    first_error: Exception | None = None,
    breaker: BreakerState | None = None,
    retries: list[tuple[int, float, BaseException]] | None = None,
) -> Any:
    """Call ``call()`` until it succeeds or ``policy`` gives up.

    ``first_error`` is the failure of an attempt already made. Sleeps with the
    event loop's clock. The one retry loop of trio_ingest. Each retry is
    appended to ``retries`` (when given) as (attempt, delay, error): tracing
    records them as span events.

    Raises:
        GiveUp: With the attempt count and the last error.
    """
    attempts = 0 if first_error is None else 1
    error = first_error
    waits = policy.delays() if policy is not None else iter(())
    started = anyio.current_time()
    while True:
        if error is not None:
            if policy is None or not policy.retries(error) or attempts >= policy.max_attempts:
                raise GiveUp(attempts, error)
            delay = next(waits)
            if policy.deadline is not None and (
                anyio.current_time() + delay - started > policy.deadline
            ):
                raise GiveUp(attempts, error)
            stats.retries += 1
            if retries is not None:
                retries.append((attempts, delay, error))
            log.warning(
                "%s: attempt %d failed (%s: %s); retrying in %.3fs",
                stats.name,
                attempts,
                type(error).__name__,
                error,
                delay,
                extra={"node": stats.name, "attempt": attempts, "error": str(error),
                       "error_type": type(error).__name__, "retry_in": delay},
            )
            await anyio.sleep(delay)
        if breaker is not None:
            wait = breaker.wait_time()
            if wait > 0:
                await anyio.sleep(wait)
        attempts += 1
        try:
            result = await call()
        except Exception as exc:
            stats.errors += 1
            if breaker is not None:
                breaker.failure()
            error = exc
        else:
            if breaker is not None:
                breaker.success()
            return result


def hosted(node: object) -> contextlib.AbstractAsyncContextManager[object]:
    """The async context a source or sink asks to live in, from open to close.

    A connector whose client owns tasks (coredis keeps an AnyIO task group per
    connection pool) defines ``open_resources()``, an async context manager.
    The runner enters it in the node's own task before ``open()`` and leaves it
    after ``aclose()``: those tasks then nest inside the run's task group, and
    cancel scopes stay properly nested (entering a task group in ``open()`` and
    leaving it in ``aclose()`` cannot: ``aclose`` runs in a shielded scope).
    """
    opener = getattr(node, "open_resources", None)
    if opener is None:
        return contextlib.nullcontext()
    return opener()  # type: ignore[no-any-return]


def note(exc: BaseException, role: str, name: str) -> None:
    """Name the node an error came from, on the error itself (not only on a group)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            note(inner, role, name)
        return
    if not any(n.startswith("raised in ") for n in getattr(exc, "__notes__", ())):
        exc.add_note(f"raised in {role} {name!r} of the pipeline")


class Worker:
    """The edge ends one task holds: its input, its outputs by port, its dead-letter end."""

    __slots__ = ("dead", "inbox", "outputs")

    def __init__(
        self,
        inbox: EdgeReceiver | None,
        outputs: dict[str | None, list[EdgeSender]],
        dead: EdgeSender | None,
    ) -> None:
        self.inbox = inbox
        self.outputs = outputs
        self.dead = dead

    def close(self) -> None:
        if self.inbox is not None:
            self.inbox.close()
        for senders in self.outputs.values():
            for s in senders:
                s.close()
        if self.dead is not None:
            self.dead.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
