"""Small helpers shared by the contenders: the skip signal, percentiles, memory readings."""

from __future__ import annotations

import math
import resource
import sys
from collections.abc import Sequence
from typing import Any, TypeAlias

#: What one timed run of a contender returns: at least ``elapsed`` (s) and ``count``.
Measurement: TypeAlias = dict[str, Any]


class Skip(Exception):
    """A contender cannot run here (package missing, feature not available); not a failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def percentiles(values: Sequence[float], points: Sequence[float]) -> dict[str, float]:
    """Return the nearest-rank percentiles of ``values`` as ``{"p50": ..., ...}`` in ms."""
    if not values:
        return {f"p{_label(p)}": math.nan for p in points}
    ordered = sorted(values)
    out: dict[str, float] = {}
    for point in points:
        rank = max(1, math.ceil(point / 100 * len(ordered)))
        out[f"p{_label(point)}"] = ordered[rank - 1] * 1_000
    out["max"] = ordered[-1] * 1_000
    return out


def _label(point: float) -> str:
    return str(int(point)) if float(point).is_integer() else str(point).replace(".", "_")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``getrusage`` ``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (None without psutil)."""
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)
