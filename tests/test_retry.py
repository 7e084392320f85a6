import random

import pytest
import trio
import trio.testing

import trio_ingest as ti
from trio_ingest.testing import run_with_mock_clock


def test_policies_are_values() -> None:
    a = ti.RetryPolicy(max_attempts=4, backoff=ti.ConstantBackoff(0.5))
    b = ti.RetryPolicy(max_attempts=4, backoff=ti.ConstantBackoff(0.5))
    assert a == b and hash(a) == hash(b)
    assert "max_attempts=4" in repr(a)
    import attrs

    c = attrs.evolve(a, max_attempts=2)
    assert c.max_attempts == 2 and a.max_attempts == 4


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ti.RetryPolicy(max_attempts=0), "'max_attempts' must be >= 1: 0"),
        (lambda: ti.ExponentialBackoff(initial=-1), "'initial' must be >= 0: -1"),
        (lambda: ti.ExponentialBackoff(multiplier=0.5), "'multiplier' must be >= 1: 0.5"),
        (lambda: ti.ExponentialBackoff(jitter="some"), "'jitter' must be one of"),
        (lambda: ti.ConstantBackoff(-0.1), "'delay' must be >= 0: -0.1"),
        (lambda: ti.RetryPolicy(deadline=0), "'deadline' must be > 0 or None: 0"),
    ],
)
def test_bad_values_fail_with_the_field_name(make: object, message: str) -> None:
    with pytest.raises(ti.ConfigError, match=message.replace("(", r"\(")):
        make()  # type: ignore[operator]


def test_retry_on_must_hold_exception_types() -> None:
    with pytest.raises(TypeError, match="'retry_on' must hold exception types"):
        ti.RetryPolicy(retry_on=("nope",))  # type: ignore[arg-type]
    assert ti.RetryPolicy(retry_on=KeyError).retry_on == (KeyError,)


def test_exponential_delays_without_jitter_are_exact() -> None:
    policy = ti.RetryPolicy(
        max_attempts=6,
        backoff=ti.ExponentialBackoff(initial=0.1, multiplier=2, max_delay=1.0, jitter="none"),
    )
    assert list(policy.delays()) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])


def test_full_and_equal_jitter_stay_in_their_ranges_and_are_reproducible() -> None:
    full = ti.ExponentialBackoff(initial=1, multiplier=2, max_delay=8, jitter="full")
    equal = ti.ExponentialBackoff(initial=1, multiplier=2, max_delay=8, jitter="equal")
    caps = [1, 2, 4, 8, 8, 8]
    policy = ti.RetryPolicy(max_attempts=7, backoff=full)
    draws = list(policy.delays(random.Random(3)))
    assert draws == list(policy.delays(random.Random(3)))
    assert all(0 <= d <= c for d, c in zip(draws, caps, strict=True))
    assert len(set(draws)) == len(draws)  # jitter actually spreads them
    eq = list(ti.RetryPolicy(max_attempts=7, backoff=equal).delays(random.Random(3)))
    assert all(c / 2 <= d <= c for d, c in zip(eq, caps, strict=True))


def test_retries_only_the_listed_errors() -> None:
    policy = ti.RetryPolicy()
    assert policy.retries(ti.TransientError())
    assert policy.retries(ConnectionResetError())
    assert not policy.retries(ValueError())
    assert not policy.retries(ti.PermanentError())


def _run_sink(
    sink: ti.Sink, policy: ti.RetryPolicy, n: int = 3
) -> tuple[ti.RunReport, ti.sinks.Memory, float]:
    dead = ti.sinks.Memory()

    async def main() -> tuple[ti.RunReport, float]:
        start = trio.current_time()
        report = await _pipeline(sink, dead, policy, n).run()
        return report, trio.current_time() - start

    report, took = run_with_mock_clock(main)
    return report, dead, took


def _pipeline(sink: ti.Sink, dead: ti.Sink, policy: ti.RetryPolicy, n: int) -> ti.Pipeline:
    return ti.Pipeline(
        ti.sources.from_iterable(range(n)),
        ti.map(lambda p: p),
        sink=sink,
        dead_letter=dead,
        retry=policy,
        max_batch=n,
    )


@pytest.mark.parametrize("k", [0, 1, 3])
def test_sink_failing_k_times_succeeds_on_attempt_k_plus_1_with_exact_delays(k: int) -> None:
    sink = ti.testing.FlakySink(fail_first=k)
    policy = ti.RetryPolicy(
        max_attempts=5,
        backoff=ti.ExponentialBackoff(initial=0.5, multiplier=3, max_delay=100, jitter="none"),
    )
    report, dead, took = _run_sink(sink, policy)
    assert len(sink.attempts) == k + 1
    gaps = [b - a for a, b in zip(sink.attempts, sink.attempts[1:], strict=False)]
    assert gaps == pytest.approx([0.5 * 3**i for i in range(k)])
    assert took == pytest.approx(sum(gaps))
    assert report.delivered == 3 and report.retries == k and dead.events == []
    assert [e.payload for e in sink.inner.events] == [0, 1, 2]  # type: ignore[attr-defined]


def test_exhausted_retries_dead_letter_with_the_attempt_count() -> None:
    sink = ti.testing.FlakySink(fail_first=100)
    policy = ti.RetryPolicy(max_attempts=4, backoff=ti.ConstantBackoff(2.0))
    report, dead, took = _run_sink(sink, policy)
    assert len(sink.attempts) == 4
    assert took == pytest.approx(6.0)
    assert report.delivered == 0 and report.dead_lettered == 3
    letters = [e.payload for e in dead.events]
    assert {letter.attempts for letter in letters} == {4}
    assert {letter.node for letter in letters} == {"flaky_memory"}
    assert all(letter.error_type.endswith("TransientError") for letter in letters)
    assert sorted(e.id for e in dead.events) == ["source:0", "source:1", "source:2"]


def test_deadline_cuts_retries_short() -> None:
    sink = ti.testing.FlakySink(fail_first=100)
    policy = ti.RetryPolicy(max_attempts=50, backoff=ti.ConstantBackoff(1.0), deadline=3.5)
    report, _dead, _took = _run_sink(sink, policy)
    assert len(sink.attempts) == 4  # waits at 1, 2, 3; a 4th wait would end at 4 > 3.5
    assert report.dead_lettered == 3


def test_jittered_retry_delays_vary() -> None:
    sink = ti.testing.FlakySink(fail_first=6)
    policy = ti.RetryPolicy(
        max_attempts=10, backoff=ti.ExponentialBackoff(initial=1, multiplier=1, jitter="full")
    )
    _report, _dead, _took = _run_sink(sink, policy)
    gaps = [b - a for a, b in zip(sink.attempts, sink.attempts[1:], strict=False)]
    assert len(gaps) == 6 and all(0 <= g <= 1 for g in gaps)
    assert len({round(g, 9) for g in gaps}) > 1


def test_circuit_breaker_pauses_writes_after_consecutive_failures() -> None:
    breaker = ti.CircuitBreaker(failures=2, reset_after=10.0)
    sink = ti.testing.FlakySink(fail_first=3, breaker=breaker)
    policy = ti.RetryPolicy(max_attempts=10, backoff=ti.ConstantBackoff(0.1))
    report, _dead, _took = _run_sink(sink, policy)
    assert report.delivered == 3
    gaps = [b - a for a, b in zip(sink.attempts, sink.attempts[1:], strict=False)]
    # the 2nd failure opens the breaker: the 3rd attempt waits out reset_after
    assert gaps[0] == pytest.approx(0.1)
    assert gaps[1] == pytest.approx(10.0)
