"""The kit's pytest plugin, loaded by its entry point, under pytest-trio and under AnyIO's plugin.

Each case runs pytest in a subprocess on a small test file of a user's, so the
plugin is found the way a user's pytest finds it (the ``pytest11`` entry point).
"""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = '''
import sniffio
import trio
import trio_ingest as ti

def pipeline(store, dead):
    sink = ti.testing.OutageSink(store, duration=120.0)
    retry = ti.RetryPolicy(max_attempts=1000, backoff=ti.ConstantBackoff(1.0))
    return ti.Pipeline(
        ti.sources.from_iterable([ti.Event(f"e{i}", i) for i in range(50)]),
        sink=sink, dead_letter=dead, retry=retry,
    )
'''

TRIO_MODE = USER_TESTS + '''
async def test_on_the_virtual_clock(ti_clock, ti_store, ti_dead_letters, ti_oracle):
    report = await pipeline(ti_store, ti_dead_letters).run()
    assert ti_clock.current_time() >= 120.0   # two virtual minutes
    assert sniffio.current_async_library() == "trio"
    ti_oracle([f"e{i}" for i in range(50)]).verdict(
        ti.testing.memory_ids(ti_store), ti.testing.memory_ids(ti_dead_letters), report
    ).assert_ok()
'''

ANYIO = USER_TESTS + '''
import anyio
import pytest

@pytest.fixture(params=["trio-mock-clock", "asyncio"])
def anyio_backend(request, ti_mock_clock_backend):
    return ti_mock_clock_backend if request.param == "trio-mock-clock" else "asyncio"

@pytest.mark.anyio
async def test_on_both_backends(anyio_backend, ti_store, ti_dead_letters, ti_oracle):
    library = sniffio.current_async_library()
    assert library == ("trio" if anyio_backend != "asyncio" else "asyncio")
    store, dead = ti_store, ti_dead_letters
    if library == "asyncio":  # no virtual clock there: no outage either
        p = ti.Pipeline(ti.sources.from_iterable([ti.Event(f"e{i}", i) for i in range(50)]),
                        sink=store, dead_letter=dead)
    else:
        p = pipeline(store, dead)
    start = anyio.current_time()
    report = await p.run()
    if library == "trio":
        assert anyio.current_time() - start >= 120.0
    ti_oracle([f"e{i}" for i in range(50)]).verdict(
        ti.testing.memory_ids(store), ti.testing.memory_ids(dead), report
    ).assert_ok()
'''


def _run(pytester: pytest.Pytester, source: str, *options: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=textwrap.dedent(source))
    return pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", *options)


def test_fixtures_under_pytest_trio(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    result = _run(pytester, TRIO_MODE, "-p", "no:anyio")
    result.assert_outcomes(passed=1)


def test_fixtures_under_anyio_on_both_backends(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    result = _run(pytester, ANYIO, "-p", "no:trio")
    result.assert_outcomes(passed=2)


def test_a_failing_user_test_fails(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    broken = TRIO_MODE.replace("range(50)]).verdict", "range(51)]).verdict")
    result = _run(pytester, broken, "-p", "no:anyio")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*lost 1 id(s): 'e50'*"])
