"""The graph model: nodes, validation and the plan (fusion, memory bound). Pure: no running."""

from ._graph import GraphModel as GraphModel
from ._graph import Node as Node
from ._graph import PipelineModel as PipelineModel
from ._plan import Plan as Plan
from ._plan import compile_plan as compile_plan

__all__ = ("GraphModel", "Node", "PipelineModel", "Plan", "compile_plan")
