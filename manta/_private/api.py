"""The driver-facing API behind `manta.init`, `get`, `put`, `wait` and friends."""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any

from manta._private import services
from manta._private.config import NodeConfig
from manta._private.ids import BinaryID
from manta._private.runtime import context
from manta._private.runtime.context import current_task

if TYPE_CHECKING:
    from manta._private.protocol import messages as m
    from manta._private.runtime.core import CoreRuntime
    from manta._private.runtime.object_ref import ObjectRef

# The runtime's heavy imports (asyncio, msgspec, cloudpickle) are loaded in
# init() *after* the cluster processes are spawned, so they overlap.

_lock = threading.RLock()


class _Session:
    """What `init()` started, so `shutdown()` can undo exactly that."""

    def __init__(self, rt: CoreRuntime, cluster: services.LocalCluster | None) -> None:
        self.rt = rt
        self.cluster = cluster


_session: _Session | None = None


class InitInfo(dict[str, Any]):
    """What init() returns: Ray's RayContext is also a mapping."""

    @property
    def address_info(self) -> dict[str, Any]:
        return dict(self)

    @property
    def dashboard_url(self) -> str:
        return ""

    def __enter__(self) -> InitInfo:
        return self

    def __exit__(self, *args: Any) -> None:
        shutdown()


def is_initialized() -> bool:
    return context.current() is not None


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    namespace: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    ignore_reinit_error: bool = False,
    include_dashboard: bool | None = None,
    logging_level: Any = None,
    log_to_driver: bool = True,
    configure_logging: bool = True,
    **kwargs: Any,
) -> InitInfo:
    global _session
    with _lock:
        if context.current() is not None:
            if ignore_reinit_error:
                return _info()
            raise RuntimeError(
                "Maybe you called manta.init twice by accident? This error can be suppressed "
                "by passing in 'ignore_reinit_error=True' or by calling 'manta.shutdown()' "
                "prior to 'manta.init()'."
            )
        unknown = set(kwargs) - {"_temp_dir", "dashboard_host", "dashboard_port", "local_mode", "_system_config", "_node_ip_address", "job_config", "log_to_driver", "storage", "_metrics_export_port", "_redis_password", "_enable_object_reconstruction", "_plasma_directory", "_memory"}
        if unknown:
            raise TypeError(f"init() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
        if resources is not None and not isinstance(resources, dict):
            raise TypeError(f"resources must be a dict, got {type(resources).__name__}")
        env_vars: dict[str, str] = {}
        if runtime_env:
            if not isinstance(runtime_env, dict):
                raise TypeError(f"runtime_env must be a dict, got {type(runtime_env).__name__}")
            for k, v in (runtime_env.get("env_vars") or {}).items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise TypeError(f"runtime_env env_vars must map str to str, got {k!r}: {v!r}")
                env_vars[k] = v
        config = NodeConfig.from_system_config(kwargs.get("_system_config"))
        address = address or os.environ.get("MANTA_ADDRESS") or None
        cluster: services.LocalCluster | None = None
        if address not in (None, "local"):
            session = _connect_existing(address, num_cpus, num_gpus, resources, object_store_memory)
        else:
            pending = services.spawn_local_cluster(
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                resources=resources,
                object_store_memory=object_store_memory,
                config=config,
            )
            from manta._private.runtime.core import SessionInfo

            cluster = pending.wait_ready()
            session = SessionInfo(
                session_dir=cluster.session_dir,
                head_address=cluster.head_address,
                agent_address=cluster.agent_address,
                token=cluster.token,
            )
        from manta._private.runtime.core import CoreRuntime

        rt = CoreRuntime(session, is_driver=True, worker_id=os.urandom(16), namespace=namespace or "")
        rt.env_vars = env_vars
        if "max_lineage_bytes" in (kwargs.get("_system_config") or {}):
            rt._lineage.max_bytes = config.max_lineage_bytes
        if log_to_driver:
            rt.on_log = _print_log
        try:
            rt.start()
        except BaseException:
            rt.shutdown()
            if cluster is not None:
                cluster.stop()
            raise
        context.install(rt)
        _session = _Session(rt, cluster)
        atexit.register(shutdown)
        return _info()


def _connect_existing(
    address: str,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    object_store_memory: int | None,
) -> Any:
    """The session of this machine's node of the cluster at `address` ('auto' for the newest)."""
    from manta._private import cluster
    from manta._private.runtime.core import SessionInfo

    given = {k: v for k, v in dict(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                                   object_store_memory=object_store_memory).items() if v is not None}
    if given:
        raise ValueError(
            f"When connecting to an existing cluster, {', '.join(sorted(given))} must not be "
            f"given: the cluster's nodes already have their resources."
        )
    try:
        rec = cluster.find_local_node(address)
        token = cluster.token_from_env_or_file(rec.token_file)
    except cluster.ClusterError as e:
        raise ConnectionError(str(e)) from None
    assert token is not None
    return SessionInfo(
        session_dir=rec.session_dir,
        head_address=rec.head_local or rec.head_address,
        agent_address=rec.agent_address,
        token=token,
        node_ip=rec.node_ip,
    )


def _info() -> InitInfo:
    rt = context.require()
    return InitInfo(
        address=rt.session.head_address,
        session_dir=rt.session.session_dir,
        node_id=rt.node_id.hex(),
        gcs_address=rt.session.head_address,
    )


def _print_log(msg: Any) -> None:
    stream = sys.stderr if msg.is_err else sys.stdout
    lines = msg.text.splitlines()
    try:
        stream.write("".join(f"({msg.prefix}) {line}\n" for line in lines))
        stream.flush()
    except Exception:
        pass


def shutdown(_exiting_interpreter: bool = False) -> None:
    global _session
    with _lock:
        s = _session
        _session = None
        if s is None:
            rt = context.current()
            if rt is not None and rt.is_driver:
                context.install(None)
                rt.shutdown()
            return
        context.install(None)
        try:
            atexit.unregister(shutdown)
        except Exception:
            pass
        s.rt.shutdown()
        if s.cluster is not None:
            s.cluster.stop()


def _runtime() -> CoreRuntime:
    rt = context.current()
    if rt is None:
        init()
        rt = context.require()
    return rt


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
    rt = _runtime()
    state = rt.get_named_actor(name, namespace if namespace is not None else rt.namespace)
    return handle_from_state(rt, state)


def _nodes_info() -> list[m.NodeInfo]:
    from manta._private.protocol import messages as m

    rt = _runtime()
    reply = rt.run(rt._await_request(rt.head, m.GetClusterInfo(rid=0)))
    local = rt.run(rt._await_request(rt.agent, m.GetResources(rid=0)))
    nodes = list(reply.nodes)
    for n in nodes:
        if n.node_id == rt.node_id:
            n.available = dict(local.available)
    return nodes


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
            }
        )
    return out


def _ip_of(address: str) -> str:
    kind, _, rest = address.partition(":")
    return rest.rpartition(":")[0] if kind == "tcp" else "127.0.0.1"


class RuntimeContext:
    """What `get_runtime_context()` returns: facts about the current process and task."""

    def __init__(self, rt: CoreRuntime) -> None:
        self._rt = rt

    def get_job_id(self) -> str:
        return self._rt.job_id.to_bytes(4, "little").hex()

    @property
    def job_id(self) -> Any:
        return _HexId(self._rt.job_id.to_bytes(4, "little"))

    def get_node_id(self) -> str:
        return self._rt.node_id.hex()

    @property
    def node_id(self) -> Any:
        return _HexId(self._rt.node_id)

    def get_worker_id(self) -> str:
        return self._rt.worker_id.hex()

    def get_task_id(self) -> str | None:
        ctx = current_task.get()
        return ctx.task_id.hex() if ctx is not None else None

    @property
    def task_id(self) -> Any:
        ctx = current_task.get()
        return _HexId(ctx.task_id) if ctx is not None else None

    def get_actor_id(self) -> str | None:
        ex = self._rt.executor
        if ex is not None and ex.actor_id is not None:
            return ex.actor_id.hex()  # type: ignore[no-any-return]
        return None

    @property
    def actor_id(self) -> Any:
        aid = self.get_actor_id()
        return _HexId(bytes.fromhex(aid)) if aid else None

    def get_actor_name(self) -> str | None:
        return None

    @property
    def namespace(self) -> str:
        return self._rt.namespace

    def get_assigned_resources(self) -> dict[str, float]:
        ctx = current_task.get()
        if ctx is None:
            return {}
        return {k: v for k, v in ctx.resources.items() if k not in ("memory",)}

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        return {"GPU": [str(i) for i in get_gpu_ids()]}

    @property
    def was_current_actor_reconstructed(self) -> bool:
        ex = self._rt.executor
        return bool(ex is not None and ex.restart_count > 0)

    def get_placement_group_id(self) -> str | None:
        return None

    @property
    def current_actor(self) -> Any:
        from manta._private.remote import ActorHandle

        ex = self._rt.executor
        if ex is None or ex.actor_id is None:
            raise RuntimeError("current_actor is only available inside an actor")
        from manta._private.remote import _method_table

        methods, _ = _method_table(type(ex.actor))
        return ActorHandle(ex.actor_id, ex.actor_class_name, methods, 0, self._rt, False)

    @property
    def runtime_env(self) -> dict[str, Any]:
        return {"env_vars": dict(self._rt.env_vars)} if self._rt.env_vars else {}

    def get(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "node_id": self.node_id,
            "namespace": self.namespace,
            "task_id": self.task_id,
            "actor_id": self.actor_id,
        }


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



