"""trio_ingest: resilient streaming data ingestion on Trio structured concurrency.

Sources produce, stages transform, sinks write, edges connect::

    import trio, trio_ingest as ti

    pipeline = ti.Pipeline(
        ti.sources.from_iterable(range(1000)),
        ti.map(lambda p: {"value": p}),
        sink=ti.sinks.Memory(),
    )
    report = trio.run(pipeline.run)

The import rule. Parts import each other one way only, never back, not even
inside a function (a lazy import still ties two parts together):
values -> contracts and connectors -> graph -> runtime -> builders -> observe / testing -> cli.

- values: the private top-level modules (``_event``, ``_batch``, ``_edge``, ``_acks``,
  ``_retry``, ``_validators``, ...);
- contracts and connectors: ``sources``, ``sinks``, ``stages`` (the stage protocol),
  ``state`` (state stores);
- ``graph``: the model, validation and the plan (pure: nothing runs);
- ``runtime``: runs a plan;
- builders: ``_pipeline`` (``Graph`` and ``Pipeline`` with ``run()`` / ``serve()``) and
  ``http`` (``ingest_app``: the HTTP source's endpoint in front of a serving handle);
- ``observe`` reads handles and reports; ``testing`` is the test kit; ``cli`` the command.

``tests/test_layers.py`` checks it on the source.
"""

import importlib
import typing

from . import http as http
from . import observe as observe
from . import runtime as runtime
from . import sinks as sinks
from . import sources as sources
from . import stages as stages
from . import state as state
from ._acks import Completion as Completion
from ._budget import DeadLetterBudget as DeadLetterBudget
from ._budget import DeadLetterBudgetError as DeadLetterBudgetError
from ._edge import EdgeStatistics as EdgeStatistics
from ._edge import SendProgress as SendProgress
from ._errors import ConfigError as ConfigError
from ._errors import DeadLetterError as DeadLetterError
from ._errors import GraphError as GraphError
from ._errors import IngestError as IngestError
from ._errors import InvalidPayloadError as InvalidPayloadError
from ._errors import NotJsonError as NotJsonError
from ._errors import PermanentError as PermanentError
from ._errors import RetryExhaustedError as RetryExhaustedError
from ._errors import SinkError as SinkError
from ._errors import SourceError as SourceError
from ._errors import StageError as StageError
from ._errors import TransientError as TransientError
from ._event import DeadLetter as DeadLetter
from ._event import Event as Event
from ._pipeline import Graph as Graph
from ._pipeline import Pipeline as Pipeline
from ._retry import CircuitBreaker as CircuitBreaker
from ._retry import ConstantBackoff as ConstantBackoff
from ._retry import ExponentialBackoff as ExponentialBackoff
from ._retry import RetryPolicy as RetryPolicy
from .observe import LatencyStatistics as LatencyStatistics
from .observe import NodeStatistics as NodeStatistics
from .runtime import PipelineHandle as PipelineHandle
from .runtime import RunReport as RunReport
from .sinks import Sink as Sink
from .sources import Read as Read
from .sources import Source as Source
from .stages import agg as agg
from .stages import batch as batch
from .stages import dedupe as dedupe
from .stages import filter as filter
from .stages import flat_map as flat_map
from .stages import inspect as inspect
from .stages import join_latest as join_latest
from .stages import key_by as key_by
from .stages import map as map
from .stages import map_batch as map_batch
from .stages import map_event as map_event
from .stages import reorder as reorder
from .stages import route as route
from .stages import route_by_key as route_by_key
from .stages import stateful_map as stateful_map
from .stages import tap as tap
from .stages import validate as validate
from .stages import windows as windows

__version__ = "0.1.0"

__all__ = (
    "CircuitBreaker",
    "Completion",
    "ConfigError",
    "ConstantBackoff",
    "DeadLetter",
    "DeadLetterBudget",
    "DeadLetterBudgetError",
    "DeadLetterError",
    "EdgeStatistics",
    "Event",
    "ExponentialBackoff",
    "Graph",
    "GraphError",
    "IngestError",
    "InvalidPayloadError",
    "LatencyStatistics",
    "NodeStatistics",
    "NotJsonError",
    "PermanentError",
    "Pipeline",
    "PipelineHandle",
    "Read",
    "RetryExhaustedError",
    "RetryPolicy",
    "RunReport",
    "SendProgress",
    "Sink",
    "SinkError",
    "Source",
    "SourceError",
    "StageError",
    "TransientError",
    "agg",
    "batch",
    "dedupe",
    "filter",
    "flat_map",
    "http",
    "inspect",
    "join_latest",
    "key_by",
    "map",
    "map_batch",
    "map_event",
    "observe",
    "reorder",
    "route",
    "route_by_key",
    "runtime",
    "sinks",
    "sources",
    "stages",
    "state",
    "stateful_map",
    "tap",
    "testing",
    "validate",
    "windows",
)

if typing.TYPE_CHECKING:
    from . import testing as testing


def __getattr__(name: str) -> typing.Any:
    # the test kit is imported on first use: it pulls in trio.testing, and with it pytest
    # where pytest is installed (about 200 ms of the import of trio_ingest, measured)
    if name == "testing":
        return importlib.import_module(".testing", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
