"""Dask's scheduler `get`, running each task of a graph as a manta task.

    dask.compute(x, scheduler=ray_dask_get)
    with enable_dask_on_ray():
        x.compute()

A task's inputs reach it as object refs, so an upstream result stays in the
object store and goes only to the worker that needs it, never through the
driver. The whole graph is submitted at once: manta starts each task when
its inputs are ready, so no thread pool walks the graph. Only the keys asked
for are fetched at the end (or handed back as refs, with `ray_persist=True`).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import dask
from dask.core import get_dependencies, istask
from dask.utils import ensure_dict

from manta._private import api
from manta._private.remote import remote
from manta._private.runtime.object_ref import ObjectRef
from manta.util.errors import error_of

try:  # dask >= 2024.12 describes tasks as objects (dask._task_spec)
    from dask._task_spec import Alias, DataNode, GraphNode, convert_legacy_graph

    _TASK_SPEC = True
except ImportError:  # older dask: tasks are tuples, `(func, *args)`
    _TASK_SPEC = False

Key = Hashable
Kind = Literal["task", "alias", "data"]

_RESOURCES_REFUSED = (
    "manta's dask scheduler does not take dask's `resources`: give manta's task options instead, "
    "as ray_remote_args=dict(num_cpus=..., resources={...}) (in compute() or in dask.annotate())"
)


# --------------------------------------------------------------------------
# the graph, as a plan (no I/O)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One graph key to produce: `kind` is "task" (run `node`, given the
    values of `deps`), "alias" (the same object as `deps[0]`) or "data"
    (`node` is the value itself). `release` are the keys no later step
    reads, to let go of once this one is submitted."""

    key: Key
    kind: Kind
    node: Any
    deps: tuple[Key, ...]
    release: tuple[Key, ...]


def _is_key(graph: Mapping[Key, Any], x: Any) -> bool:
    try:
        return x in graph
    except TypeError:  # unhashable: a list or dict literal
        return False


def _legacy_kind(graph: Mapping[Key, Any], key: Key, node: Any) -> tuple[Kind, tuple[Key, ...]]:
    if not istask(node) and _is_key(graph, node) and node != key:
        return "alias", (node,)
    deps = tuple(get_dependencies(graph, key))  # type: ignore[call-overload]
    return ("task" if istask(node) or deps else "data"), deps


def _kind(graph: Mapping[Key, Any], key: Key, node: Any) -> tuple[Kind, tuple[Key, ...]]:
    if not _TASK_SPEC:
        return _legacy_kind(graph, key, node)
    if isinstance(node, Alias):
        return "alias", (node.target,)
    if isinstance(node, DataNode):
        return "data", ()
    return "task", tuple(node.dependencies)


def plan(graph: Mapping[Key, Any], keys: Iterable[Key]) -> list[Step]:
    """The steps producing `keys`, each after the steps it reads: only what
    the keys need (the graph culled), depth first from the keys, so that a
    branch is finished, and its inputs let go of, before the next starts."""
    wanted = list(dict.fromkeys(keys))
    kinds: dict[Key, tuple[Kind, tuple[Key, ...]]] = {}
    order: list[Key] = []
    stack: list[tuple[Key, Iterator[Key]]] = []

    def enter(key: Key, reader: Key | None) -> None:
        if key not in graph:
            where = f" (read by {reader!r})" if reader is not None else ""
            raise KeyError(f"{key!r} is not in the dask graph{where}")
        kinds[key] = _kind(graph, key, graph[key])
        stack.append((key, iter(kinds[key][1])))

    # Iterative post-order: a long chain must not hit the recursion limit.
    for root in wanted:
        if root not in kinds:
            enter(root, None)
        while stack:
            key, deps = stack[-1]
            for dep in deps:
                if dep not in kinds:
                    enter(dep, key)
                    break
            else:
                stack.pop()
                order.append(key)
    last_reader: dict[Key, int] = {}
    for i, key in enumerate(order):
        for dep in kinds[key][1]:
            last_reader[dep] = i
    keep = set(wanted)
    releases: dict[int, list[Key]] = {}
    for dep, i in last_reader.items():
        if dep not in keep:
            releases.setdefault(i, []).append(dep)
    steps = []
    for i, key in enumerate(order):
        kind, reads = kinds[key]
        node = graph[key]
        if kind == "data" and _TASK_SPEC:
            node = node.value
        steps.append(Step(key, kind, node, reads, tuple(releases.get(i, ()))))
    return steps


# --------------------------------------------------------------------------
# in the worker
# --------------------------------------------------------------------------


def _run_node(spec: tuple[Any, tuple[Key, ...]], *values: Any) -> Any:
    """Runs one dask task, `spec` = (node, keys of its inputs); `values` are
    the inputs, in the order of the keys (the runtime resolved their refs
    before the call). One argument for both: each costs a serialization."""
    node, keys = spec
    if _TASK_SPEC and isinstance(node, GraphNode):
        return node(dict(zip(keys, values)))
    from dask.core import _execute_task  # type: ignore[attr-defined]  # older dask: its only way to run a tuple task

    return _execute_task(node, dict(zip(keys, values)))


@functools.cache
def _run_remote() -> Any:
    # Made once per process, so the function is exported once per job.
    return remote(_run_node)


class _Runners:
    """The remote function with each set of options one compute() uses."""

    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base
        self._made: dict[str, Any] = {}
        self.default = self.get(None)

    def get(self, extra: Mapping[str, Any] | None) -> Any:
        options = {**self.base, **(extra or {})}
        # Options hold dicts (resources) and strategy objects: keyed by repr.
        name = repr(sorted(options.items()))
        fn = self._made.get(name)
        if fn is None:
            fn = self._made[name] = _run_remote().options(**options) if options else _run_remote()
        return fn


# --------------------------------------------------------------------------
# in the driver
# --------------------------------------------------------------------------


def _graph_and_annotations(dsk: Any) -> tuple[dict[Key, Any], dict[Key, Any]]:
    """The plain graph and each key's `ray_remote_args` annotation, from a
    dict, a HighLevelGraph or (dask >= 2025) an expression."""
    per_key: dict[Key, Any] = {}
    if not isinstance(dsk, Mapping):
        annotations = getattr(dsk, "__dask_annotations__", None)
        if annotations is not None:
            per_key.update(annotations().get("ray_remote_args", {}))
        dsk = dsk.__dask_graph__()
    layers = getattr(dsk, "layers", None)
    if isinstance(layers, Mapping):  # a HighLevelGraph: annotations sit on its layers
        for layer in layers.values():
            value = (getattr(layer, "annotations", None) or {}).get("ray_remote_args")
            if value is not None:
                for key in layer:
                    per_key.setdefault(key, value(key) if callable(value) else value)
    graph = ensure_dict(dsk)
    if _TASK_SPEC:
        graph = convert_legacy_graph(graph)
    return graph, per_key


def _flat_keys(keys: Any) -> Iterator[Key]:
    if isinstance(keys, list):
        for k in keys:
            yield from _flat_keys(k)
    else:
        yield keys


def _pack(keys: Any, values: Mapping[Key, Any]) -> Any:
    """The results shaped as `keys`: a list of keys gives a tuple, as dask's
    own schedulers do."""
    if isinstance(keys, list):
        return tuple(_pack(k, values) for k in keys)
    return values[keys]


def _check_no_resources(options: Mapping[str, Any]) -> None:
    if "resources" in options:
        raise ValueError(_RESOURCES_REFUSED)


def _submit(dsk: Any, keys: Any, kwargs: dict[str, Any], one_at_a_time: bool) -> Any:
    persist = bool(kwargs.pop("ray_persist", False))
    _check_no_resources(kwargs)
    base = dict(kwargs.pop("ray_remote_args", None) or {})
    active = dask.get_annotations()  # dask.annotate() around the compute() call
    _check_no_resources(active)
    base.update(active.get("ray_remote_args", {}))
    # Other keywords (num_workers, pool, ...) are for schedulers that walk the
    # graph on threads, which this one does not: they are accepted, as dask's
    # own schedulers accept what is meant for another.
    graph, per_key = _graph_and_annotations(dsk)
    steps = plan(graph, _flat_keys(keys))
    del graph
    refs: dict[Key, ObjectRef] = {}
    runners = _Runners(base)
    for step in steps:
        if step.kind == "alias":
            refs[step.key] = refs[step.deps[0]]
        elif step.kind == "data":
            # A persisted collection's chunks are refs already: they stay put.
            refs[step.key] = step.node if isinstance(step.node, ObjectRef) else api.put(step.node)
        else:
            extra = per_key.get(step.key)
            fn = runners.get(extra) if extra else runners.default
            ref = fn.remote((step.node, step.deps), *[refs[d] for d in step.deps])
            refs[step.key] = ref
            if one_at_a_time:
                error = error_of(ref)
                if error is not None:
                    raise error
        for dep in step.release:
            # The tasks reading it hold their own reference until they ran.
            del refs[dep]
    if persist:
        return _pack(keys, refs)
    wanted = list(dict.fromkeys(_flat_keys(keys)))
    return _pack(keys, dict(zip(wanted, api.get([refs[k] for k in wanted]))))


def ray_dask_get(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """Runs a dask graph on manta and returns the values of `keys` (a key,
    or a list of keys, nested lists allowed: each gives a tuple).

    Keywords: `ray_remote_args` (task options for every task, e.g.
    `dict(num_cpus=2)`; `dask.annotate(ray_remote_args=...)` sets them per
    task), `ray_persist=True` (return object refs instead of values).
    """
    return _submit(dsk, keys, kwargs, one_at_a_time=False)


def ray_dask_get_sync(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """`ray_dask_get`, but each task is submitted only once the one before it
    finished, in the same depth-first order: one task at a time, for
    debugging. A failing task raises at once, before anything after it runs."""
    return _submit(dsk, keys, kwargs, one_at_a_time=True)


def ray_dask_persist(*collections: Any, **kwargs: Any) -> Any:
    """`dask.persist` whose results stay in manta's object store: the
    persisted collections hold object refs, and computing them later reads
    those objects where they are (use it with one of this module's
    schedulers, as `scheduler=` or through `enable_dask_on_ray()`)."""
    kwargs["ray_persist"] = True
    return dask.persist(*collections, **kwargs)


def enable_dask_on_ray(shuffle: str | None = "tasks", use_shuffle_optimization: bool = True) -> Any:
    """Makes `ray_dask_get` dask's scheduler, and a dataframe shuffle run as
    tasks (dask's default shuffle without a distributed client writes to
    the local disk, which other nodes cannot read). Returns the
    `dask.config.set` object: used as a context manager, the change lasts
    for its block only.

    `use_shuffle_optimization` is accepted for Ray's signature; dask's
    query planner already picks how a dataframe shuffles."""
    return dask.config.set({"scheduler": ray_dask_get, "dataframe.shuffle.method": shuffle})


def disable_dask_on_ray() -> Any:
    """Gives dask back its default scheduler and shuffle."""
    return dask.config.set({"scheduler": None, "dataframe.shuffle.method": None})
