"""Sources: where events enter a pipeline.

Connectors that need an optional dependency load on first use, so
``import trio_ingest`` needs nothing beyond trio, anyio and attrs.
"""

from __future__ import annotations

from .._lazy import lazy_exports
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
    "Kafka": "._kafka",
    "HTTP": "._http",
}

__all__ = (
    "CSV",
    "HTTP",
    "FromIterable",
    "JsonLines",
    "Kafka",
    "Read",
    "RedisStreams",
    "Source",
    "Synthetic",
    "from_iterable",
    "synthetic",
)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
