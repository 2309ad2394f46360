"""Cluster state, as Ray's `ray.util.state` lists it (its records, field
names and values), and what this process saw of each of its tasks
(`task_story`, beyond Ray).

Actors, tasks, nodes, placement groups and jobs come from the head's
tables. Workers, objects and runtime envs are asked of every node agent
when listed (and objects of every driver and worker, through their
agents): nothing is recorded ahead for them, and a part that does not
answer in time leaves a partial list with a warning.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import warnings
from dataclasses import dataclass
from typing import Any

from manta._private import ids
from manta._private.protocol import messages as m
from manta._private.protocol import state_messages as sm


class _Fields:
    """Records read as dicts too (`record["state"]`), as Ray's are."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def _only(found: list[Any]) -> Any:
    return found[0] if found else None


@dataclass
class ActorState(_Fields):
    """An actor, with Ray's state-API field names."""

    actor_id: str
    class_name: str
    state: str  # PENDING_CREATION | ALIVE | RESTARTING | DEAD
    job_id: str
    name: str
    ray_namespace: str
    node_id: str
    pid: int
    death_cause: str | None
    is_detached: bool
    num_restarts: int
    required_resources: dict[str, float]


# Ray's names of actor states.
_ACTOR_STATES = {"PENDING": "PENDING_CREATION", "ALIVE": "ALIVE", "RESTARTING": "RESTARTING", "DEAD": "DEAD"}
_OPS = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def _matches(record: Any, filters: list[tuple[str, str, Any]] | None) -> bool:
    for key, op, value in filters or []:
        if op not in _OPS:
            raise ValueError(f"Unsupported filter predicate {op!r}: use one of {', '.join(_OPS)}")
        if not hasattr(record, key):
            raise ValueError(f"{key!r} is not a field that can be filtered on")
        # As Ray compares: by text, without regard to case (filters often
        # come from a command line).
        if not _OPS[op](str(getattr(record, key)).lower(), str(value).lower()):
            return False
    return True


def _actor_state(a: m.ActorInfo) -> ActorState:
    return ActorState(
        actor_id=a.actor_id.hex(), class_name=a.class_name, state=_ACTOR_STATES[a.state.value],
        job_id=ids.job_hex(a.job_id), name=a.name, ray_namespace=a.namespace, node_id=a.node_id.hex(),
        pid=a.pid, death_cause=a.death_cause or None, is_detached=a.detached, num_restarts=a.restarts,
        required_resources=dict(a.resources),
    )


def list_actors(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[ActorState]:
    """The cluster's actors (alive and dead), as Ray's `list_actors`:
    `filters` are (field, "=" or "!=", value); at most `limit` are returned."""
    from manta._private.session import runtime as _runtime

    reply = _runtime().call_head(m.ListActors())
    out = [s for s in map(_actor_state, reply.actors) if _matches(s, filters)]
    return out[:limit]


def get_actor(id: str, address: str | None = None, timeout: int = 30, _explain: bool = False) -> ActorState | None:
    """The actor with this id (hex), or None."""
    return _only(list_actors(filters=[("actor_id", "=", id)], limit=1))


@dataclass
class TaskState(_Fields):
    """A task (its latest attempt), with Ray's state-API field names."""

    task_id: str
    attempt_number: int
    name: str
    state: str
    job_id: str
    actor_id: str | None
    type: str
    func_or_class_name: str
    parent_task_id: str | None
    node_id: str | None
    worker_id: str | None
    worker_pid: int | None
    error_type: str | None
    error_message: str | None
    language: str
    required_resources: dict[str, float]
    placement_group_id: str | None
    creation_time_ms: int | None
    start_time_ms: int | None
    end_time_ms: int | None


def list_tasks(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[TaskState]:
    """The cluster's tasks and actor calls, as Ray's `list_tasks`: their
    latest attempt's state (PENDING_NODE_ASSIGNMENT, SUBMITTED_TO_WORKER,
    PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY, RUNNING, FINISHED, FAILED,
    ...), oldest first. `filters` are (field, "=" or "!=", value).

    Processes send their task records in batches (every
    task_events_report_interval_ms, 200 by default), so a state shows that
    much later. The head keeps the last 100,000 tasks
    (task_events_max_num_task_in_gcs); a warning says when some were dropped."""
    from manta._private.session import runtime as _runtime

    wanted = [(str(k), str(op), str(v)) for k, op, v in _filter_triples(filters)]
    reply = _runtime().call_head(m.ListTasks(filters=wanted, limit=limit))
    if reply.dropped and raise_on_missing_output:
        warnings.warn(
            f"{reply.dropped} tasks were dropped from the head's task store (it keeps the latest "
            "task_events_max_num_task_in_gcs): the list may miss some", stacklevel=2,
        )
    return [TaskState(**t) for t in reply.tasks]


def get_task(id: str, address: str | None = None, timeout: int = 30, _explain: bool = False) -> TaskState | None:
    """The task with this id (hex), or None."""
    return _only(list_tasks(filters=[("task_id", "=", id)], limit=1))


def _filter_triples(filters: Any) -> list[tuple[Any, Any, Any]]:
    out = []
    for f in filters or []:
        if not isinstance(f, (tuple, list)) or len(f) != 3:
            raise ValueError(f"a filter is (key, predicate, value), got {f!r}")
        out.append(tuple(f))
    return out


def task_story(task: Any) -> list[Any]:
    """What this process recorded of a task, oldest first: each step
    (submitted, lease requested, granted on a node, pushed to a worker,
    running, finished, failed, retried, cancelled) with the stimulus id of
    the event that caused it, its time and a detail.

    `task` is an ObjectRef the task returns, or the task id (hex or bytes).
    The owner records submission and results; the worker running a task
    shows it running while it runs, and records a run that failed. The log
    keeps about the last thousand tasks.
    """
    from manta._private.runtime.object_ref import ObjectRef
    from manta._private.session import runtime as _runtime

    if isinstance(task, ObjectRef):
        task_id = task.task_id()
    elif isinstance(task, str):
        task_id = bytes.fromhex(task)
    elif isinstance(task, bytes):
        task_id = task
    else:
        raise TypeError(f"task_story() takes an ObjectRef or a task id, got {type(task).__name__}")
    return _runtime().story(task_id)


@dataclass
class NodeState(_Fields):
    """A node, with Ray's state-API field names."""

    node_id: str
    node_ip: str
    is_head_node: bool
    state: str  # ALIVE | DEAD
    node_name: str
    resources_total: dict[str, float]
    labels: dict[str, str]
    state_message: str | None = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None


def list_nodes(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[NodeState]:
    """The cluster's nodes, alive and dead, in the order they joined."""
    from manta._private import api

    out = []
    for n in api.nodes():
        out.append(NodeState(
            node_id=n["NodeID"], node_ip=n["NodeManagerAddress"],
            is_head_node="node:__internal_head__" in n["Resources"], state="ALIVE" if n["Alive"] else "DEAD",
            node_name=n["NodeName"], resources_total=dict(n["Resources"]), labels=dict(n["Labels"]),
        ))
    wanted = _filter_triples(filters)
    return [s for s in out if _matches(s, wanted)][:limit]


def get_node(id: str, address: str | None = None, timeout: int = 30, _explain: bool = False) -> NodeState | None:
    return _only(list_nodes(filters=[("node_id", "=", id)], limit=1))


@dataclass
class PlacementGroupState(_Fields):
    """A placement group, with Ray's state-API field names."""

    placement_group_id: str
    name: str
    creator_job_id: str
    state: str  # PENDING | CREATED | REMOVED | RESCHEDULING
    bundles: list[dict[str, Any]]
    is_detached: bool
    stats: dict[str, Any] | None = None


def list_placement_groups(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[PlacementGroupState]:
    """The cluster's placement groups, removed ones included."""
    from manta._private.session import runtime as _runtime

    out = []
    for g in _runtime().call_head(m.GetPlacementGroups()).groups:
        spec = g.spec
        nodes = [n.hex() for n in g.nodes] + [""] * (len(spec.bundles) - len(g.nodes))
        out.append(PlacementGroupState(
            placement_group_id=spec.pg_id.hex(), name=spec.name, creator_job_id=ids.job_hex(spec.job_id),
            state=g.state.value,
            bundles=[{"bundle_id": {"placement_group_id": spec.pg_id.hex(), "bundle_index": i},
                      "unit_resources": dict(b), "node_id": nodes[i] or None, "label_selector": {}}
                     for i, b in enumerate(spec.bundles)],
            is_detached=spec.detached,
        ))
    wanted = _filter_triples(filters)
    return [s for s in out if _matches(s, wanted)][:limit]


def get_placement_group(
    id: str, address: str | None = None, timeout: int = 30, _explain: bool = False,
) -> PlacementGroupState | None:
    return _only(list_placement_groups(filters=[("placement_group_id", "=", id)], limit=1))


def summarize_tasks(
    address: str | None = None, timeout: int = 30, raise_on_missing_output: bool = True, _explain: bool = False,
) -> dict[str, Any]:
    """Task counts by function and state, in Ray's shape:
    {"cluster": {"summary": {name: {"func_or_class_name", "type", "state_counts"}}, "total_tasks", ...}}."""
    tasks = list_tasks(limit=1_000_000, raise_on_missing_output=raise_on_missing_output)
    summary: dict[str, dict[str, Any]] = {}
    for t in tasks:
        entry = summary.setdefault(t.func_or_class_name, {
            "func_or_class_name": t.func_or_class_name, "type": t.type, "state_counts": {},
        })
        entry["state_counts"][t.state] = entry["state_counts"].get(t.state, 0) + 1
    counts = collections.Counter(t.type for t in tasks)
    return {"cluster": {
        "summary": summary, "total_tasks": counts["NORMAL_TASK"], "total_actor_tasks": counts["ACTOR_TASK"],
        "total_actor_scheduled": counts["ACTOR_CREATION_TASK"],
        "summary_by": "func_name",
    }}


def summarize_actors(
    address: str | None = None, timeout: int = 30, raise_on_missing_output: bool = True, _explain: bool = False,
) -> dict[str, Any]:
    """Actor counts by class and state, in Ray's shape:
    {"cluster": {"summary": {class_name: {"class_name", "state_counts"}}, "total_actors"}}."""
    actors = list_actors(limit=1_000_000)
    summary: dict[str, dict[str, Any]] = {}
    for a in actors:
        entry = summary.setdefault(a.class_name, {"class_name": a.class_name, "state_counts": {}})
        entry["state_counts"][a.state] = entry["state_counts"].get(a.state, 0) + 1
    return {"cluster": {"summary": summary, "total_actors": len(actors), "summary_by": "class"}}


# -- what the head gathers from the node agents, when asked ------------------------


def _checked_filters(filters: Any, record: type, filterable: frozenset[str]) -> list[tuple[str, str, Any]]:
    """The filters as (field, predicate, value), refused before anything is
    asked if a predicate or a field is not one that can be used (as Ray
    refuses them). Field names are matched without regard to case."""
    out = []
    for key, op, value in _filter_triples(filters):
        if op not in _OPS:
            raise ValueError(f"Unsupported filter predicate {op!r}: use one of {', '.join(_OPS)}")
        name = str(key).lower()
        if name not in filterable:
            known = name in {f.name for f in dataclasses.fields(record)}
            raise ValueError(
                f"{key!r} is {'a field' if known else 'not a field'} of {record.__name__} that "
                f"{'cannot' if known else 'can'} be filtered on: use one of {', '.join(sorted(filterable))}"
            )
        out.append((name, op, value))
    return out


def _select(records: list[Any], filters: list[tuple[str, str, Any]], limit: int) -> list[Any]:
    return [r for r in records if _matches(r, filters)][:limit]


def _ask_head(msg: Any, timeout: float) -> Any:
    from manta._private.session import runtime as _runtime

    try:
        return _runtime().call_head(msg, timeout=timeout + 5)
    except TimeoutError:
        raise TimeoutError(f"the head did not answer {type(msg).__name__} in {timeout + 5:g} s") from None


def _partial(what: str, missing: list[str], raise_on_missing_output: bool) -> None:
    if missing and raise_on_missing_output:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        warnings.warn(
            f"the list of {what} is partial: some processes or nodes did not answer in time ({shown}). "
            f"Pass raise_on_missing_output=False to list what answered without this warning.",
            stacklevel=3,
        )


@dataclass
class WorkerState(_Fields):
    """A worker process or a driver, with Ray's state-API field names."""

    worker_id: str
    is_alive: bool
    worker_type: str  # WORKER | DRIVER
    exit_type: str | None  # SYSTEM_ERROR | INTENDED_SYSTEM_EXIT | INTENDED_USER_EXIT | NODE_OUT_OF_MEMORY
    node_id: str
    ip: str
    pid: int
    # With detail=True (as in Ray); the times are ms since the epoch, -1 (launch) or 0 (end) if none.
    exit_detail: str | None = None
    worker_launch_time_ms: int | None = None
    worker_launched_time_ms: int | None = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None
    debugger_port: int | None = None
    num_paused_threads: int | None = None
    # Beyond Ray: the job of its latest lease (a driver's own job).
    job_id: str | None = None


_WORKER_FILTERS = frozenset({
    "worker_id", "is_alive", "worker_type", "exit_type", "node_id", "ip", "pid", "debugger_port",
    "num_paused_threads", "job_id",
})


def _worker_state(w: sm.WorkerRecord, detail: bool) -> WorkerState:
    state = WorkerState(
        worker_id=w.worker_id.hex(), is_alive=w.alive, worker_type="DRIVER" if w.driver else "WORKER",
        exit_type=w.exit_type or None, node_id=w.node_id.hex(), ip=w.ip, pid=w.pid,
        job_id=ids.job_hex(w.job_id) if w.job_id else None,
    )
    if detail:
        state.exit_detail = w.exit_detail or None
        state.worker_launch_time_ms = w.launch_ms
        state.worker_launched_time_ms = w.launched_ms
        state.start_time_ms = w.start_ms
        state.end_time_ms = w.end_ms
    return state


def list_workers(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[WorkerState]:
    """Every driver and worker process of the cluster's live nodes, alive
    and (the latest thousand per node) exited, as Ray's `list_workers`."""
    wanted = _checked_filters(filters, WorkerState, _WORKER_FILTERS)
    reply = _ask_head(sm.ListWorkers(timeout_s=timeout), timeout)
    _partial("workers", reply.missing, raise_on_missing_output)
    out = sorted((_worker_state(w, detail) for w in reply.workers), key=lambda w: w.worker_id)  # as Ray orders them
    return _select(out, wanted, limit)


def get_worker(id: str, address: str | None = None, timeout: int = 30, _explain: bool = False) -> WorkerState | None:
    """The worker (or driver) with this id (hex), or None."""
    return _only(list_workers(filters=[("worker_id", "=", id)], limit=1, timeout=timeout, detail=True))


@dataclass
class ObjectState(_Fields):
    """One process's reference to an object, with Ray's state-API field
    names: an object referenced from several processes is listed once for
    each, as in Ray."""

    object_id: str
    object_size: int  # bytes, -1 while unknown
    task_status: str  # of the task making it, as its owner sees it: FINISHED, PENDING_ARGS_AVAIL, ...; NIL elsewhere
    attempt_number: int
    reference_type: str  # ACTOR_HANDLE | PINNED_IN_MEMORY | USED_BY_PENDING_TASK | LOCAL_REFERENCE | ...
    call_site: str  # "disabled": call sites are not recorded
    type: str  # WORKER | DRIVER: the process holding the reference
    pid: int
    ip: str
    # Beyond Ray: the node of the process holding the reference.
    node_id: str = ""


_OBJECT_FILTERS = frozenset(f.name for f in dataclasses.fields(ObjectState))
# As Ray prints the call site when recording it is off (manta never records it).
_NO_CALL_SITE = "disabled"


def list_objects(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[ObjectState]:
    """The references every live driver and worker holds, by object id, as
    Ray's `list_objects`. Each process is asked when this is called; one
    that does not answer within the timeout is left out, with a warning."""
    wanted = _checked_filters(filters, ObjectState, _OBJECT_FILTERS)
    reply = _ask_head(sm.ListObjects(timeout_s=timeout), timeout)
    _partial("objects", reply.missing, raise_on_missing_output)
    out = [
        ObjectState(
            object_id=r.object_id.hex(), object_size=r.size, task_status=r.task_status, attempt_number=r.attempt,
            reference_type=r.reference_type, call_site=_NO_CALL_SITE, type="DRIVER" if p.driver else "WORKER",
            pid=p.pid, ip=p.ip, node_id=p.node_id.hex(),
        )
        for p in reply.processes for r in p.refs
    ]
    out.sort(key=lambda o: o.object_id)  # as Ray orders them
    return _select(out, wanted, limit)


def get_objects(id: str, address: str | None = None, timeout: int = 30, _explain: bool = False) -> list[ObjectState]:
    """Every process's reference to the object with this id (hex): empty if none."""
    return list_objects(filters=[("object_id", "=", id)], limit=1_000_000, timeout=timeout)


def summarize_objects(
    address: str | None = None, timeout: int = 30, raise_on_missing_output: bool = True, _explain: bool = False,
) -> dict[str, Any]:
    """Object counts and sizes by call site, in Ray's shape: {"cluster": {"summary":
    {call_site: {"total_objects", "total_size_mb", "total_num_workers", "total_num_nodes",
    "task_state_counts", "task_attempt_number_counts", "ref_type_counts"}}, "total_objects",
    "total_size_mb", "callsite_enabled", "summary_by"}}. Call sites are not recorded, so
    every object is in the one group "disabled"."""
    objects = list_objects(limit=10**9, timeout=timeout, raise_on_missing_output=raise_on_missing_output)
    summary: dict[str, dict[str, Any]] = {}
    holders: dict[str, tuple[set[tuple[str, int]], set[str]]] = {}
    total_mb = 0.0
    for o in objects:
        entry = summary.setdefault(o.call_site, {
            "total_objects": 0, "total_size_mb": 0.0, "total_num_workers": 0, "total_num_nodes": 0,
            "task_state_counts": {}, "task_attempt_number_counts": {}, "ref_type_counts": {},
        })
        entry["total_objects"] += 1
        if o.object_size >= 0:
            entry["total_size_mb"] += o.object_size / 2**20
            total_mb += o.object_size / 2**20
        for key, value in (("task_state_counts", o.task_status), ("ref_type_counts", o.reference_type),
                           ("task_attempt_number_counts", str(o.attempt_number))):
            entry[key][value] = entry[key].get(value, 0) + 1
        workers, nodes = holders.setdefault(o.call_site, (set(), set()))
        workers.add((o.node_id, o.pid))
        nodes.add(o.node_id)
    for site, (workers, nodes) in holders.items():
        summary[site]["total_num_workers"] = len(workers)
        summary[site]["total_num_nodes"] = len(nodes)
    return {"cluster": {
        "summary": summary, "total_objects": len(objects), "total_size_mb": total_mb,
        # Ray says enabled when there is nothing to tell by.
        "callsite_enabled": not objects, "summary_by": "callsite",
    }}


@dataclass
class RuntimeEnvState(_Fields):
    """A runtime environment in use on a node, with Ray's state-API field names."""

    runtime_env: dict[str, Any]  # {"env_vars": {...}, "working_dir": "manta://...", "pip": {...}, ...}
    success: bool
    creation_time_ms: float | None  # setting it up (0.0: variables only, nothing to build)
    node_id: str
    # With detail=True (as in Ray): the workers running in it, and why setting it up failed.
    ref_cnt: int | None = None
    error: str | None = None


_ENV_FILTERS = frozenset({"runtime_env", "success", "node_id", "error"})


def list_runtime_envs(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[RuntimeEnvState]:
    """Each node's runtime environments that its workers run in (and those
    that failed to build), as Ray's `list_runtime_envs`; the default (empty)
    one is not listed. `creation_time_ms` is what setting it up took on the
    node: building a pip environment and unpacking packages (None if that
    was done before, for another worker pool)."""
    from manta._private.runtime.packaging import runtime_env_of

    wanted = _checked_filters(filters, RuntimeEnvState, _ENV_FILTERS)
    reply = _ask_head(sm.ListRuntimeEnvs(timeout_s=timeout), timeout)
    _partial("runtime envs", reply.missing, raise_on_missing_output)
    out = []
    for e in reply.envs:
        runtime_env, needs_setup = runtime_env_of(e.env)
        if not runtime_env:
            continue
        if e.creation_ms is not None:
            created: float | None = e.creation_ms
        else:  # nothing was built here: nothing to build, or built before for another pool
            created = None if needs_setup else 0.0
        out.append(RuntimeEnvState(
            runtime_env=runtime_env, success=e.success, creation_time_ms=created, node_id=e.node_id.hex(),
            ref_cnt=e.workers if detail else None, error=(e.error or None) if detail else None,
        ))
    out.sort(key=lambda e: e.creation_time_ms or 0.0, reverse=True)  # as Ray orders them: the slowest first
    return _select(out, wanted, limit)


@dataclass
class DriverInfo(_Fields):
    """A job's driver, as Ray's job records name it (its pid as text, as in Ray)."""

    id: str
    node_ip_address: str
    pid: str


@dataclass
class JobState(_Fields):
    """A job, with the field names of Ray's job records (`JobDetails`).
    A job submitted over the REST API (`manta job submit`) is the type
    SUBMISSION, with its submission id; one started by a driver, DRIVER."""

    type: str  # DRIVER
    job_id: str | None
    submission_id: str | None
    driver_info: DriverInfo | None
    status: str  # RUNNING | SUCCEEDED (its driver ended)
    entrypoint: str
    message: str | None = None
    error_type: str | None = None
    # With detail=True (as in Ray): ms since the epoch (end 0 while running).
    start_time: int | None = None
    end_time: int | None = None
    metadata: dict[str, str] | None = None
    runtime_env: dict[str, Any] | None = None
    driver_agent_http_address: str | None = None
    driver_node_id: str | None = None
    driver_exit_code: int | None = None


_JOB_FILTERS = frozenset({"job_id", "type", "status", "submission_id"})


def _job_state(j: sm.JobRecord, detail: bool) -> JobState:
    job_id = ids.job_hex(j.job_id)
    state = JobState(
        type="SUBMISSION" if j.submission_id else "DRIVER", job_id=job_id, submission_id=j.submission_id or None,
        driver_info=DriverInfo(id=job_id, node_ip_address=j.ip, pid=str(j.driver_pid)),
        status="RUNNING" if j.alive else "SUCCEEDED", entrypoint=j.entrypoint,
    )
    if detail:
        state.start_time, state.end_time = j.start_ms, j.end_ms
        state.metadata = {}
        state.runtime_env = json.loads(j.runtime_env)
        state.driver_node_id = j.node_id.hex() or None
    return state


def list_jobs(
    address: str | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = 100,
    timeout: int = 30,
    detail: bool = False,
    raise_on_missing_output: bool = True,
    _explain: bool = False,
) -> list[JobState]:
    """Every job (driver) the cluster has seen, oldest first, as Ray's `list_jobs`."""
    wanted = _checked_filters(filters, JobState, _JOB_FILTERS)
    reply = _ask_head(sm.ListJobs(), timeout)
    return _select([_job_state(j, detail) for j in reply.jobs], wanted, limit)


def get_job(id: str, address: str | None = None, timeout: int = 30, _explain: bool = False) -> JobState | None:
    """The job with this job id or submission id, or None (as Ray's job API
    finds jobs; Ray's `get_job` looks up submission ids only)."""
    wanted = str(id).lower()
    return _only([j for j in list_jobs(limit=10**9, timeout=timeout, detail=True)
                  if wanted in (str(j.job_id).lower(), str(j.submission_id).lower())])


# --- logs (Ray's list_logs / get_log; `manta logs` on the command line) -------


def list_logs(
    address: str | None = None, node_id: str | None = None, node_ip: str | None = None,
    glob_filter: str | None = None, timeout: int = 30,
) -> dict[str, list[str]]:
    """The log files of a node (of every node if none is named), by group as
    Ray's: "worker" (what workers' tasks printed), "agent", "head" and "other"."""
    from manta._private.protocol import tool_messages as tm

    nid = bytes.fromhex(node_id) if node_id else _node_of_ip(node_ip, timeout)
    reply = _ask_head(tm.ListLogs(node_id=nid, glob=glob_filter or "", timeout_s=timeout), timeout)
    groups: dict[str, list[str]] = {}
    for f in reply.files:
        name = f.name
        group = ("worker" if name.startswith(tm.WORKER_LOG_DIR + "/") else
                 name.split(".")[0] if name in ("agent.log", "head.log") else "other")
        groups.setdefault(group, []).append(name)
    return groups


def get_log(
    address: str | None = None, node_id: str | None = None, node_ip: str | None = None,
    filename: str | None = None, actor_id: str | None = None, task_id: str | None = None,
    pid: int | None = None, follow: bool = False, tail: int = -1, timeout: int = 30, suffix: str = "out",
    encoding: str | None = "utf-8", errors: str | None = "strict", submission_id: str | None = None,
    attempt_number: int = 0, _interval: float | None = None, filter_ansi_code: bool = False,
) -> Any:
    """Yields the lines of a log file, a worker's (`pid`), an actor's or a
    task's own output (`suffix="err"`: stderr); with `follow`, goes on
    yielding what is appended, across rotations, until closed."""
    import re
    import time

    from msgspec.structs import replace

    from manta._private.protocol import tool_messages as tm

    if submission_id:
        raise NotImplementedError("a submitted job's driver log: see the Jobs API (manta job logs)")
    nid = bytes.fromhex(node_id) if node_id else _node_of_ip(node_ip, timeout)
    req = tm.ReadLog(node_id=nid, name=filename or "", pid=pid or 0,
                     actor_id=bytes.fromhex(actor_id) if actor_id else b"",
                     task_id=bytes.fromhex(task_id) if task_id else b"", err=suffix == "err", tail=tail,
                     timeout_s=timeout)
    ansi = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
    rest = ""
    while True:
        chunk = _ask_head(req, timeout)
        text = rest + chunk.data.decode(encoding or "utf-8", errors or "strict")
        lines = text.split("\n")
        rest = lines.pop()
        for line in lines:
            yield ansi.sub("", line) if filter_ansi_code else line
        req = replace(req, node_id=chunk.node_id, name=chunk.name, pid=0, actor_id=b"", offset=chunk.offset,
                      inode=chunk.inode, in_task=chunk.in_task)
        if chunk.more:
            continue
        if not follow:
            if rest:
                yield rest
            return
        time.sleep(_interval or 0.5)


def _node_of_ip(node_ip: str | None, timeout: float) -> bytes:
    if not node_ip:
        return b""
    nodes = [n for n in list_nodes(timeout=int(timeout)) if n.node_ip == node_ip]
    if not nodes:
        raise ValueError(f"no node with ip {node_ip}")
    return bytes.fromhex(nodes[0].node_id)
