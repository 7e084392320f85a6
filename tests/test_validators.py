"""Configuration values fail with one line naming the field, from one set of validators."""

from __future__ import annotations

import math

import pytest

import trio_ingest as ti
from trio_ingest._validators import check, non_negative, optional, positive, positive_int


@pytest.mark.parametrize(
    ("validator", "value", "message"),
    [
        (positive_int, 0, "'f' must be >= 1: 0"),
        (positive_int, True, "'f' must be >= 1: True"),
        (positive_int, 1.5, "'f' must be >= 1: 1.5"),
        (non_negative, -1, "'f' must be >= 0: -1"),
        (non_negative, math.nan, "'f' must be >= 0: nan"),
        (positive, 0.0, "'f' must be > 0: 0.0"),
        (positive, "1", "'f' must be > 0: '1'"),
        (optional(positive_int), 0, "'f' must be >= 1 or None: 0"),
    ],
)
def test_messages_name_the_field_and_the_value(
    validator: object, value: object, message: str
) -> None:
    with pytest.raises(ti.ConfigError) as info:
        check(validator, "f", value)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_good_values_pass_through() -> None:
    assert check(positive_int, "f", 3) == 3
    assert check(optional(positive_int), "f", None) is None
    assert check(positive, "f", math.inf) == math.inf  # "no bound"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (
            lambda: ti.Pipeline(ti.sources.from_iterable([]), sink=ti.sinks.Memory(), capacity=0),
            "capacity",
        ),
        (lambda: ti.sinks.Memory(workers=0), "workers"),
        (lambda: ti.map(str, workers=-1), "workers"),
        (lambda: ti.batch(0, 1.0), "max_size"),
        (lambda: ti.RetryPolicy(max_attempts=0), "max_attempts"),
        (lambda: ti.CircuitBreaker(failures=0), "failures"),
        (lambda: ti.RetryPolicy(deadline=-1), "deadline"),
    ],
)
def test_every_configuration_value_uses_them(build: object, field: str) -> None:
    with pytest.raises(ti.ConfigError, match=f"^'{field}' must be"):
        build()  # type: ignore[operator]
