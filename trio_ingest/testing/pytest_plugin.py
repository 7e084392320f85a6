"""The pytest plugin of the test kit (entry point ``pytest11``, loaded once it is installed).

Its fixtures are plain values, so they work under either async plugin:

* ``ti_clock``: a ``MockClock(autojump_threshold=0)``. Under pytest-trio a test
  that requests it runs on it (pytest-trio uses any ``Clock`` fixture).
* ``ti_mock_clock_backend``: ``("trio", {"clock": ti_clock})``, the AnyIO
  ``anyio_backend`` value that runs a test on that clock.
* ``ti_store`` (an idempotent memory sink), ``ti_dead_letters`` (a memory
  dead-letter sink), ``ti_oracle`` (``make(inputs) -> Oracle``).

Pick one plugin per test: pytest-trio (``trio_mode = true``) when your code is
Trio only; AnyIO's plugin with ``anyio_backend`` parametrised over
``"trio"`` and ``"asyncio"`` when it must run on both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
import trio.testing

from ..sinks._memory import Memory
from ._oracle import Oracle

__all__ = ("ti_clock", "ti_dead_letters", "ti_mock_clock_backend", "ti_oracle", "ti_store")


@pytest.fixture
def ti_clock() -> trio.testing.MockClock:
    """A Trio ``MockClock`` that jumps ahead whenever every task waits."""
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def ti_mock_clock_backend(
    ti_clock: trio.testing.MockClock,
) -> tuple[str, dict[str, object]]:
    """The AnyIO backend value that runs a test on Trio with ``ti_clock``."""
    return ("trio", {"clock": ti_clock})


@pytest.fixture
def ti_store() -> Memory:
    """An idempotent memory sink (one row per id, as the database sinks)."""
    return Memory(idempotent=True, name="store")


@pytest.fixture
def ti_dead_letters() -> Memory:
    """A memory sink to use as the dead-letter sink."""
    return Memory(name="dead_letters")


@pytest.fixture
def ti_oracle() -> Callable[..., Oracle]:
    """``make(inputs, filtered=()) -> Oracle``."""

    def make(inputs: Iterable[str], *, filtered: Iterable[str] = ()) -> Oracle:
        return Oracle(inputs, filtered=filtered)

    return make
