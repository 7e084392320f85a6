"""Graph builders."""

from ._graph import Graph as Graph
from ._graph import Pipeline as Pipeline

__all__ = ("Graph", "Pipeline")
