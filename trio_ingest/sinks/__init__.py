"""Sinks: where events leave a pipeline.

Connectors that need an optional dependency load on first use, so
``import trio_ingest`` needs nothing beyond trio, anyio, attrs and orjson.
"""

from __future__ import annotations

from .._lazy import lazy_exports
from ._base import Columns as Columns
from ._base import Sink as Sink
from ._base import columns as columns
from ._memory import Memory as Memory
from ._memory import Null as Null

_LAZY = {
    "SQLite": "._sqlite",
    "JsonLines": "._files",
    "Postgres": "._postgres",
    "Parquet": "._parquet",
    "RedisStreams": "._redis",
    "Kafka": "._kafka",
}

__all__ = (
    "Columns",
    "JsonLines",
    "Kafka",
    "Memory",
    "Null",
    "Parquet",
    "Postgres",
    "RedisStreams",
    "SQLite",
    "Sink",
    "columns",
)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
