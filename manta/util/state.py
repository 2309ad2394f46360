"""Cluster state, listed from the head (a start on Ray's `ray.util.state`)."""

from __future__ import annotations

from dataclasses import dataclass

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
