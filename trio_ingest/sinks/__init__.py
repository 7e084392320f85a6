"""Sinks: where events leave a pipeline."""

from ._base import Sink as Sink
from ._memory import Memory as Memory
from ._memory import Null as Null

__all__ = ("Memory", "Null", "Sink")
