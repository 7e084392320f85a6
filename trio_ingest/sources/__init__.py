"""Sources: where events enter a pipeline.

Connectors that need an optional dependency load on first use, so
``import trio_ingest`` needs nothing beyond trio, anyio and attrs.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._base import Read as Read
from ._base import Source as Source
from ._memory import FromIterable as FromIterable
from ._memory import Synthetic as Synthetic
from ._memory import from_iterable as from_iterable
from ._memory import synthetic as synthetic

_LAZY = {
    "JsonLines": "._files",
    "CSV": "._files",
    "RedisStreams": "._redis",
}

__all__ = (
    "CSV",
    "FromIterable",
    "JsonLines",
    "Read",
    "RedisStreams",
    "Source",
    "Synthetic",
    "from_iterable",
    "synthetic",
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
