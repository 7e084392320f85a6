"""The runtime that runs a graph."""

from ._handle import PipelineHandle as PipelineHandle
from ._report import RunReport as RunReport
from ._runtime import ABORT_CLEANUP_SECONDS as ABORT_CLEANUP_SECONDS

__all__ = ("ABORT_CLEANUP_SECONDS", "PipelineHandle", "RunReport")
