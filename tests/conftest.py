"""Test configuration: every async test runs on Trio and on asyncio (AnyIO's plugin).

AnyIO's pytest plugin is the one async plugin in charge; tests that need exact
time run under Trio with ``MockClock(autojump_threshold=0)`` through the
``mock_clock`` backend parameter (asyncio has no virtual clock).
"""

from __future__ import annotations

import pytest
import trio.testing


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def mock_clock_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
