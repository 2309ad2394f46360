"""Ray's lazy DAG API: `.bind()` builds a graph of calls, `execute()` runs it.

    with InputNode() as inp:
        dag = add.bind(double.bind(inp[0]), inp.bias)
    ref = dag.execute(3, bias=1)          # an ObjectRef, as .remote() gives

A node is a call not made yet: a remote function's (`FunctionNode`), an
actor's creation (`ClassNode`) or a method of one (`ClassMethodNode`), the
input (`InputNode`, and `inp[i]`, `inp["k"]`, `inp.attr` picking from it),
or several outputs at once (`MultiOutputNode`). Nodes met in the arguments
(at any depth of lists, tuples and dicts) are executed first and passed on
as their refs, so the calls run as tasks with their dependencies, and a
node used twice runs once per `execute`. Each `execute` runs the graph
afresh: a `ClassNode` makes a new actor each time, as in Ray.
"""

from __future__ import annotations

from typing import Any

_NOTHING = object()


class DAGNode:
    """A call of the graph, run by `execute`."""

    def __init__(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> None:
        self._bound_args = tuple(args)
        self._bound_kwargs = dict(kwargs or {})

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the graph with these inputs; returns what this node gives
        (a ref, an actor handle, or a list of them for MultiOutputNode)."""
        return _Run(args, kwargs).value(self)

    def _run(self, run: _Run) -> Any:
        raise NotImplementedError

    def get_args(self) -> tuple[Any, ...]:
        return self._bound_args

    def get_kwargs(self) -> dict[str, Any]:
        return dict(self._bound_kwargs)


class _Run:
    """One execution: each node's result, made once."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args = args
        self.kwargs = kwargs
        self.done: dict[int, Any] = {}

    def value(self, node: DAGNode) -> Any:
        key = id(node)
        got = self.done.get(key, _NOTHING)
        if got is _NOTHING:
            got = self.done[key] = node._run(self)
        return got

    def resolve(self, value: Any) -> Any:
        if isinstance(value, DAGNode):
            return self.value(value)
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return value

    def call_args(self, node: DAGNode) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return self.resolve(node._bound_args), self.resolve(node._bound_kwargs)


class _CallNode(DAGNode):
    """A call of `target.remote(...)` with the bound arguments resolved."""

    def __init__(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__(args, kwargs)
        self._target = target

    def _run(self, run: _Run) -> Any:
        args, kwargs = run.call_args(self)
        return self._target.remote(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self._target, '__name__', self._target)})"


class FunctionNode(_CallNode):
    """A remote function's call (`f.bind(...)`)."""


class ClassNode(_CallNode):
    """An actor's creation (`Actor.bind(...)`); its methods bind too."""

    def __getattr__(self, name: str) -> _UnboundMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        return _UnboundMethod(self, name, {})


class _UnboundMethod:
    """`class_node.method`, waiting for its `.bind(...)`."""

    def __init__(self, actor: DAGNode, name: str, options: dict[str, Any]) -> None:
        self._actor = actor
        self._name = name
        self._options = options

    def options(self, **options: Any) -> _UnboundMethod:
        return _UnboundMethod(self._actor, self._name, {**self._options, **options})

    def bind(self, *args: Any, **kwargs: Any) -> ClassMethodNode:
        return ClassMethodNode(self._actor, self._name, args, kwargs, self._options)


class ClassMethodNode(DAGNode):
    """An actor method's call: of a ClassNode's actor, or of a live handle."""

    def __init__(self, actor: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(args, kwargs)
        self._actor = actor
        self._name = name
        self._options = options or {}

    def _run(self, run: _Run) -> Any:
        handle = run.resolve(self._actor)
        method = getattr(handle, self._name)
        if self._options:
            method = method.options(**self._options)
        args, kwargs = run.call_args(self)
        return method.remote(*args, **kwargs)

    def __repr__(self) -> str:
        return f"ClassMethodNode({self._name})"


class InputNode(DAGNode):
    """What `execute` is given: `inp` alone is its one argument, `inp[i]`
    its i-th, `inp["k"]` its keyword k, `inp.attr` an attribute of its one
    argument (or its keyword attr). Used as a context manager, as in Ray."""

    def __enter__(self) -> InputNode:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def _run(self, run: _Run) -> Any:
        if len(run.args) == 1 and not run.kwargs:
            return run.args[0]
        if not run.args and not run.kwargs:
            raise ValueError("the DAG reads its input, but execute() was given none")
        raise ValueError(
            f"the DAG uses its whole input, but execute() was given {len(run.args)} arguments and "
            f"{len(run.kwargs)} keywords: pick one with inp[i] or inp['key']"
        )

    def __getitem__(self, key: int | str) -> InputAttributeNode:
        return InputAttributeNode(self, key, item=True)

    def __getattr__(self, name: str) -> InputAttributeNode:
        if name.startswith("_"):
            raise AttributeError(name)
        return InputAttributeNode(self, name, item=False)


class InputAttributeNode(DAGNode):
    def __init__(self, source: InputNode, key: int | str, item: bool) -> None:
        super().__init__()
        self._key = key
        self._item = item

    def _run(self, run: _Run) -> Any:
        key = self._key
        if self._item and isinstance(key, int):
            if key >= len(run.args) or key < -len(run.args):
                raise IndexError(f"the DAG reads input {key}, but execute() was given {len(run.args)} arguments")
            return run.args[key]
        if key in run.kwargs:
            return run.kwargs[key]
        if len(run.args) == 1:
            whole = run.args[0]
            return whole[key] if self._item else getattr(whole, str(key))
        raise KeyError(f"the DAG reads input {key!r}, which execute() was not given")


class MultiOutputNode(DAGNode):
    """Several nodes' results at once: `execute` returns their list."""

    def __init__(self, outputs: list[Any]) -> None:
        super().__init__(tuple(outputs))

    def _run(self, run: _Run) -> Any:
        return [run.resolve(node) for node in self._bound_args]
