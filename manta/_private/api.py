"""The driver-facing API behind `manta.get`, `put`, `wait` and friends.

`init` and `shutdown` live in `session`, with the runtime handle that
auto-initializes; they are re-exported here for `manta/__init__.py`.
"""

from __future__ import annotations

import os
import socket
import warnings
from typing import TYPE_CHECKING, Any

from msgspec.structs import replace

from manta._private import ids, session
from manta._private.ids import BinaryID, PlacementGroupID
from manta._private.options import check_namespace
from manta._private.protocol import messages as m
from manta._private.runtime import context
from manta._private.runtime.context import current_task
from manta._private.scheduling.bundles import group_of, unbundled
from manta._private.scheduling.policy import node_labels

if TYPE_CHECKING:
    from manta._private.runtime.interface import Runtime
    from manta._private.runtime.object_ref import ObjectRef

init = session.init
shutdown = session.shutdown
is_initialized = session.is_initialized
_runtime = session.runtime


def get(object_refs: Any, *, timeout: float | None = None) -> Any:
    return _runtime().get(object_refs, timeout)


def put(value: Any, *, _owner: Any = None) -> ObjectRef:
    return _runtime().put(value)


def wait(
    object_refs: list[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    return _runtime().wait(object_refs, num_returns, timeout, fetch_local)


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    from manta._private.runtime.object_ref import ObjectRef

    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expected an ObjectRef, got {type(object_ref).__name__}")
    _runtime().cancel(object_ref, force, recursive)


def kill(actor: Any, *, no_restart: bool = True) -> None:
    from manta._private.remote import ActorHandle

    if not isinstance(actor, ActorHandle):
        raise ValueError(f"kill() expected an actor handle, got {type(actor).__name__}")
    _runtime().kill_actor(actor._actor_id._id, no_restart)


def get_actor(name: str, namespace: str | None = None) -> Any:
    from manta._private.remote import handle_from_state

    if not isinstance(name, str) or not name:
        raise ValueError("get_actor() needs a non-empty actor name")
    check_namespace(namespace)
    rt = _runtime()
    state = rt.get_named_actor(name, namespace if namespace is not None else rt.namespace)
    return handle_from_state(rt, state)


def _nodes_info() -> list[m.NodeInfo]:
    from manta._private.protocol import messages as m

    rt = _runtime()
    reply = rt.call_head(m.GetClusterInfo())
    local = rt.call_agent(m.GetResources())
    # This node's own count is fresher than the head's last report of it.
    return [
        replace(n, available=dict(local.available)) if n.node_id == rt.node_id else n
        for n in reply.nodes
    ]


def cluster_resources() -> dict[str, float]:
    out: dict[str, float] = {}
    for n in _nodes_info():
        if n.alive:
            for k, v in n.resources.items():
                out[k] = out.get(k, 0.0) + v
    return out


def available_resources() -> dict[str, float]:
    out: dict[str, float] = {}
    for n in _nodes_info():
        if n.alive:
            for k, v in n.available.items():
                if v > 0:
                    out[k] = out.get(k, 0.0) + v
    return out


def nodes() -> list[dict[str, Any]]:
    host = socket.gethostname()
    out = []
    for n in _nodes_info():
        out.append(
            {
                "NodeID": n.node_id.hex(),
                "Alive": n.alive,
                "alive": n.alive,
                "NodeManagerAddress": _ip_of(n.address),
                "NodeManagerHostname": host,
                "NodeName": _ip_of(n.address),
                "Resources": dict(n.resources) if n.alive else {},
                "Address": n.address,
                "ObjectStoreCapacity": n.store_capacity,
                "Labels": node_labels(n.node_id, n.labels),
            }
        )
    return out


def _ip_of(address: str) -> str:
    kind, _, rest = address.partition(":")
    return rest.rpartition(":")[0] if kind == "tcp" else "127.0.0.1"


class RuntimeContext:
    """What `get_runtime_context()` returns: facts about the current process and task."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def get_job_id(self) -> str:
        return ids.job_hex(self._rt.job_id)

    @property
    def job_id(self) -> Any:
        _deprecated("job_id", "get_job_id()")
        return self._job_id()

    def _job_id(self) -> Any:
        return _HexId(bytes.fromhex(ids.job_hex(self._rt.job_id)))

    def get_session_name(self) -> str:
        """The cluster session's name (its session directory's), the same in
        every process of the cluster."""
        return os.path.basename(self._rt.session.session_dir.rstrip("/"))

    def get_node_id(self) -> str:
        return self._rt.node_id.hex()

    def get_node_labels(self) -> dict[str, str]:
        """The labels of the node this process runs on (manta start --labels)."""
        node_id = self._rt.node_id
        return next((node_labels(n.node_id, n.labels) for n in _nodes_info() if n.node_id == node_id), {})

    @property
    def node_id(self) -> Any:
        _deprecated("node_id", "get_node_id()")
        return _HexId(self._rt.node_id)

    def get_worker_id(self) -> str:
        return self._rt.worker_id.hex()

    def get_task_id(self) -> str | None:
        ctx = current_task.get()
        return ctx.task_id.hex() if ctx is not None else None

    @property
    def task_id(self) -> Any:
        _deprecated("task_id", "get_task_id()")
        ctx = current_task.get()
        return _HexId(ctx.task_id) if ctx is not None else None

    def get_task_name(self) -> str | None:
        """The running task's name: its options(name=), else the function's
        name, or "Class.method" for an actor call. None in a driver."""
        ctx = current_task.get()
        return ctx.name if ctx is not None else None

    def get_task_function_name(self) -> str | None:
        """The running task's function, with its module (as Ray names it:
        "module.function", "module.Class.method"; an async actor's method by
        its qualified name). None in a driver."""
        ctx = current_task.get()
        ex = self._rt.executor
        if ctx is None or ctx.spec is None or ex is None:
            return None
        spec = ctx.spec
        if spec.method is not None and ex.actor is not None:
            cls = type(ex.actor)
            if ex.is_async_actor():
                fn = getattr(cls, spec.method, None)
                return f"{cls.__module__}.{getattr(fn, '__qualname__', spec.method)}"
            return f"{cls.__module__}.{cls.__name__}.{spec.method}"
        fn = self._rt.load_function(spec.fn_id)
        return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__name__', spec.name)}"

    def is_canceled(self) -> bool:
        """Whether the running task or actor call was cancelled (ray.cancel).
        A sync or threaded actor's call is not interrupted: it can check this
        and stop early. Not in an async actor, whose calls are cancelled as
        asyncio tasks (as in Ray)."""
        ctx = current_task.get()
        if ctx is None:
            raise RuntimeError("is_canceled() can only be called inside a task or an actor method")
        ex = self._rt.executor
        if ex is not None and ex.is_async_actor():
            raise RuntimeError("This method is not supported in an async actor.")
        return ctx.cancel_requested

    def get_actor_id(self) -> str | None:
        ex = self._rt.executor
        if ex is not None and ex.actor_id is not None:
            return ex.actor_id.hex()  # type: ignore[no-any-return]
        return None

    @property
    def actor_id(self) -> Any:
        _deprecated("actor_id", "get_actor_id()")
        return self._actor_id()

    def _actor_id(self) -> Any:
        aid = self.get_actor_id()
        return _HexId(bytes.fromhex(aid)) if aid else None

    def get_actor_name(self) -> str | None:
        """The current actor's name ("" if it has none); None outside an actor."""
        ex = self._rt.executor
        if ex is None or ex.actor_id is None:
            return None
        return ex.actor_name  # type: ignore[no-any-return]

    @property
    def namespace(self) -> str:
        return self._rt.namespace

    def get_assigned_resources(self) -> dict[str, float]:
        ctx = current_task.get()
        if ctx is None:
            return {}
        return unbundled(ctx.resources)

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        return {"GPU": [str(i) for i in get_gpu_ids()]}

    @property
    def was_current_actor_reconstructed(self) -> bool:
        ex = self._rt.executor
        return bool(ex is not None and ex.restart_count > 0)

    def get_placement_group_id(self) -> str | None:
        """The placement group the current task or actor runs in, or None."""
        ctx = current_task.get()
        if ctx is None:
            return None
        if ctx.placement_group is not None:
            return ctx.placement_group.id.hex()  # type: ignore[no-any-return]
        pg_id = group_of(ctx.resources)
        return pg_id.hex() if pg_id else None

    @property
    def current_placement_group_id(self) -> Any:
        _deprecated("current_placement_group_id", "get_placement_group_id()")
        pg = self.get_placement_group_id()
        return PlacementGroupID(bytes.fromhex(pg)) if pg else None

    @property
    def current_actor(self) -> Any:
        from manta._private.remote import ActorHandle

        ex = self._rt.executor
        if ex is None or ex.actor_id is None:
            raise RuntimeError("current_actor is only available inside an actor")
        from manta._private.remote import _method_table

        methods, _, _ = _method_table(type(ex.actor))
        return ActorHandle(ex.actor_id, ex.actor_class_name, methods, 0, self._rt)

    @property
    def runtime_env(self) -> dict[str, Any]:
        return {"env_vars": dict(self._rt.env_vars)} if self._rt.env_vars else {}

    def get(self) -> dict[str, Any]:
        """job_id, node_id and namespace; task_id in a task; actor_id in an actor."""
        rt = self._rt
        out: dict[str, Any] = {"job_id": self._job_id(), "node_id": _HexId(rt.node_id), "namespace": self.namespace}
        ctx = current_task.get()
        if ctx is not None:
            out["task_id"] = _HexId(ctx.task_id)
        actor_id = self._actor_id()
        if actor_id is not None:
            out["actor_id"] = actor_id
        return out


def _deprecated(name: str, instead: str) -> None:
    warnings.warn(f"{name} is deprecated. Use {instead} instead.", DeprecationWarning, stacklevel=3)


class _HexId(BinaryID):
    """Ids from get_runtime_context(); Ray's print as bare hex."""

    __slots__ = ()

    def __repr__(self) -> str:
        return self._id.hex()


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext(_runtime())


def get_gpu_ids() -> list[int]:
    """The GPUs assigned to the current task or actor (none in a driver)."""
    ctx = current_task.get()
    if ctx is not None:
        return list(ctx.gpu_ids)
    rt = context.current()
    ex = rt.executor if rt is not None else None
    if ex is not None and ex.actor_id is not None:
        return list(ex.actor_gpu_ids)
    return []





def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """The cluster's recent tasks as a Chrome trace (chrome://tracing,
    Perfetto): one complete event per task attempt that ran, by node and
    worker (runtime/timeline.py). Written to `filename` as a trace file
    ({"traceEvents": [...]}) if given, else its events returned."""
    import json

    from manta._private.runtime.timeline import trace_events, trace_file

    rt = _runtime()
    reply = rt.call_head(m.ListTasks(filters=[], limit=1 << 30))
    events = trace_events(reply.tasks)
    if filename is None:
        return events
    with open(filename, "w") as f:
        json.dump(trace_file(events), f)
    return None


def java_function(class_name: str, function_name: str) -> Any:
    raise NotImplementedError("manta runs Python tasks only: there are no Java functions to call")


def java_actor_class(class_name: str) -> Any:
    raise NotImplementedError("manta runs Python actors only: there are no Java actor classes")


def client(address: str | None = None, _deprecation_warn_enabled: bool = True) -> Any:
    raise NotImplementedError(
        "Ray Client's builder is not in manta yet: connect with manta.init(address=...) on a node of the cluster"
    )
