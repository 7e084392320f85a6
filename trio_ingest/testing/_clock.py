"""Running a pipeline, or any async function, on Trio's virtual clock."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio.testing

from .._pipeline import Graph

__all__ = ("run_with_mock_clock",)

T = TypeVar("T")


def run_with_mock_clock(
    target: Graph | Callable[..., Awaitable[T]],
    *args: Any,
    clock: trio.testing.MockClock | None = None,
) -> Any:
    """Run ``target`` under ``trio.testing.MockClock(autojump_threshold=0)`` and return its result.

    The clock jumps ahead whenever every task is waiting, so retry backoffs,
    batching windows, rate limits and shutdown deadlines take no real time and
    land on exact instants::

        report = ti.testing.run_with_mock_clock(pipeline)          # a Pipeline or Graph
        value = ti.testing.run_with_mock_clock(main, arg, clock=c)  # an async function

    Args:
        target: A ``Pipeline`` / ``Graph`` (its ``run()`` is called) or an async
            function, called with ``args``.
        *args: Positional arguments of the async function.
        clock: The clock to use (to read ``clock.current_time()`` afterwards);
            default: a new ``MockClock(autojump_threshold=0)``.

    Returns:
        The pipeline's ``RunReport``, or what the function returned.

    Raises:
        TypeError: ``target`` is neither a graph nor callable, or args were
            given with a graph.
        Exception: Whatever the run raises.
    """
    if clock is None:
        clock = trio.testing.MockClock(autojump_threshold=0)
    if isinstance(target, Graph):
        if args:
            raise TypeError("run_with_mock_clock(): a Pipeline or Graph takes no arguments")
        return trio.run(target.run, clock=clock)
    if not callable(target):
        raise TypeError(
            f"run_with_mock_clock() needs a Pipeline, a Graph or an async function: {target!r}"
        )
    return trio.run(functools.partial(target, *args), clock=clock)
