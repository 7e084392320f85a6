"""Stages: what happens to events between sources and sinks."""

from ._custom import CustomStage as CustomStage
from ._custom import Inbox as Inbox
from ._custom import Outbox as Outbox
from ._join import join_latest as join_latest
from ._keyed import dedupe as dedupe
from ._keyed import stateful_map as stateful_map
from ._operators import batch as batch
from ._operators import filter as filter
from ._operators import flat_map as flat_map
from ._operators import inspect_ as inspect
from ._operators import key_by as key_by
from ._operators import map as map
from ._operators import map_batch as map_batch
from ._operators import map_event as map_event
from ._operators import route as route
from ._operators import route_by_key as route_by_key
from ._validate import validate as validate
from ._windows import reorder as reorder

tap = inspect

__all__ = (
    "CustomStage",
    "Inbox",
    "Outbox",
    "batch",
    "dedupe",
    "filter",
    "flat_map",
    "inspect",
    "join_latest",
    "key_by",
    "map",
    "map_batch",
    "map_event",
    "reorder",
    "route",
    "route_by_key",
    "stateful_map",
    "tap",
    "validate",
)
