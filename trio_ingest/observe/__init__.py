"""Observability: statistics snapshots, Prometheus metrics, a JSON snapshot and a
live dashboard over HTTP, structured logs, and OpenTelemetry traces.

Exporters read the runtime's per-batch counters when asked; none of them adds
work per event. prometheus_client (``metrics`` extra) and OpenTelemetry
(``otel`` extra) are imported only when used.
"""

from .._edge import EdgeStatistics as EdgeStatistics
from ..runtime._stats import LatencyStatistics as LatencyStatistics
from ..runtime._stats import NodeStatistics as NodeStatistics
from ._logging import RUNTIME_RATE_LIMIT as RUNTIME_RATE_LIMIT
from ._logging import JsonFormatter as JsonFormatter
from ._logging import RateLimitFilter as RateLimitFilter
from ._logging import TextFormatter as TextFormatter
from ._logging import configure_logging as configure_logging
from ._prometheus import PrometheusCollector as PrometheusCollector
from ._server import MetricsEndpoint as MetricsEndpoint
from ._server import serve_metrics as serve_metrics
from ._snapshot import snapshot as snapshot
from ._tracing import disable_tracing as disable_tracing
from ._tracing import enable_tracing as enable_tracing

__all__ = (
    "RUNTIME_RATE_LIMIT",
    "EdgeStatistics",
    "JsonFormatter",
    "LatencyStatistics",
    "MetricsEndpoint",
    "NodeStatistics",
    "PrometheusCollector",
    "RateLimitFilter",
    "TextFormatter",
    "configure_logging",
    "disable_tracing",
    "enable_tracing",
    "serve_metrics",
    "snapshot",
)
