"""The event value and the dead-letter record."""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

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
class Event:
    """One unit of data moving through a pipeline.

    Events are immutable values. Stages never mutate them: ``map`` replaces the
    payload and the runtime keeps the id, key, event time and acknowledgement.

    Attributes:
        id: Unique, non-empty identity; sinks deduplicate on it.
        payload: The data, any Python object (JSON-like for the built-in sinks).
        key: Optional partition key; ``key_by`` sets it, keyed stages keep its order.
        event_time: Seconds since the epoch; defaults to the moment of creation.
        headers: Free-form string metadata.
    """

    id: str = attrs.field(validator=_check_id)
    payload: Any = None
    key: Any = None
    event_time: float = attrs.field(factory=time.time, validator=_check_time)
    headers: Mapping[str, str] = _NO_HEADERS

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the event (headers as a plain dict)."""
        return {
            "id": self.id,
            "key": self.key,
            "event_time": self.event_time,
            "headers": dict(self.headers),
            "payload": self.payload,
        }


_new = object.__new__
_set = object.__setattr__


def rebuild(event: Event, payload: Any, key: Any) -> Event:
    """``event`` with a new payload and key, built without re-validating (hot path).

    Several times faster than ``attrs.evolve``; the id was checked when ``event``
    was created.
    """
    new = _new(Event)
    _set(new, "id", event.id)
    _set(new, "payload", payload)
    _set(new, "key", key)
    _set(new, "event_time", event.event_time)
    _set(new, "headers", event.headers)
    return new


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
