"""The runtime that runs a graph."""

from ._handle import PipelineHandle as PipelineHandle
from ._report import RunReport as RunReport

__all__ = ("PipelineHandle", "RunReport")
