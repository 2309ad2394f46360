"""The one set of tunables, built once per cluster and passed down.

`Config.build` reads the defaults, then the environment, then Ray's
`_system_config` keys (the last one given wins):

    init(_system_config={...})            a local cluster
    manta start ... --system-config JSON  a long-lived node
    manta start ... --object-spilling-directory DIR
    MANTA_NODE_TIMEOUT_S, MANTA_HEARTBEAT_S, MANTA_HEAD_RECONNECT_S,
    MANTA_MAX_LINEAGE_BYTES                environment of the starting process

The process that starts a cluster (a driver's `init()`, `manta start`)
builds it; the head and agents get it on their command line, workers from
their fork server. Nothing reads the environment for these afterwards.
Keys manta does not use are reported once and ignored, so Ray programs that
pass other tunables still run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import msgspec

# Ray's names for what manta reads, and the field each one sets.
_KEYS = {
    "object_spilling_threshold": "spill_threshold",
    "local_fs_capacity_threshold": "disk_threshold",
    "memory_usage_threshold": "memory_threshold",
    "memory_monitor_refresh_ms": "memory_monitor_ms",
    "max_lineage_bytes": "max_lineage_bytes",
    "task_events_report_interval_ms": "task_events_ms",
    "task_events_max_num_task_in_gcs": "max_task_states",
    "automatic_object_spilling_enabled": "spilling",
    "transfer_checksums": "transfer_checksums",
    "maximum_gcs_destroyed_actor_cached_count": "max_dead_actors",
    "metrics_report_interval_ms": "metrics_report_ms",
}
# Bounds with no Ray name are set under their own (docs/security-dos.md).
_KEYS.update({name: name for name in (
    "max_frame_bytes", "handshake_timeout_s", "max_unauthenticated_per_peer", "max_send_buffer_bytes",
    "max_kv_entries_per_namespace", "max_kv_bytes_per_namespace", "max_named_actors", "max_placement_groups",
    "max_pending_demands", "max_jobs", "max_dead_actors", "max_function_bytes", "tls_cert_days",
    "job_max_actors", "job_max_cpus", "job_max_kv_bytes", "job_max_pending_tasks", "job_max_store_bytes",
    "job_stop_timeout_s", "job_log_bytes", "store_prewarm_bytes",
)})
# Environment variables, and the field each one sets.
_ENV = {
    "MANTA_NODE_TIMEOUT_S": "node_timeout_s",
    "MANTA_HEARTBEAT_S": "heartbeat_s",
    "MANTA_HEAD_RECONNECT_S": "head_reconnect_s",
    "MANTA_CLIENT_RECONNECT_S": "client_reconnect_s",
    "MANTA_MAX_LINEAGE_BYTES": "max_lineage_bytes",
    "MANTA_MAX_FRAME_BYTES": "max_frame_bytes",
    "MANTA_HANDSHAKE_TIMEOUT_S": "handshake_timeout_s",
    "MANTA_STORE_PREWARM_BYTES": "store_prewarm_bytes",
}
# Ray's switch to fault in the whole object store at start: the whole store here too.
_PREALLOCATE = "preallocate_plasma_memory"
_WHOLE_STORE = 1 << 62


# Set in workers' environment when the user set OMP_NUM_THREADS themselves
# (then it is left alone; otherwise each task gets its CPUs, as in Ray).
OMP_FROM_USER = "MANTA_OMP_FROM_USER"


class Config(msgspec.Struct, frozen=True, kw_only=True):
    # Where objects spill when the store passes `spill_threshold` ("" = <session>/spill).
    spill_dir: str = ""
    spill_threshold: float = 0.8
    # Off: a full store refuses new objects, and pulls wait for room.
    spilling: bool = True
    # Spilling stops (OutOfDiskError) once the disk would pass this fraction.
    disk_threshold: float = 0.95
    # The memory monitor kills workers above this fraction of node memory (1.0: off).
    memory_threshold: float = 0.95
    memory_monitor_ms: int = 250
    # Lineage an owner keeps to rebuild lost objects.
    max_lineage_bytes: int = 1 << 30
    # The head declares a node dead after this long without a heartbeat.
    node_timeout_s: float = 10.0
    # How often agents report to the head, changed or not.
    heartbeat_s: float = 0.5
    # How long nodes, drivers and workers wait for a persistent head to come back.
    head_reconnect_s: float = 60.0
    # A remote client's session outlives its lost connection this long (manta start
    # --head --client-reconnect-s; Ray's client server waits 30 s too): it may
    # reconnect and resume, else its job ends (docs/client.md).
    client_reconnect_s: float = 30.0
    # How often each process sends its new task records to the head (Ray: 1 s;
    # shorter here, so the state API shows a running task sooner: a batch
    # costs per record, not per send).
    task_events_ms: int = 200
    # How often, at most, each process sends the head its application metrics
    # (when they changed), for /metrics (Ray: 10 s).
    metrics_report_ms: int = 1000
    # The head keeps the states of this many tasks, dropping the oldest.
    max_task_states: int = 100_000
    # How much of each node's object store its agent faults in, in the
    # background, once it has joined (Ray's preallocate_plasma_memory does
    # all of it). Off by default: the pages are memory in use from the start.
    # A store's first write into a fresh page is slow on some machines (a
    # fifth of the rate into a touched one, on the VM of BENCHMARKS.md).
    store_prewarm_bytes: int = 0
    # This node's labels (manta start --labels): shown in nodes() and the
    # runtime context.
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    # The head encrypts what it writes to its storage (manta start --head
    # --storage-encryption); it always authenticates it.
    storage_encryption: bool = False
    # A head with storage whose stop (SIGTERM) is a restart, not the end of the
    # cluster, as a Kubernetes pod's: it leaves the stored state and the nodes
    # (which wait head_reconnect_s) to the next head on this storage.
    stop_keeps_state: bool = False
    # Workers run as this user (manta start --worker-user; the node runs as
    # root): they cannot read the session's secrets. "": the agent's own.
    worker_user: str = ""
    # A node checks every chunk it pulls from another node against the
    # sender's keyed digest (node/transfer.py); off only to measure its cost.
    transfer_checksums: bool = True
    # Where runtime_env pip may install from, and what (manta start
    # --pip-allow-index URL --pip-allow-package NAME; node/pip_policy.py).
    # Empty: anything, as in Ray.
    pip_allow_indexes: list[str] = msgspec.field(default_factory=list)
    pip_allow_packages: list[str] = msgspec.field(default_factory=list)

    # -- bounds against a peer that asks too much (docs/security-dos.md) ----
    # The largest frame accepted after authentication: objects move in 4 MiB
    # chunks and arguments over 100 KiB go through the store, so only a
    # function or a KV value this large is refused.
    max_frame_bytes: int = 128 << 20
    # A connection that has not authenticated within this is closed.
    handshake_timeout_s: float = 10.0
    # Connections from one TCP address that may be authenticating at once.
    max_unauthenticated_per_peer: int = 16
    # A peer that leaves this much unread in our send buffer is cut off.
    max_send_buffer_bytes: int = 512 << 20
    # The head's tables: past a bound the request is refused, nothing is dropped.
    max_kv_entries_per_namespace: int = 1_000_000
    max_kv_bytes_per_namespace: int = 4 << 30
    max_named_actors: int = 100_000
    max_placement_groups: int = 100_000
    # Actors and placement groups waiting for room, across the cluster.
    max_pending_demands: int = 100_000
    # Each job's quota, the owner's jobs too (docs/quotas.md); None: no limit.
    # A person's token may carry a quota of its own, for all its jobs together.
    job_max_actors: int | None = None
    job_max_cpus: float | None = None
    job_max_kv_bytes: int | None = None
    job_max_pending_tasks: int | None = None
    job_max_store_bytes: int | None = None
    # Finished jobs and dead actors kept for the state API (the oldest go first).
    max_jobs: int = 10_000
    max_dead_actors: int = 100_000
    # All exported functions and actor classes, pickled (kept for restarts).
    max_function_bytes: int = 4 << 30
    # Submitted jobs (docs/jobs.md): how long a stopped entrypoint has after
    # SIGTERM before SIGKILL (Ray's RAY_JOB_STOP_WAIT_TIME_S, 3 s), and the
    # size at which its log rotates (one older part is kept).
    job_stop_timeout_s: float = 3.0
    job_log_bytes: int = 64 << 20

    # -- TLS on TCP links (docs/tls.md) -------------------------------------
    # "on", "off", or "auto": on when a listener is not on loopback.
    tls: str = "auto"
    # Node certificates' validity; renewed when a third is left (fractional for tests).
    tls_cert_days: float = 30.0

    @classmethod
    def build(
        cls,
        system_config: dict[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        spill_dir: str | None = None,
    ) -> Config:
        if system_config is not None and not isinstance(system_config, dict):
            raise TypeError(f"_system_config must be a dict, got {type(system_config).__name__}")
        fields: dict[str, Any] = {}
        for var, field in _ENV.items():
            text = (environ or {}).get(var)
            if text:
                try:
                    fields[field] = _checked(field, var, float(text))
                except ValueError as e:
                    raise ValueError(f"environment variable {var}={text!r}: {e}") from None
        ignored = []
        for key, value in (system_config or {}).items():
            if key == "object_spilling_config":
                fields["spill_dir"] = _spill_directory(value)
            elif key == _PREALLOCATE:
                if not isinstance(value, bool):
                    raise ValueError(f"_system_config[{key!r}] must be true or false, got {value!r}")
                fields["store_prewarm_bytes"] = _WHOLE_STORE if value else 0
            elif key in _KEYS:
                fields[_KEYS[key]] = _checked(_KEYS[key], f"_system_config[{key!r}]", value)
            else:
                ignored.append(key)
        if ignored:
            print(f"manta: warning: ignoring _system_config keys manta does not use: {', '.join(sorted(ignored))}",
                  file=sys.stderr)
        if spill_dir:
            fields["spill_dir"] = spill_dir
        return cls(**fields)

    def to_json(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_json(cls, text: str) -> Config:
        return msgspec.json.decode(text, type=cls) if text else cls()


# Fields whose default, None, means "no limit": the type a value must have.
_OPTIONAL: dict[str, type] = {
    "job_max_actors": int, "job_max_cpus": float, "job_max_kv_bytes": int, "job_max_pending_tasks": int,
    "job_max_store_bytes": int,
}


def _checked(field: str, what: str, value: Any) -> Any:
    kind = _OPTIONAL.get(field) or type(getattr(Config(), field))
    if field in _OPTIONAL and value is None:
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{what} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if field.endswith("_threshold") and not 0.0 < value <= 1.0:
        raise ValueError(f"{what} must be a fraction in (0, 1], got {value!r}")
    if field == "store_prewarm_bytes" and value == 0:
        return 0  # off
    if value <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return kind(value)


def _spill_directory(value: Any) -> str:
    """The directory of Ray's object_spilling_config (a JSON string or a dict)."""
    try:
        spec = json.loads(value) if isinstance(value, str) else value
        if spec.get("type", "filesystem") != "filesystem":
            raise ValueError(f"manta spills only to the local filesystem, not {spec['type']!r}")
        path = spec["params"]["directory_path"]
        if isinstance(path, list):
            path = path[0]
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(
            'object_spilling_config must look like {"type": "filesystem", "params": '
            f'{{"directory_path": "/some/dir"}}}}: {e}'
        ) from None
    return str(path)
