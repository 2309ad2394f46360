"""Ray's DAG API (`ray.dag`): build a graph of calls with `.bind()` and run
it with `execute()`. See manta/_private/dag.py for the semantics."""

from manta._private.dag import (
    ClassMethodNode,
    ClassNode,
    DAGNode,
    FunctionNode,
    InputAttributeNode,
    InputNode,
    MultiOutputNode,
)

__all__ = [
    "ClassMethodNode",
    "ClassNode",
    "DAGNode",
    "FunctionNode",
    "InputAttributeNode",
    "InputNode",
    "MultiOutputNode",
]
