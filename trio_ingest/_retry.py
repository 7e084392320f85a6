"""Retry policies: frozen values whose delay sequence is a pure function.

The runtime is the only code that *sleeps* between attempts (with the event
loop's clock, so ``trio.testing.MockClock`` makes retry tests instant); the
values here only say how long.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Literal, TypeAlias

import attrs

from ._errors import ConfigError, TransientError
from ._validators import non_negative, optional, positive, positive_int

__all__ = ("Backoff", "CircuitBreaker", "ConstantBackoff", "ExponentialBackoff", "RetryPolicy")

Jitter: TypeAlias = Literal["none", "full", "equal"]
_RNG = random.Random()


@attrs.frozen
class ConstantBackoff:
    """Wait the same ``delay`` seconds before every retry.

    Raises:
        ConfigError: ``delay`` is not a number >= 0.
    """

    delay: float = attrs.field(default=0.1, validator=non_negative)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Yield the wait before retry 1, 2, ... (forever)."""
        while True:
            yield self.delay


@attrs.frozen
class ExponentialBackoff:
    """Wait ``initial * multiplier**n`` seconds (capped at ``max_delay``) before retry n+1.

    ``jitter`` spreads retries of many clients apart: ``"none"`` waits the exact
    delay, ``"full"`` a uniform draw in ``[0, delay]``, ``"equal"`` a uniform
    draw in ``[delay/2, delay]`` (the AWS Architecture Blog's names).

    Raises:
        ConfigError: ``initial`` or ``max_delay`` is not a number >= 0,
            ``multiplier`` is not >= 1, or ``jitter`` is not one of ``"none"``,
            ``"full"``, ``"equal"``.
    """

    initial: float = attrs.field(default=0.1, validator=non_negative)
    multiplier: float = attrs.field(default=2.0)
    max_delay: float = attrs.field(default=30.0, validator=non_negative)
    jitter: Jitter = attrs.field(default="full")

    @multiplier.validator
    def _check_multiplier(self, _attribute: object, value: float) -> None:
        if not value >= 1:
            raise ConfigError(f"'multiplier' must be >= 1: {value!r}")

    @jitter.validator
    def _check_jitter(self, _attribute: object, value: str) -> None:
        if value not in ("none", "full", "equal"):
            raise ConfigError(f"'jitter' must be one of 'none', 'full', 'equal': {value!r}")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Yield the wait before retry 1, 2, ... (forever); ``rng`` draws the jitter."""
        draw = (rng or _RNG).random
        delay = self.initial
        while True:
            capped = min(delay, self.max_delay)
            if self.jitter == "full":
                yield capped * draw()
            elif self.jitter == "equal":
                yield capped / 2 + capped / 2 * draw()
            else:
                yield capped
            delay *= self.multiplier


Backoff: TypeAlias = ConstantBackoff | ExponentialBackoff


def _as_type_tuple(value: object) -> tuple[type[BaseException], ...]:
    types = value if isinstance(value, tuple | list) else (value,)
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"'retry_on' must hold exception types: {kind!r}")
    return tuple(types)


@attrs.frozen
class RetryPolicy:
    """How often and how patiently to retry a failing call.

    Attributes:
        max_attempts: Total tries including the first; 1 means no retry.
        backoff: The waits between tries.
        retry_on: Exception types worth retrying; anything else fails at once
            (and its events are dead-lettered).
        deadline: Optional bound in seconds on the total time spent retrying one
            call: a retry whose wait would end past it is not made.

    Raises:
        ConfigError: ``max_attempts`` is not an int >= 1, or ``deadline`` is
            neither None nor a number > 0.
        TypeError: ``backoff`` is not a ConstantBackoff or ExponentialBackoff,
            or ``retry_on`` holds something other than exception types.
    """

    max_attempts: int = attrs.field(default=3, validator=positive_int)
    backoff: Backoff = attrs.field(factory=ExponentialBackoff)
    retry_on: tuple[type[BaseException], ...] = attrs.field(
        default=(TransientError, ConnectionError, TimeoutError), converter=_as_type_tuple
    )
    deadline: float | None = attrs.field(default=None, validator=optional(positive))

    @backoff.validator
    def _check_backoff(self, _attribute: object, value: object) -> None:
        if not isinstance(value, ConstantBackoff | ExponentialBackoff):
            raise TypeError(f"'backoff' must be ConstantBackoff or ExponentialBackoff: {value!r}")

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Yield the ``max_attempts - 1`` waits between tries, ignoring ``deadline``.

        A pure function of the policy (and ``rng``, which draws the jitter):
        ``list(policy.delays(random.Random(0)))`` is reproducible.
        """
        waits = self.backoff.delays(rng)
        for _ in range(self.max_attempts - 1):
            yield next(waits)

    def retries(self, error: BaseException) -> bool:
        """Return whether ``error`` is worth another try under this policy."""
        return isinstance(error, self.retry_on)


def check_policy(retry: object) -> RetryPolicy | None:
    """``retry`` if it is a RetryPolicy or None.

    Raises:
        ConfigError: Anything else, naming the field.
    """
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigError(f"'retry' must be a RetryPolicy or None: {retry!r}")
    return retry


@attrs.frozen
class CircuitBreaker:
    """Stop calling a failing sink for a while: open after ``failures`` in a row.

    While open, calls wait for ``reset_after`` seconds to pass; then one trial
    call is let through (half-open): success closes the breaker, failure opens it
    again. The breaker slows callers down instead of failing events, so nothing
    is dead-lettered merely because the breaker is open.

    Raises:
        ConfigError: ``failures`` is not an int >= 1, or ``reset_after`` is not
            a number > 0.
    """

    failures: int = attrs.field(default=5, validator=positive_int)
    reset_after: float = attrs.field(default=10.0, validator=positive)


class BreakerState:
    """The mutable state of one :class:`CircuitBreaker` in a running node."""

    __slots__ = ("_clock", "_consecutive", "_opened_at", "breaker")

    def __init__(self, breaker: CircuitBreaker, clock: Callable[[], float]) -> None:
        self.breaker = breaker
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def wait_time(self) -> float:
        """Seconds to wait before the next call may go through (0 when closed)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.breaker.reset_after - self._clock())

    def success(self) -> None:
        self._consecutive = 0
        self._opened_at = None

    def failure(self) -> None:
        self._consecutive += 1
        if self._opened_at is not None or self._consecutive >= self.breaker.failures:
            self._opened_at = self._clock()
