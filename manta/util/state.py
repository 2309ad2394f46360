"""Cluster state, listed from the head (a start on Ray's `ray.util.state`),
and what this process saw of each of its tasks (`task_story`, beyond Ray)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from manta._private import ids
from manta._private.protocol import messages as m


@dataclass
class JobState:
    job_id: str
    status: str  # RUNNING | FINISHED
    namespace: str
    driver_pid: int
    start_time: float
    end_time: float


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
