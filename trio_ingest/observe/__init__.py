"""Observability: statistics snapshots (exporters build on these)."""

from .._edge import EdgeStatistics as EdgeStatistics
from ._stats import LatencyStatistics as LatencyStatistics
from ._stats import NodeStatistics as NodeStatistics

__all__ = ("EdgeStatistics", "LatencyStatistics", "NodeStatistics")
