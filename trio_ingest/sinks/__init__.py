"""Sinks: where events leave a pipeline.

Connectors that need an optional dependency load on first use, so
``import trio_ingest`` needs nothing beyond trio, anyio and attrs.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._base import Sink as Sink
from ._memory import Memory as Memory
from ._memory import Null as Null

_LAZY = {
    "SQLite": "._sqlite",
    "JsonLines": "._files",
    "Postgres": "._postgres",
    "Parquet": "._parquet",
    "RedisStreams": "._redis",
}

__all__ = ("JsonLines", "Memory", "Null", "Parquet", "Postgres", "RedisStreams", "SQLite", "Sink")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
