"""attrs validators for configuration values, written once, with one message form.

Every bad value fails with a :class:`~trio_ingest.ConfigError` (a ``ValueError``)
whose one-line message names the field: ``'capacity' must be >= 1: 0``. attrs
classes use them as ``attrs.field(validator=...)``; plain classes (a sink's
constructor, the graph's options) call :func:`check` with the same validator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._errors import ConfigError

__all__ = (
    "Validator",
    "check",
    "instance_of",
    "int_at_least",
    "non_negative",
    "optional",
    "positive",
    "positive_int",
)

T = TypeVar("T")
Validator = Callable[[Any, Any, Any], None]


class _Named:
    """Stands in for ``attrs.Attribute`` when a plain class checks a value by name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def check(validator: Validator, name: str, value: T) -> T:
    """Run an attrs-style ``validator`` on ``value`` of the field ``name``; return it.

    Raises:
        ConfigError: The value is invalid (the message names ``name``).
    """
    validator(None, _Named(name), value)
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def int_at_least(bound: int) -> Validator:
    """A whole number ``>= bound``."""

    def validate(_instance: object, attribute: Any, value: object) -> None:
        if not _is_int(value) or value < bound:  # type: ignore[operator]
            raise ConfigError(f"'{attribute.name}' must be >= {bound}: {value!r}")

    return validate


positive_int = int_at_least(1)


def non_negative(_instance: object, attribute: Any, value: object) -> None:
    """A number ``>= 0`` (seconds, ratios); not NaN."""
    if not _is_number(value) or not value >= 0:  # type: ignore[operator]
        raise ConfigError(f"'{attribute.name}' must be >= 0: {value!r}")


def positive(_instance: object, attribute: Any, value: object) -> None:
    """A number ``> 0`` (infinity allowed: "no bound"); not NaN."""
    if not _is_number(value) or not value > 0:  # type: ignore[operator]
        raise ConfigError(f"'{attribute.name}' must be > 0: {value!r}")


def optional(validator: Validator) -> Validator:
    """``validator``, or None; the message says ``or None``."""

    def validate(instance: object, attribute: Any, value: object) -> None:
        if value is None:
            return
        try:
            validator(instance, attribute, value)
        except ConfigError as exc:
            raise ConfigError(f"{exc.args[0].split(':', 1)[0]} or None: {value!r}") from None

    return validate


def instance_of(*kinds: type, what: str) -> Validator:
    """An instance of one of ``kinds``; ``what`` names them in the message."""

    def validate(_instance: object, attribute: Any, value: object) -> None:
        if not isinstance(value, kinds):
            raise ConfigError(f"'{attribute.name}' must be {what}: {value!r}")

    return validate
