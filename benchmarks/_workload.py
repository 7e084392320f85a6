"""The one workload every contender runs: the same three per-event maps over the same input.

Keeping the functions and the input in one module means a contender cannot win by
doing less work per event: each one applies exactly these functions, in this order,
to payloads built by :func:`payloads` or :func:`payload_stream`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final, TypeAlias

Payload: TypeAlias = dict[str, Any]
Transform: TypeAlias = Callable[[Payload], Payload]


def add_one(payload: Payload) -> Payload:
    """Stage 1: copy the payload and add ``a = value + 1``."""
    return {**payload, "a": payload["value"] + 1}


def double(payload: Payload) -> Payload:
    """Stage 2: copy the payload and add ``b = a * 2``."""
    return {**payload, "b": payload["a"] * 2}


def minus_one(payload: Payload) -> Payload:
    """Stage 3: copy the payload and add ``c = b - 1``."""
    return {**payload, "c": payload["b"] - 1}


STAGES: Final[tuple[Transform, Transform, Transform]] = (add_one, double, minus_one)

#: Events per list in the batched contenders (raw Trio batches, bytewax source batches).
BATCH: Final = 256

#: Events an edge/queue holds before its sender waits; the same for every bounded contender.
CAPACITY: Final = 1_000


def payloads(n: int) -> list[Payload]:
    """Return the input as a prebuilt list (built before timing starts)."""
    return [{"value": i} for i in range(n)]


def payload_stream(n: int) -> Iterator[Payload]:
    """Yield the input lazily, so the input itself never sits in memory."""
    for i in range(n):
        yield {"value": i}


def expected_c(i: int) -> int:
    """The value of ``c`` that the three stages give for input ``value = i``."""
    return (i + 1) * 2 - 1
