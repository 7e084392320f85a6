"""The runtime that runs a graph."""

from ._report import RunReport as RunReport
from ._runtime import PipelineHandle as PipelineHandle

__all__ = ("PipelineHandle", "RunReport")
