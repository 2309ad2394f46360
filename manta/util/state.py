"""Cluster state, listed from the head (a start on Ray's `ray.util.state`),
and what this process saw of each of its tasks (`task_story`, beyond Ray)."""

from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass
from typing import Any

from manta._private import ids
from manta._private.protocol import messages as m


class _Fields:
    """Records read as dicts too (`record["state"]`), as Ray's are."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def _only(found: list[Any]) -> Any:
    return found[0] if found else None


@dataclass
class JobState:
    job_id: str
    status: str  # RUNNING | FINISHED
    namespace: str
    driver_pid: int
    start_time: float
    end_time: float


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


def list_jobs() -> list[JobState]:
    """Every job (driver) the cluster has seen, oldest first."""
    from manta._private.session import runtime as _runtime

    rt = _runtime()
    reply = rt.call_head(m.GetJobs())
    return [
        JobState(
            job_id=ids.job_hex(j.job_id), status="RUNNING" if j.alive else "FINISHED", namespace=j.namespace,
            driver_pid=j.driver_pid, start_time=j.start_time, end_time=j.end_time,
        )
        for j in sorted(reply.jobs, key=lambda j: j.job_id)
    ]


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
