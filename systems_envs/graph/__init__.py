"""Computation-graph IR, reference executor, loaders/exporters and cost models."""
from systems_envs.graph.ir import Graph, GraphError, Node, TensorRef, topological_sort
from systems_envs.graph.ops import OPS, Shape, ShapeError
from systems_envs.graph.executor import execute, random_feeds

__all__ = ["Graph", "GraphError", "Node", "TensorRef", "topological_sort", "OPS", "Shape",
           "ShapeError", "execute", "random_feeds"]
