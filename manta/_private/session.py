"""The process's session with a cluster: `init()`, `shutdown()` and auto-init.

`init()` starts a local cluster (or finds this machine's node of a running
one), builds the core runtime and installs it in the runtime slot
(`runtime.context`); `shutdown()` undoes exactly what `init()` did. Both the
driver API (`api`, `remote`) and the public utilities reach the runtime
through `runtime()`, which initializes on first use as Ray does.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from manta._private import services
from manta._private.config import Config
from manta._private.ids import new_worker_id
from manta._private.options import check_namespace
from manta._private.protocol.tool_messages import PROGRESS_PREFIX
from manta._private.runtime import context
from manta._private.runtime.progress import bars, has_bars, take_progress
from manta._private.runtime.terminal import safe_line, safe_lines
from manta._private.version import VERSION
from manta.exceptions import AuthenticationError

if TYPE_CHECKING:
    from manta._private.protocol import messages as m
    from manta._private.runtime.core import CoreRuntime
    from manta._private.runtime.interface import Runtime

# What init() needs before it starts the head is all this module imports at
# its top (`manta.init` is this module's): the messages, credentials (TLS),
# packaging and the runtime are loaded after the spawn, while the head starts
# on the other core. Imported before it, they held the spawn back 50-60 ms.

_lock = threading.RLock()

INIT_OPTIONS = {
    "_temp_dir", "dashboard_host", "dashboard_port", "local_mode", "_system_config", "_node_ip_address",
    "job_config", "log_to_driver", "storage", "_metrics_export_port", "_redis_password",
    "_enable_object_reconstruction", "_plasma_directory", "_memory",
}


class _Session:
    """What `init()` started, so `shutdown()` can undo exactly that."""

    def __init__(self, rt: Runtime, cluster: services.LocalCluster | None) -> None:
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


def current() -> _Session | None:
    """What this process's `init()` started, if it did (tests and tools look)."""
    return _session
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
        unknown = set(kwargs) - INIT_OPTIONS
        if unknown:
            raise TypeError(f"init() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
        if resources is not None and not isinstance(resources, dict):
            raise TypeError(f"resources must be a dict, got {type(resources).__name__}")
        check_namespace(namespace)
        job_config = kwargs.get("job_config")
        if job_config is not None:
            # The job's settings, where init's own arguments leave them open.
            namespace = namespace or job_config.ray_namespace
            runtime_env = runtime_env or job_config.runtime_env or None
        namespace, runtime_env = _submitted_job(namespace, runtime_env)
        env_vars: dict[str, str] = {}
        if runtime_env:
            from manta._private.runtime.packaging import check_runtime_env

            check_runtime_env(runtime_env)
            env_vars.update(runtime_env.get("env_vars") or {})
        code_path = _code_path(job_config)
        if kwargs.get("local_mode"):
            rt: Runtime = _local_runtime(
                address, num_cpus, num_gpus, resources, object_store_memory, namespace, env_vars, runtime_env,
                code_path,
            )
            context.install(rt)
            _session = _Session(rt, None)
            atexit.register(shutdown)
            return _info()
        config = Config.build(kwargs.get("_system_config"), os.environ)
        if address in (None, "auto"):  # Ray's "auto" takes the address the environment names, too
            address = os.environ.get("MANTA_ADDRESS") or address
        if address is not None and address.startswith(("manta://", "ray://")):
            rt = _client_runtime(address, config, namespace, env_vars, runtime_env, code_path, log_to_driver,
                                 num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                                 object_store_memory=object_store_memory)
            context.install(rt)
            _session = _Session(rt, None)
            atexit.register(shutdown)
            return _info()
        cluster: services.LocalCluster | None = None
        tls = None
        handed = _job_node(address) if address not in (None, "local") else None
        if handed is not None:
            session, tls = handed
        elif address not in (None, "local"):
            session = _connect_existing(address, num_cpus, num_gpus, resources, object_store_memory)
        else:
            pending = services.spawn_local_cluster(
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                resources=resources,
                object_store_memory=object_store_memory,
                config=config,
            )
            # While the head loads what it and its agent share (the agent is
            # forked from it after), this process would wait on a free core.
            from manta._private.auth.credentials import owner_credential
            from manta._private.protocol import messages as m
            from manta._private.runtime import core  # noqa: F401

            cluster = pending.wait_ready()
            session = m.SessionInfo(
                session_dir=cluster.session_dir,
                head_address=cluster.head_address,
                agent_address=cluster.agent_address,
                credential=owner_credential(cluster.token),
            )
        from manta._private.runtime.core import CoreRuntime
        from manta._private.runtime.packaging import PACKAGE_FIELDS
        from manta._private.transport.connection import AuthRejected

        rt = CoreRuntime(
            session, config, is_driver=True, worker_id=new_worker_id(), namespace=namespace or "",
            env_vars=env_vars, on_log=_print_log if log_to_driver else None, code_path=code_path, tls=tls,
        )
        try:
            try:
                rt.start()
            except AuthRejected as e:
                raise AuthenticationError(str(e)) from None
        except BaseException:
            rt.shutdown()
            if cluster is not None:
                cluster.stop()
            raise
        if runtime_env and any(runtime_env.get(k) for k in PACKAGE_FIELDS):
            try:
                rt.env_vars.update(rt.package_env(runtime_env))
            except BaseException:
                rt.shutdown()
                if cluster is not None:
                    cluster.stop()
                raise
        _describe_job(rt, runtime_env)
        context.install(rt)
        _session = _Session(rt, cluster)
        atexit.register(shutdown)
        return _info()


def _client_runtime(
    address: str, config: Config, namespace: str | None, env_vars: dict[str, str],
    runtime_env: dict[str, Any] | None, code_path: list[str], log_to_driver: bool, **resources: Any,
) -> Runtime:
    """A driver off the cluster, through the head's client server (client/, docs/client.md)."""
    from manta._private import cluster
    from manta._private.client.runtime import ClientRuntime, client_address, connect_client
    from manta._private.runtime.packaging import PACKAGE_FIELDS

    given = sorted(k for k, v in resources.items() if v is not None)
    if given:
        raise ValueError(f"When connecting to an existing cluster, {', '.join(given)} must not be given: "
                         f"the cluster's nodes already have their resources.")
    target = client_address(address)
    assert target is not None
    try:
        credential = cluster.credential_from_env_or_file(os.environ.get("MANTA_TOKEN_FILE"))
    except cluster.ClusterError as e:
        raise ConnectionError(str(e)) from None
    if credential is None:
        raise AuthenticationError(
            f"connecting to {address} needs a token: set MANTA_TOKEN (the cluster token, or a person's token "
            f"from `manta token create`) or MANTA_TOKEN_FILE"
        )
    rt = ClientRuntime(target, credential, config, namespace=namespace or "", env_vars=env_vars,
                       code_path=code_path, on_log=_print_log if log_to_driver else None,
                       entrypoint=" ".join([sys.executable, *sys.argv]))
    connect_client(rt)
    if runtime_env and any(runtime_env.get(k) for k in PACKAGE_FIELDS):
        try:
            rt.env_vars.update(rt.package_env(runtime_env))
        except BaseException:
            rt.shutdown()
            raise
    return rt  # type: ignore[return-value]


def _submitted_job(
    namespace: str | None, runtime_env: dict[str, Any] | None
) -> tuple[str | None, dict[str, Any] | None]:
    """A driver started by `manta job submit` (head/jobs/supervisor.py) joins its job's namespace
    and gives its tasks the job's runtime_env, where init's own arguments leave them open (Ray's
    job config does the same; the driver's own runtime_env fields win)."""
    import json

    text = os.environ.get("MANTA_JOB_CONFIG")
    if not text:
        return namespace, runtime_env
    try:
        job = json.loads(text)
    except ValueError:
        return namespace, runtime_env
    merged = dict(job.get("runtime_env") or {})
    mine = dict(runtime_env or {})
    env_vars = {**(merged.get("env_vars") or {}), **(mine.get("env_vars") or {})}
    merged.update(mine)
    if env_vars:
        merged["env_vars"] = env_vars
    return namespace or job.get("namespace") or None, merged or None


def _describe_job(rt: CoreRuntime, runtime_env: dict[str, Any] | None) -> None:
    """Tells the head what the state API shows of this job beyond its job
    table (`list_jobs`): the command line, the runtime_env, where it runs."""
    import json
    import subprocess

    from manta._private.protocol import state_messages as sm
    from manta._private.runtime.packaging import PACKAGE_FIELDS, runtime_env_of

    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:  # not Linux: Python's view of it (without -c's code)
        argv = [sys.executable, *sys.argv]
    # Packages by where they were stored, as Ray shows their URIs.
    shown = {k: v for k, v in (runtime_env or {}).items() if k not in (*PACKAGE_FIELDS, "excludes", "env_vars")}
    shown.update(runtime_env_of(rt.env_vars)[0])
    try:  # the driver of a submitted job says which (head/jobs/supervisor.py)
        submission_id = str(json.loads(os.environ.get("MANTA_JOB_CONFIG") or "{}").get("submission_id") or "")
    except (ValueError, AttributeError):
        submission_id = ""
    details = sm.JobDetails(
        job_id=rt.job_id, entrypoint=subprocess.list2cmdline(argv), runtime_env=json.dumps(shown, default=str),
        node_id=rt.node_id, ip=rt.session.node_ip or "127.0.0.1", submission_id=submission_id,
    )
    rt.post(rt.send_head, details)


def _local_runtime(
    address: str | None,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    object_store_memory: int | None,
    namespace: str | None,
    env_vars: dict[str, str],
    runtime_env: dict[str, Any] | None,
    code_path: list[str],
) -> Runtime:
    """local_mode=True: a runtime that runs everything in this process (see _private/local)."""
    from manta._private.local.runtime import LocalModeUnsupported, LocalRuntime
    from manta._private.runtime.packaging import PACKAGE_FIELDS

    if address not in (None, "local"):
        raise ValueError(
            f"local_mode=True runs every task in this process: it cannot connect to the cluster at {address!r}"
        )
    for field in PACKAGE_FIELDS:
        if runtime_env and runtime_env.get(field):
            raise LocalModeUnsupported(f"runtime_env {field}")
    total, _ = services.node_resources(num_cpus, num_gpus, resources, object_store_memory, head=True)
    return LocalRuntime(namespace=namespace or "", env_vars=env_vars, resources=total, code_path=code_path)


def _code_path(job_config: Any) -> list[str]:
    """Where workers find the job's code, as Ray arranges it: the
    JobConfig's code_search_path, then the driver script's directory."""
    paths = [os.path.abspath(p) for p in getattr(job_config, "code_search_path", None) or []]
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if script:
        # Only where the driver itself imports from it: `python -m pkg.mod`
        # puts the current directory on sys.path, not the module's own.
        here = os.path.dirname(os.path.realpath(script))
        if here in {os.path.realpath(p or os.curdir) for p in sys.path}:
            paths.append(here)
    return list(dict.fromkeys(paths))


def _job_node(address: str) -> tuple[m.SessionInfo, Any] | None:
    """The node a job's entrypoint, run as the worker user, was handed by the head
    (head/jobs/as_user.py), when `address` is that cluster's; else None."""
    import json

    from manta._private import cluster
    from manta._private.auth.tls_contexts import TlsContexts, material_of_fd
    from manta._private.protocol import messages as m

    spec = os.environ.get("MANTA_JOB_NODE")
    if not spec:
        return None
    node = json.loads(spec)
    if address != "auto" and address != node["address"]:
        return None
    try:
        os.fstat(node["store_fd"])
        tls = TlsContexts("", material_of_fd(node["tls_fd"])) if node["tls_fd"] >= 0 else None
    except OSError:
        raise ConnectionError(
            "this process runs in a job's entrypoint but lacks the descriptors of the node's store and "
            "certificate that the entrypoint was given (a subprocess started with close_fds=True?): start "
            "the driver in the entrypoint's process, or pass its file descriptors on"
        ) from None
    credential = cluster.credential_from_env_or_file(None)
    if credential is None:
        raise ConnectionError("this job's entrypoint has no token: MANTA_TOKEN was removed from its environment")
    return m.SessionInfo(
        session_dir=node["session_dir"], head_address=node["head"], agent_address=node["agent"],
        credential=credential, node_ip=node["node_ip"], store_fd=node["store_fd"],
    ), tls


def _connect_existing(
    address: str,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    object_store_memory: int | None,
) -> Any:
    """The session of this machine's node of the cluster at `address` ('auto' for the newest)."""
    from manta._private import cluster
    from manta._private.auth.credentials import owner_credential
    from manta._private.protocol import messages as m

    given = {k: v for k, v in dict(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources,
                                   object_store_memory=object_store_memory).items() if v is not None}
    if given:
        raise ValueError(
            f"When connecting to an existing cluster, {', '.join(sorted(given))} must not be "
            f"given: the cluster's nodes already have their resources."
        )
    if address.startswith("unix:") and address.endswith("/head.sock"):
        # What init() returned as "address" for a cluster it started here:
        # its session directory holds the head's and agent's sockets and the token.
        session_dir = os.path.dirname(address[len("unix:"):])
        token_file = os.path.join(session_dir, "token")
        if not os.path.exists(token_file):
            raise ConnectionError(f"no manta cluster at {address}: {session_dir} has no token")
        return m.SessionInfo(
            session_dir=session_dir, head_address=address, agent_address=f"unix:{session_dir}/agent.sock",
            credential=owner_credential(services.read_token(token_file)),
        )
    try:
        rec = cluster.find_local_node(address)
        credential = cluster.credential_from_env_or_file(rec.token_file)
    except cluster.ClusterError as e:
        raise ConnectionError(str(e)) from None
    assert credential is not None
    # The version the program sees, as Ray checks it: a driver of one version
    # talking to a cluster of another would fail later, in stranger ways.
    mine = getattr(sys.modules.get("manta"), "__version__", VERSION)
    if rec.version != mine:
        raise RuntimeError(
            f"version mismatch: the cluster at {rec.public_address} runs manta {rec.version}, "
            f"this driver runs manta {mine}; install the same version on both"
        )
    return m.SessionInfo(
        session_dir=rec.session_dir,
        head_address=rec.head_local or rec.head_address,
        agent_address=rec.agent_address,
        credential=credential,
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
    text = msg.text
    if PROGRESS_PREFIX in text:  # progress bars' states (tqdm_ray): drawn, not printed
        parts = text.split("\n")
        rest = take_progress(parts[:-1] if parts[-1] == "" else parts)
        text = "".join(line + "\n" for line in rest)
    # What tasks print reaches this terminal: no control sequence of theirs may.
    lines = safe_lines(text)
    prefix = safe_line(msg.prefix)
    try:
        out = "".join(f"({prefix}) {line}\n" for line in lines)
        if not out:
            return
        if has_bars():
            bars().write(out, stream)  # above the bars, which are drawn again below
        else:
            stream.write(out)
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


def runtime() -> Runtime:
    """This process's runtime, started with `init()` on first use (as Ray does)."""
    rt = context.current()
    if rt is None:
        init()
        rt = context.require()
    return rt


