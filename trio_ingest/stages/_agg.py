"""Ready aggregations for windows: ``ti.agg.count()``, ``sum``, ``min``, ``max``, ``mean`` ...

An aggregation is a value with four pure functions: ``initial()`` makes a fresh
accumulator, ``add(acc, payload)`` folds one payload in, ``merge(a, b)`` joins
two accumulators (session windows merge), and ``result(acc)`` is what the
window emits. ``ti.agg.combine(total=ti.agg.sum("amount"), n=ti.agg.count())``
runs several at once and emits a dict.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._errors import ConfigError

__all__ = ("Agg", "collect", "combine", "count", "max", "mean", "min", "reduce", "sum")

_builtin_min, _builtin_max = min, max
Field = str | Callable[[Any], Any] | None


def _getter(field: Field) -> Callable[[Any], Any]:
    if field is None:
        return lambda p: p
    if isinstance(field, str):
        return operator.itemgetter(field)
    if callable(field):
        return field
    raise ConfigError(f"'field' must be a str, a callable or None: {field!r}")


def _identity(acc: Any) -> Any:
    return acc


@attrs.frozen
class Agg:
    """An aggregation: ``initial() -> acc``, ``add(acc, p) -> acc``, ``merge(a, b) -> acc``,
    ``result(acc) -> value``. ``merge`` is None when accumulators cannot be joined.

    ``inline`` lets a window fold a ready aggregation without a call per event:
    ``("sum", field)`` (``field`` a key or None for the payload) or ``("count", None)``;
    it must mean exactly what ``add`` does.
    """

    name: str
    initial: Callable[[], Any]
    add: Callable[[Any, Any], Any]
    merge: Callable[[Any, Any], Any] | None
    result: Callable[[Any], Any] = attrs.field(default=_identity)
    inline: tuple[str, str | None] | None = None


def count() -> Agg:
    """The number of events."""
    return Agg("count", lambda: 0, lambda acc, _p: acc + 1, operator.add, inline=("count", None))


def sum(field: Field = None) -> Agg:
    """The sum of ``field`` (a key, a function of the payload, or the payload itself).

    Raises:
        ConfigError: ``field`` is not a str, a callable or None.
    """
    get = _getter(field)
    inline = ("sum", field) if field is None or isinstance(field, str) else None
    return Agg("sum", lambda: 0, lambda acc, p: acc + get(p), operator.add, inline=inline)


def _pick(
    better: Callable[[Any, Any], Any], get: Callable[[Any], Any]
) -> Callable[[Any, Any], Any]:
    def add(acc: Any, p: Any) -> Any:
        v = get(p)
        return v if acc is None else better(acc, v)

    return add


def _join(better: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def merge(a: Any, b: Any) -> Any:
        if a is None:
            return b
        return a if b is None else better(a, b)

    return merge


def min(field: Field = None) -> Agg:
    """The smallest ``field``.

    Raises:
        ConfigError: ``field`` is not a str, a callable or None.
    """
    return Agg("min", lambda: None, _pick(_builtin_min, _getter(field)), _join(_builtin_min))


def max(field: Field = None) -> Agg:
    """The largest ``field``.

    Raises:
        ConfigError: ``field`` is not a str, a callable or None.
    """
    return Agg("max", lambda: None, _pick(_builtin_max, _getter(field)), _join(_builtin_max))


def mean(field: Field = None) -> Agg:
    """The arithmetic mean of ``field``.

    Raises:
        ConfigError: ``field`` is not a str, a callable or None.
    """
    get = _getter(field)
    return Agg(
        "mean",
        lambda: (0, 0),
        lambda acc, p: (acc[0] + get(p), acc[1] + 1),
        lambda a, b: (a[0] + b[0], a[1] + b[1]),
        lambda acc: acc[0] / acc[1] if acc[1] else None,
    )


def collect(field: Field = None) -> Agg:
    """Every ``field`` (the payloads by default), in arrival order.

    Raises:
        ConfigError: ``field`` is not a str, a callable or None.
    """
    get = _getter(field)

    def add(acc: list[Any], p: Any) -> list[Any]:
        acc.append(get(p))  # the accumulator belongs to one window alone
        return acc

    return Agg("collect", list, add, operator.add)


def reduce(
    fn: Callable[[Any, Any], Any],
    initial: Any,
    merge: Callable[[Any, Any], Any] | None = None,
) -> Agg:
    """A user fold: ``fn(acc, payload) -> acc`` from ``initial`` (a callable makes a fresh one).

    Raises:
        ConfigError: ``fn`` is not callable, or ``merge`` is neither None nor callable.
    """
    if not callable(fn):
        raise ConfigError(f"'reduce' must be callable: {fn!r}")
    if merge is not None and not callable(merge):
        raise ConfigError(f"'merge' must be callable: {merge!r}")
    make = initial if callable(initial) else (lambda: initial)
    return Agg(getattr(fn, "__name__", "reduce"), make, fn, merge)


def combine(**aggs: Agg) -> Agg:
    """Several aggregations at once; the window's value is a dict by the given names.

    Raises:
        ConfigError: No aggregation is given, or a value is not an :class:`Agg`.
    """
    if not aggs:
        raise ConfigError("combine() needs at least one aggregation")
    for name, agg in aggs.items():
        if not isinstance(agg, Agg):
            raise ConfigError(f"combine(): {name!r} must be an aggregation (ti.agg.*): {agg!r}")
    names = tuple(aggs)
    parts = tuple(aggs.values())
    can_merge = all(a.merge is not None for a in parts)

    def add(acc: tuple[Any, ...], p: Any) -> tuple[Any, ...]:
        return tuple(a.add(x, p) for a, x in zip(parts, acc, strict=True))

    def merge(x: tuple[Any, ...], y: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(a.merge(u, v) for a, u, v in zip(parts, x, y, strict=True))  # type: ignore[misc]

    def result(acc: tuple[Any, ...]) -> Mapping[str, Any]:
        return {n: a.result(x) for n, a, x in zip(names, parts, acc, strict=True)}

    return Agg(
        "combine",
        lambda: tuple(a.initial() for a in parts),
        add,
        merge if can_merge else None,
        result,
    )
