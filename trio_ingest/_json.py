"""The one JSON encoder of every sink: orjson, with one rule for NaN and infinity.

JSON has no NaN or infinity. ``json.dumps`` writes them as bare ``NaN`` /
``Infinity`` (not JSON) unless told not to, and orjson writes them as ``null``
without a word: either way a reader gets something else than was sent. Here a
non-finite number is a data error, :class:`NotJsonError`, naming where it sits
(``field 'readings[2].celsius'``), so the event is dead-lettered with that
reason; the same in every sink.

A :class:`~trio_ingest.DeadLetter` record always encodes (recording a failure
must never fail): what JSON cannot hold in it is written as text (``"nan"``,
``repr`` of an unknown object).

Beyond plain JSON values, any mapping and any object with a ``to_dict()``
method (events, dead letters) encode as objects; dates, times, UUIDs,
dataclasses and enums as orjson writes them; integers past 64 bits and strings
with lone surrogates through the standard library (escaped).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ._errors import NotJsonError
from ._event import DeadLetter, Event

__all__ = (
    "NotJsonError", "dumps", "dumps_many", "dumps_record", "dumps_text", "key_text", "loads"
)

_OPTIONS = orjson.OPT_NON_STR_KEYS  # as json.dumps: {1: x} is {"1": x}
_SORTED = _OPTIONS | orjson.OPT_SORT_KEYS
_orjson_dumps = orjson.dumps
_NULL = b"null"
#: Deeper than orjson goes (254): past it a value is not JSON here anyway.
_MAX_DEPTH = 256


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    to_dict = getattr(value, "to_dict", None)  # events, dead letters, records of users
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(
    value: Any,
    *,
    what: str = "value",
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> bytes:
    """``value`` as compact UTF-8 JSON.

    Args:
        value: What to encode.
        what: How the error names ``value`` (``"payload of event 'e1'"``).
        sort_keys: Write object keys sorted (one text for equal values).
        default: Called with an object of a type the encoder does not know, returns
            something it does (as ``json.dumps``'s ``default``).

    Raises:
        NotJsonError: ``value`` holds NaN or infinity (the message names the
            field), or something JSON has no form for. Never for a
            :class:`~trio_ingest.DeadLetter`.
    """
    hook = _default if default is None else _chained(default)
    try:
        data = _orjson_dumps(value, default=hook, option=_SORTED if sort_keys else _OPTIONS)
    except TypeError as exc:
        if value.__class__ is DeadLetter:
            return dumps_record(value)
        data = _stdlib(value, what, exc, sort_keys, hook)
    if _NULL in data:  # orjson wrote NaN and infinity as null: was there one?
        found = _non_finite(value)
        if found is not None:
            if value.__class__ is DeadLetter:
                return dumps_record(value)
            path, number = found
            raise NotJsonError(
                f"{what} is not JSON: {_where(path)} is {number!r} "
                "(JSON has no NaN or infinity)"
            )
    return data


def dumps_text(value: Any, *, what: str = "value") -> str:
    """:func:`dumps` as a ``str`` (for text columns).

    Raises:
        NotJsonError: As :func:`dumps`.
    """
    return dumps(value, what=what).decode()


def dumps_many(values: list[Any], *, text: bool = False) -> list[Any]:
    """:func:`dumps` of each of ``values`` (as ``str`` with ``text=True``): the batch form.

    One list comprehension over orjson, then one scan for ``null``; only values
    that need a closer look go through :func:`dumps` one by one.

    Raises:
        NotJsonError: As :func:`dumps`, for the first value that is not JSON (the
            caller names its event).
    """
    encode, default, option = _orjson_dumps, _default, _OPTIONS
    try:
        if text:
            out: list[Any] = [encode(v, default=default, option=option).decode() for v in values]
        else:
            out = [encode(v, default=default, option=option) for v in values]
    except TypeError:
        if text:
            return [dumps_text(v) for v in values]
        return [dumps(v) for v in values]
    null = "null" if text else _NULL
    for i in [i for i, data in enumerate(out) if null in data]:
        again = dumps(values[i])
        out[i] = again.decode() if text else again
    return out


def dumps_record(value: Any) -> bytes:
    """``value`` as JSON, never failing: non-finite numbers and unknown objects become text.

    For dead-letter records, which hold whatever made an event fail.
    """
    try:
        data = _orjson_dumps(value, default=_default, option=_OPTIONS)
    except TypeError:
        pass
    else:
        if _NULL not in data or _non_finite(value) is None:
            return data
    return _orjson_dumps(_storable(value, 0, set()), option=_OPTIONS)


def key_text(key: Any) -> str | None:
    """An event key as text: None and str as they are, anything else as JSON; never fails.

    Keys are sorted (equal keys give one text); what JSON cannot hold becomes text,
    as in :func:`dumps_record`, since a key is no payload to reject.
    """
    if key is None:
        return None
    if key.__class__ is str:
        return str(key)
    try:
        return dumps(key, sort_keys=True).decode()
    except NotJsonError:
        return dumps_record(key).decode()


def _chained(default: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def hook(value: Any) -> Any:
        if isinstance(value, Mapping) or callable(getattr(value, "to_dict", None)):
            return _default(value)
        return default(value)

    return hook


def _stdlib(
    value: Any, what: str, error: TypeError, sort_keys: bool, hook: Callable[[Any], Any]
) -> bytes:
    """What orjson refused, through ``json`` (big integers, lone surrogates), or the error."""
    try:
        return json.dumps(
            value, default=hook, allow_nan=False, separators=(",", ":"), sort_keys=sort_keys
        ).encode()
    except (TypeError, ValueError, RecursionError):
        found = _non_finite(value)
        if found is not None:
            path, number = found
            raise NotJsonError(
                f"{what} is not JSON: {_where(path)} is {number!r} "
                "(JSON has no NaN or infinity)"
            ) from None
        raise NotJsonError(f"{what} is not JSON-serialisable: {error}") from error


def _children(value: Any) -> list[tuple[Any, Any]] | None:
    """(path step, child) pairs of a container, None for a leaf."""
    if isinstance(value, Mapping):
        return list(value.items())
    to_dict = getattr(value, "to_dict", None)  # before sequences: an Event is a tuple too
    if callable(to_dict):
        as_dict = to_dict()
        return list(as_dict.items()) if isinstance(as_dict, Mapping) else [("to_dict()", as_dict)]
    if isinstance(value, list | tuple):
        return [(i, v) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    return None


def _non_finite(value: Any) -> tuple[tuple[Any, ...], float] | None:
    """The path to the first NaN or infinity in ``value`` (keys included), and the number."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    seen: set[int] = set()
    while stack:
        path, item = stack.pop()
        if item.__class__ is float:
            if not math.isfinite(item):
                return path, item
            continue
        if isinstance(item, str | int | bool) or item is None or len(path) > _MAX_DEPTH:
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return path, float(item)
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        children = _children(item)
        if children is None:
            continue
        for step, child in reversed(children):
            if isinstance(step, float) and not math.isfinite(step):
                return (*path, step), step
            stack.append(((*path, step), child))
    return None


def _where(path: tuple[Any, ...]) -> str:
    if not path:
        return "the value"
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return f"field {text!r}"


def _storable(value: Any, depth: int, active: set[int]) -> Any:
    """``value`` with only what orjson always takes: finite numbers, valid text, containers.

    ``active`` holds the containers being converted (a container inside itself is a cycle).
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if depth > _MAX_DEPTH // 2:
        return f"<{type(value).__name__} nested too deep>"
    if id(value) in active:
        return f"<{type(value).__name__} cycle>"
    if value.__class__ is DeadLetter or value.__class__ is Event:
        value = value.to_dict()
    deeper = depth + 1
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        active.add(id(value))
        try:
            if isinstance(value, Mapping):
                return {
                    _storable(k if isinstance(k, str) else repr(k), deeper, active): (
                        _storable(v, deeper, active)
                    )
                    for k, v in value.items()
                }
            return [_storable(v, deeper, active) for v in value]
        finally:
            active.discard(id(value))
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 -- a broken __repr__ must not fail a dead letter
        return f"<{type(value).__name__}>"
    return _storable(text, deeper, active)


_DECODER = json.JSONDecoder()


def loads(raw: bytes) -> Any:
    """``json.loads`` of UTF-8 bytes: orjson on well-formed input, ``json`` for the rest.

    orjson is stricter (NaN, integers past 64 bits): then ``json`` decides, and its
    message names the problem. Leading and trailing whitespace are accepted.

    Raises:
        ValueError: ``raw`` is not JSON (a ``json.JSONDecodeError``, or a
            ``UnicodeDecodeError`` for bytes that are not UTF-8).
    """
    try:
        return orjson.loads(raw)
    except ValueError:
        pass
    text = raw.decode()
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return json.loads(text)  # leading whitespace; or the error, with json's message
    if end != len(text):
        return json.loads(text)  # trailing whitespace is fine; anything else raises
    return value

