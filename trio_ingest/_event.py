"""The event value and the dead-letter record."""

from __future__ import annotations

import functools
import operator
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs

__all__ = ("DeadLetter", "Event")

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def _check_id(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if type(value) is not str or not value:
        raise ValueError(f"'id' must be a non-empty str: {value!r}")


def _check_time(_instance: object, _attribute: attrs.Attribute[float], value: float) -> None:
    kind = type(value)
    if kind is not float and kind is not int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"'event_time' must be a number (seconds since the epoch): {value!r}")
    if value != value:  # NaN: no watermark could ever pass it
        raise ValueError(f"'event_time' must not be NaN: {value!r}")


@attrs.frozen(slots=True, weakref_slot=False)
class _EventFields:
    """The fields of :class:`Event`, as attrs describes them (``attrs.fields(Event)``)."""

    id: str = attrs.field(validator=_check_id)
    payload: Any = None
    key: Any = None
    event_time: float = attrs.field(factory=time.time, validator=_check_time)
    headers: Mapping[str, str] = _NO_HEADERS


_tuple_new = tuple.__new__

#: Event's fields, in storage order, with the docs of their attributes.
_FIELDS = (
    ("id", "Unique, non-empty identity; sinks deduplicate on it."),
    ("payload", "The data."),
    ("key", "Optional partition key."),
    ("event_time", "Seconds since the epoch."),
    ("headers", "Free-form string metadata."),
)

_tuple_fields: Callable[[type, tuple[tuple[str, str], ...]], None] | None
try:  # member descriptors at fixed offsets (trio_ingest/_speedups.c), when it was built
    from ._speedups import tuple_fields as _tuple_fields
except ImportError:  # pragma: no cover -- built wherever the tests run
    _tuple_fields = None

try:  # the C field descriptor namedtuple uses; a property of an itemgetter elsewhere
    from collections import _tuplegetter  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover -- other Pythons

    def _tuplegetter(index: int, doc: str) -> Any:
        return property(operator.itemgetter(index), doc=doc)


class Event(tuple):  # type: ignore[type-arg]  # fields by name, tuple storage
    """One unit of data moving through a pipeline.

    Events are immutable values. Stages never mutate them: ``map`` replaces the
    payload and the runtime keeps the id, key, event time and acknowledgement.
    An event is an attrs-style frozen value (``attrs.evolve(e, payload=...)``,
    ``attrs.fields(Event)`` and ``attrs.asdict`` work) stored as a tuple, so the
    runtime can make millions of them per second where a sink asks for them.

    Attributes:
        id: Unique, non-empty identity; sinks deduplicate on it.
        payload: The data, any Python object (JSON-like for the built-in sinks).
        key: Optional partition key; ``key_by`` sets it, keyed stages keep its order.
        event_time: Seconds since the epoch; defaults to the moment of creation.
        headers: Free-form string metadata.

    Raises:
        ValueError: ``id`` is not a non-empty str, or ``event_time`` is NaN.
        TypeError: ``event_time`` is not a number.
    """

    __slots__ = ()
    __attrs_attrs__ = _EventFields.__attrs_attrs__
    __match_args__ = ("id", "payload", "key", "event_time", "headers")

    def __new__(
        cls,
        id: str,
        payload: Any = None,
        key: Any = None,
        event_time: float | None = None,
        headers: Mapping[str, str] = _NO_HEADERS,
    ) -> Event:
        fields = _EventFields.__attrs_attrs__
        _check_id(None, fields.id, id)
        if event_time is None:
            event_time = time.time()
        else:
            _check_time(None, fields.event_time, event_time)
        return _tuple_new(cls, (id, payload, key, event_time, headers))

    if TYPE_CHECKING:
        id: str
        payload: Any
        key: Any
        event_time: float
        headers: Mapping[str, str]
    elif _tuple_fields is None:  # pragma: no cover -- the C module is built where tests run
        id, payload, key, event_time, headers = (
            _tuplegetter(i, doc) for i, (_name, doc) in enumerate(_FIELDS)
        )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _tuple_fields is not None:
            _tuple_fields(cls, ())  # a subclass's instances hold the five fields too

    def __setattr__(self, name: str, value: object) -> None:
        raise attrs.exceptions.FrozenInstanceError

    def __delattr__(self, name: str) -> None:
        raise attrs.exceptions.FrozenInstanceError

    def __repr__(self) -> str:
        return (
            f"Event(id={self[0]!r}, payload={self[1]!r}, key={self[2]!r}, "
            f"event_time={self[3]!r}, headers={self[4]!r})"
        )

    def __getnewargs__(self) -> tuple[Any, ...]:
        # pickle and copy call __new__ with these: a mappingproxy cannot be pickled, so
        # the shared empty headers are left to the default and other proxies go as dicts
        headers = self[4]
        if headers is _NO_HEADERS:
            return self[:4]
        if isinstance(headers, MappingProxyType):
            headers = dict(headers)
        return (*self[:4], headers)

    def evolve(self, **changes: Any) -> Event:
        """A copy with ``changes`` (validated), like ``attrs.evolve(event, **changes)``.

        Raises:
            ValueError: A changed ``id`` or ``event_time`` is invalid.
            TypeError: An unknown field, or a non-numeric ``event_time``.
        """
        fields = dict(zip(self.__match_args__, self, strict=True))
        fields.update(changes)
        return Event(**fields)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the event (headers as a plain dict)."""
        return {
            "id": self[0],
            "key": self[2],
            "event_time": self[3],
            "headers": dict(self[4]),
            "payload": self[1],
        }


if _tuple_fields is not None:
    # read like __slots__: ``event.id`` is a load at a fixed offset, not a descriptor call
    # (measured: 2 attributes 38 -> 20 ns); every Event then holds exactly five items
    _tuple_fields(Event, _FIELDS)


def rebuild(event: Event, payload: Any, key: Any) -> Event:
    """``event`` with a new payload and key, built without re-validating (hot path)."""
    return _tuple_new(Event, (event[0], payload, key, event[3], event[4]))


_event_of_tuple = functools.partial(_tuple_new, Event)  # a C call per event: no Python frame

#: ``trusted((id, payload, key, event_time, headers))``: an Event from checked fields,
#: without validating again (a connector's hot path, after it checked the id itself).
trusted = _event_of_tuple


@attrs.frozen(slots=True, weakref_slot=False)
class DeadLetter:
    """Why an event could not be delivered; the payload of a dead-lettered event.

    Attributes:
        event: The event as it was when it failed (payload after the last
            successful stage).
        node: Name of the node where it failed.
        error_type: Qualified name of the exception type.
        error: The exception message.
        attempts: How many times the failing call was tried.
        time: Wall-clock seconds when it was dead-lettered.
    """

    event: Event
    node: str
    error_type: str
    error: str
    attempts: int
    time: float = attrs.field(factory=time.time)

    @classmethod
    def from_exception(
        cls, event: Event, node: str, error: BaseException, attempts: int
    ) -> DeadLetter:
        """Build the record for ``event`` that failed in ``node`` with ``error``."""
        kind = type(error)
        name = kind.__qualname__
        if kind.__module__ not in ("builtins", "__main__"):
            name = f"{kind.__module__}.{name}"
        return cls(event=event, node=node, error_type=name, error=str(error), attempts=attempts)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: the reason fields plus the event."""
        return {
            "node": self.node,
            "error_type": self.error_type,
            "error": self.error,
            "attempts": self.attempts,
            "time": self.time,
            "event": self.event.to_dict(),
        }
